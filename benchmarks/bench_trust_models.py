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

``--uncertainty`` measures instead the thresholds of the engine's uncertainty
check (``validated.uncertainty``, daemon/inference/uncertainty.py): fresh fields
of every training morphology in the *training* slide region (never the held-out
region where bench_trust.py counts false alarms, never a should-be-flagged case)
at training conditions (the domain's exposures and focus range), through the
engine's worker; per field every candidate statistic (``uncertainty.STATISTICS``
× 2, 4 and, without DPC inputs, 8 dihedral copies). Threshold per morphology, a
rule fixed before any test case was run: the larger of 1.25 × the largest field
and the log-normal 99.9th percentile (exp(mean + 3.09 sd) of the log figures);
``ceiling``: the largest morphology threshold. ``--statistic S --tta N --write``
adds the chosen candidate, and nothing else, to ``validated.uncertainty`` of each
package's manifest.json; ``--json`` keeps every candidate (bench_trust.py
``--thresholds`` evaluates them all).

``--consistency`` measures instead, on the same fields and by the same rule, the
thresholds of the engine's data-consistency check (super-resolution packages:
the output blurred back through the widefield optics against the input, in
units of the camera noise; daemon/inference/consistency.py), with the optics
assumed (the simulator's 10x/0.25 objective, 0.6 µm emission); ``--write``
adds them, and nothing else, as ``validated.consistency``.

``--input-stats DATASET`` re-measures instead each package's training input
distribution (``input_stats``: what the input guards compare a bundle with) on
the specimen fields of its own training split plus those of ``DATASET``
(gathered in the training slide region with the training domain's plan at other
positions; repeatable), and ``--write`` replaces ``input_stats``, and nothing
else, in each package's manifest.json. The model and its normalization are
untouched.

Run: python benchmarks/bench_trust_models.py [--fields 8] [--size 256] [--json out.json]
     python benchmarks/bench_trust_models.py --input-stats datasets/vs-stats [--write]
     python benchmarks/bench_trust_models.py --validated [--write]
     python benchmarks/bench_trust_models.py --uncertainty [--fields 16] [--statistic signal --tta 2 --write]
     python benchmarks/bench_trust_models.py --consistency --fields 16 --model PKG [--write]
     python benchmarks/bench_trust_models.py --validated --precision int8 --write   (the INT8 variant's own figures)
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
                      say: Any = None, precision: str = "fp32") -> dict[str, Any]:
    """The package's validated fidelity per training morphology and output channel (see the module docstring).

    Returns ``{"validated": <ModelManifest.validated as a dict>, "all_fields": {morphology: {output: psnr}}}``;
    ``all_fields`` is the evaluation's own figure (every field, trusted or not) to check against the card.
    """
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker
    from scopecast.models.dataset import TASKS, calibrate_camera, field_plan
    from scopecast.models.evaluate_morphology import _capture, _engine_run, _Sim, _stained, evaluation_domain
    from scopecast.models.evaluation import pearson, psnr
    from scopecast.models.manifest import ValidatedFidelity

    say = say or (lambda *_: None)
    t0 = time.monotonic()
    pkg = load_package(package, precision)
    m = pkg.manifest
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    dom = evaluation_domain(m)  # the package's training morphologies, as evaluate's rows
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
                stained = _stained(pairs.targets, m)  # empty glass has no PSNR, as in the evaluation
                with np.errstate(invalid="ignore", divide="ignore"):
                    for c, out in enumerate(m.outputs):
                        live = [(float(psnr(p[c], g[c])), float(pearson(p[c], g[c])), t["ok"])
                                for p, g, t, keep in zip(pred, pairs.targets, trusts, stained[:, c], strict=True)
                                if keep]
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
        "method": (f"benchmarks/bench_trust_models.py --validated --fields {fields} --size {size} --seed {seed}"
                   f"{'' if precision == 'fp32' else f' --precision {precision}'}: "
                   f"{fields} fields of {size}² per training morphology in the held-out slide region at training "
                   "conditions (the per-morphology evaluation's rows), through the engine's worker; mean PSNR (data "
                   "range of the truth) and Pearson r per output over the results the monitor trusted; floor: the "
                   "lowest morphology figure of each output"),
    })
    return {"validated": val.model_dump(), "all_fields": every, "seconds": round(time.monotonic() - t0, 1)}


MARGIN = 1.25  # threshold >= this x the largest calibration field
Z999 = 3.090  # one-sided 99.9 % point of the normal distribution


