"""The frames of a trigger action, and the light each takes where: one definition that the Decider charges to
the light budget (:mod:`.triggers`) and the action thread runs (:mod:`.trigger_actions`).

- ``confirm_fluorescence``: one snap per channel here.
- ``z_stack``: its planes (``ActionSpec.z_planes``) are all here: their light goes to this position's cell.
- ``tile_scan``: useq's ``GridRowsColumns`` centred on the stage, one field of view apart (no overlap). Its
  tiles land up to ``(rows - 1) / 2`` fields of view away, in other cells of the budget's grid: each tile's light
  is charged to the cell it lands in (:func:`planned_light`), not all of it here.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import useq

__all__ = ["field_of_view_um", "planned_light", "tile_scan_plan"]


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
