"""Per-morphology evaluation of a shipped package, exactly as it runs live (no torch).

:func:`run_evaluation` starts the simulated microscope in this process (the
daemon, as ``scopecast gather`` does), captures fresh fields and runs the ONNX
package through the engine's :class:`~scopecast.daemon.inference.worker.InferenceWorker`
(input guards, calibrated normalization, tiling, output clipping: what a live
result gets; the uncertainty and consistency checks judge every field, as live
they judge a field the stage stays on: a budget spent by measured time would make
the "flagged" figures differ run to run). Rows:

- ``<kind> (held-out region)``: each training morphology, on the validation
  slide region (x > 2 mm) that training never saw;
- ``<kind> (held-out morphology)``: sample kinds never gathered for training;
- ``blank``: an empty slide; the figure is the predicted positive area (pixels
  above half the output's training scale; truth: 0);
- outside the validated domain (failure modes, measured not tuned): defocus
  beyond the training range, under- and over-exposure, another objective.

Baselines, each scored like the model against the ground truth:

- virtual staining: per-pixel linear regression from the six raw inputs fitted
  on training-region fields of the training morphologies (``linear regression``)
  and the same regression fitted on the test fields themselves (``LR oracle``:
  the best any per-pixel linear map could do on them);
- super-resolution: bicubic ×2 and Richardson–Lucy (30 iterations on the
  bicubic grid) with the simulator's true widefield PSF (Airy, NA 0.25,
  600 nm), each mapped to the ground truth's intensity by a gain and offset
  fitted on training-region fields, plus ``RL oracle`` with the gain and offset
  fitted on the test fields.

For super-resolution the resolution target (``resolution-target`` sample: line
pairs 0.3-1.5 µm apart) is imaged and :func:`resolution_report` gives the
smallest spacing each of widefield, Richardson–Lucy, the model and the STED
ground truth separates (a dip between the lines: Sparrow; a dip of ≥ 26.5 %:
Rayleigh).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .dataset import BLANK, DOMAIN, TASKS, PairSet, field_plan, load_pairs
from .evaluation import EMPTY_TRUTH_FRACTION, pearson, psnr, ssim, stained

__all__ = [
    "RAYLEIGH_DIP", "SPARROW_DIP", "evaluation_domain", "format_report", "line_pair_dip", "resolution_report",
    "run_evaluation", "smallest_separated", "update_card",
]

#: Relative dip (1 − minimum between the lines / smaller line peak, above background) that counts as
#: separated: Sparrow (any dip above the noise of an averaged profile) and Rayleigh (the 26.5 % dip of two
#: Airy discs at the Rayleigh distance).
SPARROW_DIP = 0.02
RAYLEIGH_DIP = 0.265

#: Emission peak of the membrane label (µm) and the objective NA the packages are validated for.
_EM_UM, _NA = 0.600, 0.25


# ------------------------------------------------------------------ resolution target
def line_pair_dip(profile: np.ndarray, coords_um: np.ndarray, lines_um: tuple[float, float],
                  background: float | None = None) -> float:
    """Relative dip between two lines in a 1-D ``profile`` sampled at ``coords_um``.

    The peaks are the profile's maxima within a quarter spacing of each line
    position, the dip the minimum between the two peaks; values are taken
    above ``background`` (default: the profile's 5th percentile). Returns
    ``1 − min / min(peaks)`` (0 when there is no dip, e.g. one merged peak).
    """
    a, b = sorted(lines_um)
    s = b - a
    fine = np.linspace(coords_um[0], coords_um[-1], max(8 * len(coords_um), 64))
    p = np.interp(fine, coords_um, profile)
    bg = float(np.percentile(profile, 5)) if background is None else background
    p = p - bg
    w = max(s / 4, (fine[1] - fine[0]))
    m1, m2 = (np.abs(fine - a) <= w), (np.abs(fine - b) <= w)
    if not m1.any() or not m2.any():
        return 0.0
    i1 = int(np.flatnonzero(m1)[np.argmax(p[m1])])
    i2 = int(np.flatnonzero(m2)[np.argmax(p[m2])])
    if i2 <= i1 + 1:
        return 0.0
    peak = min(p[i1], p[i2])
    if peak <= 0:
        return 0.0
    return float(min(1.0, max(0.0, 1.0 - p[i1:i2 + 1].min() / peak)))


def smallest_separated(dips: dict[float, float], threshold: float) -> float | None:
    """Smallest spacing from which every larger spacing is separated (dip ≥ ``threshold``); None if none."""
    best = None
    for s in sorted(dips, reverse=True):
        if dips[s] >= threshold:
            best = s
        else:
            break
    return best


def _profiles(img: np.ndarray, pixel_um: float, centre_xy: tuple[float, float], geometry: list[dict]
              ) -> dict[float, list[float]]:
    """Dip of every line pair of one copy of the target in ``img`` (pixel size ``pixel_um``; the field
    centre at slide ``centre_xy``): per spacing, the dips of its vertical and horizontal pair."""
    h, w = img.shape
    cx0, cy0 = centre_xy
    out: dict[float, list[float]] = {}
    for g in geometry:
        s, (px, py) = g["spacing_um"], g["center_um"]
        # slide µm -> pixel index (pixel centres: i = (x - x_stage) / px + W/2 - 0.5)
        col = lambda x: (x - cx0) / pixel_um + w / 2 - 0.5  # noqa: E731
        row = lambda y: (y - cy0) / pixel_um + h / 2 - 0.5  # noqa: E731
        half_len = 0.6 * g["length_um"] / 2
        across = np.arange(-(s / 2 + 2.0), s / 2 + 2.0 + 1e-9, pixel_um)
        along = np.arange(-half_len, half_len + 1e-9, pixel_um / 2)
        if g["orientation"] == "vertical":  # lines along y, separated along x
            X, Y = px + across[None, :], py + along[:, None]
            lines = (px - s / 2, px + s / 2)
            coords = px + across
        else:
            X, Y = px + along[:, None], py + across[None, :]
            lines = (py - s / 2, py + s / 2)
            coords = py + across
        X, Y = np.broadcast_arrays(X, Y)
        vals = ndimage.map_coordinates(img.astype(np.float64), [row(Y).ravel(), col(X).ravel()], order=3,
                                       mode="nearest").reshape(X.shape)
        prof = vals.mean(axis=0)
        far = np.abs(coords - (px if g["orientation"] == "vertical" else py)) > s / 2 + 1.2
        bg = float(np.median(prof[far])) if far.any() else None
        out.setdefault(s, []).append(line_pair_dip(prof, coords, lines, bg))
    return out


def resolution_report(images: dict[str, tuple[np.ndarray, float]], centre_xy: tuple[float, float] = (0.0, 0.0)
                      ) -> dict[str, Any]:
    """For each named image ``(array, pixel µm)`` of the resolution target: the dip of every spacing
    (the worse of the two orientations) and the smallest spacing separated by Sparrow and by Rayleigh."""
    from scopecast.daemon.sim.slide import resolution_target_geometry

    geom = resolution_target_geometry()
    rep: dict[str, Any] = {}
    for name, (img, px) in images.items():
        per = _profiles(img, px, centre_xy, geom)
        dips = {s: float(min(v)) for s, v in per.items()}
        rep[name] = {"dips": {f"{s:g}": round(d, 3) for s, d in sorted(dips.items())},
                     "sparrow_um": smallest_separated(dips, SPARROW_DIP),
                     "rayleigh_um": smallest_separated(dips, RAYLEIGH_DIP)}
    return rep


# ------------------------------------------------------------------ baselines
def _lr_fit(x: np.ndarray, y: np.ndarray, n: int = 200_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    N, c, h, w = x.shape
    idx = rng.integers(0, N * h * w, min(n, N * h * w))
    X = np.moveaxis(x, 1, -1).reshape(-1, c)[idx].astype(np.float64)
    Y = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])[idx].astype(np.float64)
    coef, *_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], Y, rcond=None)
    return coef


def _lr_apply(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.moveaxis(x, 1, -1) @ coef[:-1] + coef[-1], -1, 1).astype(np.float32)


def _bicubic(x: np.ndarray, sf: int) -> np.ndarray:
    return np.stack([ndimage.zoom(f.astype(np.float32), (1, sf, sf), order=3) for f in x])


def _rl_true_psf(up: np.ndarray, pixel_um: float, offset: float, iters: int = 30) -> np.ndarray:
    """Richardson–Lucy with the simulator's widefield PSF (Airy, in focus) at ``pixel_um`` sampling,
    on the signal above the camera offset; mirrored borders so the FFT does not wrap."""
    from scipy import fft as sfft

    from scopecast.daemon.sim.optics import widefield_otf

    out = np.empty_like(up, dtype=np.float32)
    pad = 32
    for i, f in enumerate(up):
        for c, ch in enumerate(f):
            img = np.pad(np.maximum(ch.astype(np.float64) - offset, 0.0), pad, mode="reflect") + 1e-3
            otf = widefield_otf(img.shape, pixel_um, _EM_UM, _NA)
            conv = lambda a, o: sfft.irfft2(sfft.rfft2(a) * o, s=img.shape)  # noqa: E731
            est = np.full_like(img, img.mean())
            for _ in range(iters):
                est *= conv(img / np.maximum(conv(est, otf), 1e-6), np.conj(otf))
            out[i, c] = est[pad:-pad, pad:-pad]
    return out


def _gain_fit(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for c in range(gt.shape[1]):
        ac, bc = np.polyfit(pred[:, c].ravel()[::7].astype(np.float64), gt[:, c].ravel()[::7].astype(np.float64), 1)
        a.append(ac)
        b.append(bc)
    return np.array(a, np.float32), np.array(b, np.float32)


def _gain_apply(ab: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    a, b = ab
    return x * a[None, :, None, None] + b[None, :, None, None]


# ------------------------------------------------------------------ scores
def _stained(gt: np.ndarray, m: Any) -> np.ndarray:
    """``(N, C)`` bool: field ``n``'s truth of output ``c`` holds stained structure (:func:`.evaluation.stained`
    with package ``m``'s output scale; :data:`EMPTY_TRUTH_FRACTION`)."""
    return stained(gt, None if m.output_scaling is None else m.output_scaling.scale)


def _scores(pred: np.ndarray, gt: np.ndarray, outputs: list[str], stained: np.ndarray | None = None
            ) -> dict[str, dict[str, float]]:
    """Mean PSNR / SSIM / Pearson r per output over the fields ``stained`` marks (default: those whose truth is
    not constant; :func:`_stained`); a constant prediction, e.g. a withheld result, has r = nan."""
    import warnings

    if stained is None:
        stained = (gt.max(axis=(2, 3)) - gt.min(axis=(2, 3))) > 0
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _scores_raw(pred, gt, outputs, stained)


def _scores_raw(pred: np.ndarray, gt: np.ndarray, outputs: list[str], stained: np.ndarray
                ) -> dict[str, dict[str, float]]:
    out = {}
    for c, name in enumerate(outputs):
        v = np.array([[psnr(p[c], g[c]), ssim(p[c], g[c]), pearson(p[c], g[c])]
                      for p, g, keep in zip(pred, gt, stained[:, c], strict=True) if keep], np.float64)
        out[name] = dict(zip(("psnr", "ssim", "pearson"), np.nanmean(v, axis=0).round(3).tolist(), strict=True)) \
            if len(v) else {"psnr": float("nan"), "ssim": float("nan"), "pearson": float("nan")}
    return out


def _positive_area(pred: np.ndarray, m: Any) -> dict[str, float]:
    """Fraction of pixels above half the output's training scale (the definition tests/test_guards.py uses)."""
    s = m.output_scaling
    return {o: float((pred[:, c] > s.offset[c] + 0.5 * s.scale[c]).mean()) for c, o in enumerate(m.outputs)}


# ------------------------------------------------------------------ the simulator and the engine
class _Sim:
    """An in-process daemon on the simulated scope, with the specimen and objective set directly on the core."""

    def __init__(self, size: int, workdir: Path, config: str = "sim-ledarray.cfg") -> None:
        from scopecast.daemon.backend import load_mmcore_backend
        from scopecast.daemon.control import ControlClient
        from scopecast.daemon.service import Daemon
        from scopecast.daemon.sim import sized_config

        self.daemon = Daemon(load_mmcore_backend(sized_config(workdir, size, config)), workdir / "recordings",
                             "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
        self.core = self.daemon.backend.core
        self.client = ControlClient(self.daemon.control_address, timeout_s=120).__enter__()
        self.workdir = workdir

    def set_sample(self, kind: str) -> None:
        self.core.setProperty("Scope", "Sample", kind)

    def set_objective(self, preset: str) -> None:
        self.core.setConfig("Objective", preset)
        self.core.waitForConfig("Objective", preset)

    def close(self) -> None:
        try:
            self.client.__exit__(None, None, None)
        finally:
            self.daemon.close()


def _capture(sim: _Sim, task: str, fields: list[dict[str, Any]], name: str, camera: dict[str, Any]) -> PairSet:
    from .dataset import _gather_fields

    split = _gather_fields(sim.client, task, fields, sim.set_sample, camera)
    d = sim.workdir / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "dataset.json").write_text(json.dumps({"task": task, "camera": camera, "splits": {"eval": split}}))
    return load_pairs(d, "eval")


def _engine_run(worker: Any, pairs: PairSet, inputs: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every field through the engine's worker, with the headers the daemon sends (channel, pixel size,
    exposure): (outputs in physical units, trust verdicts)."""
    from scopecast.daemon.inference.worker import StreamFrame

    from .dataset import _as_counts

    preds, trusts = [], []
    for i, field in enumerate(pairs.inputs):
        head = {"acquisition_id": "evaluate", "bundle_id": i, "t_acquired_ns": 0,
                "pixel_size_um": float(pairs.pixel_size_um), **field_exposure(pairs, i)}
        frames = [StreamFrame({"channel": n, **head}, np.ascontiguousarray(_as_counts(f)))
                  for n, f in zip(inputs, field, strict=True)]
        r = worker.process(frames)
        preds.append(r.data.copy())
        trusts.append(r.header["trust"])
    return np.stack(preds), trusts


def field_exposure(pairs: PairSet, i: int) -> dict[str, float]:
    """``{"exposure_ms": …}`` of field ``i``'s input frames when the dataset records it, else ``{}``."""
    f = (pairs.fields or [{}] * len(pairs.inputs))[i]
    return {"exposure_ms": float(f["exposure_ms"])} if "exposure_ms" in f else {}


# ------------------------------------------------------------------ the evaluation
def evaluation_domain(m: Any) -> dict[str, Any]:
    """The task's :data:`DOMAIN` with the morphologies package ``m`` was trained on as its training rows.

    The manifest's ``provenance.data.train_kinds`` (what ``train`` counted per sample kind) names them;
    every other morphology of the task is held out, so a package trained on other specimens than the
    shipped ones is never scored on a "held-out" row it was trained on, nor on a "held-out region" of a
    morphology it never saw. The task's order is kept (the shipped packages' rows and seeds are unchanged).
    ``morphologies_from`` says whether the package recorded them; one that does not (gathered without
    ``--samples``) is evaluated on the task's domain."""
    dom = dict(DOMAIN[m.task])
    kinds = ((m.provenance or {}).get("data") or {}).get("train_kinds") or {}
    trained = [k for k in kinds if k not in (BLANK, "?")]
    if not trained:
        return {**dom, "morphologies_from": "the task (the package does not record its training morphologies)"}
    known = list(dict.fromkeys([*dom["train"], *dom["held_out"]]))
    return {**dom, "train": [k for k in known if k in trained] + [k for k in trained if k not in known],
            "held_out": [k for k in known if k not in trained], "morphologies_from": "the package's training data"}


def _outside_rows(dom: dict[str, Any]) -> list[dict[str, Any]]:
    """Failure-mode rows: one change at a time, on the first training morphology in the held-out region."""
    lo, hi = dom["exposure_ms"]
    k = dom["train"][0]
    return [
        {"row": f"{k}, defocus 5-8 µm (trained ±{dom['defocus_um']:g})", "kind": k,
         "plan": {"defocus_um": 0.0}, "z": (5.0, 8.0)},
        {"row": f"{k}, exposure {lo / 4:g} ms (trained {lo:g}-{hi:g})", "kind": k,
         "plan": {"exposure_ms": (lo / 4, lo / 4), "defocus_um": 0.0}},
        {"row": f"{k}, exposure {hi * 2:g} ms (trained {lo:g}-{hi:g})", "kind": k,
         "plan": {"exposure_ms": (hi * 2, hi * 2), "defocus_um": 0.0}},
        {"row": f"{k}, objective 20x/0.40 (trained 10x/0.25)", "kind": k, "objective": "20x",
         "plan": {"defocus_um": 0.0}},
    ]


def run_evaluation(package: str | Path, fields: int = 8, size: int = 256, seed: int = 500, fit_fields: int = 4,
                   outside: bool = True, progress: Any = None, figure: str | Path | None = None,
                   precision: str = "fp32") -> dict[str, Any]:
    """Evaluate ``package`` per morphology (see the module docstring); returns the report dict.

    ``figure``: also write a PNG with the first field of every row (input, model, truth, best baseline).
    ``precision``: the package's model file the engine runs (``"int8"``: its INT8 variant)."""
    if figure:
        _check_pillow()
    examples: list[tuple] | None = [] if figure else None
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker

    say = progress or (lambda *_: None)
    t0 = time.monotonic()
    pkg = load_package(package, precision)
    m = pkg.manifest
    task = m.task
    if task not in TASKS:
        raise ValueError(f"package task {task!r} has no evaluation; tasks: {', '.join(TASKS)}")
    if m.output_scaling is None:  # the blank slide's positive area is measured against the output's scale
        raise ValueError(f"package {m.name!r} records no output_scaling (what 'scopecast train' and 'export' write): "
                         "evaluate measures positive areas in units of it")
    spec, dom = TASKS[task], evaluation_domain(m)
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=0 or None), uncertainty_budget=float("inf"))
    sf = m.scale_factor
    report: dict[str, Any] = {"package": str(package), "model": m.name, "sha256": m.short_hash, "task": task,
                              "precision": precision,
                              "fields_per_row": fields, "size": size, "seed": seed, "outputs": list(m.outputs),
                              "rows": [], "domain": {k: dom[k] for k in (
                                  "train", "held_out", "exposure_ms", "defocus_um", "objectives", "morphologies_from")}}
    with tempfile.TemporaryDirectory(prefix="scopecast-evaluate-") as tmp:
        sim = _Sim(size, Path(tmp))
        try:
            from .dataset import calibrate_camera

            sim.set_sample("cells")
            camera = calibrate_camera(sim.client)
            offset = float(camera["offset_adu"])
            # baselines' training data: training-region fields of the training morphologies
            fit = _capture(sim, task, field_plan(task, "train", fit_fields * len(dom["train"]), seed + 1,
                                                 dom["train"], blank_fraction=0.0), "fit", camera)
            say(f"baseline fit: {len(fit.inputs)} training-region fields")
            if sf == 1:
                coef = _lr_fit(fit.inputs, fit.targets)
            else:
                up_fit = _bicubic(fit.inputs, sf)
                bic_ab = _gain_fit(up_fit, fit.targets)
                rl_ab = _gain_fit(_rl_true_psf(up_fit, m.pixel_size_um / sf if m.pixel_size_um else 0.325, offset),
                                  fit.targets)
            rows: list[dict[str, Any]] = []
            for kind in dom["train"]:
                rows.append({"row": f"{kind} (held-out region)", "kind": kind, "group": "training morphology"})
            for kind in dom["held_out"]:
                rows.append({"row": f"{kind} (held-out morphology)", "kind": kind, "group": "held-out morphology"})
            rows.append({"row": "blank slide", "kind": BLANK, "group": "blank"})
            if outside:
                rows += [{**r, "group": "outside domain"} for r in _outside_rows(dom)]
            for k, r in enumerate(rows):
                plan = {"blank_fraction": 0.0, **r.get("plan", {})}
                fl = field_plan(task, "val", fields, seed + 10 + k, [r["kind"]], **plan)
                if "z" in r:
                    rng = np.random.default_rng(seed + k)
                    for f in fl:
                        f["z"] = round(float(rng.uniform(*r["z"]) * rng.choice([-1, 1])), 3)
                if r.get("objective"):
                    sim.set_objective(r["objective"])
                try:
                    pairs = _capture(sim, task, fl, f"row{k}", camera)
                finally:
                    if r.get("objective"):
                        sim.set_objective("10x")
                pred, trusts = _engine_run(worker, pairs, spec["inputs"])
                gt = pairs.targets
                if pred.shape != gt.shape:  # another objective may change nothing here; guard anyway
                    raise ValueError(f"row {r['row']}: prediction {pred.shape} vs ground truth {gt.shape}")
                row: dict[str, Any] = {"row": r["row"], "group": r["group"], "fields": len(pred),
                                       "withheld": sum(t["guards"]["action"] == "withheld" for t in trusts) / len(trusts),
                                       "flagged": sum(not t["ok"] for t in trusts) / len(trusts),
                                       "reasons": sorted({x.split(":")[0] for t in trusts for x in t["reasons"]}),
                                       "target_clipped": max((v for f in pairs.fields or [] for v in
                                                              f.get("target_clipped", {}).values()), default=None)}
                base: dict[str, np.ndarray] = {}
                if sf == 1:
                    base["linear regression"] = _lr_apply(coef, pairs.inputs)
                    base["LR oracle"] = _lr_apply(_lr_fit(pairs.inputs, gt), pairs.inputs)
                else:
                    up = _bicubic(pairs.inputs, sf)
                    rl = _rl_true_psf(up, m.pixel_size_um / sf if m.pixel_size_um else 0.325, offset)
                    base["bicubic"] = _gain_apply(bic_ab, up)
                    base["Richardson-Lucy"] = _gain_apply(rl_ab, rl)
                    base["RL oracle"] = _gain_apply(_gain_fit(rl, gt), rl)
                if r["kind"] == BLANK:
                    row["positive_area"] = {"model": _positive_area(pred, m), "truth": _positive_area(gt, m),
                                            **{b: _positive_area(v, m) for b, v in base.items()}}
                else:
                    stained = _stained(gt, m)
                    row["scores"] = {"model": _scores(pred, gt, m.outputs, stained),
                                     **{b: _scores(v, gt, m.outputs, stained) for b, v in base.items()}}
                    row["empty_fields"] = {o: int((~stained[:, c]).sum()) for c, o in enumerate(m.outputs)}
                    row["positive_area"] = {"model": _positive_area(pred, m), "truth": _positive_area(gt, m)}
                report["rows"].append(row)
                if examples is not None and r["group"] != "outside domain":
                    best = "linear regression" if sf == 1 else "Richardson-Lucy"
                    examples.append((r["row"], pairs.inputs[0], pred[0], gt[0], base[best][0]))
                say(f"{r['row']}: done ({time.monotonic() - t0:.0f} s)")
            if sf > 1:
                report["resolution_target"] = _resolution_target(sim, worker, task, camera, m, offset, rl_ab, bic_ab)
                say(f"resolution target: done ({time.monotonic() - t0:.0f} s)")
        finally:
            sim.close()
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["verdict"] = _verdict(report)
    if figure and examples:
        write_figure(figure, examples, m)
    return report


