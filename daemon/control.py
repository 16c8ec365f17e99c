"""The control socket: JSON request/reply over ZeroMQ (documented in docs/protocol.md).

Request: one JSON part ``{"cmd": "<name>", "args": {...}, "id": <string|integer|null>}``
(``args`` and ``id`` optional, nothing else allowed). Reply: a JSON part
``{"ok": true, "result": {...}, "id": ...}`` or
``{"ok": false, "error": {"type": "...", "message": "..."}, "id": ...}``,
followed by raw buffer parts when the result describes them (``snap``).

The contract:

- Every request gets exactly one reply; nothing a client sends stops the server. A stopping server too: it
  refuses new requests (``ShuttingDown``), gives those in progress :data:`STOP_GRACE_S` to end and answers each
  still running ``ShuttingDown`` itself, so no client waits out its timeout for a reply that never comes.
- Requests are strict (:mod:`scopecast.daemon.wire`): UTF-8 JSON, no
  NaN/Infinity, bounded nesting; arguments are checked against the handler's
  signature in pydantic's strict JSON mode (``true`` is not a number, ``"25"``
  is not a number, unknown arguments are refused). Any violation is a
  ``BadRequest`` reply naming the problem. Replies are strict JSON too.
- The socket thread never blocks: commands listed as ``inline`` (``status``,
  for instance) are answered on it directly and must not wait for hardware;
  every other command runs on a worker thread, so a ``wait``, a scan or a long
  exposure never delays another client's ``status``.
- Commands that block until something ends (``long``: ``wait``, ``stop``, ``snap``) run
  on threads of their own, at most ``long_limit`` of each command at once (one
  more is refused at once with ``BusyError`` naming the limit), so no number of
  them can delay the other commands (``describe``, ``move_stage``, ...).
- The other commands wait for a worker in a bounded queue: at most :data:`MAX_QUEUED_REQUESTS` requests
  (:data:`MAX_QUEUED_BYTES` of them) accepted and not yet answered; one more is refused at once with
  ``BusyError``, so a client sending requests faster than they run cannot grow the server without limit.
- The socket is a ROUTER: REQ clients work unchanged, and several requests
  from different clients are in progress at once. A client that reads its
  replies gets every one; one that does not read them has at most
  :data:`~scopecast.daemon.control_outbox.MAX_HELD_BYTES` of them held for it
  beyond ZeroMQ's short queue (:mod:`scopecast.daemon.control_outbox`).
- Every server answers ``commands`` (inline): each command's summary and the
  JSON Schema of its arguments, built from the same models that validate them,
  so a client (``scopecast ctl``) can derive its options from the server.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .control_outbox import PIPE_REPLIES, ReplyOutbox
from .security import (HandshakeFailure, bind_socket, close_monitor, connect_socket, handshake_failure,
                       handshake_monitor)
from .stream import threads_ended
from .wire import WireError, dumps_strict, loads_strict

__all__ = ["BadRequest", "BusyError", "ControlClient", "ControlServer", "DaemonError", "DEFAULT_CONTROL_ADDRESS",
           "LONG_COMMANDS", "MAX_QUEUED_BYTES", "MAX_QUEUED_REQUESTS", "STOP_GRACE_S", "ServerUnreachable",
           "ShuttingDown", "describe_commands"]

log = logging.getLogger(__name__)

DEFAULT_CONTROL_ADDRESS = "tcp://127.0.0.1:5555"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
_REQUEST_KEYS = {"cmd", "args", "id"}
#: Commands that block until something ends: a job (the daemon's ``wait``: up to 600 s; ``stop``: up to 30 s)
#: or an exposure (``snap``: up to the camera's longest, 60 s on the simulator, each after the snaps before it).
LONG_COMMANDS = ("wait", "stop", "snap")
#: Requests for the worker pool accepted and not yet answered, at most, and their bytes (a request may be
#: 4 MiB): beyond either a request is refused at once with ``BusyError`` (at least one is always taken).
MAX_QUEUED_REQUESTS = 64
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: Requests of one client ZeroMQ queues ahead of the socket thread.
PIPE_REQUESTS = 8
#: How long a stopping server lets the requests in progress end before it answers each still running with
#: :class:`ShuttingDown` itself, and how long it keeps the connections after its last reply sent while stopping: a
#: client hung up on loses a reply it has not read yet (ControlClient's REQ socket drops it with the connection).
STOP_GRACE_S = 5.0
LAST_REPLY_HOLD_S = 0.5


class DaemonError(RuntimeError):
    """An error reply from the daemon."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


