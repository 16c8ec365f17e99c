"""End-to-end pipeline figures: per-stage latency, efficiency, overhead, and the naive baseline.

Everything runs in one invocation, side by side, on the simulated scope:

1. *isolated*: the same worker the engine uses (same package, runtime and
   threads) on an in-memory bundle -- normalization, model, output scaling,
   what a user would run in-process -> p50 latency and throughput; run back to
   back for throughput, and paced like the slow camera below for latency;
2. *pipeline, camera faster than the model*: ``scopecast daemon`` and
   ``scopecast engine`` as separate processes pinned to separate cores
   (``--cpus``; the isolated runs use the engine's core), live cycle paced at 1.5x the
   model's rate -> sustained results/s; efficiency = that / isolated throughput.
   The simulated camera runs with ``Noise=Off``: on a 2-core machine its noise
   model would otherwise take CPU from the model, which a hardware camera does not;
3. *pipeline, camera slower than the model* (paced at 0.5x) -> per-stage
   latency p50/p95/p99 from the result headers; overhead = end-to-end p50 -
   isolated p50 at the same pace;
4. *baseline*: the same network in PyTorch eager inside a per-frame callback in
   the acquisition process (the pycro-manager image-processor pattern) ->
   bundles/s, compared with the pipeline's sustained rate.

Run: python benchmarks/bench_pipeline.py [--sizes 512 2048] [--model PACKAGE]
(without --model a synthetic 6-input conv net of 4 layers x 16 channels is used). The live cycle is
the package's inputs: the six LED-array channels for virtual staining, ``Membrane`` for super-resolution.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

ROOT = Path(__file__).resolve().parents[1]
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
STAGES = ("acquire", "publish", "transport", "queue", "guards", "preprocess", "infer", "postprocess", "result_publish",
          "end_to_end")


def _port() -> str:
    from scopecast.daemon.supervisor import free_port

    return f"tcp://127.0.0.1:{free_port()}"


def _core(i: int) -> str:
    """Core for the daemon (0) and the engine (1): separate, as ``--cpus`` sets them on a workstation."""
    return str(i % (os.cpu_count() or 1))


def _cfg(size: int, tmp: Path) -> Path:
    """The simulator at ``size``, camera noise off (the simulator's own CPU cost stays small)."""
    text = (ROOT / "hardware_configs" / "sim-ledarray.cfg").read_text()
    text = text.replace("Width,512", f"Width,{size}").replace("Height,512", f"Height,{size}")
    text += "\n#py Property,Camera,Noise,Off\n"
    p = tmp / f"sim-{size}.cfg"
    p.write_text(text)
    return p


def isolated(package, size: int, seconds: float, interval_s: float = 0.0) -> dict[str, float]:
    """The engine's worker on in-memory bundles (8 different ones in turn, like fresh frames).

    ``interval_s`` paces the calls like a camera slower than the model, so idle
    gaps (cold caches, clock scaling) affect it as they affect the pipeline.
    """
    from scopecast.daemon.inference.runtimes import default_threads, open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    os.sched_setaffinity(0, {int(_core(1))})  # where the engine runs
    w = InferenceWorker(package, open_runtime(package, "auto", threads=default_threads(1)))
    rng = np.random.default_rng(0)
    bundles = [[StreamFrame({"channel": c, "seq": i, "bundle_id": b, "acquisition_id": "iso"},
                            rng.integers(100, 8000, (size, size), dtype=np.uint16))
                for i, c in enumerate(package.manifest.inputs)] for b in range(8)]
    w.process(bundles[0])
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        w.process(bundles[len(times) % 8])
        dt = time.perf_counter() - t0
        times.append(dt)
        if interval_s > dt:
            time.sleep(interval_s - dt)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    a = np.array(times) * 1e3
    return {"p50": float(np.median(a)), "rate": 1000.0 / float(np.mean(a)), "runtime": w.runtime.name}


def pipeline(package_dir: Path, channels: list[str], size: int, interval_ms: float, seconds: float,
             tmp: Path) -> dict:
    """``scopecast daemon`` + ``scopecast engine`` on separate cores, live over ``channels`` (the model's inputs)."""
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.stream import StreamSubscriber

    ctl, stream, results, ectl = _port(), _port(), _port(), _port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config",
                               str(_cfg(size, tmp)), "--control", ctl, "--stream", stream,
                               "--data-dir", str(tmp / "data"), "--cpus", _core(0)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "engine", "--model", str(package_dir),
                               "--stream", stream, "--results", results, "--control", ectl,
                               "--cpus", _core(1)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ControlClient(ctl, timeout_s=120) as c, ControlClient(ectl, timeout_s=120) as ec:
            for client in (c, ec):
                while True:
                    try:
                        client.request("status", timeout_s=1)
                        break
                    except TimeoutError:
                        pass
            sub = StreamSubscriber(results, ("result",))
            # warm the simulator's optics cache at this position, then run
            warm = c.request("start_live", channels=channels, max_cycles=1)
            c.request("wait", job=warm["id"], wait_s=300, timeout_s=310)
            while sub.recv(0.5) is not None:
                pass
            c.request("start_live", channels=channels, interval_ms=interval_ms)
            heads, t0 = [], None
            t_end = time.monotonic() + seconds + 3.0
            while time.monotonic() < t_end:
                m = sub.recv(0.5)
                if m is None:
                    continue
                if t0 is None:  # skip the first results (start-up)
                    t0 = time.monotonic()
                    t_end = t0 + seconds
                    continue
                heads.append(m[1])
            elapsed = time.monotonic() - t0 if t0 else seconds
            c.request("stop")
            est = ec.request("status")
            sub.close()
    finally:
        for p in (engine, daemon):
            p.terminate()
            p.wait(timeout=30)
    lat: dict[str, np.ndarray] = {}
    if heads:
        def col(a: str, b: str) -> np.ndarray:
            return np.array([(h[b] - h[a]) / 1e6 for h in heads])

        lat = {
            "acquire": col("t_exposure_start_ns", "t_acquired_ns"),
            "publish": col("t_acquired_ns", "t_frame_published_ns"),
            "transport": col("t_frame_published_ns", "t_received_ns"),
            "queue": col("t_received_ns", "t_dequeued_ns"),
            "guards": col("t_dequeued_ns", "t_checked_ns"),
            "preprocess": col("t_checked_ns", "t_preprocessed_ns"),
            "infer": col("t_preprocessed_ns", "t_inferred_ns"),
            "postprocess": col("t_inferred_ns", "t_postprocessed_ns"),
            "result_publish": col("t_postprocessed_ns", "t_published_ns"),
            "end_to_end": col("t_acquired_ns", "t_published_ns"),
        }
    return {"rate": len(heads) / elapsed, "n": len(heads), "lat": lat, "dropped": est["dropped"]}


class BaselineUnavailable(RuntimeError):
    """The PyTorch baseline cannot be built here (its reason is printed; the other figures stand)."""


def _torch_model(package):
    """The package's network in PyTorch eager: its own PyTorch weights (``weights.pt``, as bioimage.io loads
    them), or, for the synthetic benchmark net, rebuilt from the ONNX weights."""
    import onnx
    import torch
    from onnx import numpy_helper

    prov = package.manifest.provenance
    if prov.get("pytorch_state_dict"):
        from scopecast.models.architectures import build

        net = build(prov["arch"], prov["config"])
        net.load_state_dict(torch.load(package.path / prov["pytorch_state_dict"]["file"], weights_only=True))
        return net.eval()
    if prov.get("checkpoint"):
        raise BaselineUnavailable(f"{package.manifest.name} carries no PyTorch weights (weights.pt); "
                                  "re-export it with `scopecast export`")
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(package.model_path).graph.initializer}
    layers: list[torch.nn.Module] = []
    i = 0
    while f"w{i}" in init:
        w = torch.from_numpy(init[f"w{i}"].copy())
        conv = torch.nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1)
        conv.weight.data, conv.bias.data = w, torch.from_numpy(init[f"b{i}"].copy())
        layers += [conv, torch.nn.ReLU()]
        i += 1
    if not layers:
        raise BaselineUnavailable(f"cannot rebuild {package.manifest.name} in PyTorch: no checkpoint in its provenance")
    return torch.nn.Sequential(*layers[:-1]).eval()


