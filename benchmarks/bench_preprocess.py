"""Normalization of a 512² × 6 bundle (issue 14 item 4: ≤ 1 ms), by what the engine's thread did just before.

The engine's own path: :func:`scopecast.models.manifest.normalize` with a package's calibrated normalization
into a reused float32 buffer, on frames that arrived over a real ZeroMQ socket (their buffers, no copy), as
``InferenceWorker.preprocess`` does. Before each timed bundle the thread normalizes ``WARM`` bundles
(the steady state, whatever the previous row did), then meets one condition: nothing else (steady), worked 50 ms without memory traffic (a compute-bound model pass), streamed
64 MiB through memory (which also flushes every cache), or slept (an engine waiting for a camera slower than
its model). Each row is the median of ``--n`` bundles; the rows alternate bundle by bundle, so the machine's
drift touches them alike.

Run: taskset -c 1 python benchmarks/bench_preprocess.py [--model PACKAGE] [--size 512] [--n 41]
(pinned to one core like ``scopecast engine --cpus``: ZeroMQ's I/O thread shares it, as in the engine).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
FLUSH_BYTES = 64 << 20  # larger than any L3 here: writing it evicts the bundle and the output buffer
WARM = 5


def _compute(seconds: float) -> None:
    t_end = time.perf_counter() + seconds
    x = 1.0
    while time.perf_counter() < t_end:
        for _ in range(1000):
            x = x * 1.0000001 + 1e-9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "packages" / "virtual-staining"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=41)
    args = ap.parse_args()
    from scopecast.daemon.inference.package import load_package
    from scopecast.models.manifest import normalize

    m = load_package(Path(args.model)).manifest
    rng = np.random.default_rng(0)
    raw = [rng.integers(100, 4000, (args.size, args.size), dtype=np.uint16) for _ in m.inputs]
    ctx = zmq.Context.instance()
    tx, rx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    port = tx.bind_to_random_port("tcp://127.0.0.1")
    rx.connect(f"tcp://127.0.0.1:{port}")
    flush = np.ones(FLUSH_BYTES // 4, np.float32)
    out = normalize(raw, m.normalization)  # the reused buffer

    def stream_memory() -> None:
        flush.__iadd__(1.0)

    conditions: dict[str, Callable[[], None]] = {
        "steady": lambda: None,
        "50 ms compute": lambda: _compute(0.05),
        "64 MiB streamed": stream_memory,
        "idle 2 ms": lambda: time.sleep(0.002),
        "idle 20 ms": lambda: time.sleep(0.020),
        "idle 100 ms": lambda: time.sleep(0.100),
    }
    times: dict[str, list[float]] = {c: [] for c in conditions}
    for _ in range(args.n):
        for label, before in conditions.items():
            for f in raw:
                tx.send(f, copy=False)
            frames = [np.frombuffer(rx.recv(copy=False).buffer, np.uint16).reshape(args.size, args.size)
                      for _ in raw]
            for _ in range(WARM):
                normalize(raw, m.normalization, out)
            before()
            t = time.perf_counter()
            normalize(frames, m.normalization, out)
            times[label].append(time.perf_counter() - t)
    rx.close()
    tx.close()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}; {m.name}: {len(raw)} × {args.size}² uint16 -> float32, "
          f"{m.normalization.kind}; n = {args.n} per row")
    print(f"  {'just before':<20}{'p50 ms':>9}{'p95 ms':>9}")
    for label, ts in times.items():
        a = np.array(ts) * 1e3
        print(f"  {label:<20}{np.percentile(a, 50):9.3f}{np.percentile(a, 95):9.3f}")


if __name__ == "__main__":
    main()