def _check_pillow() -> None:
    """Raise ``ValueError`` before any capture when :func:`write_figure` could not draw: it needs Pillow, which
    neither the base install nor the ``engine`` extra brings (evaluate needs no torch, and no Pillow without
    ``--figure``); found only at the end, the whole evaluation was lost."""
    try:
        from PIL import Image, ImageDraw  # noqa: F401
    except ImportError:
        raise ValueError("--figure needs Pillow, which this install lacks (pip install pillow, or the 'dev' extra); "
                         "run without --figure") from None


def _tile(img: np.ndarray, lo: float, hi: float, size: int) -> np.ndarray:
    a = np.clip((img.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0, 1)
    if a.shape[0] != size:
        a = ndimage.zoom(a, size / a.shape[0], order=0 if a.shape[0] < size else 1)
    return (255 * a).astype(np.uint8)


def write_figure(path: str | Path, examples: list[tuple], m: Any, size: int = 160) -> Path:
    """A PNG grid, one row per evaluation row: input | per output: model, truth, best baseline.

    Virtual staining shows the dark-field input; super-resolution the central quarter of the field
    (widefield bicubic-upsampled). Each output's model / truth / baseline share one grey scale: the
    truth's 0.5-99.8th percentiles (the blank slide uses the training scale)."""
    from PIL import Image, ImageDraw

    sf = m.scale_factor
    rows = []
    for name, x, pred, gt, base in examples:
        if sf > 1:
            h = gt.shape[-1] // 4
            sl = (slice(h, 3 * h), slice(h, 3 * h))
            xi = ndimage.zoom(x[0].astype(np.float64), sf, order=3)[sl]
            pred, gt, base = pred[:, sl[0], sl[1]], gt[:, sl[0], sl[1]], base[:, sl[0], sl[1]]
        else:
            xi = x[m.inputs.index("DF") if "DF" in m.inputs else 0]
        cells = [_tile(xi, *np.percentile(xi, [0.5, 99.8]), size)]
        for c in range(gt.shape[0]):
            lo, hi = np.percentile(gt[c], [0.5, 99.8])
            if hi - lo < 0.2 * m.output_scaling.scale[c]:  # an empty field: the training scale
                lo, hi = m.output_scaling.offset[c], m.output_scaling.offset[c] + m.output_scaling.scale[c]
            cells += [_tile(a[c], lo, hi, size) for a in (pred, gt, base)]
        rows.append((name, np.concatenate([np.pad(t, 2, constant_values=255) for t in cells], axis=1)))
    label_w = 230
    w = label_w + rows[0][1].shape[1]
    hdr = 22
    out = Image.new("L", (w, hdr + sum(r[1].shape[0] for r in rows)), 255)
    d = ImageDraw.Draw(out)
    base_name = "linear regression" if sf == 1 else "Richardson-Lucy"
    heads = ["DF input" if sf == 1 else "widefield (bicubic)"]
    for o in m.outputs:
        heads += [f"{o}: model", f"{o}: truth", f"{o}: {base_name}"]
    for i, t in enumerate(heads):
        d.text((label_w + i * (size + 4) + 4, 5), t, fill=0)
    y = hdr
    for name, img in rows:
        out.paste(Image.fromarray(img), (label_w, y))
        d.text((4, y + img.shape[0] // 2 - 6), name, fill=0)
        y += img.shape[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def _resolution_target(sim: _Sim, worker: Any, task: str, camera: dict[str, Any], m: Any, offset: float,
                       rl_ab: Any, bic_ab: Any) -> dict[str, Any]:
    lo, hi = DOMAIN[task]["exposure_ms"]
    e = round(float(np.sqrt(lo * hi)), 3)
    fl = [{"kind": "resolution-target", "x": 0.0, "y": 0.0, "z": 0.0, "exposure_ms": e}]
    pairs = _capture(sim, task, fl, "restarget", camera)
    pred, trusts = _engine_run(worker, pairs, TASKS[task]["inputs"])
    sf = m.scale_factor
    px = m.pixel_size_um or 0.65
    up = _bicubic(pairs.inputs, sf)
    rl = _rl_true_psf(up, px / sf, offset)
    rep = resolution_report({
        "widefield": (pairs.inputs[0, 0], px),
        "bicubic": (up[0, 0], px / sf),
        "Richardson-Lucy": (rl[0, 0], px / sf),
        "model": (pred[0, 0], px / sf),
        "STED ground truth": (pairs.targets[0, 0], px / sf),
    })
    return {"exposure_ms": e, "trust_ok": trusts[0]["ok"], "reasons": trusts[0]["reasons"], "results": rep,
            "criteria": {"sparrow_dip": SPARROW_DIP, "rayleigh_dip": RAYLEIGH_DIP}}


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: ≥ 3 dB over the best baseline (not counting the oracle) on every held-out
    morphology and region; blank positive area ≤ 0.5 %."""
    margins = {}
    for row in report["rows"]:
        if row["group"] not in ("training morphology", "held-out morphology") or "scores" not in row:
            continue
        sc = row["scores"]
        for o in report["outputs"]:
            best = max(v[o]["psnr"] for b, v in sc.items() if b != "model" and "oracle" not in b)
            if np.isfinite(sc["model"][o]["psnr"] - best):  # a row whose fields all hold no stain has no PSNR
                margins[f"{row['row']} / {o}"] = round(sc["model"][o]["psnr"] - best, 2)
    blank = [r for r in report["rows"] if r["group"] == "blank"]
    area = max(blank[0]["positive_area"]["model"].values()) if blank else None
    return {"psnr_margin_db": margins, "min_margin_db": min(margins.values()) if margins else None,
            "beats_best_baseline_by_3db_everywhere": bool(margins) and min(margins.values()) >= 3.0,
            "blank_positive_area": area, "blank_ok": area is not None and area <= 0.005}


# ------------------------------------------------------------------ output
def format_report(rep: dict[str, Any]) -> str:
    """The table (markdown) of a report from :func:`run_evaluation`."""
    outs = rep["outputs"]
    preds = None
    int8 = ", INT8 variant" if rep.get("precision", "fp32") == "int8" else ""
    lines = [f"### {rep['model']}{int8} ({rep['task']}, sha256 {rep['sha256']}): {rep['fields_per_row']} fields of "
             f"{rep['size']}² per row, through the engine (ONNX Runtime CPU, input guards on)", ""]
    for row in rep["rows"]:
        if "scores" in row:
            preds = list(row["scores"])
            break
    head = "| row | output | " + " | ".join(f"{p} PSNR / SSIM / r" for p in preds or ["model"]) + \
        " | Δ best baseline (dB) | withheld / flagged |"
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    v = rep["verdict"]["psnr_margin_db"]
    for row in rep["rows"]:
        wf = f"{100 * row['withheld']:.0f} % / {100 * row['flagged']:.0f} %"
        if "scores" not in row:
            pa = row["positive_area"]
            cells = ", ".join(f"{b} {', '.join(f'{o} {100 * a:.2f} %' for o, a in v2.items())}" for b, v2 in pa.items())
            lines.append(f"| {row['row']} | positive area | {cells} |" + " |" * (len(preds or [1]) - 1)
                         + f" | {wf} |")
            continue
        for o in outs:
            cells = " | ".join(f"{s[o]['psnr']:.2f} / {s[o]['ssim']:.3f} / {s[o]['pearson']:.3f}"
                               for s in row["scores"].values())
            d = v.get(f"{row['row']} / {o}")
            lines.append(f"| {row['row']} | {o} | {cells} | {'' if d is None else f'{d:+.2f}'} | {wf} |")
    reasons = {r["row"]: r["reasons"] for r in rep["rows"] if r["reasons"]}
    if reasons:
        lines += ["", "Guard reasons: " + "; ".join(f"{k}: {', '.join(x)}" for k, x in reasons.items())]
    empty = {r["row"]: e for r in rep["rows"] if any((e := r.get("empty_fields") or {}).values())}
    if empty:
        lines += ["", f"Fields whose truth holds no stain (spans < {100 * EMPTY_TRUTH_FRACTION:g} % of the output's "
                  "training scale: empty glass), left out of PSNR / SSIM / r: " + "; ".join(
                      f"{k}: {', '.join(f'{o} {n}' for o, n in e.items())}" for k, e in empty.items())]
    ver = rep["verdict"]
    lines += ["", f"Smallest margin over the best baseline (oracles excluded): {ver['min_margin_db']:+.2f} dB "
              f"({'meets' if ver['beats_best_baseline_by_3db_everywhere'] else 'MISSES'} the ≥ 3 dB target); "
              f"blank slide positive area {100 * (ver['blank_positive_area'] or 0):.2f} % "
              f"({'meets' if ver['blank_ok'] else 'MISSES'} the ≤ 0.5 % target)."]
    rt = rep.get("resolution_target")
    if rt:
        lines += ["", f"Resolution target (line pairs, {rt['exposure_ms']:g} ms; separated = a dip between the "
                  f"lines in the profile averaged along them: Sparrow dip ≥ {100 * SPARROW_DIP:g} %, Rayleigh "
                  f"≥ {100 * RAYLEIGH_DIP:g} %; trust ok: {rt['trust_ok']})", "",
                  "| image | smallest spacing separated, Sparrow (µm) | Rayleigh (µm) | dip per spacing (µm: dip) |",
                  "| --- | ---: | ---: | --- |"]
        for name, r in rt["results"].items():
            f = lambda x: "none" if x is None else f"{x:g}"  # noqa: E731
            dips = ", ".join(f"{s}: {d:.2f}" for s, d in r["dips"].items())
            lines.append(f"| {name} | {f(r['sparrow_um'])} | {f(r['rayleigh_um'])} | {dips} |")
    lines += ["", f"({rep['seconds']:.0f} s)"]
    return "\n".join(lines)


CARD_MARK = "## Validated domain and per-morphology evaluation"


def update_card(card: str | Path, rep: dict[str, Any], command: str = "") -> Path:
    """Replace (or append) the card's measured-domain section with this report."""
    card = Path(card)
    text = card.read_text() if card.exists() else f"# {rep['model']}\n"
    if CARD_MARK in text:
        head, _, rest = text.partition(CARD_MARK)
        nxt = rest.find("\n## ", 1)
        tail = rest[nxt:] if nxt >= 0 else ""
        text = head.rstrip() + "\n\n"
    else:
        tail = ""
        text = text.rstrip() + "\n\n"
    dom = rep["domain"]
    outside = [r for r in rep["rows"] if r["group"] == "outside domain"]
    fails = []
    for r in outside:
        if "scores" in r:
            sc = r["scores"]
            s = "; ".join(f"{o} {sc['model'][o]['psnr']:.1f} dB (best baseline "
                          f"{max(v[o]['psnr'] for b, v in sc.items() if b != 'model' and 'oracle' not in b):.1f})"
                          for o in rep["outputs"])
        else:
            s = ""
        act = f"withheld {100 * r['withheld']:.0f} %, flagged {100 * r['flagged']:.0f} %"
        fails.append(f"- {r['row']}: {s} ({act}{'; ' + ', '.join(r['reasons']) if r['reasons'] else ''})")
    claim = ""
    rt = rep.get("resolution_target")
    if rt:
        r = rt["results"]
        f = lambda x: "no spacing up to 1.5 µm" if x is None else f"{x:g} µm"  # noqa: E731
        claim = (f"\n**Resolution (measured on the line-pair target, 0.3-1.5 µm):** the model separates line pairs "
                 f"down to {f(r['model']['sparrow_um'])} (Sparrow; Rayleigh {f(r['model']['rayleigh_um'])}); "
                 f"Richardson–Lucy with the true PSF {f(r['Richardson-Lucy']['sparrow_um'])} "
                 f"(Rayleigh {f(r['Richardson-Lucy']['rayleigh_um'])}); widefield {f(r['widefield']['sparrow_um'])}; "
                 f"the STED ground truth {f(r['STED ground truth']['sparrow_um'])} "
                 f"(Rayleigh {f(r['STED ground truth']['rayleigh_um'])}). Claims of resolution beyond that are "
                 "not supported by this measurement.\n")
    section = f"""{CARD_MARK}

Validated domain (what the training fields covered; the engine's input guards flag or withhold what
lies outside it): morphologies **{', '.join(dom['train'])}** (plus empty fields with zero targets);
objective **{', '.join(dom['objectives'])}** (10x/0.25, 0.65 µm pixels); exposures
**{dom['exposure_ms'][0]:g}-{dom['exposure_ms'][1]:g} ms**{' (label-free)' if rep['task'] == 'virtual-staining' else ''};
focus within **±{dom['defocus_um']:g} µm** of the focal plane. Never trained on or tuned for:
**{', '.join(dom['held_out'])}** (held-out morphologies below).

{format_report(rep)}
{claim}
Failure modes measured outside the validated domain:

{chr(10).join(fails) if fails else '- (not measured)'}

Reproduce: `{command or f'scopecast evaluate --model {rep["package"]}'}`
"""
    card.write_text(text + section + tail)
    return card
