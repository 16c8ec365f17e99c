"""The frame stream: every frame, published zero-copy on a ZeroMQ XPUB socket.

Message: ``[b"frame", header JSON, pixel buffer]`` (docs/protocol.md). The
acquisition thread sends each frame itself (:meth:`FramePublisher.__call__`
never blocks: a PUB socket drops rather than waits). Back-pressure is per
subscriber: each subscriber has its own queue of ``hwm`` messages, and a
subscriber that does not read loses its own frames, never another's. Every
frame carries ``stream_seq`` (the number of frame messages this publisher
sent before it), so a subscriber counts what it lost from the gaps (the
engine reports them as ``transport:lost``).

What a subscriber may make a publisher hold is bounded (:class:`SubscriptionCounter`): ZeroMQ keeps every
subscription in a trie at ~47 bytes per byte of topic, so a client sending many or long subscriptions would
otherwise grow the daemon without limit. Such a subscriber is disconnected, logged with the reason and
counted (``subscribers_cut``); every other subscriber is served as before.

Recording happens before publishing and never depends on this path.
:func:`decode` checks every message it is given; a malformed one raises
:class:`BadMessage` with a short ``reason`` for the drop counters.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from typing import Any

import numpy as np
import zmq

from .frames import Frame, now_ns
from .security import bind_socket, connect_socket
from .wire import WireError, dumps_strict, loads_strict

__all__ = [
    "DEFAULT_STREAM_ADDRESS", "MAX_INBOUND_BYTES", "MAX_SUBSCRIPTIONS", "MAX_TOPIC_BYTES", "THREAD_EXIT_S",
    "BadMessage", "DropCounter", "FramePublisher", "StreamStats", "StreamSubscriber", "SubscriptionCounter",
    "bound_subscriptions", "decode", "threads_ended",
]

log = logging.getLogger(__name__)

DEFAULT_STREAM_ADDRESS = "tcp://127.0.0.1:5556"

#: How long closing waits for the threads that use its sockets (they look at their stop flag every 100 ms or
#: less, so this is only reached on a badly starved machine or by a thread stuck in a call).
THREAD_EXIT_S = 30.0

#: The most topics one subscriber (one connection) may hold on a publisher at once, and the longest topic it may
#: subscribe to; every documented topic is 6 bytes or less. A subscriber beyond either is disconnected.
MAX_SUBSCRIPTIONS = 64
MAX_TOPIC_BYTES = 256
#: ZeroMQ itself disconnects a peer whose message (a subscription, a handshake) is longer, before it stores
#: it: what one message can cost before :class:`SubscriptionCounter` sees it (room for a CurveZMQ handshake).
MAX_INBOUND_BYTES = 4096
#: Subscriptions of one connection ZeroMQ reads ahead of the publisher's thread (it stores them in its trie as
#: that thread sends or receives): with :data:`MAX_INBOUND_BYTES`, what a subscriber can cost before it is cut.
_INBOUND_QUEUE = 16
#: A disconnected subscriber reconnects and subscribes again (a ZeroMQ SUB socket does): each reason is
#: logged as a warning at most this often (s), the other cuts at debug level; all are counted.
_CUT_LOG_S = 10.0


def threads_ended(threads: list[threading.Thread], what: str, timeout_s: float = THREAD_EXIT_S) -> bool:
    """Wait up to ``timeout_s`` for ``threads`` to end (their stop flag set). False, logged with ``what``,
    when one has not: the caller then leaves the sockets it uses open. A ZeroMQ socket is not thread-safe,
    and closing one under a thread still polling it can abort the whole process in a libzmq assertion."""
    deadline = time.monotonic() + timeout_s
    alive = []
    for t in threads:
        if t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive() and t is not threading.current_thread():
            alive.append(t.name)
    if alive:
        import logging

        logging.getLogger(__name__).warning("%s: thread(s) %s still running after %g s; their sockets are left "
                                            "open", what, ", ".join(alive), timeout_s)
    return not alive


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


def bound_subscriptions(sock: zmq.Socket) -> None:
    """Have ZeroMQ refuse (disconnect) a peer of the XPUB ``sock`` whose message exceeds
    :data:`MAX_INBOUND_BYTES`, and read few subscriptions of each peer ahead of the socket's thread (it stops
    reading that peer meanwhile); :meth:`SubscriptionCounter.drain` bounds the rest."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_BYTES)
    sock.setsockopt(zmq.RCVHWM, _INBOUND_QUEUE)


