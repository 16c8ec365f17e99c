"""Simulated-camera frame rate through the real core (snapImage + getImage).

(a) repeated patterns at one position: the optics are cached, each frame costs
    the camera noise model;
(b) a new stage position for every frame: slide rendering + Abbe imaging.

Run: python benchmarks/bench_simulator.py [--sizes 512 2048] [--seconds 3]
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

SHIPPED = Path(__file__).resolve().parents[1] / "hardware_configs" / "sim-ledarray.cfg"
CYCLE = ("DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF")


def _backend(size: int):
    from scopecast.daemon.backend import load_mmcore_backend

    text = SHIPPED.read_text().replace("Width,512", f"Width,{size}").replace("Height,512", f"Height,{size}")
    cfg = Path(tempfile.mkdtemp()) / f"sim-{size}.cfg"
    cfg.write_text(text)
    return load_mmcore_backend(cfg)


def _rate(backend, channels, seconds: float, move: bool, max_frames: int) -> tuple[float, float]:
    """(frames/s, ms/frame p50) over the channels in turn."""
    times = []
    rng = np.random.default_rng(0)
    t_end = time.perf_counter() + seconds
    i = 0
    while (time.perf_counter() < t_end or i < 2) and i < max_frames:
        backend.set_channel(channels[i % len(channels)])
        if move:
            backend.move_um(*rng.uniform(-20000, 20000, 2))
        t0 = time.perf_counter()
        backend.snap()
        times.append(time.perf_counter() - t0)
        i += 1
    return len(times) / sum(times), float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")
    rows = []
    for size in args.sizes:
        b = _backend(size)
        for label, channels in (("BF", ("BF",)), ("DPC+BF+DF cycle", CYCLE), ("DF", ("DF",))):
            for ch in channels:  # warm the optics cache for (a)
                b.set_channel(ch)
                b.snap()
            fps_a, ms_a = _rate(b, channels, args.seconds, move=False, max_frames=100000)
            fps_b, ms_b = _rate(b, channels, args.seconds, move=True, max_frames=6 if size > 1024 else 60)
            rows.append((f"{size}x{size}", label, fps_a, ms_a, fps_b, ms_b))
        b.close()
    print()
    print(f"{'frame':<10} {'channels':<16} {'(a) same position':>22} {'(b) new position/frame':>26}")
    print(f"{'':<10} {'':<16} {'frames/s':>10} {'p50 ms':>11} {'frames/s':>13} {'p50 ms':>12}")
    for size, label, fa, ma, fb, mb in rows:
        print(f"{size:<10} {label:<16} {fa:10.1f} {ma:11.2f} {fb:13.2f} {mb:12.1f}")


if __name__ == "__main__":
    main()
