"""The ring of recent frames that trigger actions and spot checks read (a frame sink of the acquisition engine).

It keeps the last ``seconds`` of frames but at most ``max_bytes`` of pixels: at 512² and ~1000 frames/s of a
free-running live, 512 MiB are about one second, whatever ``seconds`` says. So the ring also says what it dropped
(:attr:`FrameRing.dropped_ns`, :attr:`FrameRing.dropped_by`), and :meth:`FrameRing.lost_since` tells a reader
whether frames it wanted were among them and which limit dropped them: "raise ring_buffer_s" helps only when
the time limit did. A follower (:meth:`FrameRing.follow`: a ``save_window``'s frames after its event, held until the
window ends) is bounded in bytes too: its :class:`Bucket` stops collecting at ``max_bytes`` and says when
(:attr:`Bucket.cut_ns`), instead of holding a free-running live's ~0.5 GB a second for up to ten minutes.
"""

from __future__ import annotations

import collections
import threading

from .frames import Frame

__all__ = ["Bucket", "FrameRing"]


class Bucket(list):
    """The frames a follower collects (a list, in arrival order) until ``until_ns``, at most ``max_bytes`` of them."""

    def __init__(self, until_ns: int, max_bytes: int) -> None:
        super().__init__()
        self.until_ns, self.max_bytes, self.nbytes = until_ns, max_bytes, 0
        self.cut_ns = 0  # acquisition time of the first frame not kept for the byte cap (0: none)

    def offer(self, frame: Frame) -> None:
        """Keep ``frame`` if it is acquired by ``until_ns`` and fits the byte cap (once one does not, no later)."""
        t = frame.header.t_acquired_ns
        if t > self.until_ns or self.cut_ns:
            return
        if self.nbytes + frame.data.nbytes > self.max_bytes:
            self.cut_ns = t
            return
        self.append(frame)
        self.nbytes += frame.data.nbytes


class FrameRing:
    """The last ``seconds`` of frames, at most ``max_bytes`` of pixels (a sink of the acquisition engine)."""

    def __init__(self, seconds: float, max_bytes: int = 512 << 20) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._bytes = 0
        self._frames: collections.deque[Frame] = collections.deque()
        self._lock = threading.Lock()
        self._followers: list[Bucket] = []
        self.newest_ns = 0  # the newest frame's acquisition time
        self.dropped_ns = 0  # acquisition time of the newest frame the limits dropped (0: none dropped)
        self.dropped_by = ""  # the limit that dropped it: "time" or "bytes"

    def __call__(self, frame: Frame) -> None:
        t = frame.header.t_acquired_ns
        with self._lock:
            self._frames.append(frame)
            self.newest_ns = max(self.newest_ns, t)
            self._bytes += frame.data.nbytes
            while self._frames:
                old = self._frames[0]
                by = ("time" if t - old.header.t_acquired_ns > self.seconds * 1e9
                      else "bytes" if self._bytes > self.max_bytes else "")
                if not by:
                    break
                self._bytes -= self._frames.popleft().data.nbytes
                self.dropped_ns, self.dropped_by = max(self.dropped_ns, old.header.t_acquired_ns), by
            for bucket in self._followers:
                bucket.offer(frame)

    def window(self, start_ns: int) -> list[Frame]:
        with self._lock:
            return [f for f in self._frames if f.header.t_acquired_ns >= start_ns]

    def bundle(self, acquisition_id: str, bundle_id: int) -> list[Frame]:
        with self._lock:
            return [f for f in self._frames
                    if f.header.acquisition_id == acquisition_id and f.header.bundle_id == bundle_id]

    def follow(self, until_ns: int, max_bytes: int | None = None) -> Bucket:
        """A bucket that collects the frames acquired from now to ``until_ns``, at most ``max_bytes`` of them
        (default: the ring's own cap), until :meth:`unfollow`."""
        bucket = Bucket(until_ns, self.max_bytes if max_bytes is None else max_bytes)
        with self._lock:
            self._followers.append(bucket)
        return bucket

    def unfollow(self, bucket: list[Frame]) -> None:
        with self._lock:
            self._followers = [f for f in self._followers if f is not bucket]

    def held_s(self) -> float:
        """Seconds of frames the ring holds now (oldest to newest acquisition time)."""
        with self._lock:
            if not self._frames:
                return 0.0
            return (self._frames[-1].header.t_acquired_ns - self._frames[0].header.t_acquired_ns) / 1e9

    def lost_since(self, start_ns: int) -> bool:
        """Whether the ring has dropped a frame acquired at or after ``start_ns``."""
        return bool(self.dropped_ns) and self.dropped_ns >= start_ns

    def advice(self) -> str:
        """What keeps frames longer, in words: ``raise ring_buffer_s`` unless its byte cap dropped the latest of
        them (then live is too fast for the cap, and a longer ring would not hold more)."""
        if self.dropped_by != "bytes":
            return "raise ring_buffer_s"
        return (f"its {self.max_bytes >> 20} MiB held only the last {self.held_s():.2f} s of frames at this frame "
                "rate, so raising ring_buffer_s does not help: give live an interval_ms or pace_from")
