"""The frames a firing's actions read: the deciding bundle (a pair's label-free half) and a ``save_window``'s frames.

They come from the triggers' ring of recent frames (:class:`~scopecast.daemon.frame_ring.FrameRing`: the last
``ring_buffer_s`` but at most :data:`RING_BYTES`, about one second of a free-running live at 512² on the simulator,
less at larger frames) and are taken when the firing is decided. An engine on a busy core decides later than the ring
holds, so the ring is a :class:`~scopecast.daemon.spot_check_pins.PinningRing`, as the spot checks': on each result
of the live job :func:`repin_for_next` pins the bundles the engine's next result can be of, and the deciding bundle
is found whole however long the model takes. Each model pins for itself (its name the pins' owner): with triggers
on two models, the faster one's results would otherwise release the bundle the slower one is computing. Frames
before the deciding bundle (``save_window`` ``before_s``) are not pinned: a window the ring could not hold says which
limit dropped its start (:func:`window_warning`).
"""

from __future__ import annotations

from typing import Any

from .frame_ring import Bucket, FrameRing
from .frames import Frame, now_ns
from .spot_check_pins import PinningRing
from .triggers import ActionSpec, Decision, TriggerConfig, TriggerSpec

__all__ = ["FRAME_ACTIONS", "RING_BYTES", "after_warning", "make_ring", "pair_warning", "repin_for_next",
           "take_frames", "window_warning"]

#: Actions that read frames of the ring: the deciding bundle, or a window around it.
FRAME_ACTIONS = frozenset({"confirm_fluorescence", "save_window"})
#: The triggers' ring holds at most this many bytes of frames (its pins at most ``spot_check_pins.MAX_PINNED_BYTES``
#: more per model the triggers watch, of frames the ring dropped).
RING_BYTES = 512 << 20

#: A save_window's frames, as taken at the decision: (the frames before the event, the bucket after it, warning).
Window = tuple[list[Frame], Bucket, str]


def make_ring(config: TriggerConfig) -> PinningRing:
    """The triggers' ring: ``ring_buffer_s`` of frames, at most :data:`RING_BYTES`, and pins."""
    return PinningRing(config.ring_buffer_s, RING_BYTES)


def reads_frames(config: TriggerConfig) -> bool:
    """Whether any trigger's actions read frames of the ring (only then are bundles pinned)."""
    return any(a.kind in FRAME_ACTIONS for t in config.triggers for a in t.actions)


def repin_for_next(ring: PinningRing, header: dict[str, Any], live_acquisition_id: str | None) -> None:
    """On a result: if it is of the running live job (``live_acquisition_id``), pin the bundles the next result of
    its model (``header["model"]``) can be of, and release those that model went past (:meth:`PinningRing.repin`;
    other models' pins stay); a result of another acquisition (a snap, a scan's plane) changes nothing."""
    acquisition_id = str(header.get("acquisition_id"))
    if live_acquisition_id is None or acquisition_id != live_acquisition_id:
        return
    ring.repin(acquisition_id, int(header.get("bundle_id", -1)), None, owner=str(header.get("model")))


def take_frames(ring: FrameRing, d: Decision, spec: TriggerSpec) -> tuple[list[Frame], dict[int, Window]]:
    """What the firing ``d`` of trigger ``spec`` will read, taken from ``ring`` (and its pins) now: the deciding
    bundle, and per ``save_window`` action (by id) its frames before the event (the deciding bundle included), the
    bucket that collects those after it (at most the ring's bytes: :func:`after_warning`), and a warning when the
    ring had already dropped some of the window's start or of the deciding bundle (``""`` otherwise)."""
    bundle = ring.bundle(d.acquisition_id, d.bundle_id)
    start = min((x.header.t_acquired_ns for x in bundle), default=d.t_ns)  # the deciding bundle's first frame
    missing = len(set(d.source_seqs) - {x.header.seq for x in bundle})
    windows = {}
    for a in spec.actions:
        if a.kind == "save_window":
            t0 = start - int(a.before_s * 1e9)
            warning = (window_warning(ring, a, d, start) if a.before_s and ring.lost_since(t0)
                       else pair_warning(ring, missing, len(d.source_seqs), (now_ns() - d.t_ns) / 1e9, "window")
                       if missing else "")
            windows[id(a)] = (ring.window(t0) + bundle, ring.follow(d.t_ns + int(a.after_s * 1e9)), warning)
    return bundle, windows


def window_warning(ring: FrameRing, a: ActionSpec, d: Decision, start: int) -> str:
    """Why a ``save_window`` decided now lacks the start of the ``before_s`` before ``start`` (the deciding
    bundle's first frame): how late it was decided, how much of it the ring still held, and what to change
    (:meth:`FrameRing.advice`)."""
    lag_s = (now_ns() - d.t_ns) / 1e9
    kept_s = min(max((start - ring.dropped_ns) / 1e9, 0.0), a.before_s)
    return (f"decided {lag_s:.1f} s after the event: the ring buffer ({ring.seconds:g} s) kept only the last "
            f"{kept_s:.1f} s of the {a.before_s:g} s before it; {ring.advice()}")


def after_warning(bucket: Bucket, a: ActionSpec, t_event_ns: int) -> str:
    """Why a ``save_window`` holds less than its ``after_s`` after the event (its last frame, ``t_event_ns``): its
    frames after the event, held in memory until the window ends, reached their byte cap (``bucket.cut_ns``)."""
    kept_s = max((bucket.cut_ns - t_event_ns) / 1e9, 0.0)
    return (f"the window ends {kept_s:.2f} s after the event, not {a.after_s:g} s: its frames after the event are "
            f"held in memory until it ends, at most {bucket.max_bytes >> 20} MiB, {kept_s:.2f} s at this frame rate; "
            "give live an interval_ms or pace_from (or record the live for longer)")


def pair_warning(ring: FrameRing, missing: int, of: int, lag_s: float, what: str = "pair") -> str:
    """Why a confirmation pair (or a window: ``what``) lacks ``missing`` of the ``of`` frames of its deciding
    bundle, decided ``lag_s`` after it."""
    return (f"the ring buffer ({ring.seconds:g} s) no longer held {missing} of the {of} frames of the deciding "
            f"bundle, decided {lag_s:.1f} s after it: the {what} lacks them; {ring.advice()}")
