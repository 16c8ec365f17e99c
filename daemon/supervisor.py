"""``scopecast up``: the daemon and its engines as supervised child processes.

The contract:

- One daemon (``scopecast daemon``) and one engine per model package
  (``scopecast engine``) run as child processes, each in its own process group
  (a terminal's Ctrl-C reaches only the supervisor, which stops them in order)
  and each bound to die with the supervisor (``PR_SET_PDEATHSIG``), so no orphan
  keeps a port or the hardware.
- Every address is fixed before the first start; an any-port address
  (``tcp://127.0.0.1:*``) is resolved to a free port once. A restarted child
  binds exactly the addresses of the one it replaces, so subscribers and
  clients reconnect by themselves.
- A child that ends without being asked to (a crash, ``SIGKILL``, an exit)
  after it served (answered ``status``) for at least ``healthy_s`` is restarted
  at once. One that keeps dying before that (a crash loop) is restarted after a
  back-off: none for the first such death, then ``min_backoff_s``, doubling up
  to ``max_backoff_s``. Every death, restart and return to service is one log
  line on stdout.
- Each engine has a warm spare: an interpreter started (after the engine
  serves) with everything an engine imports already imported, waiting on its
  stdin. A restart hands the engine's arguments to the spare, which becomes
  the engine at once; a new spare is started once that engine serves. Imports
  are half of an engine's start-up, so an engine killed mid-stream publishes
  again sooner.
- A restarted engine serves the package its predecessor last reported serving
  (``status``: ``model.path``, followed every ``follow_s``; each change is one
  log line), so a ``load_model`` switch outlives a crash; it may load packages
  from the same directories (``--model-dir``: the start-up package's parent and
  the shipped packages).
- A child that exits with status 2 on its *first* start (a bad hardware config,
  a port in use, a bad model package) is not retried: everything stops and
  :meth:`Supervisor.run` returns 2. The daemon ending with status 0 (its
  ``shutdown`` command) stops everything; ``run`` returns 0.
- :meth:`Supervisor.stop` (``SIGTERM`` / ``SIGINT`` to ``scopecast up``) sends
  ``SIGTERM`` to every child (the daemon ends its job, keeping what it
  recorded), ``SIGKILL`` to any still running after ``stop_timeout_s``, and
  ``run`` returns 0.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Child", "EngineSpec", "Supervisor", "free_port", "resolve_port"]

#: Environment variable telling a child ``scopecast`` process to die with this parent pid.
PARENT_ENV = "SCOPECAST_SUPERVISOR_PID"


_HANDED_OUT: set[tuple[str, int]] = set()
_HANDED_OUT_LOCK = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux; the IANA range elsewhere)."""
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 49152, 65535


def _candidate_ports() -> list[int]:
    """Ports outside the ephemeral range, from 10000 up, in a random order of this process's own."""
    low, high = _ephemeral_range()
    ports = [p for p in range(10000, 65536) if not low <= p <= high]
    random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(ports)
    return ports


