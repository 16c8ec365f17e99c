"""Several streams sharing one Triton server: throughput with 1, 2 and 4 concurrent streams.

Each stream is its own process (as a daemon + engine beside each microscope
would be) running the engine's worker (guards, normalization, tiling, output
scaling, trust) on camera-sized bundles of a model package, with the Triton
runtime (gRPC + shared memory to one server) or, for comparison, its own local
onnxruntime session. Printed: results/s over all streams, per-result latency
p50/p95 (one bundle through the worker), per stream count.

    python benchmarks/bench_triton.py                      # starts the PyPI tritonserver itself
    python benchmarks/bench_triton.py --url 127.0.0.1:8001 # a server already serving the repository
    python benchmarks/bench_triton.py --streams 1 2 4 --seconds 10 --instances 2 --size 512

The server needs ``pip install --no-deps nvidia-pytriton`` (or ``SCOPECAST_TRITONSERVER``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _stream(package: str, runtime: str, bundle: str, seconds: float, threads: int, start, out) -> None:
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    pkg = load_package(package)
    m = pkg.manifest
    worker = InferenceWorker(pkg, open_runtime(pkg, runtime, threads=threads))
    data = np.load(bundle)
    frames = [StreamFrame({"channel": c, "seq": i, "bundle_id": 0, "acquisition_id": "bench",
                           "pixel_size_um": m.pixel_size_um or 0.0}, data[i]) for i, c in enumerate(m.inputs)]
    r = worker.process(frames)  # warm-up (sessions, shared-memory regions)
    if r.header["trust"].get("action") == "withheld":
        print(f"warning: the guards withheld the bundle ({r.header['trust'].get('reasons')}): no inference timed",
              file=sys.stderr)
    out.put("warm")
    start.wait()
    lat, t_end = [], time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        worker.process(frames)
        lat.append(time.perf_counter() - t)
    out.put((len(lat), time.perf_counter() - t0, lat))


def capture_bundle(package: str, size: int, path: Path) -> Path:
    """One bundle of the package's input channels from the simulated scope (``size``² camera), saved as .npy."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.sim import sized_config

    m = load_package(package).manifest
    backend = load_mmcore_backend(sized_config(path.parent, size))
    try:
        frames = []
        for c in m.inputs:
            backend.set_channel(c)
            frames.append(backend.snap().data)
    finally:
        backend.close()
    np.save(path, np.stack(frames))
    return path


def measure(package: str, runtime: str, streams: int, bundle: Path, seconds: float, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_stream, args=(package, runtime, str(bundle), seconds, threads, start, out))
             for _ in range(streams)]
    for p in procs:
        p.start()
    for _ in procs:  # every stream is warm (model loaded, one bundle run) before the clock starts
        if out.get(timeout=300) != "warm":
            raise RuntimeError("a stream failed to warm up")
    start.set()
    res = [out.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in res)
    wall = max(r[1] for r in res)
    lat = np.concatenate([r[2] for r in res]) * 1e3
    return {"streams": streams, "runtime": "triton" if runtime.startswith("triton://") else runtime,
            "results": n, "results_per_s": n / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--package", default=str(Path(__file__).resolve().parents[1] / "models" / "packages"
                                             / "virtual-staining"))
    ap.add_argument("--url", default="", help="HOST:PORT of a running server (default: start the PyPI tritonserver)")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--size", type=int, default=512, help="camera frame size (pixels, square)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--instances", type=int, default=1, help="model instances in the server")
    ap.add_argument("--threads", type=int, default=0,
                    help="onnxruntime threads per server instance and per local session (0: default)")
    ap.add_argument("--local", action="store_true", help="also measure each stream with its own local ort-cpu session")
    args = ap.parse_args(argv)

    from scopecast.daemon.inference.package import load_package

    pkg = load_package(args.package)
    name = pkg.manifest.name
    server = None
    url = args.url
    if not url:
        from scopecast.export.triton import write_triton_repository
        from scopecast.export.triton_server import TritonServer

        repo = Path(tempfile.mkdtemp(prefix="bench-triton-"))
        write_triton_repository(pkg.path, pkg.manifest, repo, instances=args.instances, threads=args.threads)
        server = TritonServer(repo).start(timeout=120)
        url = server.url
    bundle = capture_bundle(args.package, args.size, Path(tempfile.mkdtemp(prefix="bench-bundle-")) / "bundle.npy")
    rows = []
    try:
        for n in args.streams:
            rows.append(measure(args.package, f"triton://{url}/{name}", n, bundle, args.seconds, args.threads or 1))
            if args.local:
                rows.append(measure(args.package, "ort-cpu", n, bundle, args.seconds, args.threads or 1))
    finally:
        if server is not None:
            server.close()
    import os

    print(f"\n{name} on {args.size}x{args.size} bundles, Triton {url} ({args.instances} instance(s)), "
          f"{os.cpu_count()} cores, {args.seconds:g} s per row")
    print(f"{'streams':>7} {'runtime':>8} {'results':>8} {'results/s':>10} {'p50 ms':>8} {'p95 ms':>8}")
    for r in rows:
        print(f"{r['streams']:>7} {r['runtime'][:8]:>8} {r['results']:>8} {r['results_per_s']:>10.2f} "
              f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
