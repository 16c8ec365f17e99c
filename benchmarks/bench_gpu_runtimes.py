"""Every runtime that opens here against ONNX Runtime CPU, side by side: speed at 512², and fidelity on real fields.

For each package given and each runtime of :data:`~scopecast.daemon.inference.runtimes.RUNTIME_NAMES`
(those that cannot run here are listed with the reason ``open_runtime`` gives):

- speed: one bundle of the package's inputs through the engine's worker (guards, normalization, tiling, model,
  output scaling, trust), p50 ms and results/s over back-to-back bundles;
- fidelity, on the fields of a gathered dataset (``scopecast gather``, its ``val`` split): the model's PSNR
  against the truth per output, scored as ``scopecast evaluate`` scores (fields with stained truth), the
  share of results the trust monitor flags, and the largest difference of the output from ORT CPU's,
  relative to the output's training scale.

A machine without the simulator's dependencies (a GPU server) can read the fields from an ``.npz`` that
``--save-fields`` wrote from the dataset on another machine.

Run: python benchmarks/bench_gpu_runtimes.py --package models/packages/virtual-staining --dataset DIR
        [--package …] [--save-fields F.npz | --fields F.npz] [--size 512] [--repeats 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import RUNTIME_NAMES, RuntimeUnavailable, gpu_name, open_runtime
from scopecast.daemon.inference.worker import InferenceWorker

from bench_live_tier import bundle_times


def _fields(args: argparse.Namespace, task: str) -> Any:
    """The task's evaluation fields: a :class:`~scopecast.models.dataset.PairSet` (``None``: none given)."""
    from scopecast.models.dataset import PairSet, load_pairs

    if args.dataset:
        pairs = load_pairs(Path(args.dataset) / task if (Path(args.dataset) / task).is_dir() else args.dataset, "val")
        if args.save_fields:
            out = Path(args.save_fields).with_suffix(f".{task}.npz")
            np.savez_compressed(out, inputs=pairs.inputs.astype(np.uint16), targets=pairs.targets,
                                pixel_size_um=pairs.pixel_size_um, fields=json.dumps(pairs.fields or []))
            print(f"fields saved to {out}")
        return pairs
    if args.fields:
        path = Path(args.fields).with_suffix(f".{task}.npz")
        if not path.is_file():
            return None
        z = np.load(path)
        fields = json.loads(str(z["fields"])) or None
        return PairSet(z["inputs"].astype(np.float32), z["targets"], [(0.0, 0.0)] * len(z["inputs"]),
                       float(z["pixel_size_um"]), None, fields)
    return None


def speed(worker: InferenceWorker, inputs: list[str], pixel_um: float, size: int, repeats: int) -> dict[str, float]:
    """p50 ms and results/s of one ``size``² bundle through ``worker``, back to back after two warm-ups."""
    ts = bundle_times(worker, inputs, pixel_um, size, repeats, warmups=2)
    return {"p50_ms": float(np.median(ts) * 1e3), "rate": float(1.0 / np.mean(ts))}


def fidelity(worker: InferenceWorker, pairs: Any, m: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Model PSNR per output on ``pairs`` (evaluate's scoring), the flagged share, and the outputs."""
    from scopecast.models.evaluate_morphology import _engine_run, _scores, _stained

    pred, trusts = _engine_run(worker, pairs, list(m.inputs))
    scores = _scores(pred, pairs.targets, list(m.outputs), _stained(pairs.targets, m))
    return {"psnr": {o: s["psnr"] for o, s in scores.items()},
            "flagged": sum(not t["ok"] for t in trusts) / len(trusts)}, pred


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for path in args.package:
        pkg = load_package(path)
        m = pkg.manifest
        pairs = _fields(args, m.task)
        reference: np.ndarray | None = None
        scale = np.asarray(m.output_scaling.scale if m.output_scaling else [1.0] * len(m.outputs), np.float64)
        for name in ("ort-cpu", *[n for n in RUNTIME_NAMES if n != "ort-cpu"]):
            row: dict[str, Any] = {"package": m.name, "runtime": name}
            try:
                rt = open_runtime(pkg, name, cache_dir=Path(args.cache) if args.cache else None)
            except RuntimeUnavailable as e:
                rows.append({**row, "unavailable": str(e)})
                print(_line(rows[-1]), flush=True)
                continue
            worker = InferenceWorker(pkg, rt)
            row.update(speed(worker, list(m.inputs), m.pixel_size_um or 0.65, args.size, args.repeats))
            row["providers"] = rt.describe().get("providers", [name])
            if pairs is not None:
                fid, pred = fidelity(worker, pairs, m)
                row.update(fid)
                if reference is None:
                    reference = pred
                diff = np.abs(pred.astype(np.float64) - reference).max(axis=(0, 2, 3)) / scale
                row["max_diff_vs_cpu"] = {o: float(d) for o, d in zip(m.outputs, diff, strict=True)}
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(r: dict[str, Any]) -> str:
    if "unavailable" in r:
        return f"| {r['package']} | {r['runtime']} | not here: {r['unavailable'][:90]} | | | | |"
    psnr = ", ".join(f"{o} {v:.2f}" for o, v in r.get("psnr", {}).items()) or "-"
    diff = max(r.get("max_diff_vs_cpu", {"-": float("nan")}).values())
    flagged = f"{100 * r['flagged']:.0f} %" if "flagged" in r else "-"
    return (f"| {r['package']} | {r['runtime']} | {r['p50_ms']:.2f} | {r['rate']:.1f} | {psnr} | {flagged} "
            f"| {diff:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", action="append", required=True, help="package directory (repeat)")
    ap.add_argument("--dataset", help="a gathered dataset (its val split), or a folder of them named by task")
    ap.add_argument("--fields", help="fields saved by --save-fields (F.npz: reads F.<task>.npz)")
    ap.add_argument("--save-fields", help="write the dataset's fields to F.<task>.npz for --fields elsewhere")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--cache", help="TensorRT engine cache folder (default: ~/.cache/scopecast/trt)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    import onnxruntime as ort

    print(f"machine: {platform.machine()}, {platform.processor() or '?'}; GPU: {gpu_name() or 'none'}; "
          f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})")
    print(f"\n| package | runtime | p50 ms ({args.size}²) | results/s | PSNR dB | flagged | max Δ vs CPU / scale |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
