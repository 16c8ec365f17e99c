"""Request-time checks of a scan plan against the rig: its channels and detectors, and its stage moves
against the travel the stages declare, so that a plan that would fail partway is refused before anything
moves (``ValueError`` naming the problem)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import useq

__all__ = ["check_devices", "check_travel", "planned_ranges"]


def check_devices(seq: useq.MDASequence, channels: Iterable[str], detectors: Iterable[str]) -> None:
    """``ValueError`` for a plan without channels, or naming a channel or detector the rig does not have."""
    known, dets = list(channels), list(detectors)
    for ch in seq.channels:
        if ch.config not in known:
            raise ValueError(f"unknown channel {ch.config!r} in sequence; channels: {', '.join(known)}")
        if ch.camera and ch.camera not in dets:
            raise ValueError(f"unknown detector {ch.camera!r} for channel {ch.config!r}; "
                             f"detectors: {', '.join(dets)}")
    if not seq.channels:
        raise ValueError("the sequence has no channels")


def _span(values: Iterable[float | None]) -> tuple[float, float] | None:
    vals = [float(v) for v in values if v is not None]
    return (min(vals), max(vals)) if vals else None


def planned_ranges(seq: useq.MDASequence) -> dict[str, tuple[float, float]]:
    """The lowest and highest target (µm) of each stage axis ``"x"``, ``"y"``, ``"z"`` over the events
    ``seq`` makes, computed as useq does (a relative grid adds the position's x/y; a z plan adds the
    channel's ``z_offset`` and, when relative, the position's z; a channel without ``do_stack`` takes the
    middle plane only) without making the events. An axis no event moves is absent."""
    positions: list[Any] = list(seq.stage_positions) or [None]
    grid = list(seq.grid_plan) if seq.grid_plan is not None else []
    rel_grid = seq.grid_plan is not None and seq.grid_plan.is_relative
    xs: list[float | None] = []
    ys: list[float | None] = []
    for pos in positions:
        px, py = getattr(pos, "x", None), getattr(pos, "y", None)
        if not grid:
            xs.append(px)
            ys.append(py)
        for g in grid:
            xs.append(g.x + (px or 0.0) if rel_grid and g.x is not None else g.x)
            ys.append(g.y + (py or 0.0) if rel_grid and g.y is not None else g.y)
    zs: list[float | None] = []
    planes = [float(v) for v in seq.z_plan] if seq.z_plan is not None else []
    for pos in positions:
        if not planes:
            zs.append(getattr(pos, "z", None))
            continue
        base = (getattr(pos, "z", None) or 0.0) if seq.z_plan.is_relative else 0.0  # type: ignore[union-attr]
        for ch in seq.channels or [None]:
            used = planes if ch is None or ch.do_stack else [planes[len(planes) // 2]]
            offset = (ch.z_offset or 0.0) if ch is not None else 0.0
            zs += [min(used) + offset + base, max(used) + offset + base]
    spans = {"x": _span(xs), "y": _span(ys), "z": _span(zs)}
    return {k: v for k, v in spans.items() if v is not None}


def check_travel(seq: useq.MDASequence, travel: Mapping[str, tuple[float, float]]) -> None:
    """``ValueError`` naming the axis, the planned range and the travel where a target of ``seq`` lies
    outside ``travel`` (by axis, µm: ``MicroscopeBackend.travel_um``; an axis absent from it is not checked:
    its adapter refuses the move when the job reaches it)."""
    names = {"x": "stage x", "y": "stage y", "z": "focus (z)"}
    hints = {"x": "the positions, or the grid around them", "y": "the positions, or the grid around them",
             "z": "move_stage first, or give the positions' z"}
    for axis, (lo, hi) in planned_ranges(seq).items():
        if axis not in travel:
            continue
        tlo, thi = travel[axis]
        if lo < tlo or hi > thi:
            raise ValueError(f"the plan moves the {names[axis]} over [{lo:g}, {hi:g}] µm, outside its travel "
                             f"[{tlo:g}, {thi:g}] µm; nothing was moved or acquired: shift or shorten the "
                             f"range ({hints[axis]})")