_CANDIDATES: list[int] = []


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago and that this process has not handed out before.

    It lies outside the kernel's ephemeral range, where nothing else takes it meanwhile: the kernel hands
    ephemeral ports to every outgoing connection and every ``bind(0)``, so a port probed there and listened on
    a few seconds later (a daemon process starting) was taken in between on a busy machine ("Address already
    in use"; seen in the fault suite, and with the suite in two processes). Other processes picking here choose
    in an order of their own, so two rarely pick one port. Every test, benchmark and ``scopecast up`` picks
    ports here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _HANDED_OUT_LOCK:
        while True:
            if not _CANDIDATES:
                _CANDIDATES.extend(_candidate_ports())
            port = _CANDIDATES.pop()
            if (host, port) in _HANDED_OUT:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:  # taken now
                    continue
            _HANDED_OUT.add((host, port))
            return port


def resolve_port(address: str) -> str:
    """``tcp://HOST:*`` (or port 0) with a free port filled in (:func:`free_port`); other addresses unchanged."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or port not in ("*", "0"):
        return address
    return f"tcp://{host}:{free_port('' if host == '*' else host.strip('[]'))}"


def client_address(address: str) -> str:
    """An address a local client can connect to (``tcp://*:P`` -> ``tcp://127.0.0.1:P``)."""
    return address.replace("tcp://*:", "tcp://127.0.0.1:").replace("tcp://0.0.0.0:", "tcp://127.0.0.1:")


@dataclass(frozen=True)
class EngineSpec:
    """One engine: a model package and the two addresses it binds."""

    model: str
    results: str
    control: str

    @property
    def name(self) -> str:
        return Path(self.model).name


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    name: str
    argv: list[str]
    control: str  # its control socket: answering ``status`` there means ready
    proc: subprocess.Popen | None = None
    started: float = 0.0  # monotonic time of the latest start
    starts: int = 0
    quick_deaths: int = 0  # deaths in a row, each before it had served for healthy_s
    ready_at: float = 0.0  # monotonic time it first answered status (0: not yet)
    backoff_s: float = 0.0
    next_start: float | None = None  # when a dead child is due to start again
    ready: threading.Event = field(default_factory=threading.Event)
    warm_spare: bool = False  # keep a pre-imported interpreter ready to take over
    spare: subprocess.Popen | None = None
    spare_failures: int = 0
    model: str | None = None  # an engine's package as it last reported serving it: what a restart loads


class Supervisor:
    """Run, watch and restart a daemon and its engines (see the module docstring)."""

    def __init__(self, daemon_args: list[str], control: str, stream: str, engines: list[EngineSpec],
                 engine_args: list[str] | None = None, verbose: bool = False, healthy_s: float = 1.0,
                 min_backoff_s: float = 0.25, max_backoff_s: float = 30.0, stop_timeout_s: float = 40.0,
                 poll_s: float = 0.01, warm_spares: bool = True, follow_s: float = 0.5) -> None:
        self.control = resolve_port(control)
        self.stream = resolve_port(stream)
        self.engines = [EngineSpec(e.model, resolve_port(e.results), resolve_port(e.control)) for e in engines]
        base = [sys.executable, "-m", "scopecast.daemon.cli", *(["-v"] if verbose else [])]
        self.children = [Child("daemon", [*base, "daemon", *daemon_args, "--control", self.control,
                                          "--stream", self.stream], self.control)]
        from scopecast.models import packages_root

        for e in self.engines:  # its model directories named: a restart on another package keeps them
            model = Path(e.model).resolve()  # as the engine reports the package it serves
            dirs = ["--model-dir", str(model.parent), "--model-dir", str(packages_root())]
            self.children.append(Child(f"engine {e.name}", [
                *base, "engine", "--model", str(model), "--stream", client_address(self.stream),
                "--results", e.results, "--control", e.control, *dirs, *(engine_args or [])], e.control,
                warm_spare=warm_spares, model=str(model)))
        self.healthy_s = healthy_s
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self.follow_s = follow_s
        self._stop = threading.Event()
        self.exit_code = 0

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask :meth:`run` to stop every child and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start everything, keep it running until :meth:`stop`; returns the exit status."""
        self.log(f"daemon: control {self.control}, frames {self.stream}"
                 + "".join(f"; engine {e.name}: results {e.results}, control {e.control}" for e in self.engines))
        for c in self.children:
            self._start(c)
        announced = False
        try:
            while not self._stop.wait(self.poll_s):
                now = time.monotonic()
                for c in self.children:
                    if c.proc is not None and c.proc.poll() is not None:
                        if self._died(c, now):
                            return self.exit_code
                    elif c.proc is None and c.next_start is not None and now >= c.next_start:
                        self._start(c)
                    if c.warm_spare and c.ready.is_set() and (c.spare is None or c.spare.poll() is not None):
                        self._start_spare(c)  # from this thread: PDEATHSIG follows the thread that forks
                if not announced and all(c.ready.is_set() for c in self.children):
                    announced = True
                    self.log("ready")
            return self.exit_code
        finally:
            self._shutdown()

    # ---------------------------------------------------------------- children
    def _env(self) -> dict[str, str]:
        return {**os.environ, PARENT_ENV: str(os.getpid())}

    def _start(self, c: Child) -> None:
        c.ready.clear()
        c.ready_at = 0.0
        c.next_start = None
        c.started = time.monotonic()
        c.starts += 1
        spare, c.spare = c.spare, None
        argv = self._argv(c)
        how = "" if argv == c.argv else f", on {c.model} (loaded with load_model)"
        if spare is not None and spare.poll() is None and spare.stdin is not None:
            try:  # hand it the engine's arguments: it becomes the engine
                spare.stdin.write(json.dumps(argv[3:]).encode() + b"\n")
                spare.stdin.close()
                c.proc, how = spare, how + ", warm spare"
            except OSError:
                spare.kill()
        if c.proc is None:
            c.proc = subprocess.Popen(argv, env=self._env(), process_group=0, stdin=subprocess.DEVNULL)
        if c.starts > 1:
            self.log(f"{c.name} restarted (pid {c.proc.pid}, restart {c.starts - 1}{how})")
        threading.Thread(target=self._await_ready, args=(c, c.proc), name=f"ready-{c.name}", daemon=True).start()

    def _start_spare(self, c: Child) -> None:
        if c.spare is not None:  # the last one ended by itself
            c.spare_failures += 1
            if c.spare_failures > 3:
                c.warm_spare, c.spare = False, None
                self.log(f"{c.name}: its warm spares keep ending by themselves; restarts start cold")
                return
        c.spare = subprocess.Popen([sys.executable, "-c", _SPARE], env=self._env(), process_group=0,
                                   stdin=subprocess.PIPE)

    def _await_ready(self, c: Child, proc: subprocess.Popen) -> None:
        """Poll the child's control socket until it answers ``status`` (or the child ends)."""
        from .control import ControlClient, DaemonError

        with ControlClient(client_address(c.control), timeout_s=1.0) as client:
            while proc.poll() is None and not self._stop.is_set():
                try:
                    client.request("status", timeout_s=0.5)
                except TimeoutError:
                    continue
                except DaemonError:
                    pass  # it answered: it serves
                if c.proc is not proc:  # replaced meanwhile; its successor has its own watcher
                    return
                c.ready_at = time.monotonic()
                c.ready.set()
                if c.starts > 1:
                    self.log(f"{c.name} back: answering {time.monotonic() - c.started:.2f} s after the restart")
                if c.model is not None:
                    self._follow_model(c, proc, client)
                return

    def _follow_model(self, c: Child, proc: subprocess.Popen, client: Any) -> None:
        """While ``proc`` serves as engine ``c``: record the package it reports serving (``status``:
        ``model.path``) every ``follow_s``, so that a restart loads the package ``load_model`` switched it to."""
        from .control import DaemonError

        while proc.poll() is None and c.proc is proc and not self._stop.wait(self.follow_s):
            try:
                path = client.request("status", timeout_s=0.5)["model"]["path"]
            except (TimeoutError, DaemonError, KeyError, TypeError):
                continue
            if isinstance(path, str) and path and path != c.model and proc.poll() is None:
                c.model = path
                self.log(f"{c.name} serves {path} (load_model): a restart loads it")

    @staticmethod
    def _argv(c: Child) -> list[str]:
        """``c``'s command line; an engine's ``--model`` is the package it last reported serving."""
        if c.model is None:
            return c.argv
        i = c.argv.index("--model") + 1
        return [*c.argv[:i], c.model, *c.argv[i + 1:]]

    def _died(self, c: Child, now: float) -> bool:
        """Handle the end of ``c``; True when everything must stop."""
        assert c.proc is not None
        rc, ran = c.proc.returncode, now - c.started
        c.proc = None
        how = exit_description(rc)
        if c.starts == 1 and rc == 2:
            self.log(f"{c.name} could not start ({how}); stopping")
            self.exit_code = 2
            return True
        if c.name == "daemon" and rc == 0:
            self.log("daemon shut down (its shutdown command); stopping the engines")
            return True
        served = now - c.ready_at if c.ready_at else 0.0
        c.quick_deaths = 0 if served >= self.healthy_s else c.quick_deaths + 1
        c.backoff_s = 0.0 if c.quick_deaths <= 1 else min(
            self.min_backoff_s * 2 ** (c.quick_deaths - 2), self.max_backoff_s)
        c.next_start = now + c.backoff_s
        self.log(f"{c.name} died ({how}) after {ran:.1f} s; restarting "
                 + ("now" if c.backoff_s == 0 else f"in {c.backoff_s:.2f} s"))
        if c.backoff_s == 0:
            self._start(c)
        return False

    def _shutdown(self) -> None:
        for c in self.children:
            if c.spare is not None and c.spare.poll() is None:
                c.spare.kill()
                c.spare.wait()
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in running:
            c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for c in running:
            try:
                c.proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                self.log(f"{c.name} did not stop within {self.stop_timeout_s:g} s; killing it")
                c.proc.kill()
                c.proc.wait()
        self.log("stopped")

    @staticmethod
    def log(message: str) -> None:
        print(f"scopecast up: {time.strftime('%H:%M:%S')} {message}", flush=True)


def exit_description(returncode: int) -> str:
    """How a child ended, for the log: ``exit status N`` or ``killed by SIGNAME`` (any signal, real-time ones too)."""
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:  # real-time signals have no name in the enum
        return f"killed by signal {-returncode}"


def die_with_parent() -> None:
    """In a child started by :class:`Supervisor`: end (SIGTERM) when the supervisor dies."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the supervisor died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


_SPARE = "from scopecast.daemon.supervisor import run_spare; run_spare()"


def run_spare() -> None:
    """A warm spare (see :class:`Supervisor`): import what an engine needs, then wait
    for its arguments (one JSON list on stdin) and run ``scopecast`` with them."""
    die_with_parent()
    from . import cli
    from .inference import engine, runtimes  # noqa: F401 - imported now, to be ready

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    line = sys.stdin.buffer.readline()
    if not line:  # the supervisor went away or no longer needs it
        return
    argv = json.loads(line)
    sys.argv = ["scopecast", *argv]
    sys.exit(cli.main(argv))
