"""The control socket: JSON request/reply over ZeroMQ (documented in docs/protocol.md).

Request: one JSON part ``{"cmd": "<name>", "args": {...}, "id": <any>}``.
Reply: a JSON part ``{"ok": true, "result": {...}, "id": ...}`` or
``{"ok": false, "error": {"type": "...", "message": "..."}, "id": ...}``,
followed by raw buffer parts when the result describes them (``snap``). Every
request gets exactly one reply; nothing a client sends stops the server.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq
from pydantic import ConfigDict, ValidationError, validate_call

__all__ = ["ControlClient", "ControlServer", "DaemonError", "DEFAULT_CONTROL_ADDRESS"]

log = logging.getLogger(__name__)

DEFAULT_CONTROL_ADDRESS = "tcp://127.0.0.1:5555"
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class DaemonError(RuntimeError):
    """An error reply from the daemon."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message


Handler = Callable[..., Any]


class ControlServer:
    """Serve ``handlers`` (name -> callable) on a REP socket in a thread.

    A handler receives the request's ``args`` as keyword arguments, validated
    against its signature (unknown or ill-typed arguments are an error reply). It
    returns a JSON-able result, or ``(result, [buffers])`` to send raw parts.
    """

    def __init__(self, handlers: dict[str, Handler], address: str = DEFAULT_CONTROL_ADDRESS,
                 context: zmq.Context | None = None) -> None:
        cfg = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        self.handlers = {name: validate_call(fn, config=cfg) for name, fn in handlers.items()}
        self._signatures = {name: str(inspect.signature(fn)) for name, fn in handlers.items()}
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.requests_served = 0
        self.bad_requests = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.sock.close(linger=0)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                continue
            reply = self.handle(parts)
            try:
                self.sock.send_multipart(reply, copy=False)
            except zmq.ZMQError:
                log.exception("could not send a control reply")

    def handle(self, parts: list[bytes]) -> list[Any]:
        """Turn one request into the reply parts (never raises)."""
        self.requests_served += 1
        req_id = None
        try:
            try:
                req = json.loads(parts[0])
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise _BadRequest(f"request is not valid UTF-8 JSON ({e})") from None
            if not isinstance(req, dict):
                raise _BadRequest('request must be a JSON object like {"cmd": "status", "args": {}}')
            req_id = req.get("id")
            cmd = req.get("cmd")
            if cmd not in self.handlers:
                raise _BadRequest(
                    f"unknown command {cmd!r}; commands: {', '.join(sorted(self.handlers))}"
                )
            args = req.get("args") or {}
            if not isinstance(args, dict):
                raise _BadRequest(f"'args' must be a JSON object, got {type(args).__name__}")
            try:
                out = self.handlers[cmd](**args)
            except ValidationError as e:
                raise _BadRequest(
                    f"bad arguments for {cmd!r} {self._signatures[cmd]}: "
                    + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'args'}: {err['msg']}" for err in e.errors())
                ) from None
            result, buffers = out if isinstance(out, tuple) else (out, [])
            head = json.dumps({"ok": True, "id": req_id, "result": result}, default=_json_default)
            return [head.encode(), *buffers]
        except Exception as e:  # noqa: BLE001 - every failure becomes an error reply
            if not isinstance(e, _BadRequest):
                log.info("control command failed: %s: %s", type(e).__name__, e)
            else:
                self.bad_requests += 1
            etype = "BadRequest" if isinstance(e, _BadRequest) else type(e).__name__
            msg = json.dumps({"ok": False, "id": req_id, "error": {"type": etype, "message": str(e)}})
            return [msg.encode()]


class _BadRequest(ValueError):
    pass


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


class ControlClient:
    """A blocking client of the control socket.

    A timed-out request closes and reopens the socket (REQ sockets cannot
    recover otherwise) and raises ``TimeoutError``.
    """

    def __init__(self, address: str = DEFAULT_CONTROL_ADDRESS, timeout_s: float = 30.0,
                 context: zmq.Context | None = None) -> None:
        self.address = address
        self.timeout_ms = int(timeout_s * 1000)
        self.ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._next_id = 0

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = self.ctx.socket(zmq.REQ)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(self.address)
        return self._sock

    def close(self) -> None:
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
        sock.send(json.dumps({"cmd": cmd, "args": args, "id": self._next_id}).encode())
        timeout = self.timeout_ms if timeout_s is None else int(timeout_s * 1000)
        if not sock.poll(timeout):
            self.close()
            raise TimeoutError(f"no reply to {cmd!r} from {self.address} within {timeout / 1000:g} s")
        parts = sock.recv_multipart()
        reply = json.loads(parts[0])
        if not reply.get("ok"):
            err = reply.get("error", {})
            raise DaemonError(err.get("type", "Error"), err.get("message", "unknown error"))
        return reply.get("result"), parts[1:]

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
