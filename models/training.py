"""Training on gathered pairs (PyTorch, CPU is enough for these small networks).

Inputs are normalized exactly as the engine will normalize them (the package's
:class:`~scopecast.models.manifest.Normalization`, through the one
:func:`~scopecast.models.manifest.normalize`); with ``normalization =
"calibrated"`` its constants come from the training split
(:func:`~scopecast.models.dataset.calibrate`: camera offset, per-channel
high percentile), never from each image. Either way the training input
distribution, the camera and the targets' physical range are measured and
stored for the package (the engine's input guards use them). Targets are
mapped to roughly [0, 1] with a per-channel scale and offset from the
training set, which becomes the package's ``output_scaling``. Training is seeded, runs for a
step and time budget, logs losses to ``log.jsonl``, keeps checkpoints, and ends
with the held-out evaluation and the model card (:mod:`.evaluation`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .architectures import build, count_parameters
from .dataset import BLANK, TASKS, PairSet, calibrate, load_pairs
from .manifest import Normalization, normalize, pad_to_multiple

__all__ = [
    "RUN_FILES", "TrainConfig", "check_crop", "check_dataset_task", "check_run_folder", "load_checkpoint",
    "load_teacher", "prepare", "refresh_output_range", "train",
]

#: What a training run writes into its folder (the log at once, the checkpoint at its first save, the card last)
RUN_FILES = ("checkpoint.pt", "log.jsonl", "card.md")


@dataclass
class TrainConfig:
    task: str = "virtual-staining"
    depth: int = 3
    width: int = 16
    steps: int = 1500
    max_minutes: float = 12.0
    batch: int = 8
    crop: int = 96
    lr: float = 2e-3
    seed: int = 0
    threads: int = 0  # 0: all cores
    checkpoint_every: int = 250
    #: "calibrated" (fixed constants from the training data; the honest choice for live use, the default) or
    #: "percentile" (per image, bioimage.io scale_range; what the first shipped packages were trained with)
    normalization: str = "calibrated"
    #: random brightness gain per crop (log-uniform in [1/g, g]) applied to the normalized input, and for
    #: super-resolution to the target too (its counts scale with the exposure): exposure augmentation
    #: beyond the exposures the data were gathered with; 1 = off
    gain_augment: float = 1.25
    #: "accurate" (a U-Net: ``unet`` for virtual staining, ``sr-unet`` for super-resolution; ``depth`` and
    #: ``width``) or "live" (:class:`~scopecast.models.architectures.LiveNet`, the CPU real-time tier;
    #: ``width``, ``blocks`` and ``unshuffle``)
    tier: str = "accurate"
    blocks: int = 8
    #: live tier: the stem folds ``unshuffle``² pixel blocks into channels (4 for virtual staining; 2 keeps
    #: the super-resolution body at half the input sampling, where sub-pixel detail lives)
    unshuffle: int = 4
    #: distillation: an accurate checkpoint of the same task whose outputs on the training fields are a
    #: second target; the loss is ``L1(y) + distill_weight · L1(teacher)``
    teacher: str | None = None
    distill_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(pairs: PairSet, norm: Normalization, scale: tuple[np.ndarray, np.ndarray] | None = None):
    """Normalized inputs, scaled targets and the (scale, offset) used for the targets."""
    x = np.stack([normalize(list(p), norm) for p in pairs.inputs]).astype(np.float32)
    if scale is None:
        t = pairs.targets
        offset = np.percentile(t, 1, axis=(0, 2, 3)).astype(np.float32)
        top = np.percentile(t, 99.8, axis=(0, 2, 3)).astype(np.float32)
        scale = (np.maximum(top - offset, 1e-3), offset)
    s, o = scale
    y = ((pairs.targets - o[None, :, None, None]) / s[None, :, None, None]).astype(np.float32)
    return x, y, scale


def _crops(x: np.ndarray, y: np.ndarray, n: int, crop: int, sf: int, rng: np.random.Generator, augment: bool,
           gain: float = 1.0, y_zero: np.ndarray | None = None):
    """Random aligned crops; with ``augment`` also flips and 90° rotations.

    Virtual-staining inputs must not be rotated or flipped: the DPC halves are
    direction-specific, and rotating the image would swap their meaning.
    """
    N, _, H, W = x.shape
    xb = np.empty((n, x.shape[1], crop, crop), np.float32)
    yb = np.empty((n, y.shape[1], crop * sf, crop * sf), np.float32)
    for i in range(n):
        k = rng.integers(N)
        r, c = rng.integers(0, H - crop + 1), rng.integers(0, W - crop + 1)
        xa = x[k, :, r:r + crop, c:c + crop]
        ya = y[k, :, r * sf:(r + crop) * sf, c * sf:(c + crop) * sf]
        if augment:
            rot, flip = rng.integers(4), rng.integers(2)
            xa, ya = np.rot90(xa, rot, (1, 2)), np.rot90(ya, rot, (1, 2))
            if flip:
                xa, ya = xa[:, :, ::-1], ya[:, :, ::-1]
        xb[i], yb[i] = xa, ya
        if gain > 1.0:
            g = float(np.exp(rng.uniform(-np.log(gain), np.log(gain))))
            xb[i] *= g
            if y_zero is not None:  # targets that scale with the exposure: scale their signal above zero
                yb[i] = (yb[i] - y_zero[:, None, None]) * g + y_zero[:, None, None]
    return torch.from_numpy(xb), torch.from_numpy(yb)


def check_run_folder(out: str | Path, overwrite: bool = False) -> None:
    """``FileExistsError`` naming them where ``out`` holds a training run's files (:data:`RUN_FILES`) and not
    ``overwrite``; with ``overwrite`` they are deleted, so a new run never leaves the old one's card or
    checkpoint beside its own."""
    found = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if found and not overwrite:
        raise FileExistsError(f"{out} already holds a training run ({', '.join(found)}); pass overwrite=True "
                              "(--overwrite) to replace it, or give another --out")
    for name in found:
        (Path(out) / name).unlink()


def train(dataset: str | Path, out: str | Path, cfg: TrainConfig, progress: bool = True,
          overwrite: bool = False) -> Path:
    """Train ``cfg.task`` on ``dataset``; writes checkpoints, ``log.jsonl`` and ``card.md`` into ``out``.
    Refused (``FileExistsError``, before anything is read or written) where ``out`` holds a run and not
    ``overwrite`` (:func:`check_run_folder`)."""
    from .evaluation import evaluate, write_card

    out = Path(out)
    check_run_folder(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = TASKS[cfg.task]
    if cfg.normalization not in ("calibrated", "percentile"):
        raise ValueError(f"unknown normalization {cfg.normalization!r}; use 'calibrated' or 'percentile'")
    check_dataset_task(dataset, cfg.task)
    tr = load_pairs(dataset, "train")
    try:
        va = load_pairs(dataset, "val")
    except ValueError as e:
        raise ValueError(f"{e}: training needs held-out validation fields (its card and checkpoint figures are "
                         "measured on them); gather with --val N") from None
    # the calibration (normalization, guard statistics, output range) comes from the specimen fields; the
    # empty fields are trained on (zero targets) but must not widen what the guards accept as a live input
    specimen = [k != BLANK for k in tr.kinds]
    cal = calibrate(tr.select(specimen) if any(specimen) else tr, spec["inputs"], low=1.0, high=99.8,
                    camera=cfg.extra.get("camera"))
    norm = cal.normalization if cfg.normalization == "calibrated" else Normalization(kind="percentile", low=1.0,
                                                                                      high=99.8)
    sf = tr.targets.shape[-1] // tr.inputs.shape[-1]
    xtr, ytr, scale = prepare(tr.select(specimen) if any(specimen) else tr, norm)
    xtr, ytr, _ = prepare(tr, norm, scale)  # the target scale from the specimen fields; every field trained on
    xva, yva, _ = prepare(va, norm, scale)
    arch, conf = _architecture(cfg, xtr.shape[1], ytr.shape[1], sf)
    model = build(arch, conf)
    n_out = ytr.shape[1]
    if cfg.teacher:  # the teacher's outputs ride along as extra target channels, so crops stay aligned
        ytr = np.concatenate([ytr, teacher_outputs(cfg.teacher, tr, norm, scale, cfg.task)], axis=1)
    y_zero = None
    if sf > 1:  # super-resolution: target counts scale with the exposure above the camera offset
        y_zero = ((cal.camera.offset_adu - scale[1]) / scale[0]).astype(np.float32)
        if cfg.teacher:
            y_zero = np.concatenate([y_zero, y_zero])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)

    def lr_at(progress: float) -> float:
        """One cycle over the run's progress (steps or time budget, whichever ends first): a linear
        warm-up over the first 10 %, then cosine annealing, so a run cut by its time budget on a busy
        machine still ends annealed."""
        if progress < 0.1:
            return cfg.lr * (0.04 + 0.96 * progress / 0.1)
        return cfg.lr * (1e-3 + (1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * min(1.0, (progress - 0.1) / 0.9))))
    l1 = nn.L1Loss()

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = l1(pred, target[:, :n_out])
        if target.shape[1] > n_out:
            loss = loss + cfg.distill_weight * l1(pred, target[:, n_out:])
        return loss
    crop = check_crop(cfg.crop, int(model.multiple), tr.inputs.shape[-2:])  # type: ignore[attr-defined]
    log = open(out / "log.jsonl", "w")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc=f"train {cfg.task}", unit="step")
    t0 = time.monotonic()
    meta = {
        "arch": arch, "config": conf, "task": cfg.task, "inputs": spec["inputs"], "outputs": spec["outputs"],
        "normalization": norm.model_dump(), "output_scaling": {"scale": scale[0].tolist(), "offset": scale[1].tolist()},
        "scale_factor": sf, "pixel_size_um": tr.pixel_size_um, "multiple": model.multiple,  # type: ignore[attr-defined]
        "train_config": asdict(cfg), "parameters": count_parameters(model),
        "data": {"dataset": str(Path(dataset).resolve()), "train_fields": len(tr.positions),
                 "val_fields": len(va.positions), "train_kinds": _count(tr.kinds), "val_kinds": _count(va.kinds),
                 "domain": _domain(dataset, tr)},
        **cal.manifest_fields(), "guards_on_validation": guard_validation(
            va.select([k != BLANK for k in va.kinds]) if any(k != BLANK for k in va.kinds) else va, spec["inputs"], cal),
    }
    step, last_val = 0, float("nan")
    try:
        for step in range(1, cfg.steps + 1):
            # the schedule follows the steps (so a seeded run repeats exactly) unless the time
            # budget runs ahead of them by more than 5 % of the schedule; then it follows the clock
            progress = (step - 1) / cfg.steps
            on_clock = (time.monotonic() - t0) / (cfg.max_minutes * 60)
            if on_clock > progress + 0.05:
                progress = on_clock
            if progress >= 1.0:
                step -= 1
                break
            lr = lr_at(progress)
            for group in opt.param_groups:
                group["lr"] = lr
            model.train()
            xb, yb = _crops(xtr, ytr, cfg.batch, crop, sf, rng, augment=cfg.task != "virtual-staining",
                            gain=cfg.gain_augment, y_zero=y_zero)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec = {"step": step, "loss": loss.item(), "lr": lr, "t_s": time.monotonic() - t0}
            if step % 100 == 0 or step == cfg.steps:
                last_val = _val_loss(model, xva, yva, loss_fn)
                rec["val_loss"] = last_val
            log.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", val=f"{last_val:.4f}")
            if step % cfg.checkpoint_every == 0:
                _save(out / "checkpoint.pt", model, meta, step)
    finally:
        log.close()
        if bar is not None:
            bar.close()
    meta["train_seconds"] = time.monotonic() - t0
    meta["steps_done"] = step
    ckpt = _save(out / "checkpoint.pt", model, meta, step)
    # held-out scores on the specimen fields (an empty field's truth is camera noise: PSNR means nothing
    # there; the blank slide is measured as the predicted positive area by `scopecast evaluate`)
    keep = np.array([k != BLANK for k in va.kinds]) if any(k != BLANK for k in va.kinds) else np.ones(len(xva), bool)
    metrics = evaluate(model, xtr, ytr[:, :n_out], xva[keep], yva[keep], meta)
    meta["metrics"] = metrics
    ckpt = _save(out / "checkpoint.pt", model, meta, step)
    write_card(out / "card.md", meta, metrics)
    return ckpt


def check_dataset_task(dataset: str | Path, task: str) -> None:
    """Raise ``ValueError`` naming both tasks when ``dataset`` was gathered for another task than ``task``: its
    channels would be read as the other task's inputs and fail on a channel count that names neither."""
    path = Path(dataset)
    gathered = json.loads((path / "dataset.json" if path.is_dir() else path).read_text()).get("task")
    if gathered != task:
        raise ValueError(f"{dataset} was gathered for {gathered!r}, this run trains {task!r}: pass --task {gathered} "
                         "(or gather a dataset for this task)")


