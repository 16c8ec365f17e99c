"""Make ``docs/gui.png``: the viewer with live virtual staining and super-resolution on cells.

Real processes: ``scopecast up`` (the daemon on the shipped simulator config and two engines
running the shipped ``virtual-staining`` and ``super-resolution`` packages) and ``scopecast gui
--screenshot`` (offscreen). Once the viewer is subscribed, live runs the cycle both models need
(DPC ×4, BF, DF and Membrane), paced by both engines (``start_live pace_from``),
and the viewer renders after ``--frames`` results and exits.

Usage (about 1–2 minutes on a 2-core machine)::

    .venv/bin/python docs/examples/viewer_screenshot.py --out docs/gui.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trust_screenshot import (  # noqa: E402  (same directory)
    CONFIG, ROOT, free_port, shut_down, start_up, start_viewer, terminate, wait_for)

CYCLE = [("DPC-Left", 10.0), ("DPC-Right", 10.0), ("DPC-Top", 10.0), ("DPC-Bottom", 10.0), ("BF", 10.0),
         ("DF", 10.0), ("Membrane", 20.0)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "gui.png"))
    p.add_argument("--frames", type=int, default=40, help="results the viewer shows before the screenshot (its latency "
                   "tables then show more than the start-up)")
    args = p.parse_args()

    from scopecast.daemon.control import ControlClient

    pkgs = ROOT / "models" / "packages"
    ctl, stream = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    engines = [(pkgs / name, f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
               for name in ("virtual-staining", "super-resolution")]
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"viewer-shot-{os.getpid()}"
    up = start_up(CONFIG, data, ctl, stream, engines)
    gui = None
    try:
        with ControlClient(ctl, timeout_s=10) as daemon:
            wait_for("the daemon", lambda: daemon.request("status"), 120)
            for _, _, c in engines:
                with ControlClient(c, timeout_s=10) as e:
                    wait_for(f"the engine on {c}", lambda e=e: e.request("status"), 180)
            gui = start_viewer(ctl, stream, engines, args.out, args.frames)
            # the viewer's frame subscription has arrived (the engines hold one each)
            wait_for("the viewer", lambda: daemon.request("status")["stream"]["subscribers"] >= 3, 120)
            daemon.request("start_live", channels=[{"name": n, "exposure_ms": t} for n, t in CYCLE],
                           pace_from=[results for _, results, _ in engines])
            rc = gui.wait(timeout=600)
            job = daemon.request("stop")["stopped"]
            print(f"viewer_screenshot: viewer exit {rc}; {job['frames']} frames, pacing {job['pacing']}")
            shut_down(daemon, up)
            return rc
    finally:
        terminate(gui, up)


if __name__ == "__main__":
    sys.exit(main())
