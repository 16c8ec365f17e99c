"""Recording what a trigger action or a spot check saved (a confirmation pair, a window of frames around an
event): one series per detector, sampling and place, each laid out by the action's own layout."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import replace

from .acquisition import AcquisitionEngine, moved_from
from .frames import Frame
from .recorder import Recorder

__all__ = ["pair_layout", "record_by_sampling", "window_layout"]


def window_layout(frames: list[Frame]) -> tuple[list[str], list[tuple[int, int]]]:
    """Where each of ``frames`` (in acquisition order) goes in a window recording: ``(channels, [(t, c)])``.

    One time point per bundle (``acquisition_id``, ``bundle_id``: one live cycle, or one snap), in the order
    the bundles began, as live recordings index a cycle; a channel a bundle lacks (a window that starts or
    ends mid-cycle) stays unwritten there. The channels are those of the fullest bundle, in its order, then
    any other (e.g. a confirmation snap) as first seen; a name taken twice in one bundle gets a column per
    occurrence, so no frame overwrites another.
    """
    bundles = [(f.header.acquisition_id, f.header.bundle_id) for f in frames]
    t_of = {b: t for t, b in enumerate(dict.fromkeys(bundles))}
    keys: list[tuple[str, int]] = []  # per frame: (channel, its occurrence within the frame's bundle)
    counts: dict[tuple[str, int], collections.Counter[str]] = {b: collections.Counter() for b in t_of}
    for f, b in zip(frames, bundles, strict=True):
        keys.append((f.header.channel, counts[b][f.header.channel]))
        counts[b][f.header.channel] += 1
    fullest = max(t_of, key=lambda b: (counts[b].total(), -t_of[b]))
    order = [k for k, b in zip(keys, bundles, strict=True) if b == fullest] + keys
    column = {k: c for c, k in enumerate(dict.fromkeys(order))}
    index = [(t_of[b], column[k]) for k, b in zip(keys, bundles, strict=True)]
    return [name for name, _ in column], index


def pair_layout(frames: list[Frame]) -> tuple[list[str], list[tuple[int, int]]]:
    """One time point, a channel per frame in order (a pair: the label-free bundle and the real capture)."""
    return [f.header.channel for f in frames], [(0, c) for c in range(len(frames))]


def record_by_sampling(rec: Recorder, frames: list[Frame],
                       layout: Callable[[list[Frame]], tuple[list[str], list]] = pair_layout,
                       ) -> list[tuple[list[str], list]]:
    """Write ``frames`` to ``rec`` and close it, one series per detector, sampling (a live cycle's STED
    channel, a STED capture) and place (a frame taken after a stage move, e.g. a centring within a saved window,
    starts another: :func:`moved_from`; named ``… from bundle N``), each laid out by ``layout``; returns the
    layouts (of each sampling's first place). A write that fails marks the recording incomplete
    (``complete: false`` with the error) and is raised; so is a writer that failed after the last write
    (:meth:`Recorder.raise_if_incomplete`)."""
    groups: dict[tuple, list[Frame]] = {}
    at: dict[tuple, tuple] = {}  # sampling -> the key of its group at the current place
    for f in frames:  # a bundle stays in one series: a move starts a group at a bundle's first frame
        h, sampling = f.header, (f.header.detector, tuple(f.header.shape), f.header.pixel_size_um)
        group = groups[at[sampling]] if sampling in at else None
        if group is None or (group[-1].header.bundle_id != h.bundle_id and moved_from(
                (group[0].header.stage_x_um, group[0].header.stage_y_um, group[0].header.stage_z_um), h)):
            at[sampling] = (*sampling, len(groups))
        groups.setdefault(at[sampling], []).append(f)
    layouts = []
    try:
        for n, (key, fs) in enumerate(groups.items()):
            columns, index = layout(fs)
            mods = [next(f.header.modality for f in fs if f.header.channel == c) for c in columns]
            spec = AcquisitionEngine.series_spec(fs[0], columns, mods)
            if any(k[:3] == key[:3] for k in list(groups)[:n]):  # its sampling's place after a move
                spec = replace(spec, name=f"{spec.name} from bundle {fs[0].header.bundle_id}")
            else:
                layouts.append((columns, index))
            idx = rec.add_series(spec)
            for f, (t, c) in zip(fs, index, strict=True):
                rec.write(f, idx, t, c)
    except BaseException as e:
        rec.close(error=f"{type(e).__name__}: {e}")
        raise
    finally:
        rec.close()
    rec.raise_if_incomplete()
    return layouts
