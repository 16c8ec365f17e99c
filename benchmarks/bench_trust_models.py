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

Run: python benchmarks/bench_trust_models.py [--fields 8] [--size 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="package folder (default: both shipped packages)")
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=500)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    from scopecast.models.evaluate_morphology import format_report, run_evaluation

    models = args.model or [str(ROOT / "models" / "packages" / n) for n in ("virtual-staining", "super-resolution")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
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