class SubscriptionCounter:
    """Counts subscriptions seen on an XPUB socket (``\\x01topic`` in, ``\\x00topic`` out).

    A subscriber has joined when its subscription arrived here, so clients and
    tests can wait for ``count`` instead of sleeping (ZeroMQ's slow joiner).

    It also bounds what each subscriber holds: one that subscribes to a topic longer than
    :data:`MAX_TOPIC_BYTES` or holds more than :data:`MAX_SUBSCRIPTIONS` topics at once is disconnected
    (ZeroMQ then drops all its subscriptions), logged with the reason and counted in ``cut``
    (``"too_long"`` / ``"too_many"``). Subscribers are told apart by the connection each subscription
    came on (ZeroMQ's ``SRCFD``).
    """

    def __init__(self) -> None:
        self.by_topic: collections.Counter[bytes] = collections.Counter()
        self.cut: collections.Counter[str] = collections.Counter()
        self._held: dict[int, tuple[int, set[bytes]]] = {}  # connection fd -> (its socket's inode, topics)
        self._logged: dict[str, float] = {}

    @property
    def count(self) -> int:
        """Active subscriptions (one per subscriber and topic)."""
        return sum(v for v in self.by_topic.values() if v > 0)

    def of(self, *topics: str) -> int:
        """Active subscriptions to these topics (results: ``of("result", "shm")``, inline or shared memory)."""
        return sum(max(self.by_topic[t.encode()], 0) for t in topics)

    def receiving(self, topic: str) -> bool:
        """Whether a subscriber would receive ``topic`` (ZeroMQ matches subscriptions as prefixes: ``b""``
        takes every topic)."""
        t = topic.encode()
        return any(n > 0 and t.startswith(k) for k, n in list(self.by_topic.items()))

    def drain(self, sock: zmq.Socket) -> None:
        """Take in every (un)subscription waiting on ``sock``; disconnect subscribers beyond the bounds."""
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = frame.bytes
            if not msg or msg[0] not in (0, 1):
                continue
            topic, on = msg[1:], msg[0] == 1
            n = self.by_topic[topic] + (1 if on else -1)
            if n:
                self.by_topic[topic] = n
            else:
                del self.by_topic[topic]  # no key kept for topics nobody holds (cut subscribers' long ones)
            self._hold(frame, topic, on)

    def _hold(self, frame: zmq.Frame, topic: bytes, on: bool) -> None:
        """Note ``topic`` as held (or no longer) by the connection ``frame`` came on; cut it beyond the bounds.
        ZeroMQ's own unsubscriptions for a connection that ended name none (fd -1) and change nothing here."""
        fd = _source_fd(frame)
        inode = _inode(fd)
        if inode is None:
            return
        held = self._held.get(fd)
        if held is None or held[0] != inode:  # a new connection (its fd number may be an old one's)
            held = self._held[fd] = (inode, set())
        topics = held[1]
        if not on:
            topics.discard(topic)
            return
        topics.add(topic)
        if len(topic) > MAX_TOPIC_BYTES:
            reason, why = "too_long", f"a subscription of {len(topic)} bytes, longer than the {MAX_TOPIC_BYTES} allowed"
        elif len(topics) > MAX_SUBSCRIPTIONS:
            reason, why = "too_many", f"more than the {MAX_SUBSCRIPTIONS} subscriptions one subscriber may hold"
        else:
            return
        del self._held[fd]
        peer = _disconnect(fd, inode)
        if peer is None:  # gone already
            return
        self.cut[reason] += 1
        now = time.monotonic()
        quiet = now - self._logged.get(reason, -_CUT_LOG_S) < _CUT_LOG_S
        if not quiet:
            self._logged[reason] = now
        log.log(logging.DEBUG if quiet else logging.WARNING, "stream: disconnected subscriber %s: %s "
                "(%d subscriber(s) cut for this so far)", peer, why, self.cut[reason])


