"""The replies a control socket holds for clients that are not reading them (:class:`ControlServer`'s outbox).

ZeroMQ queues up to a ROUTER's send high-water mark of messages per client; at the default (1000) a client that
sends ``snap`` requests and never reads the replies made the server keep up to a thousand frames for it. The
control socket therefore keeps ZeroMQ's queue short (:data:`PIPE_REPLIES`) and sets ``ROUTER_MANDATORY``, so a
send to a client whose queue is full raises ``zmq.Again`` instead of being dropped in silence (ZeroMQ learns what a
client has read only in steps of half the high-water mark, so under load a queue of a client that reads can look
full for a moment: that must delay a reply, never lose it). Such a reply waits here, in order behind the client's
other held replies, and is sent again on the socket loop's next turns.

What one client may have held is bounded in bytes (:data:`MAX_HELD_BYTES`; at least one reply, whatever its
size): a reply that would take it past the bound is dropped, counted, and logged once per episode, naming the
client. A client that reads its replies never comes near the bound, and loses none.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from enum import Enum
from typing import Any

import zmq

__all__ = ["MAX_HELD_BYTES", "PIPE_REPLIES", "ReplyOutbox"]

log = logging.getLogger(__name__)

#: Replies ZeroMQ queues for one client (the ROUTER's send high-water mark): small, as one may be a whole frame.
PIPE_REPLIES = 8
#: Bytes of replies the server holds for one client beyond ZeroMQ's queue; one more reply is dropped.
MAX_HELD_BYTES = 32 * 1024 * 1024
#: What a held reply costs beyond its bytes (the Python objects that hold it), counted against the bound
HELD_OVERHEAD = 256
#: A client's held replies are tried again after this long, doubling while its queue stays full, up to the most.
RETRY_FIRST_S = 0.001
RETRY_MOST_S = 0.02


class _Sent(Enum):
    SENT = "sent"
    FULL = "full"  # the client's ZeroMQ queue is full: try again later
    GONE = "gone"  # the client disconnected: nothing will ever reach it


class _Held:
    """One client's held replies, oldest first."""

    __slots__ = ("dropped", "nbytes", "replies", "retry_at", "delay")

    def __init__(self) -> None:
        self.replies: deque[tuple[list[Any], int]] = deque()
        self.nbytes = 0
        self.dropped = 0
        self.delay = RETRY_FIRST_S
        self.retry_at = time.monotonic() + self.delay


def reply_bytes(parts: list[Any]) -> int:
    """The bytes of a reply's parts (``bytes``, ``zmq.Frame`` or any buffer)."""
    return sum(memoryview(p).nbytes for p in parts)


def client_name(routing_id: bytes) -> str:
    """How logs name a client: its routing id in hex (ZeroMQ's own ids are 5 bytes)."""
    return routing_id.hex()


class ReplyOutbox:
    """Send replies on a ROUTER socket set up with ``ROUTER_MANDATORY``, holding those its client's ZeroMQ queue
    cannot take yet. Used from the socket's own thread only; the counters may be read from anywhere."""

    def __init__(self, sock: zmq.Socket, max_held_bytes: int = MAX_HELD_BYTES) -> None:
        self.sock = sock
        self.max_held_bytes = max_held_bytes
        self._held: dict[bytes, _Held] = {}
        self.held_replies = 0
        self.held_bytes = 0
        self.held_clients = 0
        self.dropped = 0

    def send(self, parts: list[Any]) -> None:
        """Send ``parts`` (routing id first) now, or hold them behind the client's held replies."""
        client = bytes(parts[0])
        held = self._held.get(client)
        if held is None:
            if self._try(parts) is not _Sent.FULL:
                return
            held = self._held[client] = _Held()
            self.held_clients = len(self._held)
        self._hold(client, held, parts)

    def retry(self) -> None:
        """Send what the clients whose time has come can take now."""
        now = time.monotonic()
        for client, held in list(self._held.items()):
            if held.retry_at > now:
                continue
            outcome = _Sent.SENT
            while held.replies and (outcome := self._try(held.replies[0][0])) is _Sent.SENT:
                self._release(held, 1)
            if outcome is _Sent.GONE:
                self._release(held, len(held.replies))
            if held.replies:
                held.delay = min(held.delay * 2, RETRY_MOST_S)
                held.retry_at = now + held.delay
                continue
            del self._held[client]
            self.held_clients = len(self._held)
            if held.dropped:
                log.warning("control client %s %s; %d replies to it were dropped while it did not read them",
                            client_name(client), "went away" if outcome is _Sent.GONE else "read its replies again",
                            held.dropped)

    def wait_s(self) -> float | None:
        """Seconds until the next client's held replies are due (0: now); None when nothing is held."""
        if not self._held:
            return None
        return max(0.0, min(h.retry_at for h in self._held.values()) - time.monotonic())

    def _hold(self, client: bytes, held: _Held, parts: list[Any]) -> None:
        size = reply_bytes(parts) + HELD_OVERHEAD
        if held.replies and held.nbytes + size > self.max_held_bytes:
            held.dropped += 1
            self.dropped += 1
            if held.dropped == 1:
                log.warning("control client %s is not reading its replies: %d of them (%d bytes) are held for it, "
                            "the most the server holds for a client; replies to it are dropped until it reads",
                            client_name(client), len(held.replies), held.nbytes)
            return
        held.replies.append((parts, size))
        held.nbytes += size
        self.held_replies += 1
        self.held_bytes += size

    def _release(self, held: _Held, n: int) -> None:
        for _ in range(n):
            _, size = held.replies.popleft()
            held.nbytes -= size
            self.held_replies -= 1
            self.held_bytes -= size

    def _try(self, parts: list[Any]) -> _Sent:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return _Sent.FULL
        except zmq.ZMQError as e:  # EHOSTUNREACH: the client went away
            log.debug("control reply not sent: %s", e)
            return _Sent.GONE
        return _Sent.SENT
