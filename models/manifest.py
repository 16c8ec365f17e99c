"""The model package manifest: the contract between export (writer) and engine (reader).

A package is a directory with ``manifest.json``, the model file(s), a
bioimage.io ``rdf.yaml`` describing the same model for other tools, and test
tensors. This module is pure pydantic (no torch, no daemon), so both sides can
import it. Every figure is finite (a NaN or Infinity in ``manifest.json`` is
refused naming its field, never read as a statistic or a constant) and a pixel
size is positive.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MANIFEST", "CameraCalibration", "ChannelStats", "InputStats", "ModelManifest", "ModelVariant", "Normalization", "OutputRange",
    "OutputScaling", "UncertaintyThreshold", "ValidatedConsistency", "ValidatedFidelity", "ValidatedFigure", "ValidatedUncertainty",
    "check_package_name", "normalize", "pad_to_multiple", "percentiles", "sha256_file",
]

MANIFEST = "manifest.json"
#: A package name names files and folders (Triton models, offline result recordings, engine caches) and spot
#: checks: the daemon's rule for names a client gives (``scopecast.daemon.confine.safe_name``; this module
#: imports no daemon code).
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_package_name(name: str) -> str:
    """``name`` if it can name a package; ``ValueError`` saying the rule otherwise."""
    if not _PACKAGE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"package name {name[:80]!r} is not allowed: use 1-64 letters, digits, '_', '.', '-' "
                         "(starting with a letter or digit, no '..'); it names files and folders")
    return name


class Normalization(BaseModel):
    """Input normalization, applied per input channel; every kind is exactly a bioimage.io step.

    ``calibrated`` (the honest choice for live use): ``(x - offset) / scale``
    with constants fixed at training time: ``offset`` the camera offset (ADU),
    ``scale`` the training data's ``high`` percentile of that channel minus the
    offset. A blank or dim field stays near 0 instead of being stretched to
    the range of a cell field. Declared as bioimage.io ``scale_linear``
    (``gain = 1/scale``, ``offset = -offset/scale``), which is what is computed.

    ``percentile`` (older packages): ``(x - p_low) / (p_high - p_low + eps)``
    with the exact percentiles (linear interpolation, as ``np.percentile``) of
    each image and channel: bioimage.io ``scale_range`` over ``(y, x)``.
    ``mean_std``: ``(x - mean) / std`` with fixed per-channel values
    (bioimage.io ``fixed_zero_mean_unit_variance``).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    kind: Literal["percentile", "mean_std", "calibrated"] = "percentile"
    low: float = Field(default=1.0, ge=0, le=100)
    high: float = Field(default=99.8, ge=0, le=100)
    mean: list[float] | None = None
    std: list[float] | None = None
    offset: list[float] | None = Field(default=None, description="calibrated: camera offset per channel (ADU)")
    scale: list[float] | None = Field(default=None, description="calibrated: training p_high - offset (ADU)")
    eps: float = 1e-6

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if self.kind == "percentile" and not self.low < self.high:
            raise ValueError(f"percentile low ({self.low}) must be below high ({self.high})")
        if self.kind == "mean_std":
            if self.mean is None or self.std is None:
                raise ValueError("mean_std normalization needs 'mean' and 'std' per input channel")
            if len(self.mean) != len(self.std) or min(self.std) < 1e-6:
                raise ValueError("mean_std normalization needs one mean and one std ≥ 1e-6 per channel")
        if self.kind == "calibrated":
            if self.offset is None or self.scale is None or len(self.offset) != len(self.scale):
                raise ValueError("calibrated normalization needs 'offset' and 'scale' per input channel")
            if not all(np.isfinite(self.offset)) or not all(np.isfinite(s) and s > 0 for s in self.scale):
                raise ValueError(f"calibrated normalization needs finite offsets and positive scales, got "
                                 f"offset={self.offset} scale={self.scale}")
        return self

    @property
    def channels(self) -> int | None:
        """Channels the fixed constants are for (None for per-image percentiles)."""
        v = self.mean if self.kind == "mean_std" else self.offset if self.kind == "calibrated" else None
        return None if v is None else len(v)

    def linear(self) -> tuple[list[float], list[float]]:
        """``(gain, bias)`` per channel with ``x' = x * gain + bias`` (fixed kinds only).

        ``calibrated`` is computed exactly this way (bioimage.io ``scale_linear``
        with these values); ``mean_std`` is ``(x - mean) / std``.
        """
        if self.kind == "calibrated":
            gain = [1.0 / float(s) for s in self.scale]  # type: ignore[union-attr]
            return gain, [-float(o) * g for o, g in zip(self.offset, gain, strict=True)]  # type: ignore[arg-type]
        if self.kind == "mean_std":
            gain = [1.0 / float(s) for s in self.std]  # type: ignore[union-attr]
            return gain, [-float(m) * g for m, g in zip(self.mean, gain, strict=True)]  # type: ignore[arg-type]
        raise ValueError("per-image percentile normalization has no fixed constants")