def threshold_rule(values: list[float]) -> float:
    """The uncertainty threshold of one morphology from its calibration fields (see the module docstring)."""
    v = np.log(np.maximum(np.asarray(values, float), 1e-12))
    return float(max(MARGIN * np.exp(v.max()), np.exp(v.mean() + Z999 * v.std(ddof=1))))


def measure_uncertainty(package: str | Path, fields: int = 16, size: int = 256, seed: int = 1100,
                        say: Any = None, precision: str = "fp32", consistency: bool = False) -> dict[str, Any]:
    """Every candidate uncertainty statistic on fresh training-region fields of each training morphology.

    Returns ``{"candidates": {"<statistic>@<n>": {"morphologies": {kind: {threshold, median, max, fields}},
    "ceiling"}}, "values": {candidate: {kind: [per field]}}, "method"}``. ``consistency``: the data-consistency
    figure (daemon/inference/consistency.py) instead, the one candidate ``"consistency"``, on the same fields
    (super-resolution packages), with the optics it assumed (``"optics"``)."""
    from scopecast.daemon.inference.consistency import bundle_figure
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.uncertainty import DIHEDRAL, STATISTICS, channel_order, statistic
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
    from scopecast.models.dataset import TASKS, _as_counts, calibrate_camera, field_plan
    from scopecast.models.evaluate_morphology import _EM_UM, _NA, _capture, _Sim, evaluation_domain

    say = say or (lambda *_: None)
    t0 = time.monotonic()
    pkg = load_package(package, precision)
    m = pkg.manifest
    if consistency and (m.scale_factor < 2 or m.camera is None or m.pixel_size_um is None):
        raise ValueError(f"{package}: the consistency check needs a super-resolution package with its camera "
                         "calibration and pixel size")
    optics = {"wavelength_um": _EM_UM, "na": _NA, "pixel_size_um": m.pixel_size_um}  # the simulator's 10x, membrane
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=0.0)
    ns = tuple(n for n in (2, 4, 8) if all(channel_order(m.inputs, t) is not None for t in DIHEDRAL[:n]))
    inputs = TASKS[m.task]["inputs"]
    values: dict[str, dict[str, list[float]]] = {"consistency": {}} if consistency else {
        f"{k}@{n}": {} for k in STATISTICS for n in ns}
    withheld: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="scopecast-uncertainty-") as tmp:
        sim = _Sim(size, Path(tmp))
        try:
            sim.set_sample("cells")
            camera = calibrate_camera(sim.client)
            for k, kind in enumerate(evaluation_domain(m)["train"]):
                fl = field_plan(m.task, "train", fields, seed + k, [kind], blank_fraction=0.0)
                pairs = _capture(sim, m.task, fl, f"cal{k}", camera)
                withheld[kind] = 0
                for field in pairs.inputs:
                    frames = [StreamFrame({"channel": c, "pixel_size_um": float(pairs.pixel_size_um)},
                                          np.ascontiguousarray(_as_counts(f))) for c, f in zip(inputs, field,
                                                                                                strict=True)]
                    ordered = worker.order(frames)
                    if worker.check(ordered).withhold:
                        withheld[kind] += 1
                        continue
                    x = worker.preprocess(ordered)
                    y = worker.infer(x)
                    if consistency:
                        yp, _ = worker.postprocess(y)
                        values["consistency"].setdefault(kind, []).append(bundle_figure(
                            [f.data for f in ordered], yp, m.scale_factor, m.camera, float(pairs.pixel_size_um),
                            optics["wavelength_um"], optics["na"]))
                        continue
                    stds = worker._stds(x, y, ns, raw=True)
                    for key, per in values.items():
                        st, n = key.split("@")
                        per.setdefault(kind, []).append(statistic(stds[int(n)], y, st))
                say(f"{m.name}: {kind}: {len(pairs.inputs)} fields ({time.monotonic() - t0:.0f} s)")
        finally:
            sim.close()
    cands = {}
    for key, per in values.items():
        morph = {kind: {"threshold": float(f"{threshold_rule(v):.4g}"), "median": float(f"{np.median(v):.4g}"),
                        "max": float(f"{max(v):.4g}"), "fields": len(v)} for kind, v in per.items() if len(v) >= 2}
        cands[key] = {"morphologies": morph, "ceiling": max(f["threshold"] for f in morph.values())}
    method = (f"benchmarks/bench_trust_models.py --{'consistency' if consistency else 'uncertainty'} "
              f"--fields {fields} --size {size} --seed {seed}"
              f"{'' if precision == 'fp32' else f' --precision {precision}'}: "
              f"{fields} fresh fields of {size}² per training morphology in the training slide region at training "
              "conditions (exposures and focus range of the domain), through the engine's worker; threshold per "
              f"morphology: max({MARGIN} x the largest field, log-normal 99.9th percentile)")
    return {"candidates": cands, "values": values, "withheld": withheld, "method": method, "optics": optics,
            "seconds": round(time.monotonic() - t0, 1)}


