"""The frame stream: every frame, published zero-copy on a ZeroMQ XPUB socket.

Message: ``[b"frame", header JSON, pixel buffer]`` (docs/protocol.md). The
acquisition thread only appends to a bounded queue (:meth:`FramePublisher.__call__`
never blocks); a sender thread drains it. Drops are explicit and counted by
stage and reason:

- ``publish:queue_full`` — the sender fell behind the camera; whole oldest
  bundles are dropped first, so consumers keep seeing the newest ones;
- ``publish:subscriber_slow`` — a subscriber's high-water mark was reached
  (``XPUB_NODROP`` makes this visible instead of silent).

Recording happens before publishing and never depends on this path.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any

import zmq

from .frames import Frame, now_ns

__all__ = [
    "DEFAULT_STREAM_ADDRESS", "DropCounter", "FramePublisher", "StreamStats", "StreamSubscriber", "decode",
]

DEFAULT_STREAM_ADDRESS = "tcp://127.0.0.1:5556"


class DropCounter:
    """Thread-safe counts of dropped items keyed ``"<stage>:<reason>"``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = collections.Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class StreamStats:
    """Counters of one publisher, as sent in ``stats`` messages."""

    def __init__(self) -> None:
        self.published = 0
        self.drops = DropCounter()

    def to_dict(self) -> dict[str, Any]:
        return {"frames_published": self.published, "dropped": self.drops.snapshot(),
                "dropped_total": self.drops.total}


class FramePublisher:
    """Publish frames on ``address`` without ever blocking the caller.

    Parameters
    ----------
    queue_frames:
        Frames that may wait for the sender; beyond that the oldest bundle goes.
    hwm:
        ZeroMQ send high-water mark per subscriber (messages).
    stats_interval_s:
        Period of ``[b"stats", JSON]`` messages.
    """

    def __init__(self, address: str = DEFAULT_STREAM_ADDRESS, queue_frames: int = 64, hwm: int = 64,
                 stats_interval_s: float = 1.0, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.stats = StreamStats()
        self.extra_stats: dict[str, Any] = {}
        self._queue: collections.deque[Frame] = collections.deque()
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._max = queue_frames
        self._cv = threading.Condition()
        self._stop = False
        self._interval = stats_interval_s
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._thread.start()

    # called from the acquisition thread
    def __call__(self, frame: Frame) -> None:
        with self._cv:
            q = self._queue
            if len(q) >= self._max:
                oldest = q[0].header.bundle_id
                dropped = 0
                while q and q[0].header.bundle_id == oldest:
                    q.popleft()
                    dropped += 1
                self.stats.drops.add("publish:queue_full", dropped)
            q.append(frame)
            self._cv.notify()

    def publish_event(self, event: dict[str, Any]) -> None:
        """Queue a ``[b"event", JSON]`` message (smart-acquisition notifications); never blocks."""
        with self._cv:
            self._events.append({"t_ns": now_ns(), **event})
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=2)
        self.sock.close(linger=0)

    def _run(self) -> None:
        next_stats = time.monotonic() + self._interval
        while True:
            with self._cv:
                while not self._queue and not self._events and not self._stop:
                    if not self._cv.wait(timeout=max(next_stats - time.monotonic(), 0.01)):
                        break
                if self._stop:
                    return
                frame = self._queue.popleft() if self._queue else None
                events = list(self._events)
                self._events.clear()
            self._drain_subscriptions()
            if frame is not None:
                self._send(frame)
            for ev in events:
                try:
                    self.sock.send_multipart([b"event", json.dumps(ev).encode()], flags=zmq.NOBLOCK)
                except zmq.Again:
                    self.stats.drops.add("publish:subscriber_slow")
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self._interval
                self.send_stats()

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _send(self, frame: Frame) -> None:
        frame.header.t_published_ns = now_ns()
        head = json.dumps(frame.header.to_dict(), separators=(",", ":")).encode()
        try:
            self.sock.send_multipart([b"frame", head, frame.data], flags=zmq.NOBLOCK, copy=False)
            self.stats.published += 1
        except zmq.Again:
            self.stats.drops.add("publish:subscriber_slow")

    def send_stats(self) -> None:
        msg = {"source": "daemon", "t_ns": now_ns(), **self.stats.to_dict(), **self.extra_stats}
        try:
            self.sock.send_multipart([b"stats", json.dumps(msg).encode()], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass


def decode(parts: list[bytes] | list[zmq.Frame]) -> tuple[str, dict[str, Any], Any]:
    """Decode a stream message into ``(topic, header, pixels or None)``.

    ``frame`` and ``result`` messages carry a pixel buffer described by the
    header's ``dtype`` and ``shape``; ``stats`` and ``error`` messages do not.
    """
    import numpy as np

    topic = bytes(parts[0]).decode()
    header = json.loads(bytes(parts[1]))
    data = None
    if len(parts) > 2:
        buf = parts[2].buffer if isinstance(parts[2], zmq.Frame) else parts[2]
        data = np.frombuffer(buf, dtype=header["dtype"]).reshape(header["shape"])
    return topic, header, data


class StreamSubscriber:
    """Subscribe to a daemon's frame stream or an engine's result stream.

    ``recv(timeout_s)`` returns ``(topic, header, pixels)`` or None on timeout.
    """

    def __init__(self, address: str, topics: tuple[str, ...] = ("frame", "result", "stats", "error"),
                 hwm: int = 64, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(address)
        self.address = address

    def recv(self, timeout_s: float | None = None) -> tuple[str, dict[str, Any], Any] | None:
        if timeout_s is not None and not self.sock.poll(int(timeout_s * 1000)):
            return None
        return decode(self.sock.recv_multipart(copy=False))

    def close(self) -> None:
        self.sock.close(linger=0)

    def __enter__(self) -> StreamSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
