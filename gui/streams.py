"""Socket side of the GUI: newest-only stream buffers and off-thread control requests.

The GUI is a client of the documented sockets only. :class:`LatestStreams`
runs one thread that reads the daemon's frame stream and each engine's result
stream and keeps only the newest frame per channel and the newest result per
engine (and a few of the bright-field channel's, so that stains are drawn over the
frame of their own bundle). A frame of the channel the raw pane shows, or a result, replaced by a
newer one before the GUI drew it is counted as a ``display:superseded`` drop
(frames of the channels not shown are not drops). The camera never waits for
the display.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from scopecast.daemon.control import ControlClient
from scopecast.daemon.security import connect_socket, watch_handshakes
from scopecast.daemon.shm_results import SharedResults
from scopecast.daemon.stream import decode, threads_ended

__all__ = ["BASE_CHANNEL", "BASE_HISTORY_BYTES", "BASE_HISTORY_FRAMES", "Latest", "LatestStreams", "NewMessages",
           "Requester", "event_note"]

#: The label-free channel stains are drawn over ("stains over label-free").
BASE_CHANNEL = "BF"
#: Its newest frames kept (at most this many, and bytes; at least one), so that a result is drawn over its own
#: bundle's frame: results come a model's latency after their bundle, when newer frames have arrived.
BASE_HISTORY_FRAMES, BASE_HISTORY_BYTES = 64, 64 << 20
#: A message identical to one shown less than this many seconds ago is not shown again (an engine failing on every
#: bundle says so once a minute, not at the frame rate); the viewer remembers at most MESSAGES_KEPT of them.
REPEAT_QUIET_S, MESSAGES_KEPT = 60.0, 500


def event_note(event: dict[str, Any]) -> str | None:
    """The line the viewer shows for a daemon ``event`` (docs/protocol.md) that tells the user something, or None:
    a live recording near or at its cap (``recording``: at the cap live stops), spot checks stopped by the light
    budget or judging other weights of their model from now on, a trigger's ``notify``. Stamped with the time
    received, so a repeated message is shown again."""
    source, kind = event.get("source"), event.get("kind")
    if source == "spot_checks" and kind == "weights_changed":
        to = event.get("to") if isinstance(event.get("to"), dict) else {}
        text = (f"spot checks of {event.get('model', '?')}: results of other weights (sha256 "
                f"{str(to.get('model_sha256'))[:12]}, {to.get('precision')}): fidelity restarted; comparator "
                f"{event.get('comparator', '?')}")
    elif source == "spot_checks":
        if kind != "stopped":
            return None  # fidelity figures and alarms have their plot and line
        text = f"spot checks of {event.get('model', '?')} stopped: {event.get('reason', 'no reason given')}"
    elif source in ("recording", "triggers") and event.get("message"):
        text = f"{source}: {event['message']}"
    else:
        return None
    return f"{time.strftime('%H:%M:%S')} {text}"


@dataclass
class Latest:
    header: dict[str, Any]
    data: np.ndarray | None
    t_received_ns: int
    serial: int


#: The spot-check events the fidelity figure follows (a weights change clears the alarm and breaks the curves; a
#: skipped check says why no point came).
FIDELITY_KINDS = ("fidelity", "skipped", "stopped", "weights_changed")


@dataclass
class _Counters:
    frames: int = 0
    results: int = 0
    superseded: int = 0
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # source address -> last stats
    errors: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))
    # spot-check events from the daemon (fidelity of each model against the real thing), oldest first
    spot_checks: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    errors_total: int = 0  # messages ever put in ``errors``: those after the n-th are its newest ``errors_total - n``


class LatestStreams:
    """Background reader of one frame stream and any number of result streams."""

    def __init__(self, frame_address: str, result_addresses: list[str], context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self.counters = _Counters()
        self._stop = threading.Event()
        self._watches: list[threading.Thread | None] = []  # each socket's failed handshakes, said in the errors
        self._socks: dict[zmq.Socket, str] = {}
        frames = self.ctx.socket(zmq.SUB)
        for t in (b"frame", b"stats", b"event"):
            frames.setsockopt(zmq.SUBSCRIBE, t)
        frames.setsockopt(zmq.RCVHWM, 16)
        frames.setsockopt(zmq.LINGER, 0)
        self._watches.append(watch_handshakes(frames, frame_address, self._refused, self._stop))
        connect_socket(frames, frame_address)
        self._socks[frames] = frame_address
        self._shared: dict[zmq.Socket, SharedResults] = {}  # results by shared memory from local engines
        for addr in result_addresses:
            s = self.ctx.socket(zmq.SUB)
            for t in (b"stats", b"error"):
                s.setsockopt(zmq.SUBSCRIBE, t)
            self._shared[s] = SharedResults(s, addr)
            s.setsockopt(zmq.RCVHWM, 16)
            s.setsockopt(zmq.LINGER, 0)
            self._watches.append(watch_handshakes(s, addr, self._refused, self._stop))
            connect_socket(s, addr)
            self._socks[s] = addr
        self.result_addresses = list(result_addresses)
        self._frames: dict[str, Latest] = {}
        self._results: dict[str, Latest] = {}
        self._taken: set[tuple[str, int]] = set()  # the held frames ("f", serial) and results ("r") drawn
        self._base: collections.deque[Latest] = collections.deque()  # BASE_CHANNEL's newest frames, oldest first
        self._shown: str | None = None  # the raw pane's channel (None: the newest frame of any channel)
        self._serial = 0
        self._thread = threading.Thread(target=self._run, name="gui-streams", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if not threads_ended([self._thread, *filter(None, self._watches)], "viewer streams"):
            return
        for s in self._socks:
            s.close(linger=0)
        for r in self._shared.values():
            r.close()

    def _refused(self, why: str) -> None:
        """A socket's handshake failed (CurveZMQ keys on one side only, a key the server does not admit): ZeroMQ
        retries in silence and the viewer would only say "disconnected (retrying)"; the errors say why."""
        with self._lock:
            self._say(f"{time.strftime('%H:%M:%S')} {why}")

    def _say(self, message: str) -> None:
        """Add ``message`` to the errors and notices (under the lock); each one added is counted, so the viewer
        shows each arrival once, a repeat of an earlier message included."""
        self.counters.errors.append(message)
        self.counters.errors_total += 1

    def _run(self) -> None:
        poller = zmq.Poller()
        for s in self._socks:
            poller.register(s, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                try:
                    msg = decode(sock.recv_multipart(copy=False))
                    shared = self._shared.get(sock)
                    got = shared.resolve(*msg) if shared is not None else msg
                except Exception as e:  # noqa: BLE001 - show it, keep reading
                    with self._lock:
                        self._say(f"undecodable message: {e}")
                    continue
                if got is not None:
                    self._store(self._socks[sock], *got)

    def _store(self, source: str, topic: str, header: dict, data: Any) -> None:
        now = time.time_ns()
        with self._lock:
            self._serial += 1
            c = self.counters
            if topic == "frame":
                key = header.get("channel") or "(current)"
                old = self._frames.get(key)
                if old is not None and ("f", old.serial) not in self._taken and self._shown in (None, key):
                    c.superseded += 1
                self._frames[key] = Latest(header, data, now, self._serial)
                if key == BASE_CHANNEL:
                    self._keep_base(self._frames[key])
                c.frames += 1
            elif topic == "result":
                old = self._results.get(source)
                if old is not None and ("r", old.serial) not in self._taken:
                    c.superseded += 1
                self._results[source] = Latest(header, data, now, self._serial)
                c.results += 1
            elif topic == "stats":
                c.stats[source] = header
            elif topic == "error":
                self._say(f"{header.get('source', 'engine')}: {header.get('message')}")
            elif topic == "event":
                if header.get("source") == "spot_checks" and header.get("kind") in FIDELITY_KINDS:
                    c.spot_checks.append(header)
                note = event_note(header)
                if note:
                    self._say(note)

    def frame(self, channel: str | None, raw_pane: bool = True) -> Latest | None:
        """Newest frame of ``channel`` (any channel when None), marked as displayed. ``raw_pane``: the raw pane
        shows ``channel`` from now on, so only its frames replaced before being displayed count as superseded."""
        with self._lock:
            if raw_pane:
                self._shown = channel or None
            if channel is None and self._frames:
                item = max(self._frames.values(), key=lambda x: x.serial)
            else:
                item = self._frames.get(channel or "")
            if item is not None:
                self._take("f", item)
            return item

    def _take(self, kind: str, item: Latest) -> None:
        """Mark ``item`` (a held frame, ``kind`` "f", or result, "r") drawn. Only the items held (the newest per
        channel and per engine) can be superseded, so only their marks are kept: the set is as small as the
        channels and engines, never one entry per frame drawn (a viewer without engines once grew it so)."""
        held = {("f", x.serial) for x in self._frames.values()} | {("r", x.serial) for x in self._results.values()}
        self._taken = (self._taken & held) | {(kind, item.serial)}

    def _keep_base(self, item: Latest) -> None:
        """Keep ``item`` among the base channel's newest frames (BASE_HISTORY_FRAMES and _BYTES, at least one)."""
        self._base.append(item)
        size = sum(x.data.nbytes for x in self._base if x.data is not None)
        while len(self._base) > 1 and (size > BASE_HISTORY_BYTES or len(self._base) > BASE_HISTORY_FRAMES):
            old = self._base.popleft()
            size -= old.data.nbytes if old.data is not None else 0

    def base_of(self, source_seqs: Any) -> Latest | None:
        """The BASE_CHANNEL frame of a result's bundle (the one whose ``seq`` is among its ``source_seqs``), or
        None: the bundle has none, or it is older than the frames kept."""
        seqs = set(source_seqs) if isinstance(source_seqs, list) else set()
        with self._lock:
            return next((x for x in reversed(self._base) if x.header.get("seq") in seqs), None)

    def channels(self) -> list[str]:
        with self._lock:
            return sorted(self._frames)

    def result(self, address: str) -> Latest | None:
        with self._lock:
            item = self._results.get(address)
            if item is not None:
                self._take("r", item)
            return item

    def snapshot(self) -> _Counters:
        with self._lock:
            c = self.counters
            return _Counters(c.frames, c.results, c.superseded, dict(c.stats), collections.deque(c.errors),
                             collections.deque(c.spot_checks), c.errors_total)


