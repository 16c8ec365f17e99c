"""The frames of a trigger action, and the light each takes where: one definition that the Decider charges to
the light budget (:mod:`.triggers`) and the action thread runs (:mod:`.trigger_actions`).

- ``confirm_fluorescence``: one snap per channel here.
- ``z_stack``: its planes (``ActionSpec.z_planes``) are all here: their light goes to this position's cell.
- ``tile_scan``: useq's ``GridRowsColumns`` centred on the stage, one field of view apart (no overlap). Its
  tiles land up to ``(rows - 1) / 2`` fields of view away, in other cells of the budget's grid: each tile's light
  is charged to the cell it lands in (:func:`planned_light`), not all of it here.

A firing is charged where it is decided; its actions run later, one after the other. If the field changed in
between (an earlier ``center_object`` moved the stage, a user's ``move_stage``, an objective switch), each action's
light is moved to the field it actually exposes before it takes any (:func:`charge_where_run`), or the action is
not run when that field's budget cannot take it: the budget holds for the fields actually lit.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import useq

from .dose import DoseBudget

__all__ = ["Field", "NotRun", "charge_where_run", "decided_field", "field_of_view_um", "give_back", "left_field",
           "planned_light", "tile_scan_plan"]

#: Where an action takes its light: ``(x µm, y µm, (width, height) µm of the field of view)``.
Field = tuple[float, float, tuple[float, float]]


class NotRun(RuntimeError):
    """An action refused where it would run, before it took any light (its outcome says ``skipped`` and why)."""


class _Action(Protocol):
    """What this module reads of a :class:`~scopecast.daemon.triggers.ActionSpec`."""

    kind: str
    channels: list[str]
    exposure_ms: float
    rows: int
    columns: int

    def z_planes(self) -> float: ...


def _grid(a: _Action, fov_um: tuple[float, float]) -> useq.GridRowsColumns:
    return useq.GridRowsColumns(rows=a.rows, columns=a.columns, fov_width=fov_um[0], fov_height=fov_um[1])


def tile_scan_plan(a: _Action, x: float, y: float, z: float, fov_um: tuple[float, float]) -> useq.MDASequence:
    """The scan a ``tile_scan`` action runs with the stage at ``(x, y, z)`` µm and a ``(width, height)`` µm field."""
    return useq.MDASequence(
        stage_positions=[useq.Position(x=x, y=y, z=z)], grid_plan=_grid(a, fov_um),
        channels=[useq.Channel(config=c, exposure=a.exposure_ms) for c in a.channels], axis_order="pgc")


def field_of_view_um(header: dict[str, Any]) -> tuple[float, float]:
    """``(width, height)`` µm of the field a result shows: its last two ``shape`` axes × ``pixel_size_um`` (a 2×
    output has half the input's pixel size: the same field). ``(0, 0)`` when the header does not say."""
    shape = header.get("shape") or []
    px = header.get("pixel_size_um")
    if len(shape) < 2 or not isinstance(px, int | float) or not math.isfinite(px) or px <= 0:
        return 0.0, 0.0
    return float(shape[-1]) * px, float(shape[-2]) * px


def planned_light(a: _Action, x: float, y: float, fov_um: tuple[float, float]) -> list[tuple[float, float, float]]:
    """``(x µm, y µm, dose)`` of every field action ``a`` exposes when decided at ``(x, y)`` with a ``fov_um``
    field of view (dose: exposure ms × channels, at full power); ``[]`` for actions that take no frames."""
    per_field = a.exposure_ms * len(a.channels)
    if not per_field:
        return []
    if a.kind == "confirm_fluorescence":
        return [(x, y, per_field)]
    if a.kind == "z_stack":
        return [(x, y, per_field * a.z_planes())]
    if a.kind == "tile_scan":
        return [(x + (p.x or 0.0), y + (p.y or 0.0), per_field) for p in _grid(a, fov_um)]
    return []


def _change(decided: Field, here: Field) -> str:
    """What changed between the field a firing was decided at and the one its action runs at, in words."""
    parts = []
    if decided[:2] != here[:2]:
        parts.append(f"the stage moved from {decided[0]:g}, {decided[1]:g} to {here[0]:g}, {here[1]:g} µm")
    if decided[2] != here[2]:
        (w0, h0), (w1, h1) = decided[2], here[2]
        parts.append(f"the field of view changed from {w0:g} × {h0:g} to {w1:g} × {h1:g} µm (objective)")
    return " and ".join(parts)


def left_field(decided: Field, here: Field, tolerance_um: float) -> str:
    """``""`` while ``here`` is the field a firing was decided at (within ``tolerance_um`` in x and y, the same field
    of view); else what changed since, in words."""
    (x0, y0, fov0), (x1, y1, fov1) = decided, here
    if abs(x1 - x0) <= tolerance_um and abs(y1 - y0) <= tolerance_um and fov0 == fov1:
        return ""
    return _change(decided, here)


def charge_where_run(budget: DoseBudget, a: _Action, decided: Field, here: Field, source: str = "triggers") -> dict:
    """Charge action ``a``'s light to the field it runs at (``here``) instead of the one its firing was decided and
    charged at (``decided``), in one step with the budget's check; ``{}`` when nothing changed, else where the
    light is now charged (for the action's outcome). Raises :class:`NotRun` naming the change and the limit when
    it does not fit there: its charge is given back, and the action must not run."""
    old, new = planned_light(a, *decided), planned_light(a, *here)
    if old == new:
        return {}
    r = budget.move(old, new, source)
    if r is not None:
        raise NotRun(f"{_change(decided, here)} since the decision: {r.reason} (its light was not charged)")
    return {"light_charged_at_um": [round(here[0], 3), round(here[1], 3)], "field_changed": _change(decided, here)}


def decided_field(position_um: tuple[float, ...], header: dict[str, Any]) -> Field:
    """The field a firing was decided (and charged) at: its position and the deciding result's field of view."""
    return (position_um[0], position_um[1], field_of_view_um(header))


def give_back(budget: DoseBudget, a: _Action, decided: Field, source: str = "triggers") -> None:
    """Take back action ``a``'s light, charged at ``decided`` with its firing, when it will not run (skipped before
    any light): a field is not refused later for light it never got."""
    budget.move(planned_light(a, *decided), [], source)