def write_uncertainty(package: str | Path, measured: dict[str, Any], stat: str, tta: int,
                      precision: str = "fp32") -> Path:
    """Add (or replace) ``validated.uncertainty`` (of the ``precision`` variant) with the ``stat@tta`` candidate;
    nothing else changes."""
    from scopecast.models.manifest import MANIFEST

    path = Path(package) / MANIFEST
    m = json.loads(path.read_text())
    validated = m.get("validated") if precision == "fp32" else m["variants"][precision].get("validated")
    if not validated:
        raise ValueError(f"{package}: no validated section ({precision}) to add the uncertainty thresholds to "
                         "(run --validated)")
    c = measured["candidates"][f"{stat}@{tta}"]
    val = {**validated, "uncertainty": {"statistic": stat, "tta": tta, "morphologies": c["morphologies"],
                                        "ceiling": c["ceiling"], "method": measured["method"]}}
    return write_validated(package, val, precision)


def write_consistency(package: str | Path, measured: dict[str, Any], precision: str = "fp32") -> Path:
    """Add (or replace) ``validated.consistency`` (of the ``precision`` variant) from a ``consistency=True``
    measurement; nothing else changes."""
    from scopecast.models.manifest import MANIFEST

    m = json.loads((Path(package) / MANIFEST).read_text())
    validated = m.get("validated") if precision == "fp32" else m["variants"][precision].get("validated")
    if not validated:
        raise ValueError(f"{package}: no validated section ({precision}) to add the consistency thresholds to "
                         "(run --validated)")
    c = measured["candidates"]["consistency"]
    val = {**validated, "consistency": {**measured["optics"], "morphologies": c["morphologies"],
                                        "ceiling": c["ceiling"], "method": measured["method"]}}
    return write_validated(package, val, precision)


def measure_input_stats(package: str | Path, datasets: list[str | Path]) -> dict[str, Any]:
    """The package's ``input_stats`` re-measured by today's guards on more fields of the training distribution:
    the specimen fields of the train split of the package's own dataset (``provenance.data.dataset``) and of
    each of ``datasets`` (gathered with the same plan in the training slide region at other positions:
    ``scopecast gather --samples domain --seed S``). The normalization's percentiles (``p_low``/``p_high``)
    stay the package's own: they are part of the model. More fields make the ranges' ends, which the guards
    extrapolate by a factor of 2, less of an accident of which fields training happened to draw."""
    from scopecast.models.dataset import BLANK, channel_stats, exposure_range, load_pairs
    from scopecast.models.manifest import MANIFEST, CameraCalibration, InputStats

    m = json.loads((Path(package) / MANIFEST).read_text())
    own = Path(m["provenance"]["data"]["dataset"])
    sets = [own if own.is_absolute() else ROOT / own, *[Path(d) for d in datasets]]
    stacks, names, kept = [], [], []
    for d in sets:
        tr = load_pairs(d, "train")
        idx = json.loads((d / "dataset.json").read_text())
        if idx["task"] != m["task"] or (idx.get("plan") or {}) != {}:
            raise ValueError(f"{d}: a {idx['task']} dataset gathered with plan {idx.get('plan')}, not the "
                             f"package's task ({m['task']}) with the training domain's default plan")
        keep = [k != BLANK for k in tr.kinds]
        kept.append(tr.select(keep))
        stacks.append(kept[-1].inputs)
        names.append(f"{sum(keep)} of {Path(d).name} (seed {idx.get('seed')})")
    cam = CameraCalibration(**m["camera"])
    old = m["input_stats"]
    channels = {}
    for c, name in enumerate(m["inputs"]):
        st = old["channels"][name]
        channels[name] = channel_stats([s[:, c] for s in stacks], cam.offset_adu, cam, st["p_low"], st["p_high"])
    n = sum(len(s) for s in stacks)
    return InputStats(fields=n, percentiles=tuple(old["percentiles"]), channels=channels,
                      exposure_ms=exposure_range(*kept),
                      source=f"specimen fields of the train split (training slide region, training domain): "
                             f"{' + '.join(names)}").model_dump(mode="json")


