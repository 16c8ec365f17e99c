"""The trust monitor against its targets (issue 11): flagged, false alarms, overhead, score vs error.

For each shipped package, fresh bundles from the simulated scope (the real
pymmcore-plus devices, captured through the daemon's control socket exactly as
``scopecast evaluate`` does: models/evaluate_morphology.py) go through the
engine's :class:`~scopecast.daemon.inference.worker.InferenceWorker` as live
(input guards with the frames' header pixel size, calibrated normalization,
tiling, output clipping, the ``trust`` verdict). One row per case:

- *should be flagged*: blank slide, beads, saturated (a long exposure:
  bright-field / the fluorescence past the full well), under-exposed
  (0.5 ms), defocus 10 and 20 µm, another objective (20x and 4x for packages
  trained at 10x);
- *held-out morphologies*: flagging is required (≥ 95 %) only where the model
  is worse than its best baseline on that morphology (linear regression for
  virtual staining; bicubic or Richardson-Lucy with the true PSF for
  super-resolution, fitted on training-region fields: never the oracles);
- *in distribution*: every training morphology in the held-out slide region
  at training conditions: false alarms (target ≤ 1 %).

Per row: bundles, flagged %, withheld %, mean trust score, the model's PSNR
against the ground truth and the best baseline's, of the fields where the model
is worse than that baseline how many were flagged (the target's question asked
per bundle; the target itself stays per morphology), the most frequent reasons.
Then: the monitor's overhead at 512² (input guards + output guard + the trust
object, vs preprocess + inference + postprocess, same bundles, same run) and
Spearman's rank correlation between the trust score and the model's PSNR over
every bundle with a non-constant ground truth (blank fields have none).

``--uncertainty N`` (2, 4 or 8) runs the worker with the dihedral test-time
augmentation (daemon/inference/uncertainty.py) and adds: its cost at 512² (the
``N − 1`` extra inferences vs the model's own), the mean normalized uncertainty
per row, its rank correlation with the PSNR and with the normalized RMSE over
every inferred bundle, and how well it separates each held-out morphology from
the in-distribution bundles (ROC AUC; and the fraction above the highest
in-distribution figure, i.e. flagged by a threshold with no false alarm there).

**The uncertainty check** (the package's ``validated.uncertainty``): the worker
runs it on every inferred bundle here (``uncertainty_budget=inf``; each field is
its own scene) against the ceiling threshold (the specimen's morphology not
named), so each row gives the check's flagged rate alone (over inferred bundles),
the whole monitor's (guards + check), and, for rows of a training morphology,
the rate against that morphology's own threshold. ``--in-distribution-fields``
sets the number of held-out-region bundles per training morphology (the false
alarms: 1 % needs a few hundred). ``--thresholds calib.json`` (from
bench_trust_models.py ``--uncertainty --json``) also scores every candidate
statistic (ROC AUC per row against the in-distribution bundles, flagged at its
ceiling). The check's overhead at 512² is measured as live: the same scene
bundle after bundle with a new scene every ``--scene-every`` bundles, the worker
with the default budget against one with the check off, interleaved (ABAB),
total time per bundle; and counted exactly (extra model passes / ordinary ones).

Run: python benchmarks/bench_trust.py [--fields 8] [--size 256] [--model PKG] [--uncertainty N] [--json out.json]
     python benchmarks/bench_trust.py [--in-distribution-fields 40] [--thresholds calib.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

FLAG_MIN = 0.95  # flagged fraction required on the "should be flagged" rows
FALSE_ALARM_MAX = 0.01  # flagged fraction allowed on in-distribution bundles
OVERHEAD_MAX = 0.05  # monitor time / inference time at 512²


def cases(task: str, dom: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The benchmark's rows for a task: ``group`` is ``in distribution``, ``flag`` or ``held-out morphology``.

    ``dom``: the package's domain (:func:`~scopecast.models.evaluate_morphology.evaluation_domain`: its own
    training morphologies, as ``scopecast evaluate`` scores it); default the task's :data:`DOMAIN`."""
    from scopecast.models.dataset import BLANK, DOMAIN

    dom = DOMAIN[task] if dom is None else dom
    lo, hi = dom["exposure_ms"]
    mid = round(float(np.sqrt(lo * hi)), 3)
    at = {"exposure_ms": (mid, mid), "defocus_um": 0.0}
    rows = [{"row": f"{k} (held-out region)", "kind": k, "group": "in distribution", "plan": {}}
            for k in dom["train"]]
    rows += [{"row": f"{k} (held-out morphology)", "kind": k, "group": "held-out morphology", "plan": {}}
             for k in dom["held_out"]]
    sat = 64.0 if task == "virtual-staining" else 400.0  # BF clips at ~18 ms; the membrane label at ~30-60 ms
    rows += [
        {"row": "blank slide", "kind": BLANK, "group": "flag", "plan": at},
        {"row": "beads", "kind": "beads", "group": "flag", "plan": at},
        {"row": f"saturated ({sat:g} ms)", "kind": "cells", "group": "flag",
         "plan": {"exposure_ms": (sat, sat), "defocus_um": 0.0}},
        {"row": "under-exposed (0.5 ms)", "kind": "cells", "group": "flag",
         "plan": {"exposure_ms": (0.5, 0.5), "defocus_um": 0.0}},
        {"row": "defocus 10 µm", "kind": "cells", "group": "flag", "plan": at, "z": 10.0},
        {"row": "defocus 20 µm", "kind": "cells", "group": "flag", "plan": at, "z": 20.0},
        {"row": "objective 20x/0.40", "kind": "cells", "group": "flag", "plan": at, "objective": "20x"},
        {"row": "objective 4x/0.13", "kind": "cells", "group": "flag", "plan": at, "objective": "4x"},
    ]
    return rows