class BadRequest(ValueError):
    """A request that is not well-formed (reply type ``BadRequest``)."""

    def __init__(self, message: str, req_id: Any = None) -> None:
        super().__init__(message)
        self.req_id = req_id


class BusyError(RuntimeError):
    """The server already runs as many requests of one long command as it allows (reply type ``BusyError``)."""


class ShuttingDown(RuntimeError):
    """The server is stopping: the request was not run, or did not end before the server stopped (reply type
    ``ShuttingDown``)."""


#: After a server hung up on a client's handshake, how long the client waits for the reason (a mechanism
#: mismatch shows only after a few retries, ~0.5 s) before it gives up with what it knows.
HANDSHAKE_GRACE_S = 2.0
#: Longest error message a reply carries and the log records: a message may quote what the client sent (a
#: request may be 4 MiB), and each refused request would otherwise write all of it to the log.
MAX_ERROR_CHARS = 2000


class ServerUnreachable(TimeoutError):
    """No connection to the server's address: nothing listens there (or not yet), or it refused this
    client's CurveZMQ keys (or their absence): then ``handshake`` says why (else None)."""

    def __init__(self, message: str, handshake: str | None = None) -> None:
        super().__init__(message)
        self.handshake = handshake


Handler = Callable[..., Any]


def _arguments_model(name: str, fn: Handler) -> type[BaseModel]:
    """A strict pydantic model of ``fn``'s keyword arguments."""
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(fn, eval_str=True)
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":  # self: an unbound method
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    cfg = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)
    return create_model(f"{name}_args", __config__=cfg, **fields)


def describe_commands(handlers: dict[str, Handler], inline: Iterable[str] = ()) -> dict[str, Any]:
    """The ``commands`` reply: per command its ``summary`` (the docstring's first
    paragraph), whether it is ``inline`` and the JSON Schema of its ``arguments``."""
    out: dict[str, Any] = {}
    for name, fn in handlers.items():
        try:
            schema = _arguments_model(name, fn).model_json_schema()
        except Exception as e:  # noqa: BLE001 - a type without a JSON Schema: say so, describe the rest
            schema = {"type": "object", "description": f"no JSON Schema: {e}"}
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
        out[name] = {"summary": " ".join(doc.replace("``", "`").split()), "inline": name in inline,
                     "arguments": schema}
    return out