def write_input_stats(package: str | Path, stats: dict[str, Any]) -> Path:
    """Replace ``input_stats`` in the package's manifest.json; every other value stays as it is."""
    from scopecast.models.manifest import MANIFEST, ModelManifest

    path = Path(package) / MANIFEST
    before = json.loads(path.read_text())
    after = {**before, "input_stats": stats}
    ModelManifest.model_validate(after)
    path.write_text(json.dumps(after, indent=2) + ("\n" if path.read_text().endswith("\n") else ""))
    return path


def write_validated(package: str | Path, validated: dict[str, Any], precision: str = "fp32") -> Path:
    """Add (or replace) ``validated`` in the package's manifest.json (``precision`` other than fp32: the
    variant's own, ``variants.<precision>.validated``); every other value stays as it is."""
    from scopecast.models.manifest import MANIFEST, ModelManifest

    path = Path(package) / MANIFEST
    before = json.loads(path.read_text())
    if precision == "fp32":
        after = {**before, "validated": validated}
    else:
        if precision not in before.get("variants", {}):
            raise ValueError(f"{package}: no {precision} variant to validate")
        variant = {**before["variants"][precision], "validated": validated}
        after = {**before, "variants": {**before["variants"], precision: variant}}
    ModelManifest.model_validate(after)

    def rest(d: dict[str, Any]) -> dict[str, Any]:
        d = {k: v for k, v in d.items() if k != "validated"}
        if "variants" in d:
            d["variants"] = {k: {a: b for a, b in v.items() if a != "validated"} for k, v in d["variants"].items()}
        return d

    if rest(after) != rest(before):
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
    ap.add_argument("--uncertainty", action="store_true",
                    help="measure the uncertainty check's candidate statistics and thresholds instead")
    ap.add_argument("--consistency", action="store_true",
                    help="measure the consistency check's thresholds (super-resolution) instead, on the "
                         "--uncertainty fields; with --write: store them")
    ap.add_argument("--statistic", default="", help="with --uncertainty --write: the statistic to store")
    ap.add_argument("--tta", type=int, default=2, help="with --uncertainty --write: its dihedral copies")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="with --validated / --uncertainty: measure (and --write) the package's variant of this "
                    "precision (its own figures: variants.<precision>.validated)")
    ap.add_argument("--from-json", default="", help="with --uncertainty: the measurement a previous --json kept")
    ap.add_argument("--input-stats", action="append", default=None, metavar="DATASET",
                    help="re-measure each package's input_stats on its own training fields and this dataset's "
                         "(repeatable; with --write: store them)")
    args = ap.parse_args()
    from scopecast.models.evaluate_morphology import format_report, run_evaluation

    models = args.model or [str(ROOT / "models" / "packages" / n) for n in ("virtual-staining", "super-resolution")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.input_stats:
        for m in models:
            st = measure_input_stats(m, args.input_stats)
            print(f"{Path(m).name}: {st['fields']} fields: {st['source']}")
            for name, c in st["channels"].items():
                print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("p_low", "p_high")))
            if args.write:
                print(f"wrote {write_input_stats(m, st)}")
        return 0
    if args.uncertainty or args.consistency:
        out = {}
        for m in models:
            if args.from_json:  # a measurement kept with --json: write it without measuring again
                rep = json.loads(Path(args.from_json).read_text())[m]
            else:
                rep = measure_uncertainty(m, args.fields, args.size,
                                          say=lambda s: print(f"  {s}", file=sys.stderr, flush=True),
                                          precision=args.precision, consistency=args.consistency)
            for key, c in rep["candidates"].items():
                print(f"{Path(m).name} {key}: ceiling {c['ceiling']:.4g}; " + ", ".join(
                    f"{k} median {v['median']:.4g} max {v['max']:.4g} -> {v['threshold']:.4g}"
                    for k, v in c["morphologies"].items()), flush=True)
            if args.write and args.consistency:
                print(f"wrote {write_consistency(m, rep, args.precision)}")
            elif args.write:
                print(f"wrote {write_uncertainty(m, rep, args.statistic, args.tta, args.precision)}")
            out[m] = rep
            if args.json:  # after each package: a long run keeps what it measured
                Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    if args.validated:
        out = {}
        for m in models:
            rep = measure_validated(m, args.fields, args.size, args.seed,
                                    lambda s: print(f"  {s}", file=sys.stderr, flush=True), args.precision)
            print(json.dumps(rep, indent=1), flush=True)
            if args.write:
                print(f"wrote {write_validated(m, rep['validated'], args.precision)}")
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