def check_crop(crop: int, multiple: int, field_hw: tuple[int, ...]) -> int:
    """The training crop: ``crop`` rounded down to the network's size ``multiple``; ``ValueError`` naming the
    largest usable crop when it does not fit in the dataset's fields ``field_hw`` (or rounds down to nothing)."""
    usable = crop - crop % multiple
    largest = min(field_hw) - min(field_hw) % multiple
    if usable <= 0 or usable > min(field_hw):
        raise ValueError(f"--crop {crop} does not fit the dataset's {field_hw[0]}x{field_hw[1]}-pixel fields "
                         f"(crops are multiples of {multiple} pixels, at most {largest}): pass --crop {largest} "
                         "or less")
    return usable


def _architecture(cfg: TrainConfig, cin: int, cout: int, sf: int) -> tuple[str, dict[str, Any]]:
    if cfg.tier == "live":
        return "live", {"in_channels": cin, "out_channels": cout, "scale": sf, "width": cfg.width,
                        "blocks": cfg.blocks, "unshuffle": cfg.unshuffle}
    if cfg.tier != "accurate":
        raise ValueError(f"unknown tier {cfg.tier!r}; use 'accurate' or 'live'")
    if sf == 1:
        return "unet", {"in_channels": cin, "out_channels": cout, "depth": cfg.depth, "width": cfg.width}
    return "sr-unet", {"in_channels": cin, "out_channels": cout, "scale": sf, "depth": cfg.depth,
                       "width": cfg.width}