def _reason_kind(reason: str) -> str:
    """A reason without its figures: 'under-exposed: BF signal 3.2 ADU < 40' -> 'under-exposed: BF signal'."""
    head, _, rest = reason.partition(":")
    words = []
    for w in rest.split():
        if w[0].isdigit() or w[0] in "-.":
            break
        words.append(w)
    return f"{head}: {' '.join(words)}" if words else head


def _field_nrmse(pred: np.ndarray, gt: np.ndarray, scale: list[float], keep: np.ndarray) -> float:
    """Mean over the output channels ``keep`` marks (stained truth) of the RMSE over the output's training scale
    (NaN: none)."""
    v = [float(np.sqrt(np.mean((p.astype(np.float64) - g) ** 2))) / abs(s)
         for p, g, s, k in zip(pred, gt, scale, keep, strict=True) if k]
    return float(np.mean(v)) if v else float("nan")


def _auc(pos: list[float], neg: list[float]) -> float:
    """ROC AUC of ``pos`` above ``neg`` (Mann-Whitney; ties count half)."""
    if not pos or not neg:
        return float("nan")
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def row_psnr(pred: np.ndarray, gt: np.ndarray, m: Any) -> list[float]:
    """Each field's PSNR, scored as ``scopecast evaluate`` scores it: over the output channels whose truth holds
    stained structure (:func:`scopecast.models.evaluation.stained`: empty glass has no PSNR; NaN when none)."""
    from scopecast.models.evaluate_morphology import _stained
    from scopecast.models.evaluation import field_psnr

    return [field_psnr(p, g, k) for p, g, k in zip(pred, gt, _stained(gt, m), strict=True)]


def _run_fields(worker: Any, pairs: Any, inputs: list[str], candidates: list[str] | None = None
                ) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, float] | None]]:
    """Every field through the worker as live: frames with the headers the daemon sends (channel, pixel size,
    exposure).
    With ``candidates`` (``"<statistic>@<n>"``) also every candidate uncertainty statistic of each inferred
    bundle (None: withheld)."""
    from scopecast.daemon.inference.uncertainty import statistic
    from scopecast.daemon.inference.worker import StreamFrame
    from scopecast.models.dataset import _as_counts
    from scopecast.models.evaluate_morphology import field_exposure

    preds, trusts, cands = [], [], []
    ns = tuple(sorted({int(c.split("@")[1]) for c in candidates or []}))
    for i, field in enumerate(pairs.inputs):
        frames = [StreamFrame({"channel": n, "acquisition_id": "bench-trust", "bundle_id": i, "seq": c,
                               "pixel_size_um": float(pairs.pixel_size_um), "t_acquired_ns": 0,
                               **field_exposure(pairs, i)},
                              np.ascontiguousarray(_as_counts(f))) for c, (n, f) in enumerate(zip(inputs, field,
                                                                                                   strict=True))]
        r = worker.process(frames)
        preds.append(r.data.copy())
        trusts.append(r.header["trust"])
        if ns and r.header["trust"]["guards"]["action"] == "inferred":
            x = worker.preprocess(worker.order(frames))
            y = worker.infer(x)
            stds = worker._stds(x, y, ns, raw=True)
            cands.append({c: statistic(stds[int(c.split("@")[1])], y, c.split("@")[0]) for c in candidates or []})
        else:
            cands.append(None)
    return np.stack(preds), trusts, cands


class _Baselines:
    """The evaluation's non-oracle baselines, fitted on training-region fields of the training morphologies."""

    def __init__(self, fit: Any, m: Any, offset: float) -> None:
        from scopecast.models import evaluate_morphology as ev

        self.ev, self.sf, self.offset = ev, m.scale_factor, offset
        self.px = (m.pixel_size_um or 0.65) / self.sf
        if self.sf == 1:
            self.coef = ev._lr_fit(fit.inputs, fit.targets)
        else:
            up = ev._bicubic(fit.inputs, self.sf)
            self.bic = ev._gain_fit(up, fit.targets)
            self.rl = ev._gain_fit(ev._rl_true_psf(up, self.px, offset), fit.targets)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        ev = self.ev
        if self.sf == 1:
            return {"linear regression": ev._lr_apply(self.coef, x)}
        up = ev._bicubic(x, self.sf)
        return {"bicubic": ev._gain_apply(self.bic, up),
                "Richardson-Lucy": ev._gain_apply(self.rl, ev._rl_true_psf(up, self.px, self.offset))}