def torch_callback_baseline(package, size: int, seconds: float, tmp: Path) -> float:
    """Bundles/s of PyTorch eager inside the acquisition loop's per-frame callback."""
    import torch

    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.inference.worker import normalize

    from scopecast.daemon.inference.runtimes import default_threads

    torch.set_num_threads(default_threads(1))  # the same threads as the engine's worker
    net = _torch_model(package)
    backend = load_mmcore_backend(_cfg(size, tmp))
    bundle: dict[str, np.ndarray] = {}
    done = 0
    cycle = list(package.manifest.inputs)

    def on_frame(channel: str, img: np.ndarray) -> None:  # the image-processor callback
        nonlocal done
        bundle[channel] = img
        if len(bundle) == len(cycle):
            x = normalize([bundle[c] for c in cycle], package.manifest.normalization)
            with torch.inference_mode():
                net(torch.from_numpy(x)[None])
            bundle.clear()
            done += 1

    for ch in cycle:  # warm the optics cache
        backend.set_channel(ch)
        backend.snap()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or done < 2:
        for ch in cycle:
            backend.set_channel(ch)
            on_frame(ch, backend.snap().data)
    rate = done / (time.perf_counter() - t0)
    backend.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--model", default="", help="model package (default: synthetic 6-input conv net)")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    from scopecast.daemon.inference.package import load_package
    from scopecast.models.synthetic import write_package

    tmp = Path(tempfile.mkdtemp(prefix="scopecast-bench-"))
    pkg_dir = Path(args.model) if args.model else write_package(
        tmp / "model", CYCLE, ["nuclei", "membrane"], name="synthetic-4x16", width=16, layers=4, tile=512, halo=16)
    package = load_package(pkg_dir)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"model {package.manifest.name} ({len(package.manifest.inputs)} inputs)")
    for size in args.sizes:
        iso = isolated(package, size, min(args.seconds, 5.0))
        fast = pipeline(pkg_dir, list(package.manifest.inputs), size, 1000.0 / (1.5 * iso["rate"]), args.seconds, tmp)
        slow_interval = 1000.0 / (0.5 * iso["rate"])
        slow = pipeline(pkg_dir, list(package.manifest.inputs), size, slow_interval, args.seconds, tmp)
        iso_paced = isolated(package, size, min(args.seconds, 5.0), slow_interval / 1000.0)
        try:
            base: float | None = torch_callback_baseline(package, size, min(args.seconds, 8.0), tmp)
        except BaselineUnavailable as e:
            base, why = None, str(e)
        print(f"\n== {size}x{size}, runtime {iso['runtime']} ==")
        print(f"isolated worker: back to back p50 {iso['p50']:.1f} ms, {iso['rate']:.2f} bundles/s; "
              f"paced like the slow camera p50 {iso_paced['p50']:.1f} ms")
        print(f"pipeline, camera 1.5x faster than the model: {fast['rate']:.2f} results/s "
              f"(n={fast['n']}), efficiency {fast['rate'] / iso['rate']:.2f}; engine drops {fast['dropped']}")
        if base is None:
            print(f"PyTorch eager in the acquisition callback: not measured ({why})")
        else:
            print(f"PyTorch eager in the acquisition callback: {base:.2f} bundles/s; pipeline / baseline "
                  f"{fast['rate'] / base:.2f}x")
        lat = slow["lat"]
        if lat:
            print(f"latency, camera at 0.5x the model rate (n={slow['n']}):")
            print(f"  {'stage':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
            for s in STAGES:
                a = lat[s]
                print(f"  {s:<16}{np.percentile(a, 50):9.2f}{np.percentile(a, 95):9.2f}{np.percentile(a, 99):9.2f}")
            e2e = np.percentile(lat["end_to_end"], 50)
            print(f"  overhead (end-to-end p50 - isolated p50 at the same pace): {e2e - iso_paced['p50']:.2f} ms")


if __name__ == "__main__":
    main()
