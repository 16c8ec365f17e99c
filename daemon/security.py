"""Where sockets may listen, and CurveZMQ authentication and encryption.

Every socket scopecast binds or connects goes through :func:`bind_socket` or
:func:`connect_socket`. The contract:

- Without keys, a socket may only bind to loopback (``tcp://127.x.x.x``,
  ``tcp://localhost``, ``tcp://[::1]``), ``ipc://`` or ``inproc://``. Binding
  anywhere else raises :class:`InsecureAddress`, whose message says how to make
  keys.
- With keys (:func:`use_keys`, the ``--keys DIR`` option of every command),
  every TCP socket speaks CurveZMQ: servers (the daemon's control socket and
  frame stream, an engine's results and control sockets) use the server key
  pair and accept only clients whose public key is in ``DIR/authorized_clients``
  (checked by a ZAP authenticator); clients use the client key pair and the
  server's public key. Traffic is encrypted and clients are authenticated.

Keys are configured once per process (like ``zmq.Context.instance()``): the
command line calls :func:`use_keys` before it opens any socket.

A key directory made by :func:`create_keys` (``scopecast keys DIR``)::

    DIR/server.key             server public key (give it to clients)
    DIR/server.key_secret      server key pair (keep it on the daemon/engine host)
    DIR/client.key             client public key
    DIR/client.key_secret      client key pair (give it to clients)
    DIR/authorized_clients/    public keys the servers accept (client.key is there)
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path
from urllib.parse import urlsplit

import zmq
import zmq.auth

__all__ = [
    "InsecureAddress", "KeysMissing", "Keys", "bind_socket", "close_monitor", "connect_socket", "create_keys",
    "current_keys", "HandshakeFailure", "handshake_failure", "handshake_monitor", "is_local_address", "use_keys",
    "watch_handshakes",
]

AUTHORIZED = "authorized_clients"


class InsecureAddress(ValueError):
    """Binding off loopback without keys."""


class KeysMissing(ValueError):
    """A key directory that is missing or incomplete (the message names the file)."""


@dataclass(frozen=True)
class Keys:
    """The key pairs of one installation (see the module docstring for the layout)."""

    directory: Path
    server_public: bytes
    server_secret: bytes | None  # None on a client-only host
    client_public: bytes
    client_secret: bytes

    @classmethod
    def load(cls, directory: str | Path) -> Keys:
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise KeysMissing(f"key directory {d} does not exist; create one with: scopecast keys {d}")

        def pair(name: str, secret: bool) -> tuple[bytes, bytes | None]:
            path = d / (f"{name}.key_secret" if secret else f"{name}.key")
            if not path.is_file():
                return b"", None
            try:
                return zmq.auth.load_certificate(str(path))
            except (OSError, ValueError) as e:
                raise KeysMissing(f"unreadable key file {path}: {e}") from None

        server_public, server_secret = pair("server", True)
        if not server_public:
            server_public, _ = pair("server", False)
        client_public, client_secret = pair("client", True)
        if not server_public or not client_secret:
            raise KeysMissing(
                f"key directory {d} lacks server.key or client.key_secret; create one with: scopecast keys {d}"
            )
        return cls(d, server_public, server_secret, client_public, client_secret)

    @property
    def authorized_dir(self) -> Path:
        return self.directory / AUTHORIZED


def create_keys(directory: str | Path, overwrite: bool = False) -> Path:
    """Create server and client key pairs in ``directory`` (``scopecast keys``)."""
    d = Path(directory).expanduser()
    if (d / "server.key_secret").exists() and not overwrite:
        raise FileExistsError(f"{d} already holds keys (pass --overwrite to replace them)")
    d.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        zmq.auth.create_certificates(str(d), name)
        (d / f"{name}.key_secret").chmod(0o600)
    auth = d / AUTHORIZED
    auth.mkdir(exist_ok=True)
    shutil.copy(d / "client.key", auth / "client.key")
    return d


_keys: Keys | None = None
_authenticators: dict[int, object] = {}
_auth_lock = threading.Lock()


def use_keys(directory: str | Path | None) -> Keys | None:
    """Use the keys in ``directory`` for every socket this process opens (None: no keys)."""
    global _keys
    _keys = None if directory is None else Keys.load(directory)
    return _keys


def current_keys() -> Keys | None:
    return _keys


def is_local_address(address: str) -> bool:
    """True for loopback TCP, ``ipc://`` and ``inproc://`` addresses."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: not loopback


