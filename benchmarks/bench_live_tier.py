"""The real-time tier against the accurate model: speed at 512² and fidelity per held-out morphology.

For each package given (e.g. the shipped accurate package and its live tier,
FP32 and INT8 where the package has an accepted INT8 variant):

- speed: ONNX Runtime CPU on one 512² bundle (the engine's tiling, 1 and 2
  intra-op threads), p50 ms and results/s, all rows in one run;
- fidelity: ``scopecast evaluate``'s per-morphology rows for every file (INT8
  variants included; same seed, same
  fields: the simulator is deterministic per seed), model PSNR per output and
  row, the held-out morphologies' mean, and the blank slide's predicted
  positive area.

Run: python benchmarks/bench_live_tier.py --package models/packages/virtual-staining \
        --package models/packages/virtual-staining-live [--fields 8] [--no-fidelity]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame


def bundle_times(worker: InferenceWorker, inputs: list[str], pixel_um: float | None, size: int = 512,
                 repeats: int = 15, warmups: int = 1) -> np.ndarray:
    """Seconds per bundle of ``inputs`` (random ``size``² counts) through ``worker`` -- guards, normalization,
    tiling, model, scaling -- back to back after ``warmups`` unmeasured ones."""
    rng = np.random.default_rng(0)
    frames = [StreamFrame({"channel": c, "seq": i, "bundle_id": 1, "pixel_size_um": pixel_um},
                          rng.integers(1500, 6000, (size, size)).astype(np.uint16)) for i, c in enumerate(inputs)]
    for _ in range(warmups):
        worker.process(frames)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        worker.process(frames)
        ts.append(time.perf_counter() - t)
    return np.asarray(ts)


def speed(path: str, precision: str, threads: int, size: int = 512, repeats: int = 15) -> float:
    """p50 ms of one bundle through the engine's worker on ORT CPU with ``threads``."""
    pkg = load_package(path, precision)
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=threads))
    return float(np.median(bundle_times(worker, list(pkg.manifest.inputs), pkg.manifest.pixel_size_um, size,
                                        repeats)) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", required=True, help="package directory (repeat)")
    ap.add_argument("--fields", type=int, default=8, help="fields per evaluation row")
    ap.add_argument("--no-fidelity", action="store_true", help="speed only")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    tasks = {p: load_package(p).manifest.task for p in args.package}
    if not args.no_fidelity and len(set(tasks.values())) > 1:
        ap.error("fidelity compares packages of one task; got " + ", ".join(f"{p} ({t})" for p, t in tasks.items())
                 + " (use --no-fidelity to time them together)")
    dirs = [Path(p).name for p in args.package]  # the directory name, or the path where two names collide
    label = {p: (n if dirs.count(n) == 1 else "/".join(Path(p).parts[-2:])) for p, n in zip(args.package, dirs)}
    variants = []
    for p in args.package:
        variants.append((p, "fp32"))
        if "int8" in load_package(p).manifest.variants:
            variants.append((p, "int8"))
    out: dict[str, dict] = {}
    print("speed at 512² (one bundle through the engine's worker, ONNX Runtime CPU, one run):")
    print(f"{'package':<40} {'prec':<5} {'params':>8} {'1 thread p50 ms':>16} {'2 threads p50 ms':>17} "
          f"{'results/s (2 thr)':>18}")
    for p, prec in variants:
        key = f"{label[p]}/{prec}"
        ms1, ms2 = speed(p, prec, 1), speed(p, prec, 2)
        out[key] = {"p50_ms_1t": ms1, "p50_ms_2t": ms2}
        params = (load_package(p).manifest.provenance or {}).get("parameters", "")
        print(f"{label[p]:<40} {prec:<5} {params!s:>8} {ms1:16.1f} {ms2:17.1f} {1e3 / ms2:18.1f}")
    if not args.no_fidelity:
        from scopecast.models.evaluate_morphology import run_evaluation

        reports = {}
        for p, prec in variants:  # every file, INT8 variants included, on the same fields
            name = label[p] + ("" if prec == "fp32" else f"/{prec}")
            reports[name] = run_evaluation(p, fields=args.fields, outside=False, precision=prec)
        names = list(reports)
        rows = [r["row"] for r in reports[names[0]]["rows"]]
        outputs = reports[names[0]]["outputs"]
        print(f"\nfidelity: model PSNR (dB) per row, {args.fields} fields of 256² per row, seed 500")
        width = max(22, *(len(n) for n in names))
        print(f"{'row':<44} {'output':<12} " + " ".join(f"{n:>{width}}" for n in names))
        by_row = {n: {r["row"]: r for r in reports[n]["rows"]} for n in names}  # packages' rows may differ
        for row in rows:
            for o in outputs:
                vals = []
                for n in names:
                    r = by_row[n].get(row)
                    if r is None:  # a morphology held out of this package but trained on by the first
                        vals.append(f"{'—':>{width}}")
                    elif "scores" in r:
                        vals.append(f"{r['scores']['model'][o]['psnr']:{width}.2f}")
                    else:
                        vals.append(f"{'area ' + format(r['positive_area']['model'][o] * 100, '.2f') + ' %':>{width}}")
                print(f"{row:<44} {o:<12} " + " ".join(vals))
        for n in names:
            held = [r for r in reports[n]["rows"] if r["group"] == "held-out morphology"]
            out.setdefault(n, {})["held_out_mean_psnr"] = {
                o: float(np.mean([r["scores"]["model"][o]["psnr"] for r in held])) for o in outputs}
        print("\nheld-out morphologies, mean model PSNR: " + "; ".join(
            f"{n}: " + ", ".join(f"{o} {v:.2f}" for o, v in out[n]["held_out_mean_psnr"].items()) for n in names))
        out["reports"] = reports
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