@torch.no_grad()
def teacher_outputs(checkpoint: str | Path, pairs: PairSet, norm: Normalization,
                    scale: tuple[np.ndarray, np.ndarray], task: str) -> np.ndarray:
    """The teacher's predictions on ``pairs``, in the student's scaled target units.

    The teacher sees its inputs normalized by its own package normalization, and
    its outputs go through its own output scaling to physical units, then into
    the student's (so a teacher trained on another dataset still teaches the right
    units). Errors name a teacher of another task or other inputs/outputs.
    """
    teacher, meta = load_teacher(checkpoint)
    if meta.get("task") != task or meta.get("inputs") != TASKS[task]["inputs"]:
        raise ValueError(f"teacher {checkpoint} is for task {meta.get('task')!r} with inputs "
                         f"{meta.get('inputs')}; this run trains {task!r} on {TASKS[task]['inputs']}")
    t_norm = Normalization.model_validate(meta["normalization"])
    t_scale = np.asarray(meta["output_scaling"]["scale"], np.float32)[:, None, None]
    t_off = np.asarray(meta["output_scaling"]["offset"], np.float32)[:, None, None]
    out = []
    for i in range(len(pairs.inputs)):
        x = normalize(list(pairs.inputs[i]), t_norm)
        y = run_whole(teacher, x[None]).numpy()[0] * t_scale + t_off  # physical units
        out.append((y - scale[1][:, None, None]) / scale[0][:, None, None])
    return np.stack(out).astype(np.float32)


