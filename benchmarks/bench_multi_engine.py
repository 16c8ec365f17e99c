"""Several engines on one live cycle (the demo's main job): free-running, paced by one engine, paced by all.

`make demo` runs the virtual-staining and the super-resolution engine on one live
cycle (DPC ×4, BF, DF for the first, Membrane for the second). Free-running, the
simulated camera makes frames as fast as the CPU renders them and both engines
drop most bundles; paced by an engine (``start_live pace_from``, daemon/pacing.py)
each cycle is acquired just in time for that engine's model; paced by all of them,
just in time for the slowest. This runs ``scopecast daemon`` and one
``scopecast engine`` per package as separate processes, as ``scopecast up``
starts them (default threads, the machine's cores shared; the demo's simulated
scope, camera noise on), and alternates the modes over rounds (ABC ABC ...) so
that load drifts evenly over them. Per mode and engine: results/s, exposure →
result latency (the bundle's first exposure start to the result's publication,
from the result headers), frames of its own channels dropped per result; per
mode, frames acquired per second and the CPU the daemon and the engines spent
per second.

Run: python benchmarks/bench_multi_engine.py [--rounds 3] [--seconds 10]
     [--package models/packages/virtual-staining --package models/packages/super-resolution]
     [--modes free-running,first,all] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_in_process import _cpu_model, _cpu_s, _versions, _wait_ready  # noqa: E402
from bench_closed_loop import _port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "models" / "packages" / "virtual-staining", ROOT / "models" / "packages" / "super-resolution"]
MODES = {"free-running": "free-running (as fast as the camera goes)",
         "first": "paced by the first engine",
         "all": "paced by all engines (the slowest model)"}
WARMUP_RESULTS = 3  # per engine, before each measured window


def cycle_for(packages: list[Path]) -> list[dict[str, Any]]:
    """The live cycle the demo composes: every model's inputs, each at an exposure its model was trained at."""
    from scopecast.daemon.inference.package import load_package

    exposure: dict[str, float] = {}
    for p in packages:
        m = load_package(p).manifest
        for c in m.inputs:
            exposure.setdefault(c, m.trained_exposure_ms or 10.0)
    return [{"name": c, "exposure_ms": t} for c, t in exposure.items()]


