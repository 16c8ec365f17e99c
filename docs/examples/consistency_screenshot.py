"""Make ``docs/gui-consistency.png``: the viewer's trust badge when super-resolution draws what the input does not show.

Real processes throughout, like ``trust_screenshot.py``: ``scopecast up`` (the daemon on the simulated LED-array
scope with its ``filaments`` slide, a morphology no package was trained on, and one engine running the shipped
``super-resolution`` package at its default check budget) and ``scopecast gui --screenshot`` (offscreen),
driven over the control sockets like any client. Live runs the Membrane channel alone (widefield, 10 ms:
within the package's training exposures); the engine's consistency check (the output blurred back through
the widefield optics against the input frame) judges the scene on its first bundle and again as its credit
allows; the viewer renders after ``--frames`` results and exits.

Usage (about 1 minute on a 2-core machine)::

    .venv/bin/python docs/examples/consistency_screenshot.py --out docs/gui-consistency.png

It prints the engine's trust summary: the reasons the picture shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trust_screenshot import (  # noqa: E402  (a sibling's)
    CONFIG, ROOT, free_port, shut_down, start_up, start_viewer, terminate, wait_for)


def write_config(path: Path, sample: str, sensor: int) -> None:
    """The shipped simulator config with the sensor size and the slide ``sample``."""
    lines = []
    for line in CONFIG.read_text().splitlines():
        if "SensorWidth" in line or "SensorHeight" in line:
            line = line.rsplit(",", 1)[0] + f",{sensor}"
        lines.append(line)
    lines.append(f"#py Property,Scope,Sample,{sample}")  # last: after the config's own Sample line
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "gui-consistency.png"))
    p.add_argument("--sample", default="filaments", help="the simulator's slide")
    p.add_argument("--sensor", type=int, default=256, choices=[256, 512])
    p.add_argument("--exposure-ms", type=float, default=10.0)
    p.add_argument("--interval-ms", type=float, default=500.0, help="live cycle interval (paces the results)")
    p.add_argument("--frames", type=int, default=20, help="results the viewer shows before the screenshot")
    args = p.parse_args()

    from scopecast.daemon.control import ControlClient

    engine_at = (ROOT / "models" / "packages" / "super-resolution",
                 *(f"tcp://127.0.0.1:{free_port()}" for _ in range(2)))
    ctl, stream = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    with tempfile.TemporaryDirectory(prefix="consistency-shot-") as tmp:
        tmp_dir = Path(tmp)
        write_config(tmp_dir / "sim.cfg", args.sample, args.sensor)
        up = start_up(tmp_dir / "sim.cfg", tmp_dir / "data", ctl, stream, [engine_at])
        gui = None
        try:
            with ControlClient(ctl, timeout_s=10) as daemon, ControlClient(engine_at[2], timeout_s=10) as engine:
                wait_for("the daemon", lambda: daemon.request("status"), 120)
                wait_for("the engine", lambda: engine.request("status"), 180)
                gui = start_viewer(ctl, stream, [engine_at], args.out, args.frames)
                # live starts once the viewer subscribes to the frames (beside the engine) and to the results
                wait_for("the viewer", lambda: daemon.request("status")["stream"]["subscribers"] >= 2
                         and engine.request("status")["subscribers"] >= 1, 120)
                daemon.request("move_stage", x=0.0, y=0.0)
                daemon.request("start_live", channels=[{"name": "Membrane", "exposure_ms": args.exposure_ms}],
                               interval_ms=args.interval_ms)
                rc = gui.wait(timeout=600)
                est = engine.request("status")
                print(f"consistency_screenshot: viewer exit {rc}; {est['results_published']} results on "
                      f"{args.sample}")
                print(f"  trust: {est['trust']}")
                daemon.request("stop")
                shut_down(daemon, up)
                return rc
        finally:
            terminate(gui, up)


if __name__ == "__main__":
    sys.exit(main())
