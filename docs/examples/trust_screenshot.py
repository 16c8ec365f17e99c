"""Make ``docs/gui-trust.png``: the viewer's trust display on cells, then on empty glass.

Real processes throughout: ``scopecast up`` (the daemon on the simulated LED-array scope and
one engine running the shipped ``virtual-staining`` package), ``scopecast gui --screenshot``
(offscreen), driven over the control sockets like any client:

1. The specimen is a patch of the simulator's own ``cells`` slide (seed 0, around the slide
   origin, a region no package was trained on), written as a specimen file (docs/specimens.md)
   on the camera's 0.65 µm grid, so the field at the origin is the procedural cells field
   pixel for pixel; outside the patch the slide is empty glass.
2. Live runs on cells with spot checks (real Nuclei and Membrane captures compared with the
   virtual stain) until ``--checks`` checks have been plotted.
3. The stage moves to empty glass (``move_stage``, as a user would): the input guards refuse
   the field, the stain is withheld under a red NOT TRUSTED badge naming its reasons, and
   spot checks skip the untrusted results (the fidelity plot keeps the checks on cells).
4. The viewer renders after ``--frames`` results (all but the first ``--frames`` minus
   ``--blank-results`` come from the empty field) and exits.

Usage (about 1 minute on a 2-core machine)::

    .venv/bin/python docs/examples/trust_screenshot.py --out docs/gui-trust.png

It prints the spot-check figures and the trust reasons the picture shows.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "hardware_configs" / "sim-ledarray.cfg"
PIXEL_UM = 0.65  # camera pixel at the default 10x objective (6.5 µm sensor pixel)
BLANK_AT_UM = (5000.0, 0.0)  # far outside the specimen patch: empty glass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_specimen(path: Path, size_um: float, seed: int) -> None:
    """The ``cells`` slide around the origin, on the camera grid, as a specimen file."""
    from scopecast.daemon.sim.slide import Slide

    n = int(round(size_um / PIXEL_UM / 2)) * 2  # even: file pixel centres fall on the camera grid
    x0 = -(n - 1) / 2 * PIXEL_UM
    maps = Slide("cells", seed).render(x0, x0, PIXEL_UM, (n, n))
    np.savez(path, opd=maps.opd, absorption=maps.absorption, nuclei=maps.labels["nuclei"],
             membrane=maps.labels["membrane"])


def write_config(path: Path, specimen: Path, sensor: int) -> None:
    """The shipped simulator config, with the sensor size and the specimen file."""
    lines = []
    for line in CONFIG.read_text().splitlines():
        if "SensorWidth" in line or "SensorHeight" in line:
            line = line.rsplit(",", 1)[0] + f",{sensor}"
        lines.append(line)
    # last: after initialization and after the config's own Sample line (loading the file sets Sample to 'file')
    lines += [f"#py Property,Scope,SpecimenPixelSizeUm,{PIXEL_UM}", f"#py Property,Scope,SpecimenFile,{specimen}"]
    path.write_text("\n".join(lines) + "\n")


def wait_for(what: str, cond, timeout_s: float, poll_s: float = 0.5):
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        try:
            value = cond()
        except (TimeoutError, OSError):
            value = None
        if value:
            return value
        time.sleep(poll_s)
    raise SystemExit(f"trust_screenshot: timed out after {timeout_s:g} s waiting for {what}")


EXE = [sys.executable, "-m", "scopecast.daemon.cli"]
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def start_up(config: Path, data_dir: Path, control: str, stream: str,
             engines: list[tuple[Path, str, str]]) -> subprocess.Popen:
    """``scopecast up``: the daemon on ``config`` and one engine per ``(package, results, control)``."""
    return subprocess.Popen([*EXE, "-q", "up", "--config", str(config), "--data-dir", str(data_dir), "--control",
                             control, "--stream", stream, "--no-spares",
                             *[a for m, r, c in engines for a in ("--engine", f"{m},{r},{c}")]], env=ENV)


def start_viewer(control: str, stream: str, engines: list[tuple[Path, str, str]], out: str,
                 frames: int) -> subprocess.Popen:
    """``scopecast gui --screenshot out`` (offscreen) on the daemon and the engines, after ``frames`` results."""
    return subprocess.Popen([*EXE, "gui", "--control", control, "--stream", stream,
                             *[a for _, r, c in engines for a in ("--engine", f"{r},{c}")],
                             "--screenshot", out, "--frames", str(frames), "--timeout", "600"], env=ENV)


def terminate(*procs: subprocess.Popen | None) -> None:
    """SIGTERM each process still running (the viewer, ``scopecast up``) and wait for it."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def shut_down(daemon, up: subprocess.Popen) -> None:
    """Ask the daemon to shut down (``scopecast up`` then stops its engines) and wait for ``up`` to exit."""
    daemon.request("shutdown")
    up.wait(timeout=60)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "gui-trust.png"))
    p.add_argument("--sensor", type=int, default=256, choices=[256, 512])
    p.add_argument("--checks", type=int, default=6, help="spot checks on cells before moving to empty glass")
    p.add_argument("--period", type=float, default=3.0, help="spot-check period, s")
    p.add_argument("--interval-ms", type=float, default=1000.0, help="live cycle interval (paces the results)")
    p.add_argument("--frames", type=int, default=34, help="results the viewer shows before the screenshot")
    p.add_argument("--blank-results", type=int, default=10, help="results on empty glass at least, before it")
    args = p.parse_args()

    from scopecast.daemon.control import ControlClient

    model = ROOT / "models" / "packages" / "virtual-staining"
    ctl, stream, res, ectl = (f"tcp://127.0.0.1:{free_port()}" for _ in range(4))
    with tempfile.TemporaryDirectory(prefix="trust-shot-") as tmp:
        tmp = Path(tmp)
        write_specimen(tmp / "cells.npz", 650.0, seed=0)
        write_config(tmp / "sim.cfg", tmp / "cells.npz", args.sensor)
        up = start_up(tmp / "sim.cfg", tmp / "data", ctl, stream, [(model, res, ectl)])
        gui = None
        try:
            with ControlClient(ctl, timeout_s=10) as daemon, ControlClient(ectl, timeout_s=10) as engine:
                wait_for("the daemon", lambda: daemon.request("status"), 120)
                wait_for("the engine", lambda: engine.request("status"), 180)
                before = daemon.request("status")["control"]["requests"]
                gui = start_viewer(ctl, stream, [(model, res, ectl)], args.out, args.frames)
                # the viewer subscribes to the frames (beside the engine) and to the results, and its event
                # loop runs (it polls the daemon's status every second: requests beyond this script's own).
                # Live starts only then: a raw pane whose first update already has a frame keeps its empty
                # message box drawn (a small dark rectangle at the pane's centre; gui/panes.py creates
                # PaneView.message visible).
                mine = {"n": 1}

                def viewer_ready() -> bool:
                    mine["n"] += 1
                    st = daemon.request("status")
                    return (st["stream"]["subscribers"] >= 2 and st["control"]["requests"] - before - mine["n"] >= 3
                            and engine.request("status")["subscribers"] >= 1)

                wait_for("the viewer", viewer_ready, 120)
                daemon.request("move_stage", x=0.0, y=0.0)
                daemon.request("start_live", interval_ms=args.interval_ms)
                daemon.request("start_spot_checks", model="virtual-staining", results=res, period_s=args.period,
                               dose_per_position=500.0, dose_per_session=5000.0)
                seen: dict[int, dict] = {}

                def enough_checks() -> dict | None:
                    st = daemon.request("spot_checks")["models"]["virtual-staining"]
                    if st["last"]:
                        seen[st["checks"]] = st["last"]
                    return st if st["checks"] >= args.checks else None

                checks = wait_for(f"{args.checks} spot checks", enough_checks, 600, poll_s=0.2)
                on_cells = engine.request("status")["results_published"]
                if on_cells > args.frames - args.blank_results:
                    raise SystemExit(f"trust_screenshot: {on_cells} results on cells already: raise --frames or "
                                     "--interval-ms so that the picture is taken on empty glass")
                daemon.request("move_stage", x=BLANK_AT_UM[0], y=BLANK_AT_UM[1])
                print(f"trust_screenshot: {checks['checks']} spot checks on cells ({on_cells} results); "
                      f"comparator: {checks['comparator']}; alarm below {checks['alarm_below_db']}")
                for n, c in sorted(seen.items()):
                    figs = ", ".join(f"{k} {v['psnr_db']:.2f} dB (r {v['pearson']:.3f})"
                                     for k, v in c["channels"].items())
                    print(f"  check {n}: trust score {c['trust_score']}: {figs}")
                rc = gui.wait(timeout=600)
                final = daemon.request("spot_checks")["models"]["virtual-staining"]
                est = engine.request("status")
                print(f"trust_screenshot: viewer exit {rc}; {est['results_published']} results "
                      f"({est['results_published'] - on_cells} on empty glass)")
                print(f"  spot checks: {final['checks']}, skipped {final['skipped']}, alarm {final['alarm']} "
                      f"{final['alarm_reasons']}, thresholds {final['alarm_below_db']}")
                print(f"  running fidelity: {final['fidelity']}")
                print(f"  trust: {est['trust']}")
                daemon.request("stop_spot_checks")
                daemon.request("stop")
                shut_down(daemon, up)
                return rc
        finally:
            terminate(gui, up)


if __name__ == "__main__":
    sys.exit(main())