class CameraCalibration(BaseModel):
    """The camera the training data came from (ADU = offset + gain × electrons, clipped)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    offset_adu: float = Field(description="mean of a dark frame")
    read_noise_adu: float | None = Field(default=None, ge=0, description="temporal noise of a dark frame")
    gain_adu_per_e: float | None = Field(default=None, gt=0, description="photon-transfer gain")
    saturation_adu: float | None = Field(default=None, gt=0, description="the level at which pixels clip")
    source: str = Field(default="", description="how these values were obtained")


class ChannelStats(BaseModel):
    """One input channel over the training fields, measured as the input guards measure a frame.

    Ranges are ``[min, median, max]`` over the training fields; ``signal`` is
    the field mean above the camera offset (ADU), ``contrast`` its standard
    deviation over the signal, ``peak`` its structure level (the brightest 0.1 %
    above the offset), ``focus`` its sharpness, ``extent`` how far its brightest
    structures reach (optional: older packages lack them). ``p_low``/``p_high`` are the exact percentiles
    (``InputStats.percentiles``) of all training pixels of the channel.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    signal: tuple[float, float, float]
    contrast: tuple[float, float, float]
    snr_min: float
    saturated_max: float = Field(ge=0, le=1)
    p_low: float
    p_high: float
    peak: tuple[float, float, float] | None = Field(
        default=None, description="[min, median, max] of the guards' structure level (the brightest 0.1 % of the "
                                  "field above the offset, ADU): what exposure is judged on; None in packages "
                                  "exported before it was measured")
    kurtosis: tuple[float, float, float] | None = Field(
        default=None, description="[min, median, max] of the guards' kurtosis (4th standardized moment of the "
                                  "field: sparsity); None in packages exported before it was measured")
    focus: tuple[float, float, float] | None = Field(
        default=None, description="[min, median, max] of the guards' focus figure (sharpness: the noise-corrected "
                                  "structure function at 1 px over that at 4 px); None in packages exported before "
                                  "it was measured, or when no training field had structure above the noise")
    extent: tuple[float, float, float] | None = Field(
        default=None, description="[min, median, max] of the guards' structure extent (how much of the brightest "
                                  "structures' level is left 2 px from their maxima, along the direction they "
                                  "persist most: ~0.1 for isolated points, beads); None in packages exported "
                                  "before it was measured")


class InputStats(BaseModel):
    """The training input distribution (raw counts): what the input guards compare a live bundle with."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    fields: int = Field(ge=1)
    percentiles: tuple[float, float] = (1.0, 99.8)
    channels: dict[str, ChannelStats]
    source: str | None = Field(default=None, description="which fields the ranges were measured on (None: the "
                                                         "training split the model was trained on)")
    exposure_ms: tuple[float, float] | None = Field(
        default=None, description="[min, max] exposure time of the input frames of those fields (ms); None when "
                                  "the dataset does not record it")


class OutputRange(BaseModel):
    """The physical range of each output channel: min/max of the training targets, in output units."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    min: list[float]
    max: list[float]

    @model_validator(mode="after")
    def _check(self) -> OutputRange:
        if len(self.min) != len(self.max) or any(not lo <= hi for lo, hi in zip(self.min, self.max, strict=True)):
            raise ValueError(f"output_range needs min <= max per channel, got min={self.min} max={self.max}")
        return self