def _source_fd(frame: zmq.Frame) -> int:
    """The file descriptor of the connection ``frame`` came on; -1 when ZeroMQ names none."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (AttributeError, zmq.ZMQError, TypeError, ValueError):
        return -1


def _inode(fd: int) -> int | None:
    """The inode of the socket open on ``fd`` (tells a connection from a later one given the same number)."""
    if fd < 0:
        return None
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


def _disconnect(fd: int, inode: int) -> str | None:
    """Shut down the connection on ``fd`` if it is still the socket ``inode`` (ZeroMQ then closes it and drops
    its subscriptions); returns its peer's address, or None where it is gone."""
    try:
        conn = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    with conn:
        if os.fstat(conn.fileno()).st_ino != inode:
            return None
        try:
            peer = conn.getpeername()
        except OSError:
            peer = "?"
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            return None
    return ":".join(map(str, peer)) if isinstance(peer, tuple) else str(peer or "(local)")


class FramePublisher:
    """Publish frames on ``address`` from the caller's thread, without ever blocking it.

    ``publisher(frame)`` sends at once (zero-copy, ``NOBLOCK``): a PUB socket never
    blocks, a subscriber whose queue (``hwm`` messages) is full loses that frame
    alone. A sender thread used to take each frame from a queue; the hand-over cost
    the acquisition thread a wake-up and a GIL hand-off per frame, and the frame
    ~0.3 ms on a busy machine. A lock makes the socket safe to share: a small
    housekeeping thread takes in (un)subscriptions and sends ``[b"stats", JSON]``
    every ``stats_interval_s``.
    """

    def __init__(self, address: str = DEFAULT_STREAM_ADDRESS, hwm: int = 64,
                 stats_interval_s: float = 1.0, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, so joins are countable
        self.sock.setsockopt(zmq.LINGER, 0)
        bound_subscriptions(self.sock)
        self.address = bind_socket(self.sock, address)
        self.subscriptions = SubscriptionCounter()
        self._stream_seq = 0
        self.stats = StreamStats()
        self.extra_stats: dict[str, Any] = {}
        self._lock = threading.Lock()  # the socket and the sequence number
        self._closed = False
        self._stop = threading.Event()
        self._interval = stats_interval_s
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self._thread.start()

    def __call__(self, frame: Frame) -> None:
        """Send ``frame`` now (any thread; never blocks beyond a concurrent send)."""
        with self._lock:
            if self._closed:
                return
            frame.header.t_published_ns = now_ns()
            head = frame.header.to_dict()
            head["stream_seq"] = self._stream_seq
            self._stream_seq += 1
            self.sock.send_multipart([b"frame", dumps_strict(head), frame.data], flags=zmq.NOBLOCK, copy=False)
            self.stats.published += 1
            if self.sock.get(zmq.EVENTS) & zmq.POLLIN:  # sending took in subscriptions: check them now
                self.subscriptions.drain(self.sock)

    def publish_event(self, event: dict[str, Any]) -> None:
        """Send a ``[b"event", JSON]`` message (smart-acquisition notifications); never blocks."""
        msg = dumps_strict({"t_ns": now_ns(), **event})
        with self._lock:
            if not self._closed:
                self.sock.send_multipart([b"event", msg], flags=zmq.NOBLOCK)

    def close(self) -> None:
        self._stop.set()
        ended = threads_ended([self._thread], "frame publisher")
        with self._lock:
            self._closed = True
            if ended:
                self.sock.close(linger=0)

    def _run(self) -> None:
        next_stats = time.monotonic() + self._interval
        while not self._stop.wait(0.05):  # (un)subscriptions are counted within 50 ms
            with self._lock:
                self.subscriptions.drain(self.sock)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + self._interval
                self.send_stats()

    def send_stats(self) -> None:
        msg = {"source": "daemon", "t_ns": now_ns(), "subscribers": self.subscriptions.count,
               "subscribers_cut": dict(self.subscriptions.cut), **self.stats.to_dict(), **self.extra_stats}
        with self._lock:
            if not self._closed:
                self.sock.send_multipart([b"stats", dumps_strict(msg)], flags=zmq.NOBLOCK)


#: Pixel types a stream message may carry (little-endian).
STREAM_DTYPES = frozenset({"uint8", "uint16", "uint32", "int16", "int32", "float32", "float64"})
_MAX_DIMS, _MAX_SIDE = 4, 1 << 16


class BadMessage(ValueError):
    """A stream message that cannot be used; ``reason`` is its drop-counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode(parts: list[bytes] | list[zmq.Frame]) -> tuple[str, dict[str, Any], Any]:
    """Decode a stream message into ``(topic, header, pixels or None)``.

    ``frame`` and ``result`` messages carry a pixel buffer described by the
    header's ``dtype`` (one of :data:`STREAM_DTYPES`) and ``shape``; ``stats``,
    ``event`` and ``error`` messages do not. Raises :class:`BadMessage` with
    reason ``undecodable`` (not a topic + strict JSON object), ``bad_header``
    (dtype or shape missing or invalid) or ``size_mismatch`` (the buffer is not
    shape × itemsize bytes).
    """
    if len(parts) not in (2, 3):
        raise BadMessage("undecodable", f"a stream message has 2 or 3 parts, got {len(parts)}")
    try:
        topic = bytes(parts[0]).decode("ascii")
        header = loads_strict(parts[1].buffer if isinstance(parts[1], zmq.Frame) else parts[1])
    except (UnicodeDecodeError, WireError) as e:
        raise BadMessage("undecodable", f"undecodable stream message: {e}") from None
    if not isinstance(header, dict):
        raise BadMessage("undecodable", "stream header is not a JSON object")
    if len(parts) == 2:
        return topic, header, None
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in STREAM_DTYPES:
        raise BadMessage("bad_header", f"stream header dtype {str(dtype)[:32]!r} is not one of {sorted(STREAM_DTYPES)}")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= _MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= _MAX_SIDE for n in shape)):
        raise BadMessage("bad_header", f"stream header shape {str(shape)[:64]} is not a list of 1-{_MAX_DIMS} sizes")
    buf = parts[2].buffer if isinstance(parts[2], zmq.Frame) else memoryview(parts[2])
    dt = np.dtype(dtype).newbyteorder("<")
    if buf.nbytes != int(np.prod(shape)) * dt.itemsize:
        raise BadMessage("size_mismatch", f"buffer of {buf.nbytes} bytes does not hold {dtype} {shape}")
    return topic, header, np.frombuffer(buf, dtype=dt).reshape(shape)


class StreamSubscriber:
    """Subscribe to a daemon's frame stream or an engine's result stream.

    ``recv(timeout_s)`` returns ``(topic, header, pixels)`` or None on timeout. Results from an engine on
    this machine come through its shared-memory ring (:class:`~.shm_results.SharedResults`: the ``shm``
    topic, returned as ``result`` with a copy of the pixels), from elsewhere inline.
    """

    def __init__(self, address: str, topics: tuple[str, ...] = ("frame", "result", "stats", "error"),
                 hwm: int = 64, context: zmq.Context | None = None) -> None:
        from .shm_results import SharedResults

        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            if t != "result":
                self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.results = SharedResults(self.sock, address) if "result" in topics else None
        connect_socket(self.sock, address)
        self.address = address

    def recv(self, timeout_s: float | None = None) -> tuple[str, dict[str, Any], Any] | None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait is not None and not self.sock.poll(int(wait * 1000)):
                return None
            msg = decode(self.sock.recv_multipart(copy=False))
            if self.results is None:
                return msg
            out = self.results.resolve(*msg)
            if out is not None:
                return out

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.results is not None:
            self.results.close()

    def __enter__(self) -> StreamSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