class ControlServer:
    """Serve ``handlers`` (name -> callable) on a ROUTER socket.

    A handler receives the request's ``args`` as keyword arguments, validated
    strictly against its signature. It returns a JSON-able result, or
    ``(result, [buffers])`` to send raw parts. Handlers named in ``inline`` run
    on the socket thread (they must return at once, never wait for hardware);
    those named in ``long`` (they block until something ends) each on a lane of
    ``long_limit`` threads of their own, a request beyond that refused with
    ``BusyError``; the others on a pool of ``workers`` threads, which therefore
    no long request can fill.
    """

    def __init__(self, handlers: dict[str, Handler], address: str = DEFAULT_CONTROL_ADDRESS,
                 context: zmq.Context | None = None, inline: Iterable[str] = ("status",),
                 workers: int = 16, long: Iterable[str] = LONG_COMMANDS, long_limit: int = 16) -> None:
        self.handlers = dict(handlers)
        self.inline = frozenset(inline)
        if "commands" not in self.handlers:  # built in: how to call every command, itself included
            described: dict[str, Any] = {}

            def commands() -> dict[str, Any]:
                """Every command's summary and the JSON Schema of its arguments."""
                return described

            self.handlers["commands"] = commands
            self.inline |= {"commands"}
            described["commands"] = describe_commands(self.handlers, self.inline)
        self._models = {name: _arguments_model(name, fn) for name, fn in self.handlers.items()}
        self._signatures = {name: str(inspect.signature(fn)) for name, fn in self.handlers.items()}
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        # requests ZeroMQ reads ahead of the socket thread, per client (it stops reading that client meanwhile):
        # at its default of 1000, a client pipelining 4 MiB requests had 4 GB queued in the server
        self.sock.setsockopt(zmq.RCVHWM, PIPE_REQUESTS)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a full client queue refuses a send (zmq.Again) instead of dropping it: the outbox holds the reply
        self.sock.setsockopt(zmq.SNDHWM, PIPE_REPLIES)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.address = bind_socket(self.sock, address)
        self.outbox = ReplyOutbox(self.sock)
        # worker threads hand replies back through this pair (sockets are not thread-safe)
        self._reply_address = f"inproc://control-replies-{id(self)}"
        self._replies = self.ctx.socket(zmq.PULL)
        self._replies.setsockopt(zmq.LINGER, 0)
        self._replies.bind(self._reply_address)
        self._local = threading.local()
        self._pushers: list[zmq.Socket] = []
        self._pushers_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="control-cmd")
        self._lanes = {name: _Lane(name, long_limit) for name in long
                       if name in self.handlers and name not in self.inline}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count_lock = threading.Lock()
        # requests handed to a worker and not yet answered (token -> envelope, id): each gets its one reply even
        # when the server stops first; _stop is set and replies are pushed only under this condition's lock
        self._in_flight: dict[int, tuple[list[bytes], Any]] = {}
        self._tokens = itertools.count()
        self._answered = threading.Condition()
        self._closing: tuple[str, frozenset[str]] | None = None
        self._closing_since = math.inf  # when close_to_new was called (monotonic)
        self._last_reply = -math.inf  # when the socket thread last sent a reply (monotonic)
        self.requests_served = 0
        self.bad_requests = 0
        self.queued_requests = 0  # for the worker pool, accepted and not yet answered
        self.queued_bytes = 0

    def counters(self) -> dict[str, int]:
        """Requests served and refused, and the replies held for clients that have not read them."""
        o = self.outbox
        return {"requests": self.requests_served, "bad_requests": self.bad_requests,
                "queued_requests": self.queued_requests, "queued_bytes": self.queued_bytes,
                "held_replies": o.held_replies, "held_bytes": o.held_bytes, "held_clients": o.held_clients,
                "replies_dropped": o.dropped}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def close_to_new(self, reason: str, allowed: Iterable[str] = ()) -> None:
        """Answer each later request at once with :class:`ShuttingDown` naming ``reason``, except the inline
        commands and ``allowed`` (a stopping daemon still tells a ``wait`` how its job ended); requests in
        progress run on."""
        self._closing = (reason, frozenset(allowed))
        self._closing_since = min(self._closing_since, time.monotonic())

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop serving, with one reply to every request taken: new ones are refused (:meth:`close_to_new`), those
        in progress get up to ``grace_s`` to end, and each still running then is answered :class:`ShuttingDown`
        (its handler is not interrupted; its late result is dropped). No client waits for a reply that never
        comes."""
        if self._closing is None:
            self.close_to_new("the server is stopping")
        with self._answered:
            self._answered.wait_for(lambda: not self._in_flight, grace_s if self._thread is not None else 0)
            self._stop.set()
        ended = self._thread is None or threads_ended([self._thread], "control server")
        self._pool.shutdown(wait=False, cancel_futures=True)
        for lane in self._lanes.values():
            lane.pool.shutdown(wait=False, cancel_futures=True)
        if not ended:
            return
        if not self._replies.closed:  # a second stop has nothing left to answer
            self._answer_unfinished()
        with self._pushers_lock:
            for s in self._pushers:
                s.close(linger=0)
        self._replies.close(linger=0)
        if self._last_reply >= self._closing_since:  # a reply sent while stopping may still be on its way
            time.sleep(max(0.0, self._last_reply + LAST_REPLY_HOLD_S - time.monotonic()))
        self.sock.close(linger=0)

    def _answer_unfinished(self) -> None:
        """Once the socket thread has ended (this thread owns the socket): send the replies handed back before
        the stop, then a :class:`ShuttingDown` error to each request still without one."""
        self._forward_replies()
        with self._answered:
            unfinished, self._in_flight = self._in_flight, {}
        reason = self._closing[0] if self._closing else "the server is stopping"
        for envelope, req_id in unfinished.values():
            why = ShuttingDown(f"{reason}: the request did not end before the server stopped")
            self._send([*envelope, self._error_reply(req_id, why)])

    # ---------------------------------------------------------------- serving
    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                wait_s = self.outbox.wait_s()
                ready = dict(poller.poll(100 if wait_s is None else min(100, math.ceil(wait_s * 1000))))
                if self._replies in ready:
                    self._forward_replies()
                if self.sock in ready:
                    self._accept()
                self.outbox.retry()
            except zmq.ZMQError as e:
                if self._stop.is_set():
                    return
                log.warning("control socket: %s", e)
            except Exception:  # noqa: BLE001 - the socket thread must not die
                log.exception("control socket loop")

    def _forward_replies(self) -> None:
        while True:
            try:
                parts = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._send(parts)

    def _send(self, parts: list[Any]) -> None:
        self.outbox.send(parts)
        self._last_reply = time.monotonic()

    def _accept(self) -> None:
        while True:
            try:
                msg = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # ROUTER envelope: identity frames, an empty delimiter (REQ), then the body
            if b"" in msg[1:]:
                cut = msg.index(b"", 1) + 1
            else:  # a DEALER without delimiter: identity, body
                cut = 1
            envelope, body = msg[:cut], msg[cut:]
            with self._count_lock:
                self.requests_served += 1
            try:
                cmd, args, req_id = self._parse(body)
            except BadRequest as e:
                self._send([*envelope, self._error_reply(e.req_id, e)])
                continue
            except Exception as e:  # noqa: BLE001 - a parser bug still gets its one reply
                log.exception("control request not parsed")
                self._send([*envelope, self._error_reply(None, BadRequest(f"request not understood: {e}"))])
                continue
            if cmd in self.inline:
                self._send([*envelope, *self._run(cmd, args, req_id)])
            elif self._closing is not None and cmd not in self._closing[1]:
                self._send([*envelope, self._error_reply(req_id, ShuttingDown(f"{self._closing[0]}: {cmd!r} "
                                                                               "was not run"))])
            elif cmd in self._lanes:
                self._dispatch_long(self._lanes[cmd], envelope, args, req_id)
            else:
                self._dispatch(envelope, cmd, args, req_id, sum(len(p) for p in body))

    def _dispatch(self, envelope: list[bytes], cmd: str, args: dict, req_id: Any, size: int) -> None:
        """Queue ``cmd`` for the worker pool, or refuse it at once (``BusyError``) while the pool already holds
        :data:`MAX_QUEUED_REQUESTS` requests or :data:`MAX_QUEUED_BYTES` of them."""
        with self._count_lock:
            full = self.queued_requests >= MAX_QUEUED_REQUESTS or (
                self.queued_requests > 0 and self.queued_bytes + size > MAX_QUEUED_BYTES)
            if not full:
                self.queued_requests += 1
                self.queued_bytes += size
            n, nbytes = self.queued_requests, self.queued_bytes
        if full:
            busy = BusyError(f"{n} requests ({nbytes / 2**20:.1f} MiB) are already waiting or running, the most this "
                             "server holds; try again when one has been answered")
            self._send([*envelope, self._error_reply(req_id, busy)])
            return

        token = self._taken(envelope, req_id)

        def run() -> None:
            try:
                self._run_and_push(token, envelope, cmd, args, req_id)
            finally:
                with self._count_lock:
                    self.queued_requests -= 1
                    self.queued_bytes -= size

        try:
            self._pool.submit(run)
        except RuntimeError:  # the server is stopping
            with self._count_lock:
                self.queued_requests -= 1
                self.queued_bytes -= size

    def _dispatch_long(self, lane: _Lane, envelope: list[bytes], args: dict, req_id: Any) -> None:
        """Run a long command on its lane, or refuse it at once (``BusyError``) when the lane is full."""
        if not lane.slots.acquire(blocking=False):
            busy = BusyError(f"{lane.limit} {lane.name!r} requests are already in progress, the most this server "
                             f"runs at once; try again when one has been answered"
                             + (" (or wait in shorter slices)" if lane.name == "wait" else ""))
            self._send([*envelope, self._error_reply(req_id, busy)])
            return

        released = threading.Event()

        def release() -> None:  # once: before the reply is sent, else on the way out
            if not released.is_set():
                released.set()
                lane.slots.release()

        token = self._taken(envelope, req_id)

        def run() -> None:
            try:  # the slot is free before the reply leaves: a client that read it may send the next at once
                self._run_and_push(token, envelope, lane.name, args, req_id, before_reply=release)
            finally:
                release()

        try:
            lane.pool.submit(run)
        except RuntimeError:  # the server is stopping
            lane.slots.release()

    def _taken(self, envelope: list[bytes], req_id: Any) -> int:
        """Note a request handed to a worker (answered by :meth:`_run_and_push`, else by :meth:`stop`)."""
        token = next(self._tokens)
        with self._answered:
            self._in_flight[token] = (envelope, req_id)
        return token

    def _run_and_push(self, token: int, envelope: list[bytes], cmd: str, args: dict, req_id: Any,
                      before_reply: Callable[[], None] | None = None) -> None:
        """Run ``cmd`` off the socket thread and hand its reply to the socket thread (``before_reply`` is called
        between the two), unless the server stopped first (it then answered the request itself)."""
        reply = self._run(cmd, args, req_id)
        if before_reply is not None:
            before_reply()
        sock = getattr(self._local, "push", None)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._reply_address)
            self._local.push = sock
            with self._pushers_lock:
                self._pushers.append(sock)
        with self._answered:
            if self._in_flight.pop(token, None) is not None and not self._stop.is_set():
                sock.send_multipart([*envelope, *reply], copy=False)
            self._answered.notify_all()

    # ------------------------------------------------------------- requests
    def _parse(self, body: list[bytes]) -> tuple[str, dict[str, Any], Any]:
        if len(body) != 1:
            raise BadRequest(f"a request is one JSON part, got {len(body)} parts")
        try:
            req = loads_strict(body[0])
        except WireError as e:
            raise BadRequest(f"request is not strict JSON: {e}") from None
        if not isinstance(req, dict):
            raise BadRequest('request must be a JSON object like {"cmd": "status", "args": {}}')
        req_id = req.get("id")
        if req_id is not None and (not isinstance(req_id, str | int) or isinstance(req_id, bool)):
            raise BadRequest(f"'id' must be a string, an integer or null, got {type(req_id).__name__}")
        extra = set(req) - _REQUEST_KEYS
        if extra:  # the id is echoed: a client with several requests in flight knows which one was refused
            raise BadRequest(f"unknown request keys {sorted(extra)[:20]}; a request has only 'cmd', 'args', 'id'",
                             req_id)
        cmd = req.get("cmd")
        if not isinstance(cmd, str):
            raise BadRequest(f"'cmd' must be a string, got {type(cmd).__name__}", req_id)
        if cmd not in self.handlers:
            raise BadRequest(f"unknown command {cmd[:64]!r}; commands: {', '.join(sorted(self.handlers))}", req_id)
        args = req.get("args", {})
        if not isinstance(args, dict):
            raise BadRequest(f"'args' must be a JSON object, got {type(args).__name__}", req_id)
        return cmd, args, req_id

    def _run(self, cmd: str, args: dict[str, Any], req_id: Any) -> list[Any]:
        """Validate and run one command; the reply parts (never raises)."""
        try:
            try:
                validated = self._models[cmd].model_validate_json(dumps_strict(args))
            except ValidationError as e:
                raise BadRequest(
                    f"bad arguments for {cmd!r} {self._signatures[cmd]}: "
                    + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'args'}: {err['msg']}" for err in e.errors())
                ) from None
            out = self.handlers[cmd](**{k: getattr(validated, k) for k in type(validated).model_fields})
            result, buffers = out if isinstance(out, tuple) else (out, [])
            return [dumps_strict({"ok": True, "id": req_id, "result": result}, default=_json_default), *buffers]
        except Exception as e:  # noqa: BLE001 - every failure becomes an error reply
            return [self._error_reply(req_id, e)]

    def _error_reply(self, req_id: Any, e: Exception) -> bytes:
        """The error reply to ``e``; its message (also logged) cut to :data:`MAX_ERROR_CHARS`."""
        etype = type(e).__name__ if not isinstance(e, ValidationError) else "BadRequest"
        # str(KeyError("no job 'x'")) is the repr, quotes included: send the message itself
        message = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
        message = _clipped(message, MAX_ERROR_CHARS)
        if isinstance(e, BadRequest):
            with self._count_lock:
                self.bad_requests += 1
        else:
            log.info("control command failed: %s: %s", type(e).__name__, message)
        return dumps_strict({"ok": False, "id": req_id, "error": {"type": etype, "message": message}})


def _clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were cut."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters cut)"




class _Lane:
    """The threads of one long command: at most ``limit`` requests at once, each on a thread of its own."""

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"long_limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.slots = threading.BoundedSemaphore(limit)
        self.pool = ThreadPoolExecutor(limit, thread_name_prefix=f"control-{name}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    if isinstance(o, BaseModel):
        return o.model_dump(mode="json")
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


class ControlClient:
    """A blocking client of the control socket.

    A timed-out request closes and reopens the socket (REQ sockets cannot
    recover otherwise) and raises ``TimeoutError``: :class:`ServerUnreachable`
    when no connection to ``address`` was made within ``connect_timeout_s``
    (default: the request's whole timeout), so a server that is not running
    is told apart from one that does not answer.
    """

    def __init__(self, address: str = DEFAULT_CONTROL_ADDRESS, timeout_s: float = 30.0,
                 context: zmq.Context | None = None, connect_timeout_s: float | None = None) -> None:
        self.address = address
        self.timeout_ms = int(timeout_s * 1000)
        self.connect_timeout_ms = None if connect_timeout_s is None else int(connect_timeout_s * 1000)
        self.ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._handshakes: zmq.Socket | None = None
        self._next_id = 0

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = self.ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.IMMEDIATE, 1)  # writable only once connected: see request_parts
            self._handshakes = handshake_monitor(self._sock, self.address)
            connect_socket(self._sock, self.address)
        return self._sock

    def close(self) -> None:
        self._close_monitor()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_parts(self, cmd: str, timeout_s: float | None = None, **args: Any) -> tuple[Any, list]:
        """Send ``cmd``; return ``(result, extra parts)`` or raise :class:`DaemonError`."""
        sock = self._socket()
        self._next_id += 1
        timeout = self.timeout_ms if timeout_s is None else int(timeout_s * 1000)
        # ZeroMQ reads a negative poll timeout as "forever": a timeout is never below 0
        timeout = max(timeout, 0)
        connect_ms = timeout if self.connect_timeout_ms is None else max(min(timeout, self.connect_timeout_ms), 0)
        t0 = time.monotonic()
        connected, refused = self._connected(sock, connect_ms)
        if not connected:  # no connection (costs nothing once connected)
            self.close()
            if refused is not None:
                raise ServerUnreachable(f"no reply to {cmd!r}: {self.address} refused the connection: {refused}",
                                        handshake=refused)
            raise ServerUnreachable(f"no reply to {cmd!r}: no connection to {self.address} within "
                                    f"{connect_ms / 1000:g} s (is the daemon or engine running at this address? "
                                    "does it need CurveZMQ keys?)")
        sock.send(dumps_strict({"cmd": cmd, "args": args, "id": self._next_id}, default=_json_default))
        if not sock.poll(max(0, timeout - int((time.monotonic() - t0) * 1000))):
            self.close()
            raise TimeoutError(f"no reply to {cmd!r} from {self.address} within {timeout / 1000:g} s "
                               "(connected, but the server did not answer)")
        parts = sock.recv_multipart()
        reply = loads_strict(parts[0], max_depth=1000)
        if not reply.get("ok"):
            err = reply.get("error", {})
            raise DaemonError(err.get("type", "Error"), err.get("message", "unknown error"))
        return reply.get("result"), parts[1:]

    def _close_monitor(self) -> None:
        """Stop watching handshakes (:func:`~.security.close_monitor`): once connected, nothing reads the
        monitor, and 2,000 unread events (a long-lived client whose server hangs up on its reconnections) would
        block ZeroMQ's I/O thread for the whole process."""
        if self._handshakes is not None:
            close_monitor(self._sock, self._handshakes)
            self._handshakes = None

    def _connected(self, sock: zmq.Socket, timeout_ms: int) -> tuple[bool, str | None]:
        """Wait up to ``timeout_ms`` for ``sock`` to be connected (writable): ``(True, None)``, or ``(False,
        why the server refused the handshake or None)``. A certain refusal ends the wait at once; after a
        server hung up on a handshake (ZeroMQ retries) the wait ends :data:`HANDSHAKE_GRACE_S` later, with
        the latest reason. The first connection ends the handshake watch (a later one gets no reason)."""
        if self._handshakes is None or sock.poll(0, zmq.POLLOUT):
            connected = bool(sock.poll(timeout_ms, zmq.POLLOUT))
            if connected:
                self._close_monitor()
            return connected, None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLOUT)
        poller.register(self._handshakes, zmq.POLLIN)
        deadline = time.monotonic() + timeout_ms / 1000
        refused: HandshakeFailure | None = None
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(left * 1000))
            if sock in ready:
                self._close_monitor()
                return True, None
            if self._handshakes in ready and (failure := handshake_failure(self._handshakes)) is not None:
                if failure.final:
                    return False, failure.why
                if refused is None:
                    deadline = min(deadline, time.monotonic() + HANDSHAKE_GRACE_S)
                refused = failure
        failure = handshake_failure(self._handshakes) or refused
        return False, None if failure is None else failure.why

    def request(self, cmd: str, timeout_s: float | None = None, **args: Any) -> Any:
        return self.request_parts(cmd, timeout_s=timeout_s, **args)[0]

    def snap(self, **args: Any) -> tuple[dict, np.ndarray]:
        """Snap a frame: ``(header, image)``."""
        result, parts = self.request_parts("snap", **args)
        h = result["frame"]
        img = np.frombuffer(parts[0], dtype=h["dtype"]).reshape(h["shape"])
        return h, img

    def wait(self, job: str, timeout_s: float = 600.0) -> dict:
        """Block until a job ends; raise :class:`DaemonError` if it failed."""
        info = self.request("wait", timeout_s=timeout_s + 5, job=job, wait_s=timeout_s)
        if info["status"] == "failed":
            raise DaemonError("JobFailed", f"{info['kind']} job {job} failed: {info['error']}")
        return info