class NewMessages:
    """Which errors and notices the viewer shows: each arrival once (a snapshot repeats the newest
    ``errors``), except a repeat of a message shown less than REPEAT_QUIET_S ago. It remembers at most ``kept``
    messages (the most recently shown), so it never grows with the session, and an error that comes back after a
    quiet while is shown again."""

    def __init__(self, kept: int = MESSAGES_KEPT) -> None:
        self.kept = kept
        self._total = 0  # ``errors_total`` of the last snapshot read
        self._shown: collections.OrderedDict[str, float] = collections.OrderedDict()  # message -> when shown

    def new(self, counters: _Counters, now: float) -> list[str]:
        """The messages of ``counters`` (a snapshot) that arrived since the last call and are to be shown,
        oldest first (``now``: time.monotonic())."""
        fresh = max(min(counters.errors_total - self._total, len(counters.errors)), 0)
        self._total = counters.errors_total
        out = []
        for msg in list(counters.errors)[len(counters.errors) - fresh:]:
            if now - self._shown.get(msg, -math.inf) < REPEAT_QUIET_S:
                continue
            self._shown[msg] = now
            self._shown.move_to_end(msg)
            if len(self._shown) > self.kept:
                self._shown.popitem(last=False)
            out.append(msg)
        return out


class Requester:
    """Control requests off the GUI thread (one ordered queue per socket address).

    :meth:`close` never waits: a viewer closes at once even while a snap at a long exposure, a model load or a
    ``stop`` is unanswered (each has a timeout of up to minutes). Queued requests are cancelled; a running one
    ends in its own thread, which then closes its client; its reply is dropped by whoever closed the viewer."""

    def __init__(self) -> None:
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._clients: dict[str, ControlClient] = {}
        self._busy: set[str] = set()  # addresses whose client is in a request now
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a reply arriving after it is to be dropped)."""
        return self._closed

    def submit(self, address: str, cmd: str, timeout_s: float = 5.0, **args: Any) -> Future:
        """Queue ``cmd`` for ``address``; the future holds its result. ``RuntimeError`` once closed."""
        return self.submit_calls(address, lambda request: request(cmd, **args), timeout_s, cmd)

    def submit_calls(self, address: str, calls: Callable[[Callable[..., Any]], Any], timeout_s: float = 5.0,
                     what: str = "requests") -> Future:
        """Queue ``calls(request)`` for ``address``: it sends ``request(cmd, **args)`` (``timeout_s`` unless
        given) in order, with none of the viewer's other requests to ``address`` between them (a status read and
        what it decides); the future holds what it returns. ``RuntimeError`` once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the viewer is closed: {what!r} not sent")
            pool = self._pools.setdefault(address, ThreadPoolExecutor(1, thread_name_prefix="gui-ctl"))

        def call() -> Any:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"the viewer is closed: {what!r} not sent")
                self._busy.add(address)
                client = self._clients.setdefault(address, ControlClient(address, timeout_s=timeout_s))
            try:
                return calls(lambda cmd, **args: client.request(cmd, **{"timeout_s": timeout_s, **args}))
            finally:
                with self._lock:
                    self._busy.discard(address)
                    if self._closed:  # closed while this request ran: its thread closes the client
                        self._clients.pop(address).close()

        return pool.submit(call)

    def close(self) -> None:
        """Cancel queued requests and return at once: idle clients are closed here, those in a request by their
        own thread when it ends (a socket is never closed under the thread using it)."""
        with self._lock:
            self._closed = True
            for address in [a for a in self._clients if a not in self._busy]:
                self._clients.pop(address).close()
        for p in self._pools.values():
            p.shutdown(wait=False, cancel_futures=True)
