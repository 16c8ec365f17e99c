"""Evaluation on held-out fields against honest baselines, and the model card.

Metrics (on targets in the package's output units, per field then averaged):
PSNR (data range of the ground truth), SSIM (Gaussian window σ = 1.5) and
Pearson r. Baselines:

- virtual staining: per-pixel linear regression from the same input channels,
  fitted by least squares on the training fields;
- super-resolution: bicubic upsampling, and Richardson–Lucy deconvolution
  (20 iterations) with the known widefield PSF (Gaussian of FWHM 0.51 λ/NA) on
  the bicubic-upsampled field; both mapped to the target's intensity scale
  with a gain and offset fitted on the training fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["EMPTY_TRUTH_FRACTION", "evaluate", "field_psnr", "pearson", "psnr", "ssim", "stained", "write_card"]


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    rng = float(gt.max() - gt.min()) or 1.0
    mse = float(np.mean((pred - gt) ** 2))
    return 10 * np.log10(rng**2 / max(mse, 1e-12))


#: A field whose ground truth spans less than this fraction of the output's training scale holds no stained
#: structure (empty glass between colonies): its span is the camera noise, tens of counts against thousands
#: (the reasoning of :data:`~scopecast.models.dataset.OUTPUT_RANGE_MARGIN`). PSNR relative to that span means
#: nothing: a withheld (blank) result scored 20 dB on such a field and linear regression -27 dB, which moved a
#: whole row's mean by 6 dB. Such fields are judged like the blank slide (positive area), not by PSNR. The one
#: definition ``scopecast evaluate``, benchmarks/bench_trust.py and bench_trust_models.py score with.
EMPTY_TRUTH_FRACTION = 0.02


def stained(gt: np.ndarray, scale: Sequence[float] | None) -> np.ndarray:
    """``(N, C)`` bool for truths ``gt`` ``(N, C, H, W)``: field ``n``'s truth of output ``c`` holds stained
    structure, i.e. spans more than :data:`EMPTY_TRUTH_FRACTION` of the output's training ``scale`` (``None``:
    the package records none; then any truth that is not constant)."""
    span = (gt.max(axis=(2, 3)) - gt.min(axis=(2, 3))).astype(np.float64)
    floor = np.zeros(gt.shape[1]) if scale is None else EMPTY_TRUTH_FRACTION * np.asarray(scale, np.float64)
    return span > floor[None, :]


def field_psnr(pred: np.ndarray, gt: np.ndarray, keep: np.ndarray) -> float:
    """One field's PSNR ``(C, H, W)``: the mean over the output channels ``keep`` marks (a row of :func:`stained`);
    NaN when it marks none (an empty-glass field has no PSNR)."""
    v = [psnr(p, g) for p, g, k in zip(pred, gt, keep, strict=True) if k]
    return float(np.mean(v)) if v else float("nan")


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window, σ = 1.5."""
    L = float(gt.max() - gt.min()) or 1.0
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda a: ndimage.gaussian_filter(a.astype(np.float64), 1.5, truncate=3.5)  # noqa: E731
    mx, my = f(pred), f(gt)
    vx, vy, cxy = f(pred * pred) - mx * mx, f(gt * gt) - my * my, f(pred * gt) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def pearson(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pearson's r of two images; NaN where either is constant (an untrained model's flat output), where r is
    undefined (numpy would warn of a division by zero and give NaN as well)."""
    a, b = pred.ravel(), gt.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _scores(preds: np.ndarray, gts: np.ndarray, channels: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for c, name in enumerate(channels):
        vals = np.array([[psnr(p[c], g[c]), ssim(p[c], g[c]), pearson(p[c], g[c])] for p, g in zip(preds, gts, strict=True)])
        out[name] = dict(zip(("psnr", "ssim", "pearson"), vals.mean(axis=0).round(4).tolist(), strict=True))
    return out


def _linear_regression(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    n, c, h, w = xtr.shape
    idx = rng.integers(0, n * h * w, 200_000)
    X = np.moveaxis(xtr, 1, -1).reshape(-1, c)[idx]
    A = np.c_[X, np.ones(len(X))]
    Y = np.moveaxis(ytr, 1, -1).reshape(-1, ytr.shape[1])[idx]
    coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
    Xv = np.moveaxis(xva, 1, -1)
    pred = Xv @ coef[:-1] + coef[-1]
    return np.moveaxis(pred, -1, 1).astype(np.float32)


def _richardson_lucy(img: np.ndarray, sigma: float, iters: int = 20) -> np.ndarray:
    img = np.maximum(img, 0) + 1e-6
    est = np.full_like(img, img.mean())
    for _ in range(iters):
        blurred = ndimage.gaussian_filter(est, sigma) + 1e-6
        est *= ndimage.gaussian_filter(img / blurred, sigma)
    return est


def _fit_gain(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    a, b = np.polyfit(pred.ravel()[::7], gt.ravel()[::7], 1)
    return float(a), float(b)


def evaluate(model, xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray,
             meta: dict[str, Any]) -> dict[str, Any]:
    """Scores of the model and its baselines on the validation fields."""
    from .training import run_whole

    model.eval()
    pred = np.concatenate([run_whole(model, xva[i:i + 2]).numpy() for i in range(0, len(xva), 2)])
    outputs = meta["outputs"]
    result: dict[str, Any] = {"model": _scores(pred, yva, outputs), "baselines": {}}
    sf = meta["scale_factor"]
    if sf == 1:
        result["baselines"]["linear regression"] = _scores(_linear_regression(xtr, ytr, xva), yva, outputs)
    else:
        up_tr = np.stack([ndimage.zoom(x, (1, sf, sf), order=3) for x in xtr[:8]])
        up_va = np.stack([ndimage.zoom(x, (1, sf, sf), order=3) for x in xva])
        a, b = _fit_gain(up_tr, ytr[:8])
        result["baselines"]["bicubic"] = _scores(a * up_va + b, yva, outputs)
        em_um, na = meta.get("emission_um", 0.6), meta.get("objective_na", 0.25)
        sigma = 0.51 * em_um / na / 2.3548 / (meta["pixel_size_um"] / sf)
        rl_tr = np.stack([_richardson_lucy(u, sigma) for u in up_tr])
        rl_va = np.stack([_richardson_lucy(u, sigma) for u in up_va])
        a, b = _fit_gain(rl_tr, ytr[:8])
        result["baselines"]["Richardson-Lucy"] = _scores(a * rl_va + b, yva, outputs)
    result["beats_baselines"] = all(
        result["model"][o][m] > base[o][m]
        for base in result["baselines"].values() for o in outputs for m in ("psnr", "ssim", "pearson")
    )
    return result


def write_card(path: str | Path, meta: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """The model card: data, training settings and the evaluation table."""
    path = Path(path)
    d, tc = meta["data"], meta["train_config"]
    rows = []
    for name, scores in [("**this model**", metrics["model"]), *metrics["baselines"].items()]:
        for o, s in scores.items():
            rows.append(f"| {name} | {o} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['pearson']:.3f} |")
    verdict = "beats every baseline on every metric" if metrics["beats_baselines"] else \
        "does NOT beat its baselines on every metric: do not ship"
    norm = meta.get("normalization", {})
    if norm.get("kind") == "calibrated":
        norm_text = ("Inputs are normalized with constants fixed from the training fields, exactly as the engine "
                     f"does: (counts − camera offset) / (training {norm.get('high', 99.8):g}th percentile − offset) "
                     "per channel, so an empty or dim field stays dim instead of being stretched.")
    else:
        norm_text = "Inputs are normalized per image and channel (exact percentiles 1–99.8, as the engine does)."
    g = meta.get("guards_on_validation")
    guards_text = "" if not g else (
        f"\nThe engine's input guards flagged {g['flagged']} of the {g['fields']} held-out fields"
        + (f" ({'; '.join(g['reasons'])})." if g["reasons"] else ".")
    )
    dom = d.get("domain") or {}
    if dom:
        kinds = d.get("train_kinds", {})
        te = "; ".join(f"{k} at {v[0]:g} ms" if v[0] == v[1] else f"{k} at {v[0]:g}-{v[1]:g} ms"
                       for k, v in dom.get("target_exposure_ms", {}).items())
        domain_text = (
            f"\nTraining fields per sample kind: {', '.join(f'{k} {n}' for k, n in kinds.items())} (`blank`: empty "
            f"slide, zero targets). Per field: exposure {dom['exposure_ms'][0]:.1f}-{dom['exposure_ms'][1]:.1f} ms "
            f"(log-uniform), focus {dom['defocus_um'][0]:+.1f}…{dom['defocus_um'][1]:+.1f} µm, objective "
            f"{dom.get('objective', '10x/0.25')}; targets: {te} (ground-truth pixels at the full well: "
            f"{100 * (dom.get('target_clipped_max') or 0):.2g} %).")
    else:
        domain_text = ""
    sched = ("linear warm-up then cosine decay over the run (steps or time budget, whichever ends first)"
             if "gain_augment" in tc else "one-cycle learning rate")
    aug = f"; brightness gain augmentation ×1/{tc['gain_augment']:g}…×{tc['gain_augment']:g}" \
        if tc.get("gain_augment", 1.0) > 1.0 else ""
    text = f"""# {meta.get('name', meta['task'])} — model card

