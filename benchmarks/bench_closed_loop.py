"""Closed-loop latency of smart acquisition on the simulated scope.

From the exposure start of the deciding frame to the moment the first hardware
action starts, measured by the daemon for every firing. The stage alternates
between ordinary cells and the dense colony so the trigger re-arms and fires
again; the shipped virtual-staining model decides. Daemon and engine run as in
deployment (separate processes, separate cores).

Run: python benchmarks/bench_closed_loop.py [--events 20] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
COLONY = (40000.0, 0.0)


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    from scopecast.daemon.control import ControlClient

    tmp = Path(tempfile.mkdtemp(prefix="scopecast-loop-"))
    cfg = (ROOT / "hardware_configs" / "sim-ledarray.cfg").read_text()
    cfg = cfg.replace("Width,512", f"Width,{args.size}").replace("Height,512", f"Height,{args.size}")
    (tmp / "sim.cfg").write_text(cfg)
    triggers = {
        "triggers": [{"name": "colony", "model": "virtual-staining",
                      "measurement": {"kind": "area_fraction", "channel": "nuclei", "threshold": 2000},
                      "condition": {"above": 0.25, "rearm_below": 0.18}, "cooldown_s": 0,
                      "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 50}]}],
        "safety": {"dose_per_position": 1e9, "dose_per_session": 1e9, "max_actions_per_minute": 1000},
    }
    ctl, stream, results = _port(), _port(), _port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cpus = os.cpu_count() or 1
    daemon = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(tmp / "sim.cfg"),
                               "--control", ctl, "--stream", stream, "--data-dir", str(tmp / "data"),
                               "--cpus", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "engine", "--model",
                               str(ROOT / "models" / "packages" / "virtual-staining"), "--stream", stream,
                               "--results", results, "--control", _port(), "--cpus", str(1 % cpus)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ControlClient(ctl, timeout_s=120) as c:
            while True:
                try:
                    c.request("status", timeout_s=1)
                    break
                except TimeoutError:
                    pass
            time.sleep(2.0)  # engine start-up
            # visit both fields once so the simulator's optics are cached (the figure is the loop, not rendering)
            for x, y in (COLONY, (0.0, 0.0)):
                c.request("move_stage", x=x, y=y)
                for ch in [*CYCLE, "Nuclei"]:
                    c.request("snap", channel=ch)
            c.request("set_exposure", exposure_ms=10.0)
            c.request("load_triggers", config=triggers, sources={"virtual-staining": results})
            c.request("start_live", channels=CYCLE, interval_ms=0)
            t_end = time.monotonic() + 20 * args.events
            while c.request("triggers")["fired"] < args.events and time.monotonic() < t_end:
                fired = c.request("triggers")["fired"]
                c.request("move_stage", x=COLONY[0], y=COLONY[1])
                while c.request("triggers")["fired"] == fired and time.monotonic() < t_end:
                    time.sleep(0.02)
                c.request("move_stage", x=0.0, y=0.0)
                time.sleep(1.0)  # re-arm on ordinary cells
            c.request("stop")
            time.sleep(1.0)
            st = c.request("triggers")
    finally:
        for p in (engine, daemon):
            p.terminate()
            p.wait(timeout=30)
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
    lat = np.array([x["closed_loop_latency_ms"] for x in lines if "outcome_of" in x])
    print(f"machine: {platform.machine()}, {cpus} cores, python {platform.python_version()}; "
          f"{args.size}x{args.size} frames, virtual-staining on ort-cpu")
    print(f"{len(lat)} firings; closed-loop latency (deciding exposure -> action start): "
          f"p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms, max {lat.max():.1f} ms")


if __name__ == "__main__":
    main()