def ipc_in_use(address: str) -> bool:
    """True if ``address`` (``ipc://PATH``) names a Unix socket that a process listens on now.

    ZeroMQ removes whatever file is at an ``ipc://`` path before it binds there, so a second daemon or
    engine given the same path would silently take the address from the first one (which keeps running,
    unreachable). A stale file a dead process left refuses the connection and is not "in use"."""
    path = address.partition("://")[2]
    if not path or path == "*" or path.startswith("@"):  # any path, or the abstract namespace (bind refuses)
        return False
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:  # ECONNREFUSED: nobody listens there any more
            return False
    return True


def _authenticator(ctx: zmq.Context, keys: Keys) -> None:
    """Start (once per context) the ZAP handler that admits the authorized client keys
    (re-read from ``keys.authorized_dir`` each time a server socket is bound)."""
    from zmq.auth.thread import ThreadAuthenticator

    with _auth_lock:
        auth = _authenticators.get(id(ctx))
        if auth is None:
            auth = _authenticators[id(ctx)] = ThreadAuthenticator(ctx)
            auth.start()
        auth.configure_curve(domain="*", location=str(keys.authorized_dir))


def _ipv6_if_needed(sock: zmq.Socket, address: str) -> None:
    """A ``tcp://[IPv6]:PORT`` address (``[::1]``: loopback) needs ``ZMQ_IPV6`` on the socket, else ZeroMQ
    refuses it ("No such device")."""
    if address.startswith("tcp://["):
        sock.setsockopt(zmq.IPV6, 1)


def bind_socket(sock: zmq.Socket, address: str) -> str:
    """Bind ``sock`` under the process's key policy; returns the bound endpoint."""
    if not address.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"not a ZeroMQ address: {address!r} (expected e.g. tcp://127.0.0.1:5555)")
    keys = _keys
    if keys is None and not is_local_address(address):
        raise InsecureAddress(
            f"refusing to listen on {address} without authentication: off loopback every socket needs "
            "CurveZMQ keys. Create them with 'scopecast keys DIR' and start with '--keys DIR' "
            "(clients need DIR's client.key_secret and server.key), or bind to tcp://127.0.0.1"
        )
    if keys is not None and address.startswith("tcp://"):
        if keys.server_secret is None:
            raise KeysMissing(f"{keys.directory} has no server.key_secret: this host cannot serve")
        if not any(keys.authorized_dir.glob("*.key")):
            raise KeysMissing(
                f"{keys.authorized_dir} is missing or holds no client public key (*.key): this server would admit "
                f"no client. Copy each client's public key there (scopecast keys {keys.directory} puts client.key "
                "there)")
        _authenticator(sock.context, keys)
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public
        sock.curve_server = True
    if address.startswith("ipc://") and ipc_in_use(address):
        raise zmq.ZMQError(errno.EADDRINUSE, f"{address} is in use: another process listens there (is another "
                           "scopecast daemon or engine running there?)")
    _ipv6_if_needed(sock, address)
    sock.bind(address)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def connect_socket(sock: zmq.Socket, address: str) -> None:
    """Connect ``sock`` under the process's key policy (CurveZMQ client when keys are set)."""
    if not address.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"not a ZeroMQ address: {address!r} (expected e.g. tcp://127.0.0.1:5555)")
    keys = _keys
    if keys is not None and address.startswith("tcp://"):
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public
    _ipv6_if_needed(sock, address)
    sock.connect(address)