Task: **{meta['task']}**. Inputs (in order): {', '.join(meta['inputs'])}. Outputs: {', '.join(meta['outputs'])}
(×{meta['scale_factor']} sampling). Architecture `{meta['arch']}` {meta['config']}, {meta['parameters']:,} parameters.

## Data

Gathered on the simulated LED-array microscope with the daemon's dual-modality capture
(`scopecast gather`), pixel size {meta['pixel_size_um']:.3f} µm at the input.
{d['train_fields']} training fields from slide region x ∈ [-20, -2] mm and {d['val_fields']} validation
fields from the separate region x ∈ [2, 20] mm (never neighbouring frames of one region).{domain_text}
{norm_text} Targets are scaled by a per-channel scale/offset from the training set (the package's
`output_scaling`); their min/max is the outputs' physical range.{guards_text}

## Training

Seed {tc['seed']}; L1 loss; AdamW, peak learning rate {tc['lr']}, {sched}; batch {tc['batch']} random
{tc['crop']}-pixel crops{aug}; {meta.get('steps_done', tc['steps'])} steps in {meta.get('train_seconds', 0) / 60:.1f} min
on CPU (log: `log.jsonl`).

## Evaluation on the held-out fields (validation region, training morphologies)

| predictor | output | PSNR (dB) | SSIM | Pearson r |
| --- | --- | ---: | ---: | ---: |
{chr(10).join(rows)}

Verdict: the model {verdict}.

## Limits

Trained only on simulated specimens{' (' + ', '.join(dom['morphologies']) + ')' if dom else ''}; like any
image-to-image network it can hallucinate plausible structure on sample types it has not seen (the
per-morphology evaluation below measures that on morphologies held out of training). Check it against
real fluorescence captures at the same position (the dual-modality capture does exactly that).
"""
    path.write_text(text)
    return path
