"""The model package manifest: the contract between export (writer) and engine (reader).

A package is a directory with ``manifest.json``, the model file(s), a
bioimage.io ``rdf.yaml`` describing the same model for other tools, and test
tensors. This module is pure pydantic (no torch, no daemon), so both sides can
import it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MANIFEST", "ModelManifest", "Normalization", "OutputScaling", "normalize", "sha256_file"]

MANIFEST = "manifest.json"

# percentiles are estimated on about this many pixels per channel (strided subsample)
_PERCENTILE_SAMPLES = 8192


class Normalization(BaseModel):
    """Input normalization, applied per input channel.

    ``percentile``: ``(x - p_low) / (p_high - p_low)`` with percentiles of each
    image (bioimage.io ``scale_range``). ``mean_std``: ``(x - mean) / std`` with
    fixed per-channel values (``zero_mean_unit_variance`` with fixed statistics).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["percentile", "mean_std"] = "percentile"
    low: float = Field(default=1.0, ge=0, le=100)
    high: float = Field(default=99.8, ge=0, le=100)
    mean: list[float] | None = None
    std: list[float] | None = None
    eps: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if self.kind == "percentile" and not self.low < self.high:
            raise ValueError(f"percentile low ({self.low}) must be below high ({self.high})")
        if self.kind == "mean_std" and (self.mean is None or self.std is None):
            raise ValueError("mean_std normalization needs 'mean' and 'std' per input channel")
        return self


class OutputScaling(BaseModel):
    """Model output -> physical units: ``y * scale + offset`` per output channel."""

    model_config = ConfigDict(extra="forbid")

    scale: list[float]
    offset: list[float]


class ModelManifest(BaseModel):
    """What the engine needs to run a model (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = 1
    name: str
    task: Literal["virtual-staining", "super-resolution", "localization", "other"] = "other"
    description: str = ""
    model_file: str = "model.onnx"
    sha256: str = Field(description="sha256 of model_file")
    plan_file: str | None = Field(default=None, description="optional serialized TensorRT engine")
    input_name: str = "input"
    output_name: str = "output"
    inputs: list[str] = Field(min_length=1, description="channel names, in model input order")
    normalization: Normalization = Field(default_factory=Normalization)
    outputs: list[str] = Field(min_length=1, description="output channel names")
    output_scaling: OutputScaling | None = None
    scale_factor: int = Field(default=1, ge=1, le=16, description="output sampling / input sampling")
    tile: int = Field(default=256, ge=16)
    halo: int = Field(default=16, ge=0)
    multiple: int = Field(default=16, ge=1, description="spatial sizes must be multiples of this")
    pixel_size_um: float | None = None
    fp16: bool = False
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelManifest:
        if self.tile % self.multiple:
            raise ValueError(f"tile {self.tile} is not a multiple of {self.multiple}")
        if self.tile <= 2 * self.halo:
            raise ValueError(f"tile {self.tile} leaves no interior with halo {self.halo}")
        n = self.normalization
        if n.kind == "mean_std" and (len(n.mean or []) != len(self.inputs) or len(n.std or []) != len(self.inputs)):
            raise ValueError("mean/std need one value per input channel")
        s = self.output_scaling
        if s is not None and (len(s.scale) != len(self.outputs) or len(s.offset) != len(self.outputs)):
            raise ValueError("output_scaling needs one scale and offset per output channel")
        return self

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def normalize(frames: list[np.ndarray], norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    """Stack and normalize frames into a float32 ``(C, H, W)`` array in one pass per channel.

    Percentiles are estimated on a strided subsample of about
    :data:`_PERCENTILE_SAMPLES` pixels per channel (enough for contrast
    normalization; ~0.2 ms instead of ~5 ms for the full 512×512 frame).
    """
    h, w = frames[0].shape
    if out is None or out.shape != (len(frames), h, w):
        out = np.empty((len(frames), h, w), np.float32)
    if norm.kind == "mean_std":
        shift = [float(m) for m in norm.mean]  # type: ignore[union-attr]
        inv = [1.0 / max(float(s), norm.eps) for s in norm.std]  # type: ignore[union-attr]
    else:
        step = max(1, int(np.ceil(np.sqrt(h * w / _PERCENTILE_SAMPLES))))
        shift, inv = [], []
        for f in frames:
            lo, hi = np.percentile(f[::step, ::step], [norm.low, norm.high])
            shift.append(float(lo))
            inv.append(1.0 / max(float(hi - lo), norm.eps))
    for c, f in enumerate(frames):
        np.subtract(f, np.float32(shift[c]), out=out[c], dtype=np.float32)
        out[c] *= np.float32(inv[c])
    return out