class OutputScaling(BaseModel):
    """Model output -> physical units: ``y * scale + offset`` per output channel."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    scale: list[float]
    offset: list[float]


class ValidatedFigure(BaseModel):
    """The fidelity validated for one output channel (against the ground truth, in the output's units)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    psnr_db: float = Field(description="mean PSNR (data range of the truth), dB")
    pearson_r: float | None = Field(default=None, description="mean Pearson r (None: not measurable)")
    fields: int = Field(default=0, ge=0, description="fields it is the mean of")


class UncertaintyThreshold(BaseModel):
    """A trust statistic (model uncertainty, data consistency) measured on in-domain fields of one training
    morphology, and its limit."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    threshold: float = Field(gt=0, description="above this the check fails")
    median: float = Field(ge=0)
    max: float = Field(ge=0)
    fields: int = Field(ge=1)


class ValidatedUncertainty(BaseModel):
    """Thresholds of the engine's uncertainty check (``daemon/inference/uncertainty.py``), per training morphology.

    ``statistic`` names the scalar (``uncertainty.STATISTICS``) computed from the spread of the model's
    answers to ``tta`` dihedral copies of a bundle; ``ceiling`` is the largest morphology threshold, used
    when the specimen's morphology is not known.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    statistic: str
    tta: int = Field(ge=2)
    morphologies: dict[str, UncertaintyThreshold] = Field(min_length=1)
    ceiling: float = Field(gt=0)
    method: str = ""


class ValidatedConsistency(BaseModel):
    """Thresholds of the engine's data-consistency check (``daemon/inference/consistency.py``), per training
    morphology, and the optics it blurs the output with: the residual of the input against the output blurred
    back, in units of the camera noise; ``ceiling`` is the largest morphology threshold."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    wavelength_um: float = Field(gt=0, description="emission wavelength of the inputs")
    na: float = Field(gt=0, description="numerical aperture of the objective the training data came from")
    pixel_size_um: float = Field(gt=0, description="input pixel size, when a frame header does not say")
    morphologies: dict[str, UncertaintyThreshold] = Field(min_length=1)
    ceiling: float = Field(gt=0)
    method: str = ""


class ValidatedFidelity(BaseModel):
    """Measured fidelity per training morphology and output, and its floor: what spot checks compare with.

    ``floor`` holds, per output, the lowest ``psnr_db`` and the lowest
    ``pearson_r`` over ``morphologies``: the figure any in-domain field was
    validated at, used when the specimen's morphology is not known.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    morphologies: dict[str, dict[str, ValidatedFigure]] = Field(min_length=1)
    floor: dict[str, ValidatedFigure]
    method: str = Field(default="", description="how it was measured (command, fields, protocol)")
    uncertainty: ValidatedUncertainty | None = Field(default=None, description="the uncertainty check's thresholds")
    consistency: ValidatedConsistency | None = Field(default=None, description="the consistency check's thresholds")

    @model_validator(mode="after")
    def _check(self) -> ValidatedFidelity:
        for out, f in self.floor.items():
            figs = [m[out] for m in self.morphologies.values() if out in m]
            if not figs:
                raise ValueError(f"validated floor of {out!r} has no morphology figure")
            low = min(x.psnr_db for x in figs)
            if abs(f.psnr_db - low) > 1e-6:
                raise ValueError(f"validated floor of {out!r} is {f.psnr_db} dB, the lowest morphology figure is "
                                 f"{low} dB")
        return self


class ModelVariant(BaseModel):
    """Another file of the same model at lower precision, kept because it held fidelity (``export/quantize.py``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    file: str
    sha256: str
    precision: Literal["int8"]
    loss_db: dict[str, float] = Field(description="PSNR lost against the ground truth per output, dB")
    speedup: float = Field(description="p50 speed-up over the FP32 model on one CPU tile")
    validated: ValidatedFidelity | None = Field(
        default=None, description="this file's own validated fidelity and uncertainty thresholds (its rounding "
        "changes the spread the uncertainty check measures); the engine running it uses them in place of the "
        "package's, which apply only when it has none")


class ModelManifest(BaseModel):
    """What the engine needs to run a model (``manifest.json``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or Infinity figure is refused

    format_version: Literal[1] = 1
    name: str
    task: Literal["virtual-staining", "super-resolution", "localization", "other"] = "other"
    description: str = ""
    model_file: str = "model.onnx"
    sha256: str = Field(description="sha256 of model_file")
    plan_file: str | None = Field(default=None, description="optional serialized TensorRT engine")
    variants: dict[str, ModelVariant] = Field(default_factory=dict, description="lower-precision files, by precision")
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
    pixel_size_um: float | None = Field(default=None, gt=0, description="input pixel size of the training data")
    fp16: bool = False
    camera: CameraCalibration | None = Field(default=None, description="camera of the training data")
    input_stats: InputStats | None = Field(default=None, description="training input distribution (guards)")
    output_range: OutputRange | None = Field(default=None, description="physical range of each output")
    validated: ValidatedFidelity | None = Field(
        default=None, description="measured fidelity per training morphology and output (spot-check comparator)")
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelManifest:
        check_package_name(self.name)
        if self.tile % self.multiple:
            raise ValueError(f"tile {self.tile} is not a multiple of {self.multiple}")
        if self.tile <= 2 * self.halo:
            raise ValueError(f"tile {self.tile} leaves no interior with halo {self.halo}")
        n = self.normalization
        if n.channels is not None and n.channels != len(self.inputs):
            raise ValueError(f"{n.kind} normalization has {n.channels} channel values for {len(self.inputs)} inputs")
        s = self.output_scaling
        if s is not None and (len(s.scale) != len(self.outputs) or len(s.offset) != len(self.outputs)):
            raise ValueError("output_scaling needs one scale and offset per output channel")
        r = self.output_range
        if r is not None and len(r.min) != len(self.outputs):
            raise ValueError("output_range needs one min and max per output channel")
        v = self.validated
        if v is not None and (set(v.floor) != set(self.outputs)
                              or any(set(f) - set(self.outputs) for f in v.morphologies.values())):
            raise ValueError(f"validated figures must be for the outputs {self.outputs}")
        if self.input_stats is not None and set(self.input_stats.channels) != set(self.inputs):
            raise ValueError(f"input_stats channels {sorted(self.input_stats.channels)} are not the inputs "
                             f"{sorted(self.inputs)}")
        return self

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def trained_exposure_ms(self) -> float | None:
        """An exposure (ms) for the input channels inside what the model was trained on: the geometric mean
        of the training fields' range (``input_stats.exposure_ms``), to 0.1 ms; None when not recorded.
        Clients that compose a live cycle for this model (the demo, the viewer) start from it."""
        r = self.input_stats.exposure_ms if self.input_stats is not None else None
        return None if r is None else round(math.sqrt(r[0] * r[1]), 1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def percentiles(a: np.ndarray, qs: list[float] | tuple[float, ...]) -> list[float]:
    """Exactly ``np.percentile(a, qs)`` (method ``linear``), as bioimage.io ``scale_range`` defines it.

    8- and 16-bit unsigned images take a counting pass (histogram and
    cumulative counts) instead of a partial sort: the same order statistics,
    interpolated the same way, about 5× faster on a 512×512 frame.
    """
    if a.dtype not in (np.uint8, np.uint16) or a.size == 0:
        return [float(v) for v in np.percentile(a, qs)]
    cum = np.cumsum(np.bincount(a.ravel()))
    n = int(cum[-1])
    out = []
    for q in qs:
        vi = (n - 1) * (float(q) / 100.0)
        prev = int(np.floor(vi))
        if vi >= n - 1:
            out.append(float(np.searchsorted(cum, n - 1, side="right")))
            continue
        gamma = vi - prev
        lo = float(np.searchsorted(cum, prev, side="right"))  # value of the prev-th smallest pixel
        hi = float(np.searchsorted(cum, prev + 1, side="right"))
        d = hi - lo
        out.append(hi - d * (1 - gamma) if gamma >= 0.5 else lo + d * gamma)  # numpy's _lerp
    return out


def normalize(frames: list[np.ndarray], norm: Normalization, out: np.ndarray | None = None) -> np.ndarray:
    """Stack and normalize frames into a float32 ``(C, H, W)`` array: the one definition.

    Training, export and the engine all call this. ``calibrated`` and
    ``mean_std`` are ``x * gain + bias`` with the package's fixed constants
    (:meth:`Normalization.linear`); ``percentile`` uses the exact percentiles
    of each frame (:func:`percentiles`) and bioimage.io's
    ``(x - p_low) / (p_high - p_low + eps)``.
    """
    h, w = frames[0].shape
    if out is None or out.shape != (len(frames), h, w):
        out = np.empty((len(frames), h, w), np.float32)
    if norm.kind == "percentile":
        for c, f in enumerate(frames):
            lo, hi = percentiles(f, (norm.low, norm.high))
            np.subtract(f, np.float32(lo), out=out[c], dtype=np.float32)
            out[c] *= np.float32(1.0 / (hi - lo + norm.eps))
        return out
    if norm.channels != len(frames):
        raise ValueError(f"{norm.kind} normalization is for {norm.channels} channels, got {len(frames)} frames")
    gain, bias = norm.linear()
    for c, f in enumerate(frames):
        np.multiply(f, np.float32(gain[c]), out=out[c], dtype=np.float32)
        out[c] += np.float32(bias[c])
    return out


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """``x`` ``(..., H, W)`` reflect-padded at the bottom and right up to multiples of ``multiple``, as the
    engine pads a frame for the network (``daemon/inference/tiling.py``); ``x`` itself when it fits. Whoever
    runs the network on whole fields (training's validation, INT8 calibration and fidelity) pads with this and
    crops the output back to ``H × scale``, ``W × scale``: a field of any size then runs as it does live."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(x, pad, mode="reflect" if min(h, w) > 1 else "edge")  # the engine's rule
