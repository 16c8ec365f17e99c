"""The label-free bundle of the next spot check, kept however fast live runs and however late the engine answers.

A spot check records the label-free bundle behind a result beside the real capture, and takes it from a
:class:`~scopecast.daemon.trigger_actions.FrameRing`: the last 10 s of frames, at most 256 MiB. At 512² that is 512
frames, half a second of a free-running live on the simulator (~1000 frames/s), and an engine on a busy core (or
one computing an uncertainty map) answers later than that: every check found its bundle gone.

:class:`PinningRing` is that ring plus a few *pinned* bundles, kept outside its byte cap until released. Which bundle
the engine computes next is known, within a few bundles, when it publishes a result: a worker that publishes takes
the newest complete bundle waiting for it (policy ``live``: newer ones replace it while it computes), or, when none
waits, the next to complete. So on each result of the live job, when a check may be due before the result after
next, the spot checker calls :meth:`PinningRing.repin` (else it releases every pin: between checks nothing is
pinned): the bundles older than that result's are released (the engine went past them), the result's own bundle
stays pinned while it is the one a due check would take, and the newest :data:`CANDIDATES` bundles (the one being
acquired included) are pinned: one of them is almost always the next result's. A check made releases its bundle.
Pins are bounded (:data:`MAX_PINNED` bundles, :data:`MAX_PINNED_BYTES` of frames; new candidates are not pinned
beyond them), so an engine that drops or never computes a pinned bundle costs memory for one result at most.

Pins have an *owner*: the model whose results set them (the triggers' ring serves every model the triggers watch). A
result repins and releases only its own model's pins, so a fast model, whose results are of bundles newer than the
one a slow model computes, does not release the slow model's candidates. The bounds are each owner's (one model
whose engine stalls, its pins left until its next result, takes no room from the others'); a bundle two owners pin
is held once.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from .frames import Frame
from .frame_ring import FrameRing

__all__ = ["CANDIDATES", "MAX_PINNED", "MAX_PINNED_BYTES", "MISSES_BEFORE_SKIP", "PinningRing"]

#: Bundles pinned on each result: the newest ones begun by then. Measured on the simulator at 512² (~600 frames/s,
#: 8 ms per six-channel bundle, engine on one busy core): the engine's next bundle completed 3 ms after to 22 ms
#: before (p5-p95) it published a result, i.e. within the newest 3-4 bundles; 6 leaves room for a loaded daemon.
CANDIDATES = 6
#: At most this many bundles pinned at once (the result a check waits on and the candidates for the next).
MAX_PINNED = 2 * CANDIDATES
#: At most this many bytes of frames pinned (e.g. 5 six-channel bundles of 2048² uint16): candidates beyond it are
#: not pinned. Frames still in the ring cost nothing more; only those it dropped are held by the pins alone.
MAX_PINNED_BYTES = 256 << 20
#: A due check whose result's bundle is not whole (a miss: the engine's first result, or one of a bundle not pinned)
#: waits for the next result, at most this many times in a row; then it is skipped ('label-free frames gone').
MISSES_BEFORE_SKIP = 3

Key = tuple[str, int]


class PinningRing(FrameRing):
    """A :class:`FrameRing` that also keeps pinned bundles, whole, outside its time and byte limits (see module
    docstring). A frame sink of the acquisition engine, like the ring; ``bundle`` looks in both."""

    def __init__(self, seconds: float, max_bytes: int, candidates: int = CANDIDATES, max_pinned: int = MAX_PINNED,
                 max_pinned_bytes: int = MAX_PINNED_BYTES) -> None:
        super().__init__(seconds, max_bytes)
        self.candidates, self.max_pinned, self.max_pinned_bytes = candidates, max_pinned, max_pinned_bytes
        self._recent: collections.OrderedDict[Key, list[Frame]] = collections.OrderedDict()  # newest bundles
        # owner -> its pins: the same lists as _recent (a pinned bundle being acquired fills up)
        self._pinned: dict[str, dict[Key, list[Frame]]] = {}
        self._pin_lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        super().__call__(frame)
        key = (frame.header.acquisition_id, frame.header.bundle_id)
        with self._pin_lock:
            frames = self._recent.get(key)
            if frames is None:
                frames = self._recent[key] = []
                while len(self._recent) > self.candidates:
                    self._recent.popitem(last=False)
            frames.append(frame)

    def bundle(self, acquisition_id: str, bundle_id: int) -> list[Frame]:
        """The frames of one bundle held in the ring or pinned, in acquisition order."""
        frames = {f.header.seq: f for f in super().bundle(acquisition_id, bundle_id)}
        with self._pin_lock:
            for pins in self._pinned.values():
                for f in pins.get((acquisition_id, bundle_id), ()):
                    frames.setdefault(f.header.seq, f)
        return [frames[s] for s in sorted(frames)]

    def repin(self, acquisition_id: str, bundle_id: int, keep: Key | None, owner: str = "") -> None:
        """On a result of ``owner``'s model, of bundle ``bundle_id`` of live job ``acquisition_id``: release
        ``owner``'s pins of other jobs and of earlier bundles except ``keep`` (the bundle of the result a check
        would take), then pin for ``owner`` the newest bundles of the job begun by now, the candidates for its
        engine's next result, within the bounds. Other owners' pins stay."""
        with self._pin_lock:
            mine = self._pinned.setdefault(owner, {})
            for k in [k for k in mine if k != keep and (k[0] != acquisition_id or k[1] < bundle_id)]:
                del mine[k]
            held = sum(f.data.nbytes for frames in mine.values() for f in frames)
            for k, frames in reversed(self._recent.items()):  # newest first: the likeliest
                if k[0] != acquisition_id or k[1] <= bundle_id or k in mine:
                    continue
                size = sum(f.data.nbytes for f in frames) or 1
                if len(mine) >= self.max_pinned or held + size > self.max_pinned_bytes:
                    break
                mine[k], held = frames, held + size

    def _all_pins(self) -> dict[Key, list[Frame]]:
        """Every owner's pins, each bundle once (the caller holds the pin lock)."""
        return {k: frames for pins in self._pinned.values() for k, frames in pins.items()}

    def release(self, key: Key | None = None, owner: str = "") -> None:
        """Release ``owner``'s pin of bundle ``key`` (its check was made), or every pin of ``owner``."""
        with self._pin_lock:
            if key is None:
                self._pinned.pop(owner, None)
            else:
                self._pinned.get(owner, {}).pop(key, None)

    def pins(self) -> dict[str, Any]:
        """What is pinned now, by all owners: ``{"bundles", "mib"}``."""
        with self._pin_lock:
            pinned = self._all_pins()
            nbytes = sum(f.data.nbytes for frames in pinned.values() for f in frames)
            return {"bundles": len(pinned), "mib": round(nbytes / 2**20, 1)}