_MONITORS = itertools.count()  # unique monitor endpoints
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def _handshake_failure(event: int, value: int, keyed: bool) -> str:
    """What a failed handshake of a client socket means, and how to fix it; ``keyed``: the socket was set up
    with keys (judged when it was made, not when its failure is read)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        if not keyed:
            return ("the server uses CurveZMQ keys and this process has none: start it with --keys DIR (DIR "
                    "holding the server's server.key and a client.key_secret the server admits)")
        return ("this process uses CurveZMQ keys (--keys) and the server does not: start both with the same "
                "--keys DIR, or neither")
    if not keyed:  # the server hung up on the handshake: without keys, that is a server with keys
        return ("the server refused the handshake; it uses CurveZMQ keys and this process has none? start it with "
                "--keys DIR (DIR holding the server's server.key and a client.key_secret the server admits)")
    return ("the CurveZMQ handshake failed: the server does not admit this client's key (add its client.key to "
            "the server's authorized_clients/), or --keys DIR's server.key is not this server's")


def handshake_monitor(sock: zmq.Socket, address: str) -> zmq.Socket | None:
    """A monitor of ``sock``'s handshakes (None for a non-TCP address: no keys there). Create it before
    connecting ``sock``: ZeroMQ does not reconnect after a failed handshake, so the one event comes at once."""
    if not address.startswith("tcp://"):
        return None
    # an address of its own: pyzmq's default names it after the socket's file descriptor, which a later socket
    # reuses while the closed one's monitor endpoint may still be registered (its events then went nowhere)
    return sock.get_monitor_socket(_HANDSHAKE_EVENTS, f"inproc://scopecast-handshakes-{next(_MONITORS)}")


def close_monitor(sock: zmq.Socket, monitor: zmq.Socket) -> None:
    """End ``sock``'s monitoring and close its ``monitor`` (from :func:`handshake_monitor`), in that order.

    libzmq sends each monitored event from the context's I/O thread and blocks there, without a timeout, when
    the monitor cannot take it: its reading socket closed while ``sock`` still monitors (zeromq/libzmq#3575),
    or 2,000 events left unread. Every TCP connection of the process then stops (seen: a test process whose
    clients and servers all stopped connecting for the rest of its run). So a monitor is closed only after
    ``zmq_socket_monitor(sock, NULL)``, and none is kept unread (:class:`~.control.ControlClient` closes its
    monitor once connected). A ``sock`` already closed has stopped its monitor itself."""
    try:
        sock.disable_monitor()
    except zmq.ZMQError:  # ``sock`` closed (its monitor stopped with it) or its context ended
        pass
    monitor.close(linger=0)


class HandshakeFailure(NamedTuple):
    """Why a client socket's handshake failed; ``final``: the reason is certain (a mechanism mismatch or an
    authentication error) rather than the server only hanging up, which ZeroMQ retries and which a
    mechanism mismatch also starts with."""

    why: str
    final: bool


def handshake_failure(monitor: zmq.Socket | None) -> HandshakeFailure | None:
    """The monitored socket's latest handshake failure (read without waiting), or None if none failed since
    the last success (or no handshake happened yet)."""
    from zmq.utils.monitor import recv_monitor_message

    failure = None
    try:
        while monitor is not None and monitor.poll(0):
            event = recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                failure = None
            elif event["event"] != zmq.EVENT_MONITOR_STOPPED:
                failure = HandshakeFailure(_handshake_failure(event["event"], event["value"], _keys is not None),
                                           event["event"] != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    except zmq.ZMQError:
        pass
    return failure


def watch_handshakes(sock: zmq.Socket, address: str, report: Callable[[str], None],
                     stop: threading.Event) -> threading.Thread | None:
    """Report each failed handshake of ``sock`` with ``address`` (once, until one succeeds). Call it before
    connecting ``sock``: ZeroMQ does not reconnect after a failed handshake, so the one event comes at once.

    ZeroMQ itself only retries, silently: a subscriber without keys (or with keys the server does not admit)
    would wait for messages that never come. Returns the watching thread (it ends when ``stop`` is set; join
    it before closing ``sock``), or None for a non-TCP address (no keys there)."""
    monitor = handshake_monitor(sock, address)
    if monitor is None:
        return None
    keyed = _keys is not None  # the keys ``sock`` is about to connect with

    def run() -> None:
        from zmq.utils.monitor import recv_monitor_message

        said = None
        try:
            while not stop.is_set():
                if not monitor.poll(200):
                    continue
                event = recv_monitor_message(monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    said = None
                    continue
                why = _handshake_failure(event["event"], event["value"], keyed)
                if why != said:
                    said = why
                    report(f"no connection to {address}: {why}")
        except zmq.ZMQError:
            return
        finally:
            close_monitor(sock, monitor)

    thread = threading.Thread(target=run, name="handshake-watch", daemon=True)
    thread.start()
    return thread
