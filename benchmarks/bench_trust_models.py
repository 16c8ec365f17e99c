"""Outputs you can trust: the shipped models per morphology, against their baselines (issue 10, items 3-5).

For each package: fresh fields on the simulated scope (the held-out slide
region of every training morphology, every held-out morphology, a blank slide,
and failure modes outside the validated domain), run through the engine
exactly as live (ONNX Runtime CPU, input guards, calibrated normalization,
output clipping), scored against linear regression (fitted on training-region
fields, and an oracle fitted on the test fields), bicubic and Richardson-Lucy
with the true PSF; for super-resolution also the resolution target. Prints
the tables and the verdict against the issue's targets (≥ 3 dB over the best
non-oracle baseline on every row; blank positive area ≤ 0.5 %).

Same code as ``scopecast evaluate`` (models/evaluate_morphology.py); no torch.

``--validated`` measures instead the per-morphology table the spot checks compare
with (``ModelManifest.validated``): the same in-domain rows as the evaluation
(each training morphology in the held-out slide region, same seeds, fields and
size, so the all-field means reproduce the card's rows), scored per field over
the results the monitor trusted (a spot check only ever compares a trusted
result), and ``--write`` adds that table, and nothing else, to each package's
manifest.json.

Run: python benchmarks/bench_trust_models.py [--fields 8] [--size 256] [--json out.json]
     python benchmarks/bench_trust_models.py --validated [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure_validated(package: str | Path, fields: int = 8, size: int = 256, seed: int = 500,
                      say: Any = None) -> dict[str, Any]:
    """The package's validated fidelity per training morphology and output channel (see the module docstring).

    Returns ``{"validated": <ModelManifest.validated as a dict>, "all_fields": {morphology: {output: psnr}}}``;
    ``all_fields`` is the evaluation's own figure (every field, trusted or not) to check against the card.
    """
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker
    from scopecast.models.dataset import DOMAIN, TASKS, calibrate_camera, field_plan
    from scopecast.models.evaluate_morphology import _capture, _engine_run, _Sim
    from scopecast.models.evaluation import pearson, psnr
    from scopecast.models.manifest import ValidatedFidelity

    say = say or (lambda *_: None)
    t0 = time.monotonic()
    pkg = load_package(package)
    m = pkg.manifest
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    dom = DOMAIN[m.task]
    per: dict[str, dict[str, dict[str, Any]]] = {}
    every: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="scopecast-validated-") as tmp:
        sim = _Sim(size, Path(tmp))
        try:
            sim.set_sample("cells")
            camera = calibrate_camera(sim.client)
            for k, kind in enumerate(dom["train"]):  # the evaluation's rows 0..n-1: same seeds, same fields
                fl = field_plan(m.task, "val", fields, seed + 10 + k, [kind], blank_fraction=0.0)
                pairs = _capture(sim, m.task, fl, f"row{k}", camera)
                pred, trusts = _engine_run(worker, pairs, TASKS[m.task]["inputs"])
                per[kind], every[kind] = {}, {}
                with np.errstate(invalid="ignore", divide="ignore"):
                    for c, out in enumerate(m.outputs):
                        live = [(float(psnr(p[c], g[c])), float(pearson(p[c], g[c])), t["ok"])
                                for p, g, t in zip(pred, pairs.targets, trusts, strict=True)
                                if float(g[c].max() - g[c].min()) > 0]
                        every[kind][out] = round(float(np.mean([v[0] for v in live])), 3)
                        ok = [v for v in live if v[2]]
                        if ok:
                            rs = [v[1] for v in ok if np.isfinite(v[1])]
                            per[kind][out] = {"psnr_db": round(float(np.mean([v[0] for v in ok])), 2),
                                              "pearson_r": round(float(np.mean(rs)), 3) if rs else None,
                                              "fields": len(ok)}
                say(f"{m.name}: {kind}: {per[kind]} ({time.monotonic() - t0:.0f} s)")
        finally:
            sim.close()
    floor = {}
    for out in m.outputs:
        figs = [f[out] for f in per.values() if out in f]
        rs = [f["pearson_r"] for f in figs if f["pearson_r"] is not None]
        floor[out] = {"psnr_db": min(f["psnr_db"] for f in figs), "pearson_r": min(rs) if rs else None,
                      "fields": sum(f["fields"] for f in figs)}
    val = ValidatedFidelity.model_validate({
        "morphologies": per, "floor": floor,
        "method": (f"benchmarks/bench_trust_models.py --validated --fields {fields} --size {size} --seed {seed}: "
                   f"{fields} fields of {size}² per training morphology in the held-out slide region at training "
                   "conditions (the per-morphology evaluation's rows), through the engine's worker; mean PSNR (data "
                   "range of the truth) and Pearson r per output over the results the monitor trusted; floor: the "
                   "lowest morphology figure of each output"),
    })
    return {"validated": val.model_dump(), "all_fields": every, "seconds": round(time.monotonic() - t0, 1)}


def write_validated(package: str | Path, validated: dict[str, Any]) -> Path:
    """Add (or replace) ``validated`` in the package's manifest.json; every other value stays as it is."""
    from scopecast.models.manifest import MANIFEST, ModelManifest

    path = Path(package) / MANIFEST
    before = json.loads(path.read_text())
    after = {**before, "validated": validated}
    ModelManifest.model_validate(after)
    if {k: v for k, v in after.items() if k != "validated"} != {k: v for k, v in before.items() if k != "validated"}:
        raise AssertionError("writing 'validated' would change another manifest value")
    path.write_text(json.dumps(after, indent=2) + ("\n" if path.read_text().endswith("\n") else ""))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="package folder (default: both shipped packages)")
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--json", default="")
    ap.add_argument("--validated", action="store_true",
                    help="measure the per-morphology validated fidelity table (ModelManifest.validated) instead")
    ap.add_argument("--write", action="store_true", help="with --validated: add the table to each manifest.json")
    args = ap.parse_args()
    from scopecast.models.evaluate_morphology import format_report, run_evaluation

    models = args.model or [str(ROOT / "models" / "packages" / n) for n in ("virtual-staining", "super-resolution")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.validated:
        out = {}
        for m in models:
            rep = measure_validated(m, args.fields, args.size, args.seed,
                                    lambda s: print(f"  {s}", file=sys.stderr, flush=True))
            print(json.dumps(rep, indent=1), flush=True)
            if args.write:
                print(f"wrote {write_validated(m, rep['validated'])}")
            out[m] = rep
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    reports, ok = [], True
    for m in models:
        rep = run_evaluation(m, fields=args.fields, size=args.size, seed=args.seed,
                             progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True))
        print(format_report(rep), "\n", flush=True)
        v = rep["verdict"]
        ok &= v["beats_best_baseline_by_3db_everywhere"] and (v["blank_ok"] or rep["task"] != "virtual-staining")
        reports.append(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    print("targets met" if ok else "targets NOT met (see the tables)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
