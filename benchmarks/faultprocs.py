"""Process and file helpers of the fault suite: free ports, scopecast processes, status probes,
file-tree snapshots and recording checks (used by bench_faults.py and tests/test_faults.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from faultkit import ESCAPE


def free_address() -> str:
    """A loopback TCP address on a free port (:func:`scopecast.daemon.supervisor.free_port`: never one handed out
    before in this process)."""
    from scopecast.daemon.supervisor import free_port

    return f"tcp://127.0.0.1:{free_port()}"


def small_config(directory: Path, size: int = 256) -> Path:
    """The shipped simulator config with a ``size``-pixel camera."""
    from scopecast.daemon.sim import sized_config

    return sized_config(directory, size)


def scopecast(*args: str, cwd: Path | None = None, quiet: bool = True, **kw: Any) -> subprocess.Popen:
    """Start ``scopecast ARGS`` as a process (output discarded unless ``quiet`` is False)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", *args], cwd=cwd,
                            stdout=kw.pop("stdout", out), stderr=kw.pop("stderr", out),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def wait_status(address: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0) -> dict:
    """Poll ``status`` until it answers; raises if ``proc`` ends or time runs out."""
    from scopecast.daemon.control import ControlClient

    deadline = time.monotonic() + timeout_s
    with ControlClient(address, timeout_s=1.0) as c:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process {proc.args[3:5]} ended with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no status from {address} in {timeout_s:g} s")
            try:
                return c.request("status", timeout_s=1.0)
            except TimeoutError:
                continue


def children_of(pid: int) -> dict[int, str]:
    """Child pid -> command line, for the processes whose parent is ``pid``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return out


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def listener_pid(address: str, parent: int, timeout_s: float = 60.0, not_pid: int | None = None) -> int:
    """The pid of the child of ``parent`` listening on ``address``'s TCP port (the daemon or an
    engine of ``scopecast up``; an engine restarted from a warm spare has no telling command line)."""
    port = int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                f = row.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
        for pid in children_of(parent):
            if pid == not_pid:
                continue
            try:
                links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue
            if links & inodes:
                return pid
        time.sleep(0.02)
    raise TimeoutError(f"no child of {parent} listens on {address}")


class ResultWatch:
    """A subscriber to an engine's results that reconnects fast (10 ms) after the engine restarts."""

    def __init__(self, address: str, ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 50)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"result")
        self.sock.connect(address)

    def first_after(self, t_ns: int, timeout_s: float, match: dict | None = None) -> dict | None:
        """The first result published after ``t_ns`` (and matching ``match``), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.sock.poll(int(max(deadline - time.monotonic(), 0) * 1000) + 1):
                continue
            parts = self.sock.recv_multipart()
            h = json.loads(parts[1])
            if h.get("t_published_ns", 0) > t_ns and all(h.get(k) == v for k, v in (match or {}).items()):
                return h
        return None

    def close(self) -> None:
        self.sock.close(linger=0)


class StatusProbe:
    """Measure ``status`` round trips on ``address`` in a thread, at ``hz``, labelled by phase."""

    def __init__(self, address: str, hz: float = 20.0, timeout_s: float = 2.0) -> None:
        self.address, self.period, self.timeout_s = address, 1.0 / hz, timeout_s
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {}
        self.timeouts: Counter = Counter()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)

    def start(self) -> StatusProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        from scopecast.daemon.control import ControlClient, DaemonError

        with ControlClient(self.address, timeout_s=self.timeout_s) as c:
            while not self._stop.wait(self.period):
                if self.paused.is_set():
                    continue
                phase = self.phase
                t0 = time.perf_counter()
                try:
                    c.request("status")
                except (TimeoutError, DaemonError):
                    if not self.paused.is_set():
                        self.timeouts[phase] += 1
                    continue
                self.samples.setdefault(phase, []).append((time.perf_counter() - t0) * 1e3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, dict[str, float]]:
        return {p: {"n": len(v), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                    "max": float(np.max(v)), "timeouts": self.timeouts[p]} for p, v in self.samples.items() if v}


def tree_snapshot(root: Path, exclude: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` except under ``exclude``: path -> (size, mtime_ns)."""
    out = {}
    ex = [str(p.resolve()) + os.sep for p in exclude]
    for dirpath, dirnames, filenames in os.walk(root):
        if any((dirpath + os.sep).startswith(e) for e in ex):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def writes_outside(before: dict, after: dict) -> list[str]:
    """Files created or changed between two :func:`tree_snapshot` calls."""
    return sorted(p for p, v in after.items() if before.get(p) != v)


def escapes_found(*roots: Path) -> list[str]:
    """Anything named like the hostile paths' target under ``roots`` (not recursing into big trees)."""
    found = []
    for r in roots:
        for dirpath, dirnames, filenames in os.walk(r):
            found += [os.path.join(dirpath, f) for f in filenames + dirnames if ESCAPE in f]
            if dirpath.count(os.sep) - str(r).count(os.sep) >= 6:
                dirnames[:] = []
    return found


def recording_check(path: str | Path, counted: int | None = None) -> dict[str, Any]:
    """Open a recording (complete or interrupted) and check every journalled frame's plane.

    ``counted``: frames the daemon said it recorded (``frames_recorded``); a
    frame counted but not in the journal, or journalled but unreadable, is lost.
    """
    from scopecast.daemon.recorder import open_recording

    try:
        rec = open_recording(path)
    except Exception as e:  # noqa: BLE001 - an unreadable recording loses everything counted
        return {"journalled": 0, "unreadable": 0, "lost": counted or 0, "complete": False,
                "error": f"{type(e).__name__}: {e}"}
    journalled, unreadable = 0, 0
    for s in rec.series:
        for f in s.frames:
            journalled += 1
            try:
                plane = np.asarray(s.data[f.index["t"], f.index["c"], f.index.get("z", 0)])
                if plane.shape != tuple(f.shape) or not plane.any():
                    unreadable += 1
            except Exception:  # noqa: BLE001 - any failure to read is a lost frame
                unreadable += 1
    lost = unreadable + max((counted or 0) - journalled, 0)
    return {"journalled": journalled, "unreadable": unreadable, "lost": lost,
            "complete": bool(rec.attrs.get("scopecast", {}).get("complete"))}


# ------------------------------------------------------------------ the benchmark
def _package(tmp: Path, synthetic: bool) -> Path:
    from scopecast.daemon.demo import shipped_packages

    shipped = [p for p in shipped_packages() if p.name == "virtual-staining"]
    dst = tmp / ("virtual-staining" if shipped and not synthetic else "synthetic")
    if shipped and not synthetic:
        shutil.copytree(shipped[0], dst)
        return dst
    from scopecast.models.synthetic import write_package

    return write_package(dst, ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"], ["nuclei", "membrane"],
                         name="synthetic", width=8, layers=3, tile=128)