def measure_overhead(worker: Any, bundle: list[np.ndarray], inputs: list[str], pixel_um: float,
                     repeats: int = 21) -> dict[str, float]:
    """Monitor (input guards + output guard + trust object) vs model (preprocess + infer + postprocess), ms:
    medians of ``repeats`` (a median of 5 moved by ±0.2 ms between runs on the shared 2-core machine).

    The input guards run as live, right after an inference (cold); ``guards_warm_ms`` is the same check run
    again at once, its data and code in cache: what the guards' arithmetic costs, the rest being reads of a
    bundle the model's pass pushed out of the cache."""
    from scopecast.daemon.inference.guards import trust
    from scopecast.daemon.inference.worker import StreamFrame

    frames = [StreamFrame({"channel": n, "pixel_size_um": pixel_um}, np.ascontiguousarray(f))
              for n, f in zip(inputs, bundle, strict=True)]
    ordered = worker.order(frames)
    worker.process(frames)  # warm: allocations, kernel selection
    mon, inf = [], []
    warm: list[tuple[float, float]] = []  # (the check run again at once, the check as live)
    for _ in range(repeats):
        t0 = time.perf_counter()
        v = worker.check(ordered)
        cold = time.perf_counter() - t0
        t1 = time.perf_counter()
        worker.check(ordered)  # again at once: not part of the monitor's cost
        warm.append((time.perf_counter() - t1, cold))
        t1 = time.perf_counter()
        y, extremes = worker.postprocess(worker.infer(worker.preprocess(ordered)))
        t2 = time.perf_counter()
        out, reasons, margin = worker.output_guard.apply(y, extremes)
        trust(v, out, reasons, margin)
        t3 = time.perf_counter()
        mon.append(cold + (t3 - t2))
        inf.append(t2 - t1)
    g, i = float(np.median(mon)) * 1e3, float(np.median(inf)) * 1e3
    out = {"monitor_ms": round(g, 3), "inference_ms": round(i, 1), "ratio": g / i, "size": int(bundle[0].shape[0]),
           "repeats": repeats, "withheld": bool(v.withhold),
           "guards_ms": round(float(np.median([c for _, c in warm])) * 1e3, 3),
           "guards_warm_ms": round(float(np.median([w for w, _ in warm])) * 1e3, 3)}
    if worker.uncertainty:  # the dihedral copies: N - 1 more inferences and the running spread
        unc = []
        for _ in range(max(1, min(repeats // 2, 5))):
            x = worker.preprocess(ordered)
            y = worker.infer(x)
            t0 = time.perf_counter()
            worker._std(x, y)
            unc.append(time.perf_counter() - t0)
        u = float(np.median(unc)) * 1e3
        out.update(uncertainty_ms=round(u, 1), uncertainty_ratio=u / i, uncertainty_tta=worker.uncertainty)
    return out


def measure_check_overhead(pkg: Any, bundle: list[np.ndarray], inputs: list[str], pixel_um: float,
                           budget: float, bundles: int = 120, scene_every: int = 30, rounds: int = 6,
                           morphology: str | None = None) -> dict[str, Any]:
    """The budgeted uncertainty check as live at the bundle's size: one worker with ``budget``, one with the check
    off, fed the same bundle (a new stage position every ``scene_every`` bundles), in ``rounds`` interleaved
    blocks (ABAB). Returns the exact counted work ratio (extra model passes / ordinary ones), the time the checks
    took against the time of the ordinary bundles (from the result headers: robust to other load, the check's
    ``ms`` against the median bundle), and the raw ABAB totals (noisy on a shared machine)."""
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    rt = open_runtime(pkg, "ort-cpu")
    on = InferenceWorker(pkg, rt, uncertainty_budget=budget, uncertainty_morphology=morphology)
    off = InferenceWorker(pkg, rt, uncertainty_budget=0.0)
    per = max(1, bundles // rounds)
    t = {"on": 0.0, "off": 0.0}
    i = {"on": 0, "off": 0}

    def frames(k: int) -> list[Any]:
        x = 1000.0 * (k // scene_every)
        return [StreamFrame({"channel": n, "pixel_size_um": pixel_um, "acquisition_id": "overhead", "bundle_id": k,
                             "stage_x_um": x, "stage_y_um": 0.0, "stage_z_um": 0.0, "exposure_ms": 10.0},
                            np.ascontiguousarray(f)) for n, f in zip(inputs, bundle, strict=True)]

    on.process(frames(0))  # warm both (no check is due yet: no credit)
    off.process(frames(0))
    states: Counter[str] = Counter()
    cons_states: Counter[str] = Counter()
    check_ms: list[float] = []
    cons_ms: list[float] = []
    plain_ms: list[float] = []
    for _ in range(rounds):
        for name, w in (("on", on), ("off", off)):
            for _ in range(per):
                t0 = time.perf_counter()
                h = w.process(frames(i[name])).header
                t[name] += time.perf_counter() - t0
                i[name] += 1
                c, k = h["trust"]["uncertainty"]["check"], h["trust"]["consistency"]
                if name == "on":
                    states[c["state"].split(" ")[0]] += 1
                    cons_states[k["state"].split(":")[0]] += 1
                bundle_ms = (h["t_postprocessed_ns"] - h["t_dequeued_ns"]) / 1e6
                for chk, took in ((c, check_ms), (k, cons_ms)):
                    if chk["state"] == "checked":
                        took.append(chk["ms"])
                        bundle_ms -= chk["ms"]
                plain_ms.append(bundle_ms)
    c, k = on.check_uncertainty, on.check_consistency
    med_check = float(np.median(check_ms)) if check_ms else 0.0
    med_cons = float(np.median(cons_ms)) if cons_ms else 0.0
    med_plain = float(np.median(plain_ms))
    return {"size": int(bundle[0].shape[0]), "budget": budget, "bundles": i["on"], "scene_every": scene_every,
            "ms_on": round(1e3 * t["on"] / i["on"], 2), "ms_off": round(1e3 * t["off"] / i["off"], 2),
            "abab_ratio": t["on"] / i["on"] / (t["off"] / i["off"]) - 1.0, "checks": c.checks,
            "check_ms_median": round(med_check, 1), "bundle_ms_median": round(med_plain, 1),
            "time_ratio": med_check * len(check_ms) / (med_plain * i["on"]),
            "work_ratio": c.extra_passes / max(c.passes, 1e-12), "states": dict(states),
            "consistency_checks": k.checks, "consistency_ms_median": round(med_cons, 2),
            "consistency_time_ratio": med_cons * len(cons_ms) / (med_plain * i["on"]),
            "consistency_work_ratio": k.spent_passes / max(k.passes, 1e-12), "consistency_states": dict(cons_states)}


def run_package(package: str | Path, fields: int, size: int, seed: int, fit_fields: int, overhead_size: int,
                say: Any, uncertainty: int = 0, ind_fields: int = 0, thresholds: dict[str, Any] | None = None,
                budget: float = 0.025, scene_every: int = 30, only_overhead: bool = False,
                check_bundles: int = 120, precision: str = "fp32", only_rows: tuple[str, ...] = ()) -> dict[str, Any]:
    """One package's report. ``only_rows``: run only the cases whose row name contains one of these (each
    with the fields it has in a full run); the summary figures then cover those rows alone."""
    from scipy.stats import spearmanr

    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker
    from scopecast.models.dataset import BLANK, TASKS, calibrate_camera, field_plan
    from scopecast.models.evaluate_morphology import _capture, _Sim, _stained, evaluation_domain

    t0 = time.monotonic()
    pkg = load_package(package, precision)
    m = pkg.manifest
    task = m.task
    spec, dom = TASKS[task], evaluation_domain(m)  # the package's own training morphologies, as evaluate's
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty=uncertainty,
                             uncertainty_budget=float("inf"))  # the check on every inferred bundle (ceiling)
    val_u = m.validated.uncertainty if m.validated is not None else None
    cand_names = sorted(thresholds["candidates"]) if thresholds else []
    n_out = len(m.outputs)
    scale = list(m.output_scaling.scale) if m.output_scaling is not None else [1.0] * n_out
    st = m.input_stats
    rep: dict[str, Any] = {
        "package": str(package), "model": m.name, "sha256": m.short_hash, "task": task, "precision": precision,
        "fields": fields,
        "size": size, "seed": seed, "rows": [],
        "check": None if val_u is None else {"statistic": val_u.statistic, "tta": val_u.tta, "ceiling": val_u.ceiling,
                                             "morphologies": {k: v.threshold for k, v in val_u.morphologies.items()}},
        "package_has": {"input_stats": st is not None, "camera": m.camera is not None,
                        "focus": bool(st and all(c.focus is not None for c in st.channels.values())),
                        "pixel_size_um": m.pixel_size_um},
    }
    all_scores: list[tuple[float, float]] = []
    all_unc: list[tuple[float, float, float, str]] = []  # (uncertainty, psnr, nrmse, row group / row)
    with tempfile.TemporaryDirectory(prefix="scopecast-bench-trust-") as tmp:
        sim = _Sim(size, Path(tmp))
        try:
            sim.set_sample("cells")
            camera = calibrate_camera(sim.client)
            offset = float(camera["offset_adu"])
            if not only_overhead:
                fit = _capture(sim, task, field_plan(task, "train", fit_fields * len(dom["train"]), seed + 1,
                                                     dom["train"], blank_fraction=0.0), "fit", camera)
                base = _Baselines(fit, m, offset)
                say(f"{m.name}: baselines fitted on {len(fit.inputs)} training-region fields")
            for k, r in enumerate([] if only_overhead else cases(task, dom)):
                if only_rows and not any(part in r["row"] for part in only_rows):
                    continue
                nf = ind_fields if ind_fields and r["group"] == "in distribution" else fields
                fl = field_plan(task, "val", nf, seed + 10 + k, [r["kind"]], **{"blank_fraction": 0.0, **r["plan"]})
                if "z" in r:
                    for i, f in enumerate(fl):
                        f["z"] = r["z"] * (1 if i % 2 == 0 else -1)  # above and below the focal plane
                if r.get("objective"):
                    sim.set_objective(r["objective"])
                try:
                    pairs = _capture(sim, task, fl, f"row{k}", camera)
                finally:
                    if r.get("objective"):
                        sim.set_objective("10x")
                pred, trusts, cands = _run_fields(worker, pairs, spec["inputs"], cand_names)
                pred = pred[:, :n_out]  # with --uncertainty the std channels follow the outputs
                gt = pairs.targets
                empty: dict[str, int] = {}
                if r["kind"] == BLANK:  # no truth to score against: the ground truth is the camera's dark level
                    model_psnr = [float("nan")] * len(pred)
                    bl = {b: [float("nan")] * len(pred) for b in base(pairs.inputs[:1])}
                else:
                    model_psnr = row_psnr(pred, gt, m)
                    empty = {o: int(n) for o, n in zip(m.outputs, (~_stained(gt, m)).sum(axis=0), strict=True) if n}
                    if uncertainty:
                        for p, g, t, ps, keep in zip(pred, gt, trusts, model_psnr, _stained(gt, m), strict=True):
                            u = t.get("uncertainty")
                            if u is not None and np.isfinite(ps):
                                all_unc.append((float(u["mean"]), ps, _field_nrmse(p, g, scale, keep),
                                                "in distribution" if r["group"] == "in distribution" else r["row"]))
                    bl = {b: row_psnr(v, gt, m) for b, v in base(pairs.inputs).items()}
                bl_mean = {b: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for b, v in bl.items()}
                best = max(bl_mean, key=lambda b: -np.inf if np.isnan(bl_mean[b]) else bl_mean[b])
                scores = [float(t["score"]) for t in trusts]
                all_scores += [(s, p) for s, p in zip(scores, model_psnr, strict=True) if np.isfinite(p)]
                guards_only = [[x for x in t["reasons"] if not x.startswith(("uncertainty:", "inconsistent with"))]
                               for t in trusts]
                flagged_all = sum(not t["ok"] for t in trusts) / len(trusts)
                flagged = sum(bool(g) for g in guards_only) / len(trusts)  # the input/output guards alone
                checked = [t["uncertainty"]["check"] for t in trusts if "value" in t["uncertainty"]["check"]]
                consistent = [t["consistency"] for t in trusts if t.get("consistency", {}).get("ok") is not None]
                named = val_u.morphologies.get(r["kind"]) if val_u is not None else None
                mp = float(np.nanmean(model_psnr)) if np.isfinite(model_psnr).any() else float("nan")
                reasons = Counter(_reason_kind(x) for g in guards_only for x in g)
                row = {"row": r["row"], "group": r["group"], "bundles": len(trusts), "flagged": flagged,
                       "withheld": sum(t["guards"]["action"] == "withheld" for t in trusts) / len(trusts),
                       "score": float(np.mean(scores)), "model_psnr": mp, "baseline": best,
                       "baseline_psnr": bl_mean[best], "pixel_size_um": float(pairs.pixel_size_um),
                       "empty_fields": empty,
                       "reasons": [f"{x} ({n})" for x, n in reasons.most_common(4)],
                       "flagged_monitor": flagged_all, "checked": len(checked),
                       "check_flagged": (sum(c["ok"] is False for c in checked) / len(checked)) if checked else None,
                       "check_flagged_named": (sum(c["value"] > named.threshold for c in checked) / len(checked))
                       if checked and named is not None else None,
                       "check_values": [c["value"] for c in checked],
                       "consistency_checked": len(consistent),
                       "consistency_flagged": (sum(c["ok"] is False for c in consistent) / len(consistent))
                       if consistent else None,
                       "candidates": [c for c in cands if c is not None],
                       "per_field": [{"score": s, "psnr": p, "baseline_psnr": b, "ok": t["ok"],
                                      "uncertainty": t["uncertainty"]["check"].get("value"),
                                      "consistency": t.get("consistency", {}).get("value")} for s, p, b, t in
                                     zip(scores, model_psnr, bl[best], trusts, strict=True)]}
                # the same question per bundle: of the fields where the model loses to the baseline, how many flagged
                losing = [f for f in row["per_field"] if np.isfinite(f["psnr"]) and f["psnr"] < f["baseline_psnr"]]
                row["losing_fields"], row["losing_flagged"] = len(losing), sum(not f["ok"] for f in losing)
                if r["group"] == "in distribution":
                    row["target"] = f"≤ {100 * FALSE_ALARM_MAX:g} % flagged"
                    row["met"] = flagged_all <= FALSE_ALARM_MAX
                elif r["group"] == "flag" or (np.isfinite(mp) and mp < bl_mean[best]):
                    row["target"] = f"≥ {100 * FLAG_MIN:g} % flagged"
                    row["met"] = flagged_all >= FLAG_MIN
                else:
                    row["target"] = "none (model beats its baseline)"
                    row["met"] = None
                if uncertainty:
                    us = [t["uncertainty"]["mean"] for t in trusts if t.get("uncertainty") is not None]
                    row["uncertainty"] = float(np.mean(us)) if us else float("nan")
                rep["rows"].append(row)
                say(f"{m.name}: {r['row']}: guards {100 * flagged:.0f} %, monitor {100 * flagged_all:.0f} % "
                    f"({time.monotonic() - t0:.0f} s)")
        finally:
            sim.close()
        if overhead_size:
            big = Path(tmp) / "overhead"
            big.mkdir()
            sim = _Sim(overhead_size, big)
            try:
                sim.set_sample("cells")
                lo, hi = dom["exposure_ms"]
                mid = round(float(np.sqrt(lo * hi)), 3)
                fl = field_plan(task, "val", 1, seed + 99, ["cells"], blank_fraction=0.0,
                                exposure_ms=(mid, mid), defocus_um=0.0)
                pairs = _capture(sim, task, fl, "overhead", camera)
            finally:
                sim.close()
            from scopecast.models.dataset import _as_counts

            big_bundle = [_as_counts(f) for f in pairs.inputs[0]]
            plain = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty=uncertainty,
                                    uncertainty_budget=0.0)
            rep["overhead"] = measure_overhead(plain, big_bundle, spec["inputs"], float(pairs.pixel_size_um))
            if budget > 0:
                rep["check_overhead"] = measure_check_overhead(pkg, big_bundle, spec["inputs"],
                                                               float(pairs.pixel_size_um), budget,
                                                               bundles=check_bundles, scene_every=scene_every)
                say(f"{m.name}: check overhead {rep['check_overhead']}")
    ind = [r for r in rep["rows"] if r["group"] == "in distribution"]
    n_ind = sum(r["bundles"] for r in ind)
    rep["false_alarm"] = sum(r["flagged_monitor"] * r["bundles"] for r in ind) / max(n_ind, 1)
    rep["false_alarm_guards"] = sum(r["flagged"] * r["bundles"] for r in ind) / max(n_ind, 1)
    rep["in_distribution_bundles"] = n_ind
    if val_u is not None:
        ind_v = [v for r in ind for v in r["check_values"]]
        sep = {}
        for r in rep["rows"]:
            if r["group"] != "in distribution" and r["check_values"]:
                sep[r["row"]] = {"auc": _auc(r["check_values"], ind_v)}
        allv = [(f["uncertainty"], f["psnr"]) for r in rep["rows"] for f in r["per_field"]
                if f["uncertainty"] is not None and np.isfinite(f["psnr"])]
        rep["check_summary"] = {
            "in_distribution_checked": len(ind_v),
            "false_alarm_check": float(np.mean(np.asarray(ind_v) > val_u.ceiling)) if ind_v else float("nan"),
            "auc": sep,
            "spearman_psnr": float(spearmanr(*np.array(allv).T).statistic) if len(allv) > 2 else float("nan")}
    if cand_names:
        cs = {}
        for c in cand_names:
            ceil = thresholds["candidates"][c]["ceiling"]
            ind_c = [d[c] for r in ind for d in r["candidates"]]
            cs[c] = {"ceiling": ceil, "false_alarm": float(np.mean(np.asarray(ind_c) > ceil)) if ind_c else None,
                     "rows": {r["row"]: {"auc": _auc([d[c] for d in r["candidates"]], ind_c),
                                         "flagged": float(np.mean([d[c] > ceil for d in r["candidates"]]))}
                              for r in rep["rows"] if r["group"] != "in distribution" and r["candidates"]}}
        rep["candidates"] = cs
    if len(all_scores) > 2:
        s, p = np.array(all_scores).T
        rho = spearmanr(s, p)
        rep["spearman"] = {"rho": float(rho.statistic), "p": float(rho.pvalue), "bundles": len(s)}
    if len(all_unc) > 2:
        u, p, e = (np.array([a[i] for a in all_unc]) for i in range(3))
        ind = [a[0] for a in all_unc if a[3] == "in distribution"]
        sep = {}
        for name in dict.fromkeys(a[3] for a in all_unc if a[3] != "in distribution"):
            pos = [a[0] for a in all_unc if a[3] == name]
            sep[name] = {"auc": _auc(pos, ind), "above_in_distribution_max":
                         float(np.mean(np.asarray(pos) > max(ind))) if ind else float("nan"), "bundles": len(pos)}
        rep["uncertainty"] = {
            "tta": uncertainty, "bundles": len(u),
            "spearman_psnr": float(spearmanr(u, p).statistic), "spearman_nrmse": float(spearmanr(u, e).statistic),
            "in_distribution": {"mean": float(np.mean(ind)), "max": float(np.max(ind))} if ind else None,
            "separation": sep}
    rep["seconds"] = round(time.monotonic() - t0, 1)
    return rep


def _f(v: float | None, fmt: str = ".1f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, fmt)


def format_report(rep: dict[str, Any]) -> str:
    from scopecast.models.evaluation import EMPTY_TRUTH_FRACTION

    has = rep["package_has"]
    int8 = ", INT8 variant" if rep.get("precision") == "int8" else ""
    lines = [f"### {rep['model']}{int8} ({rep['task']}, sha256 {rep['sha256']}): {rep['fields']} bundles of "
             f"{rep['size']}² per row, through the engine's worker (ONNX Runtime CPU)", "",
             f"Package records: input_stats {'yes' if has['input_stats'] else 'NO'}, camera "
             f"{'yes' if has['camera'] else 'NO'}, focus range {'yes' if has['focus'] else 'NO'}, training pixel "
             f"size {has['pixel_size_um']} µm.", "",
             "| case | bundles | guards flagged | uncertainty check alone (ceiling / named morphology) | "
             "consistency check alone | monitor flagged | withheld | mean score | model PSNR (dB) | best baseline "
             "PSNR (dB) | fields it loses: flagged | target | met | main reasons (guards) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    for r in rep["rows"]:
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**NO**")
        named = "" if r["check_flagged_named"] is None else " / " + pct(r["check_flagged_named"])
        chk = "— (withheld)" if not r["checked"] else f"{pct(r['check_flagged'])}{named} of {r['checked']}"
        con = "—" if not r.get("consistency_checked") else \
            f"{pct(r['consistency_flagged'])} of {r['consistency_checked']}"
        lines.append(f"| {r['row']} | {r['bundles']} | {pct(r['flagged'])} | {chk} | {con} | "
                     f"{pct(r['flagged_monitor'])} | {pct(r['withheld'])} | {r['score']:.2f} | {_f(r['model_psnr'])} | "
                     f"{_f(r['baseline_psnr'])} ({r['baseline']}) | {r['losing_flagged']} of {r['losing_fields']} | "
                     f"{r['target']} | {met} | "
                     f"{'; '.join(r['reasons'])} |")
    empty = {r["row"]: r["empty_fields"] for r in rep["rows"] if r.get("empty_fields")}
    if empty:
        lines += ["", f"Fields whose truth holds no stain (spans < {100 * EMPTY_TRUTH_FRACTION:g} % of the output's "
                  "training scale: empty glass), left out of the PSNRs and ρ as in `scopecast evaluate`: "
                  + "; ".join(f"{k}: {', '.join(f'{o} {n}' for o, n in e.items())}" for k, e in empty.items())]
    fa = rep["false_alarm"]
    if not rep["in_distribution_bundles"]:
        lines += ["", "False alarms: not measured (no in-distribution case in this run)."]
    else:
        lines += ["", f"False alarms (in-distribution bundles flagged): {100 * fa:.1f} % by the whole monitor over "
                  f"{rep['in_distribution_bundles']} bundles (guards alone {100 * rep['false_alarm_guards']:.1f} %; "
                  f"{'meets' if fa <= FALSE_ALARM_MAX else 'MISSES'} ≤ {100 * FALSE_ALARM_MAX:g} %)."]
    ck = rep.get("check")
    if ck:
        cs = rep["check_summary"]
        lines.append(f"Uncertainty check: {ck['statistic']} x{ck['tta']}, ceiling {ck['ceiling']:.4g} (morphologies "
                     + ", ".join(f"{k} {v:.4g}" for k, v in ck["morphologies"].items())
                     + f"); Spearman ρ of its statistic vs PSNR {cs['spearman_psnr']:.2f}; ROC AUC against the "
                     f"{cs['in_distribution_checked']} in-distribution bundles: "
                     + "; ".join(f"{k} {v['auc']:.2f}" for k, v in cs["auc"].items()) + ".")
    else:
        lines.append("Uncertainty check: the package records no validated threshold (informational only).")
    co = rep.get("check_overhead")
    if co:
        lines.append(f"Budgeted uncertainty check at {co['size']}² (budget {100 * co['budget']:g} %, a new scene "
                     f"every {co['scene_every']} bundles, {co['bundles']} bundles): "
                     f"{co['checks']} checks of {co['check_ms_median']:.0f} ms (median) against bundles of "
                     f"{co['bundle_ms_median']:.0f} ms (median, preprocess to postprocess) = "
                     f"{100 * co['time_ratio']:.2f} % time, counted work {100 * co['work_ratio']:.2f} %; raw ABAB "
                     f"totals {co['ms_on']:.0f} vs {co['ms_off']:.0f} ms per bundle ({100 * co['abab_ratio']:+.1f} %, "
                     f"noise of the shared machine); states {co['states']}.")
        if co.get("consistency_checks"):
            lines.append(f"Budgeted consistency check, same run (its own credit, 0.4 x the budget): "
                         f"{co['consistency_checks']} checks of {co['consistency_ms_median']:.2f} ms (median) = "
                         f"{100 * co['consistency_time_ratio']:.2f} % time, counted work "
                         f"{100 * co['consistency_work_ratio']:.2f} %; states {co['consistency_states']}.")
    cands = rep.get("candidates")
    if cands:
        lines += ["", "Candidate statistics (threshold rule on training-region fields; flagged at the ceiling; "
                  "AUC vs in-distribution):", "",
                  "| candidate | ceiling | false alarms | " + " | ".join(next(iter(cands.values()))["rows"]) + " |",
                  "| --- | ---: | ---: |" + " ---: |" * len(next(iter(cands.values()))["rows"])]
        for c, v in cands.items():
            lines.append(f"| {c} | {v['ceiling']:.4g} | {pct(v['false_alarm'])} | " + " | ".join(
                f"{100 * x['flagged']:.0f} % ({x['auc']:.2f})" for x in v["rows"].values()) + " |")
    ov = rep.get("overhead")
    if ov:
        lines.append(f"Monitor overhead at {ov['size']}² (input guards + output guard + trust object, "
                     f"median of {ov.get('repeats', 5)}): "
                     f"{ov['monitor_ms']:.2f} ms vs {ov['inference_ms']:.0f} ms preprocess+inference+postprocess = "
                     f"{100 * ov['ratio']:.2f} % ({'meets' if ov['ratio'] <= OVERHEAD_MAX else 'MISSES'} "
                     f"≤ {100 * OVERHEAD_MAX:g} %).")
        if "guards_warm_ms" in ov:
            lines.append(f"Of it, the input guards: {ov['guards_ms']:.2f} ms right after the model's pass, as live; "
                         f"{ov['guards_warm_ms']:.2f} ms run again at once (their arithmetic; the difference is "
                         "reading the bundle back into the cache).")
    un = rep.get("uncertainty")
    if un:
        lines.append(f"Uncertainty (dihedral TTA x{un['tta']}, mean std / output scale) over {un['bundles']} inferred "
                     f"bundles: Spearman ρ vs PSNR {un['spearman_psnr']:.2f}, vs normalized RMSE "
                     f"{un['spearman_nrmse']:.2f}; per row: " + ", ".join(
                         f"{r['row']} {r['uncertainty']:.4f}" for r in rep["rows"] if np.isfinite(r.get("uncertainty",
                                                                                                       np.nan))))
        if un["in_distribution"]:
            lines.append("Separation from in-distribution bundles (ROC AUC; above the in-distribution maximum "
                         f"{un['in_distribution']['max']:.4f}): " + "; ".join(
                             f"{k} {v['auc']:.2f} ({100 * v['above_in_distribution_max']:.0f} %)"
                             for k, v in un["separation"].items()))
    if ov and "uncertainty_ms" in ov:
        lines.append(f"Uncertainty cost at {ov['size']}² (x{ov['uncertainty_tta']}: {ov['uncertainty_tta'] - 1} more "
                     f"inferences + the spread): {ov['uncertainty_ms']:.0f} ms = "
                     f"{100 * ov['uncertainty_ratio']:.0f} % of the model's time.")
    sp = rep.get("spearman")
    if sp:
        lines.append(f"Spearman rank correlation, trust score vs model PSNR against ground truth, over "
                     f"{sp['bundles']} bundles of every case (blank slide and empty-glass fields excluded): "
                     f"ρ = {sp['rho']:.2f} "
                     f"(p = {sp['p']:.2g}).")
    lines.append(f"({rep['seconds']:.0f} s)")
    return "\n".join(lines)


def verdict(rep: dict[str, Any]) -> bool:
    ok = all(r["met"] is not False for r in rep["rows"])
    ov = rep.get("overhead")
    co = rep.get("check_overhead")
    total = (ov["ratio"] if ov else 0.0) + (max(co["work_ratio"], co["time_ratio"]) if co else 0.0) + \
        (max(co.get("consistency_work_ratio", 0.0), co.get("consistency_time_ratio", 0.0)) if co else 0.0)
    return ok and total <= OVERHEAD_MAX


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=None,
                    help="package folder or shipped package name (default: both shipped packages)")
    ap.add_argument("--fields", type=int, default=8, help="bundles per case")
    ap.add_argument("--size", type=int, default=256, help="field size (pixels) for the cases")
    ap.add_argument("--fit-fields", type=int, default=2, help="baseline fit: fields per training morphology")
    ap.add_argument("--overhead-size", type=int, default=512, help="field size of the overhead run (0: skip)")
    ap.add_argument("--seed", type=int, default=700)
    ap.add_argument("--uncertainty", type=int, default=0, choices=(0, 2, 4, 8),
                    help="dihedral TTA copies per bundle (uncertainty figures and cost; 0: off)")
    ap.add_argument("--in-distribution-fields", type=int, default=0,
                    help="bundles per training morphology in the held-out region (default: --fields)")
    ap.add_argument("--thresholds", default="",
                    help="bench_trust_models.py --uncertainty --json output: score every candidate statistic too")
    ap.add_argument("--budget", type=float, default=0.025, help="uncertainty check budget for the overhead run")
    ap.add_argument("--scene-every", type=int, default=30, help="overhead run: a new scene every N bundles")
    ap.add_argument("--check-bundles", type=int, default=120, help="bundles of the budgeted check's overhead run")
    ap.add_argument("--only-overhead", action="store_true", help="measure the overheads only (no cases)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="run the packages' model file of this precision (int8: the INT8 variant)")
    ap.add_argument("--rows", action="append", default=[],
                    help="run only the cases whose row contains this text (repeatable; same fields as a full run)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    calib = json.loads(Path(args.thresholds).read_text()) if args.thresholds else {}
    shipped = ROOT / "models" / "packages"
    models = [str(shipped / m) if (shipped / m).is_dir() else m for m in
              (args.model or ["virtual-staining", "super-resolution"])]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    reports, ok = [], True
    for m in models:
        th = next((v for k, v in calib.items() if Path(k).name == Path(m).name), None)
        rep = run_package(m, args.fields, args.size, args.seed, args.fit_fields, args.overhead_size,
                          lambda s: print(f"  {s}", file=sys.stderr, flush=True), args.uncertainty,
                          args.in_distribution_fields, th, args.budget, args.scene_every, args.only_overhead,
                          args.check_bundles, args.precision, tuple(args.rows))
        print(format_report(rep), "\n", flush=True)
        ok &= verdict(rep)
        reports.append(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2))
    print("targets met" if ok else "targets NOT met (see the tables)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