class Results:
    """Each engine's ``done`` headers (no pixels), kept per live job."""

    def __init__(self, addresses: list[str]) -> None:
        import zmq

        self.headers: list[list[dict[str, Any]]] = [[] for _ in addresses]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = []
        for a in addresses:
            s = zmq.Context.instance().socket(zmq.SUB)
            s.setsockopt(zmq.SUBSCRIBE, b"done")
            s.setsockopt(zmq.RCVHWM, 10000)
            s.connect(a)
            self._socks.append(s)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import zmq

        poller = zmq.Poller()
        for s in self._socks:
            poller.register(s, zmq.POLLIN)
        index = {s: i for i, s in enumerate(self._socks)}
        while not self._stop.is_set():
            for s, _ in poller.poll(100):
                h = json.loads(bytes(s.recv_multipart(copy=False)[1]))
                with self._lock:
                    self.headers[index[s]].append(h)

    def of(self, i: int, acquisition_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [h for h in self.headers[i] if h.get("acquisition_id") == acquisition_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for s in self._socks:
            s.close(linger=0)


def _dropped(engine: Any) -> int:
    """Frames an engine dropped, less those of channels its model does not take (``unused_channel``: every
    engine receives the whole cycle)."""
    return sum(n for k, n in engine.request("status")["dropped"].items() if not k.endswith("unused_channel"))


def measure(c: Any, engines: list[Any], results: Results, cycle: list[dict[str, Any]], mode: str, seconds: float,
            pids: dict[str, int], addresses: list[str]) -> dict[str, Any]:
    """One live job in ``mode``: after every engine's warm-up results, a window of ``seconds``."""
    pace = {"first": addresses[:1], "all": addresses}.get(mode)
    job = c.request("start_live", channels=cycle, **({"pace_from": pace} if pace else {}))
    acq = job["acquisition_id"]
    t_end = time.monotonic() + 300
    while min(len(results.of(i, acq)) for i in range(len(engines))) < WARMUP_RESULTS:
        if time.monotonic() > t_end:
            raise RuntimeError(f"{mode}: fewer than {WARMUP_RESULTS} results of every engine within 300 s")
        time.sleep(0.05)
    n0 = [len(results.of(i, acq)) for i in range(len(engines))]
    d0 = [_dropped(e) for e in engines]
    f0 = c.request("status")["frames_acquired"]
    cpu0 = {k: _cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    cpu = {k: (_cpu_s(p) - cpu0[k]) / dt for k, p in pids.items()}
    frames = (c.request("status")["frames_acquired"] - f0) / dt
    drops = [_dropped(e) - d for e, d in zip(engines, d0, strict=True)]
    job = c.request("stop")["stopped"]
    out: dict[str, Any] = {"frames_per_s": frames, "cpu": cpu, "pacing": job.get("pacing"), "engines": []}
    for i in range(len(engines)):
        hs = results.of(i, acq)[n0[i]:]
        lat = [(h["t_published_ns"] - h["t_bundle_exposure_start_ns"]) / 1e6 for h in hs
               if h.get("t_bundle_exposure_start_ns")]
        out["engines"].append({"rate": len(hs) / dt, "n": len(hs),
                               "p50": float(np.percentile(lat, 50)) if lat else float("nan"),
                               "p99": float(np.percentile(lat, 99)) if lat else float("nan"),
                               "drops_per_result": drops[i] / max(len(hs), 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", action="append", type=Path, help="engine packages (default: the demo's two)")
    ap.add_argument("--modes", default="free-running,first,all", help=f"comma-separated, of {list(MODES)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per mode and round")
    ap.add_argument("--size", type=int, default=512, help="camera frame size (px)")
    args = ap.parse_args()
    packages = [p.resolve() for p in (args.package or PACKAGES)]
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        ap.error(f"unknown mode(s) {unknown}; choose from {list(MODES)}")

    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.sim import sized_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-multi-"))
    cfg = sized_config(tmp, args.size, ROOT / "hardware_configs" / "sim-ledarray.cfg")  # the demo's scope
    cycle = cycle_for(packages)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "scopecast.daemon.cli"]
    ctl, stream = _port(), _port()
    addresses, controls = [_port() for _ in packages], [_port() for _ in packages]
    procs = {"daemon": subprocess.Popen([*cli, "daemon", "--config", str(cfg), "--control", ctl, "--stream", stream,
                                         "--data-dir", str(tmp / "data")], env=env, stdout=subprocess.DEVNULL,
                                        stderr=(tmp / "daemon.log").open("w"))}
    for i, (p, r, e) in enumerate(zip(packages, addresses, controls, strict=True)):
        procs[f"engine {i}"] = subprocess.Popen(
            [*cli, "engine", "--model", str(p), "--stream", stream, "--results", r, "--control", e,
             "--runtime", "ort-cpu"], env=env, stdout=subprocess.DEVNULL, stderr=(tmp / f"engine{i}.log").open("w"))
    results = Results(addresses)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        with ControlClient(ctl, timeout_s=120) as c:
            engines = [ControlClient(e, timeout_s=120).__enter__() for e in controls]
            _wait_ready(c, procs["daemon"], "daemon", tmp / "daemon.log")
            for i, ec in enumerate(engines):
                _wait_ready(ec, procs[f"engine {i}"], f"engine {i}", tmp / f"engine{i}.log")
            t_join = time.monotonic() + 120
            while c.request("status")["stream"]["subscribers"] < len(engines):
                if time.monotonic() > t_join:
                    raise RuntimeError("the engines did not subscribe to the frame stream within 120 s")
                time.sleep(0.05)
            pids = {k: p.pid for k, p in procs.items()}
            for r in range(args.rounds):
                for m in modes:
                    row = measure(c, engines, results, cycle, m, args.seconds, pids, addresses)
                    rows[m].append(row)
                    print(f"round {r + 1} {m:13s} " + " | ".join(
                        f"{p.name}: {e['rate']:.2f}/s p50 {e['p50']:.0f} ms" for p, e in zip(packages, row["engines"],
                                                                                            strict=True))
                          + f" | {row['frames_per_s']:.1f} frames/s", file=sys.stderr, flush=True)
            for ec in engines:
                ec.__exit__(None, None, None)
    finally:
        results.close()
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(tmp, ignore_errors=True)  # kept when the run failed: the error names its logs there

    def med(vals: list[float]) -> str:
        return f"{np.median(vals):.2f} ({min(vals):.2f}–{max(vals):.2f})"

    print(f"\n{args.size}² live cycle {[ch['name'] for ch in cycle]}, {args.rounds} rounds × {args.seconds:g} s per "
          f"mode; {os.cpu_count()} cores ({_cpu_model()}); {_versions()}")
    print("medians (min–max over rounds)\n")
    head = "| mode | " + " | ".join(f"{p.name} results/s | p50 ms | p99 ms | drops/result" for p in packages)
    print(head + " | frames/s | CPU (cores): daemon + engines |")
    print("| --- |" + " ---: |" * (4 * len(packages) + 2))
    for m in modes:
        cells = []
        for i in range(len(packages)):
            es = [row["engines"][i] for row in rows[m]]
            cells += [med([e["rate"] for e in es]), f"{np.median([e['p50'] for e in es]):.0f}",
                      f"{np.median([e['p99'] for e in es]):.0f}",
                      f"{np.median([e['drops_per_result'] for e in es]):.1f}"]
        cpu_d = np.median([row["cpu"]["daemon"] for row in rows[m]])
        cpu_e = np.median([sum(v for k, v in row["cpu"].items() if k != "daemon") for row in rows[m]])
        cells += [f"{np.median([row['frames_per_s'] for row in rows[m]]):.1f}", f"{cpu_d:.2f} + {cpu_e:.2f}"]
        print(f"| {MODES[m]} | " + " | ".join(cells) + " |")
    if "free-running" in modes:
        print("\nratios within each round, against free-running:")
        for m in modes:
            if m == "free-running":
                continue
            parts = []
            for i, p in enumerate(packages):
                rs = [a["engines"][i]["rate"] / max(b["engines"][i]["rate"], 1e-9)
                      for a, b in zip(rows[m], rows["free-running"], strict=True)]
                ls = [a["engines"][i]["p50"] - b["engines"][i]["p50"]
                      for a, b in zip(rows[m], rows["free-running"], strict=True)]
                parts.append(f"{p.name} {np.median(rs):.2f}× results/s, {np.median(ls):+.0f} ms p50")
            print(f"  {MODES[m]}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
