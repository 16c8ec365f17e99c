"""Checkpoint -> model package: the one entry point of ``scopecast export``.

Steps (each logged at INFO on ``scopecast.export``): load the checkpoint
(architecture and weights must match), export ONNX (opset 18, dynamic N/H/W),
``onnx.checker``, parity with PyTorch on a real validation field (FP32: ≤ 1e-4
absolute), manifest (with the normalization, camera, training input
distribution and output range measured at training time); optionally an FP16
model (with its own parity report) and a TensorRT ``.plan``; then the
bioimage.io files (:mod:`.repackage`: raw-count test input, the engine's
physical output for it, sample tensors, cover, the card's Validation section,
``rdf.yaml`` built with ``bioimageio.spec``) and ``bioimageio test``, which must
pass; optionally a Triton model repository.

Everything is written into a temporary sibling folder that is renamed into
place only when every step passed, so a failed export never leaves anything
that looks like a valid package.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.manifest import (
    MANIFEST, CameraCalibration, InputStats, ModelManifest, Normalization, OutputRange, OutputScaling,
    check_package_name, normalize, sha256_file,
)

from .bioimageio import raw_counts
from .onnx_export import FP32_TOLERANCE, ExportError, export_onnx, parity, to_fp16
from .repackage import save_state_dict, write_bioimageio_files

__all__ = ["ExportResult", "export_package"]

log = logging.getLogger("scopecast.export")

FP16_RELATIVE_TOLERANCE = 2e-2
#: bioimage.io's rule for a model's ``name`` (spec 0.5 ``ModelDescr.name``: 5-128 letters, digits, ``_+- ()``)
_BIOIMAGEIO_NAME = re.compile(r"[A-Za-z0-9_+\- ()]{5,128}")


def _check_bioimageio_name(name: str) -> str:
    """``name`` if the package's rdf may carry it; ``ValueError`` saying the rule that holds otherwise (a package
    name, :func:`~scopecast.models.manifest.check_package_name`, may also have '.' and be shorter)."""
    if not _BIOIMAGEIO_NAME.fullmatch(name):
        raise ValueError(f"package name {name[:80]!r} cannot name a bioimage.io model (rdf.yaml): an exported "
                         "package's name has 5-64 letters, digits, '_', '-' (no '.')")
    return name


def _portable(path: str | Path) -> str:
    """A path relative to the working directory when it lies below it (no machine-specific roots)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _real_test_input(meta: dict[str, Any], mult: int) -> np.ndarray | None:
    """The first validation field of the checkpoint's dataset in raw camera counts (≤128², cropped)."""
    try:
        from scopecast.models.dataset import load_pairs

        pairs = load_pairs(meta["data"]["dataset"], "val")
    except (KeyError, OSError, ValueError):
        return None
    x = pairs.inputs[0]
    h = (min(x.shape[1], x.shape[2], 128) // mult) * mult
    return raw_counts(np.ascontiguousarray(x[None, :, :h, :h]))


@dataclass
class ExportResult:
    path: Path
    manifest: ModelManifest
    reports: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _check_replaceable(out: Path) -> None:
    """Raise ``FileExistsError`` unless ``out`` is a model package (or an empty folder) that an export may replace:
    ``--overwrite`` deletes it, so a folder of packages, a dataset or a file given as ``--out`` by mistake must be
    refused, naming why, before anything is deleted."""
    if not out.is_dir() or out.is_symlink():
        raise FileExistsError(f"{out} exists and is not a folder; --overwrite replaces only a model package")
    entries = list(out.iterdir())
    if not entries:
        return
    folders = sorted(e.name for e in entries if e.is_dir())
    if not (out / MANIFEST).is_file() or folders:
        why = f"it holds folders ({', '.join(folders[:5])})" if folders else f"it has no {MANIFEST}"
        raise FileExistsError(f"{out} is not a model package ({why}); --overwrite replaces only a package "
                              "folder, and deletes it first: give the package's own folder, e.g. "
                              f"{out / 'my-model'}")


def _random_raw(meta: dict[str, Any], mult: int) -> np.ndarray:
    """Random raw counts spanning the normalization's range (when no dataset is beside the checkpoint)."""
    rng = np.random.default_rng(0)
    shape = (1, len(meta["inputs"]), 16 * mult, 16 * mult)
    n = Normalization(**meta["normalization"])
    if n.kind == "calibrated":
        off = np.asarray(n.offset)[None, :, None, None]
        sc = np.asarray(n.scale)[None, :, None, None]
        return np.clip(np.round(off + rng.random(shape) * sc), 0, 65535).astype(np.uint16)
    return rng.integers(0, 4096, shape).astype(np.uint16)


def export_package(
    checkpoint: str | Path, out: str | Path, *, name: str | None = None, test_input: np.ndarray | None = None,
    tile: int = 256, halo: int = 32, fp16: bool = False, tensorrt: bool = False,
    triton_repository: str | Path | None = None, overwrite: bool = False,
    triton_options: dict[str, Any] | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to a package directory ``out`` (see module docstring).

    ``test_input``: raw camera counts ``(1, C, H, W)`` (default: the first validation field of the
    checkpoint's dataset, ≤128²). Raises :class:`ExportError` (or its subclasses, and
    :class:`~.bioimageio.BioimageioTestError`) naming the failed step; nothing is left at ``out``.
    """
    from scopecast.models.training import load_checkpoint

    if name is not None:  # refused before the work, as the manifest and the rdf would refuse it at its end
        try:
            _check_bioimageio_name(check_package_name(name))
        except ValueError as e:
            raise ExportError(str(e)) from None
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if out.exists():  # --overwrite replaces a package, never whatever folder --out happens to name
        _check_replaceable(out)
    log.info("export: loading checkpoint %s", checkpoint)
    model, meta = load_checkpoint(checkpoint)
    result_notes: list[str] = []
    mult = int(meta.get("multiple", 1))
    if tile % mult:
        raise ExportError(f"tile {tile} is not a multiple of the network's size multiple {mult}")
    raw = test_input if test_input is not None else _real_test_input(meta, mult)
    if raw is None:
        raw = _random_raw(meta, mult)
        result_notes.append("no dataset beside the checkpoint: parity and bioimageio test on random counts")
    raw = raw_counts(raw)
    if raw.ndim != 4 or raw.shape[0] != 1 or raw.shape[1] != len(meta["inputs"]):
        raise ExportError(f"test input must be raw counts (1, {len(meta['inputs'])}, H, W), got {raw.shape}")
    norm = Normalization(**meta["normalization"])
    x = np.ascontiguousarray(normalize(list(raw[0]), norm)[None])
    try:
        import bioimageio.core  # noqa: F401 - the export ends with its test
    except ImportError as e:
        raise ExportError(f"bioimageio.core is not installed ({e}); it tests every package: "
                          "pip install 'scopecast[dev]'") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        log.info("export: ONNX (opset 18, dynamic N/H/W) of %s %s", meta["arch"], meta["config"])
        onnx_path = export_onnx(model, x, tmp / "model.onnx")
        log.info("export: parity ONNX Runtime vs PyTorch on %s", list(x.shape))
        reports = {"fp32": parity(onnx_path, model, x, FP32_TOLERANCE)}
        log.info("export: FP32 parity max |err| %.2e <= %g", reports["fp32"]["max_abs_error"], FP32_TOLERANCE)
        manifest = ModelManifest(
            name=name or meta.get("name") or meta["task"], task=meta["task"],
            description=f"{meta['arch']} {meta['config']} trained by scopecast",
            sha256=sha256_file(onnx_path), inputs=list(meta["inputs"]), outputs=list(meta["outputs"]),
            normalization=norm,
            output_scaling=OutputScaling(**meta["output_scaling"]) if meta.get("output_scaling") else None,
            scale_factor=int(meta.get("scale_factor", 1)), tile=tile, halo=halo, multiple=mult,
            pixel_size_um=meta.get("pixel_size_um"),
            # the engine's input guards and output clipping (absent in checkpoints trained before them)
            camera=CameraCalibration(**meta["camera"]) if meta.get("camera") else None,
            input_stats=InputStats(**meta["input_stats"]) if meta.get("input_stats") else None,
            output_range=OutputRange(**meta["output_range"]) if meta.get("output_range") else None,
            provenance={
                "checkpoint": _portable(checkpoint), "checkpoint_sha256": sha256_file(Path(checkpoint)),
                "arch": meta["arch"], "config": meta["config"], "parameters": meta.get("parameters"),
                "data": {**meta.get("data", {}), "dataset": _portable(meta.get("data", {}).get("dataset", ""))},
                "train_config": meta.get("train_config"), "metrics": meta.get("metrics"),
                "guards_on_validation": meta.get("guards_on_validation"), "parity": reports["fp32"],
                # the network's own weights, model.onnx's parent for bioimage.io
                "pytorch_state_dict": save_state_dict(model, tmp),
            },
        )
        if fp16:
            import torch

            log.info("export: FP16 model and its parity")
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            fp16_path = to_fp16(onnx_path, tmp / "model_fp16.onnx")
            tol = FP16_RELATIVE_TOLERANCE * float(np.abs(ref).max())
            reports["fp16"] = parity(fp16_path, model, x, tol)
            manifest.provenance["fp16_model"] = {"file": "model_fp16.onnx", "sha256": sha256_file(fp16_path),
                                                 "parity": reports["fp16"]}
        if tensorrt:
            from .tensorrt_engine import TensorRTUnavailable, build_plan

            log.info("export: TensorRT engine")
            try:
                build_plan(onnx_path, manifest, tmp / "model.plan", fp16=True)
                manifest.plan_file = "model.plan"
            except TensorRTUnavailable as e:
                result_notes.append(f"TensorRT engine not built: {e}")
        log.info("export: packaging (manifest, card, bioimage.io files)")
        card = Path(checkpoint).with_name("card.md")
        if card.is_file():
            shutil.copy2(card, tmp / "card.md")
        else:
            (tmp / "card.md").write_text(f"# {manifest.name}\n\nNo model card was found beside {checkpoint}.\n")
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2))
        log.info("export: bioimageio test")
        bio = write_bioimageio_files(tmp, manifest, raw, package_path=_portable(out))
        reports["bioimageio"] = bio.as_dict() if bio else None
        (tmp / "parity.json").write_text(json.dumps(reports, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("export: %s written (sha256 %s)", out, manifest.short_hash)
    result = ExportResult(out, manifest, reports, result_notes)
    if triton_repository:
        from .triton import write_triton_repository

        log.info("export: Triton model repository %s", triton_repository)
        write_triton_repository(out, manifest, Path(triton_repository), **(triton_options or {}))
    return result