def load_teacher(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher for distillation: a training checkpoint, or a shipped package directory.

    A package rebuilds its network from the manifest's provenance (``arch``, ``config``) and its
    PyTorch weights (``weights.pt``, checked against the sha256 the manifest records), so a live tier
    can be distilled from a shipped accurate model in a fresh clone, without retraining it. The returned
    metadata has what :func:`teacher_outputs` reads: ``task``, ``inputs``, ``normalization`` and
    ``output_scaling``. Errors name a package without PyTorch weights or with other weights.
    """
    path = Path(path)
    if not path.is_dir():
        return load_checkpoint(path)
    from .manifest import MANIFEST, ModelManifest, sha256_file

    if not (path / MANIFEST).is_file():
        raise ValueError(f"teacher {path}: a directory without {MANIFEST} (give a checkpoint or a package)")
    m = ModelManifest.model_validate_json((path / MANIFEST).read_bytes())
    weights = m.provenance.get("pytorch_state_dict")
    if not weights or not (path / weights["file"]).is_file():
        raise ValueError(f"teacher {path}: the package carries no PyTorch weights (weights.pt); "
                         "attach them with export.repackage.attach_state_dict or give its checkpoint")
    if sha256_file(path / weights["file"]) != weights["sha256"]:
        raise ValueError(f"teacher {path}: {weights['file']} does not match the sha256 in {MANIFEST}")
    model = build(m.provenance["arch"], m.provenance["config"])
    model.load_state_dict(torch.load(path / weights["file"], map_location="cpu", weights_only=True), strict=True)
    scaling = m.output_scaling.model_dump() if m.output_scaling else {"scale": [1.0] * len(m.outputs),
                                                                       "offset": [0.0] * len(m.outputs)}
    return model.eval(), {"task": m.task, "inputs": list(m.inputs),
                          "normalization": m.normalization.model_dump(), "output_scaling": scaling}


def _count(kinds: list[str]) -> dict[str, int]:
    return {k: kinds.count(k) for k in dict.fromkeys(kinds)}


def _domain(dataset: str | Path, tr: PairSet) -> dict[str, Any]:
    """What the training fields covered: morphologies, exposures, focus (the card's validated domain)."""
    if not tr.fields:
        return {}
    e = [f["exposure_ms"] for f in tr.fields]
    z = [f["z"] for f in tr.fields]
    te: dict[str, list[float]] = {}
    for f in tr.fields:
        for k, v in f.get("target_exposure_ms", {}).items():
            te.setdefault(k, []).append(v)
    clipped = max((v for f in tr.fields for v in f.get("target_clipped", {}).values()), default=None)
    path = Path(dataset)
    index = json.loads((path / "dataset.json" if path.is_dir() else path).read_text())
    te = {k: v for k, v in te.items() if k in TASKS[index["task"]]["targets"]}
    return {"morphologies": sorted({k for k in tr.kinds if k != BLANK}), "blank_fields": tr.kinds.count(BLANK),
            "exposure_ms": [min(e), max(e)], "defocus_um": [min(z), max(z)],
            "target_exposure_ms": {k: [min(v), max(v)] for k, v in te.items()},
            "target_clipped_max": clipped, "objective": index.get("objective", "10x/0.25"),
            "pixel_size_um": tr.pixel_size_um}


def guard_validation(va: PairSet, inputs: list[str], cal: Any) -> dict[str, Any]:
    """The engine's input guards on the held-out fields (in distribution: ideally none is flagged)."""
    from scopecast.daemon.inference.guards import InputGuard

    from .dataset import _as_counts

    guard = InputGuard(inputs, cal.camera, cal.input_stats)
    reasons = [guard.check([_as_counts(f) for f in field]).reasons for field in va.inputs]
    return {"fields": len(reasons), "flagged": sum(bool(r) for r in reasons),
            "reasons": sorted({x for r in reasons for x in r})[:10]}


@torch.inference_mode()
def run_whole(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """``model`` on whole fields ``x`` ``(N, C, H, W)`` of any size: padded to its size multiple (as the engine
    pads a frame), the output cropped back to ``H``, ``W`` × its scale."""
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x, int(model.multiple))
    y = model(torch.from_numpy(np.ascontiguousarray(xp)))
    s = y.shape[-1] // xp.shape[-1]
    return y[..., : h * s, : w * s]


@torch.inference_mode()
def _val_loss(model: nn.Module, x: np.ndarray, y: np.ndarray, loss_fn) -> float:
    model.eval()
    n = min(len(x), 4)
    return float(loss_fn(run_whole(model, x[:n]), torch.from_numpy(y[:n])))


def _save(path: Path, model: nn.Module, meta: dict[str, Any], step: int) -> Path:
    tmp = path.with_suffix(".tmp")
    torch.save({**meta, "step": step, "state_dict": model.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint; errors name a mismatch between checkpoint and architecture."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("arch", "config", "state_dict"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a scopecast checkpoint (no {key!r})")
    model = build(ckpt["arch"], ckpt["config"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        detail = "; ".join(lines[1:4]) + (f"; … ({len(lines) - 4} more)" if len(lines) > 4 else "")
        raise ValueError(f"{path}: checkpoint does not match architecture {ckpt['arch']!r} "
                         f"{ckpt['config']}: {detail}") from None
    return model.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


def refresh_output_range(checkpoint: str | Path) -> dict[str, Any]:
    """Re-measure a checkpoint's ``output_range`` from its training split with the current rule
    (:func:`~scopecast.models.dataset.output_range`) and store it; returns the new range.

    For checkpoints trained before the rule changed (the weights and every other figure stay as trained);
    ``train`` itself already applies the current rule."""
    from .dataset import output_range

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tr = load_pairs(ckpt["data"]["dataset"], "train")
    specimen = [k != BLANK for k in tr.kinds]
    rng = output_range((tr.select(specimen) if any(specimen) else tr).targets).model_dump()
    ckpt["output_range"] = rng
    tmp = Path(checkpoint).with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(checkpoint)
    return rng
