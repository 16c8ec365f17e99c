"""Checkpoint -> model package: the one entry point of ``scopecast export``.

Steps: load the checkpoint (architecture and weights must match), export ONNX
(opset 18, dynamic N/H/W), ``onnx.checker``, parity with PyTorch on real test
inputs (FP32: ≤ 1e-4 absolute), manifest (with the normalization, camera,
training input distribution and output range measured at training time),
bioimage.io ``rdf.yaml`` (declaring exactly the normalization the engine
computes), test tensors, the model card; optionally an FP16 model (with its own parity
report), a TensorRT ``.plan`` and a Triton model repository.

Everything is written into a temporary sibling folder that is renamed into
place only when every step passed, so a failed export never leaves anything
that looks like a valid package.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.manifest import (
    MANIFEST, CameraCalibration, InputStats, ModelManifest, Normalization, OutputRange, OutputScaling, sha256_file,
)

from .bioimageio import rdf
from .onnx_export import ExportError, export_onnx, parity, to_fp16

__all__ = ["ExportResult", "export_package"]

FP32_TOLERANCE = 1e-4
FP16_RELATIVE_TOLERANCE = 2e-2


def _portable(path: str | Path) -> str:
    """A path relative to the working directory when it lies below it (no machine-specific roots)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _real_test_input(meta: dict[str, Any], mult: int) -> np.ndarray | None:
    """The first validation field of the checkpoint's dataset, normalized as the engine does (≤128²)."""
    try:
        from scopecast.models.dataset import load_pairs
        from scopecast.models.manifest import normalize

        pairs = load_pairs(meta["data"]["dataset"], "val")
    except (KeyError, OSError, ValueError):
        return None
    x = normalize(list(pairs.inputs[0]), Normalization(**meta["normalization"]))
    h = (min(x.shape[1], x.shape[2], 128) // mult) * mult
    return np.ascontiguousarray(x[None, :, :h, :h])


@dataclass
class ExportResult:
    path: Path
    manifest: ModelManifest
    reports: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export_package(
    checkpoint: str | Path, out: str | Path, *, name: str | None = None, test_input: np.ndarray | None = None,
    tile: int = 256, halo: int = 32, fp16: bool = False, tensorrt: bool = False,
    triton_repository: str | Path | None = None, overwrite: bool = False,
) -> ExportResult:
    """Export ``checkpoint`` to a package directory ``out`` (see module docstring)."""
    from scopecast.models.training import load_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    model, meta = load_checkpoint(checkpoint)
    result_notes: list[str] = []
    mult = int(meta.get("multiple", 1))
    if tile % mult:
        raise ExportError(f"tile {tile} is not a multiple of the network's size multiple {mult}")
    if test_input is None:
        test_input = _real_test_input(meta, mult)
    if test_input is None:
        rng = np.random.default_rng(0)
        test_input = rng.random((1, len(meta["inputs"]), 16 * mult, 16 * mult), dtype=np.float32)
        result_notes.append("no dataset beside the checkpoint: parity checked on random inputs")
    test_input = np.ascontiguousarray(test_input, dtype=np.float32)
    if test_input.ndim != 4 or test_input.shape[1] != len(meta["inputs"]):
        raise ExportError(f"test input must be (N, {len(meta['inputs'])}, H, W), got {test_input.shape}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        onnx_path = export_onnx(model, test_input, tmp / "model.onnx")
        reports = {"fp32": parity(onnx_path, model, test_input, FP32_TOLERANCE)}
        import torch

        with torch.inference_mode():
            test_output = model(torch.from_numpy(test_input)).numpy()
        np.save(tmp / "test_input.npy", test_input)
        np.save(tmp / "test_output.npy", test_output)
        manifest = ModelManifest(
            name=name or meta.get("name") or meta["task"], task=meta["task"],
            description=f"{meta['arch']} {meta['config']} trained by scopecast",
            sha256=sha256_file(onnx_path), inputs=list(meta["inputs"]), outputs=list(meta["outputs"]),
            normalization=Normalization(**meta["normalization"]),
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
            },
        )
        if fp16:
            fp16_path = to_fp16(onnx_path, tmp / "model_fp16.onnx")
            tol = FP16_RELATIVE_TOLERANCE * float(np.abs(test_output).max())
            reports["fp16"] = parity(fp16_path, model, test_input, tol)
            manifest.provenance["fp16_model"] = {"file": "model_fp16.onnx", "sha256": sha256_file(fp16_path),
                                                 "parity": reports["fp16"]}
        if tensorrt:
            from .tensorrt_engine import TensorRTUnavailable, build_plan

            try:
                build_plan(onnx_path, manifest, tmp / "model.plan", fp16=True)
                manifest.plan_file = "model.plan"
            except TensorRTUnavailable as e:
                result_notes.append(f"TensorRT engine not built: {e}")
        card = Path(checkpoint).with_name("card.md")
        if card.is_file():
            shutil.copy2(card, tmp / "card.md")
        else:
            (tmp / "card.md").write_text(f"# {manifest.name}\n\nNo model card was found beside {checkpoint}.\n")
        (tmp / "parity.json").write_text(json.dumps(reports, indent=2))
        (tmp / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2))
        import yaml

        (tmp / "rdf.yaml").write_text(yaml.safe_dump(rdf(tmp, manifest), sort_keys=False))
        tmp.chmod(0o755)  # mkdtemp makes it private; a package is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = ExportResult(out, manifest, reports, result_notes)
    if triton_repository:
        from .triton import write_triton_repository

        write_triton_repository(out, manifest, Path(triton_repository))
    return result
