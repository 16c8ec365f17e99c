"""What a scan (a useq ``MDASequence``) plans, counted from its axes without making its events: its frames and
the frames of each of its bundles (every channel and plane at one position, grid tile and time point).

Counted as useq makes the events: a channel with ``acquire_every`` > 1 takes only the time points it divides,
one without ``do_stack`` only the middle plane of the z plan. A bundle's ``bundle_size`` must be the frames it
really gets: the engine ends a bundle when that many came (its planes still incomplete are then counted and
named, not left open for ever).
"""

from __future__ import annotations

import math
from typing import Any

import useq

__all__ = ["MAX_SEQUENCE_DAYS", "MAX_SEQUENCE_EVENTS", "MAX_SEQUENCE_POINTS", "bundle_size", "channel_frames",
           "sequence_size"]

#: The most frames one scan or pair capture may plan (500 GB of 512² uint16 frames): a plan of more is
#: refused at the request, counted from its axes without building its events
MAX_SEQUENCE_EVENTS = 1_000_000
#: The most points (combinations of its axes) one scan may walk: useq walks every one, the planes and time points
#: a channel skips included (~8 µs each), so a plan that skips nearly all of them still costs time for each
MAX_SEQUENCE_POINTS = 10 * MAX_SEQUENCE_EVENTS
#: The latest a scan's last time point may start
MAX_SEQUENCE_DAYS = 365


def channel_frames(seq: useq.MDASequence) -> list[tuple[int, int]]:
    """``(acquire_every, planes)`` of each of ``seq``'s channels: the time points it takes are those
    ``acquire_every`` divides, and at each it takes ``planes`` frames per position and grid tile (every plane
    of the z plan, or only the middle one without ``do_stack``; 1 without a z plan)."""
    n_z = max(seq.sizes.get("z", 1), 1)
    return [(max(ch.acquire_every, 1), n_z if ch.do_stack else 1) for ch in seq.channels]


def bundle_size(channels: list[tuple[int, int]], t: int) -> int:
    """The frames of a bundle at time point ``t`` (0 without a time plan) of a scan whose
    :func:`channel_frames` are ``channels``; at least 1."""
    return max(sum(planes for every, planes in channels if t % every == 0), 1)


def sequence_size(seq: useq.MDASequence) -> int:
    """The frames ``seq`` plans, counted from its axes without making its events, as useq makes them (a channel
    that skips time points or z-stacks takes fewer: :func:`channel_frames`); :data:`MAX_SEQUENCE_EVENTS` bounds
    them, :data:`MAX_SEQUENCE_POINTS` the product of its axes (what useq walks).

    ``ValueError`` naming the problem for a plan this daemon refuses: a position with a sequence of its
    own, an autofocus plan (no hardware autofocus), an axis it cannot count (a time plan that never ends, a
    grid without a field of view), more than :data:`MAX_SEQUENCE_EVENTS` frames or :data:`MAX_SEQUENCE_POINTS`
    points, or a last time point beyond :data:`MAX_SEQUENCE_DAYS`."""
    for i, pos in enumerate(seq.stage_positions):
        if pos.sequence is not None:
            raise ValueError(f"stage position {i} has a sequence of its own; per-position sequences are not "
                             "supported: run one scan per position")
    if seq.autofocus_plan is not None:
        # its events are not images: the executor would snap each as an extra frame of the bundle (bundle_index
        # past bundle_size on the stream, the first channel's recorded frame overwritten)
        raise ValueError("the sequence has an autofocus_plan; hardware autofocus is not supported by scopecast "
                         "scans: remove it (focus first, or give the positions' z)")
    axes = {"positions": max(len(seq.stage_positions), 1), "channels": len(seq.channels)}
    for name, plan, count in (("grid", seq.grid_plan, "num_positions"), ("time", seq.time_plan, "num_timepoints"),
                              ("z", seq.z_plan, "num_positions")):
        if plan is None:
            continue
        try:
            axes[name] = int(getattr(plan, count)())
        except (ArithmeticError, TypeError, ValueError) as e:
            hint = " (an interval of 0 needs loops, not a duration)" if name == "time" else ""
            raise ValueError(f"cannot count the {name} plan's points{hint}: {type(e).__name__}: {e}") from None
    sizes = " x ".join(f"{v} {k}" for k, v in axes.items())
    if (points := math.prod(axes.values())) > MAX_SEQUENCE_POINTS:
        raise ValueError(f"the plan has {points} points ({sizes}), more than the {MAX_SEQUENCE_POINTS} one scan "
                         "may walk (useq makes each, the planes and time points its channels skip included): "
                         "split it into several scans")
    n_t = axes.get("time", 1)
    per_tile = sum(planes * -(-n_t // every) for every, planes in channel_frames(seq))  # time points it divides
    total = axes["positions"] * axes.get("grid", 1) * per_tile
    if total > MAX_SEQUENCE_EVENTS:
        skips = ", less the planes and time points its channels skip" if total < points else ""
        raise ValueError(f"the plan has {total} frames ({sizes}{skips}), more than the {MAX_SEQUENCE_EVENTS} one "
                         "scan may have: split it into several scans")
    last = _last_time_point_s(seq.time_plan) if seq.time_plan is not None else 0.0
    if last > MAX_SEQUENCE_DAYS * 86400:
        raise ValueError(f"the time plan's last point starts after {last / 86400:.0f} days, beyond the "
                         f"{MAX_SEQUENCE_DAYS} days one scan may last")
    return total


def _last_time_point_s(plan: Any) -> float:
    """When a useq time plan's last point starts (s after the first); phases add up."""
    phases = getattr(plan, "phases", None)
    if phases is not None:
        return sum(_last_time_point_s(p) for p in phases)
    try:
        duration = getattr(plan, "duration", None)
    except OverflowError:  # beyond any date
        return math.inf
    return duration.total_seconds() if duration is not None else 0.0
