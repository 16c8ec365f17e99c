"""Data consistency of a super-resolved output: blurred back by the widefield optics, does it reproduce its input?

A super-resolution model's output (``scale_factor`` × the input sampling, physical units) is a claim about the
specimen; its widefield input is a measurement of the same specimen through known optics. Binned
``scale × scale`` and blurred by the in-focus widefield PSF (incoherent imaging through a circular pupil: the
closed-form OTF of the numerical aperture, emission wavelength and pixel size), an honest output reproduces the
input up to one gain and offset per field (the two modalities' photon budgets differ) and the camera's noise.
:func:`residual_figure` is the root mean square of what is left, in units of the camera model's noise (read
noise, shot noise at the recorded gain, rounding): ~1 where the forward model holds exactly, somewhat above
with the model's small errors, and far above where the output draws or misplaces structure the measurement does
not support. It needs no ground truth and no extra inference.

It costs a binning and two FFTs of the input's size (3.2 ms for a 512² input and its 1024² output on one
core, measured: 0.04 passes of the super-resolution U-Net, 0.15 of its live tier), so it runs under its own
duty-cycle budget (:class:`ConsistencyCheck`), far more often than the uncertainty check's 1.5 passes allow:
on a new scene within a few bundles, then again as the credit allows; its verdict carries to the later bundles
of the scene. The threshold per training morphology comes from fresh training-region fields
(benchmarks/bench_trust_models.py ``--consistency``; ``validated.consistency``), by the same rule as the
uncertainty thresholds.

Where it applies: super-resolution packages (``scale_factor`` > 1) with as many outputs as inputs (output ``i``
is the super-resolved input ``i``), whose camera calibration records gain and read noise and whose
``validated.consistency`` records the optics. Elsewhere the check is off and says why.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
from scipy import fft as sfft

from .uncertainty import validated_threshold

__all__ = ["BORDER_PX", "BUDGET_SHARE", "FIRST_COST_PASSES", "ConsistencyCheck", "bundle_figure", "residual_figure",
           "widefield_otf"]

#: Pixels at each edge left out of the figure: the FFT's blur wraps around the field, and the in-focus PSF
#: (first zero 0.61 λ/NA, ~2 px at Nyquist sampling) has fallen to nothing well within this.
BORDER_PX = 8
#: The consistency check's budget as a fraction of the uncertainty check's, on top of it (1 % of the model's
#: time at the default 2.5 %). A check costs 0.04 (U-Net) to 0.15 (live tier) model passes at 512², so a new
#: scene is judged within a few bundles, where the uncertainty check's 1.5 passes take ~60 bundles of credit.
BUDGET_SHARE = 0.4
#: A check's cost in model passes until one has been timed (then the last one's).
FIRST_COST_PASSES = 0.25


@functools.lru_cache(maxsize=16)
def widefield_otf(shape: tuple[int, int], pixel_um: float, wavelength_um: float, na: float) -> np.ndarray:
    """rfft2-layout OTF of the in-focus incoherent widefield PSF (circular pupil; 1 at DC, 0 beyond 2 NA / λ)."""
    ny, nx = shape
    fy = sfft.fftfreq(ny, d=pixel_um)[:, None]
    fx = sfft.rfftfreq(nx, d=pixel_um)[None, :]
    rho = np.minimum(np.sqrt(fx * fx + fy * fy) / (2.0 * na / wavelength_um), 1.0)
    otf = (2.0 / math.pi) * (np.arccos(rho) - rho * np.sqrt(1.0 - rho * rho))
    otf = otf.astype(np.float32)
    otf.setflags(write=False)
    return otf


def _bin(y: np.ndarray, scale: int) -> np.ndarray:
    """Mean of each ``scale × scale`` block, float32: a sum of ``scale²`` strided views (one pass each;
    ``reshape(...).mean(axis=(1, 3))`` takes 14× as long at 1024²)."""
    acc = np.array(y[0::scale, 0::scale], dtype=np.float32)
    for i in range(scale):
        for j in range(scale):
            if i or j:
                acc += y[i::scale, j::scale]
    if scale > 1:
        acc *= np.float32(1.0 / (scale * scale))
    return acc


def residual_figure(x: np.ndarray, y: np.ndarray, scale: int, offset_adu: float, gain_adu_per_e: float,
                    read_noise_adu: float, pixel_um: float, wavelength_um: float, na: float) -> float:
    """RMS of ``x − (a · blur(bin(y)) + c)`` over the camera noise of ``x`` (see the module docstring).

    ``x``: one input frame (raw counts, ``(H, W)``); ``y``: its output channel (``(scale·H, scale·W)``, any
    linear units); ``pixel_um``: the input's pixel size. ``a`` and ``c`` are fitted by least squares. NaN when
    nothing can be judged: an output without structure (a withheld result's constant) or a field too small."""
    h, w = x.shape
    if y.shape != (h * scale, w * scale) or min(h, w) <= 4 * BORDER_PX:
        return math.nan
    yb = _bin(y, scale)
    blur = sfft.irfft2(sfft.rfft2(yb) * widefield_otf((h, w), pixel_um, wavelength_um, na), s=(h, w))
    inner = (slice(BORDER_PX, h - BORDER_PX), slice(BORDER_PX, w - BORDER_PX))
    # float32 passes with float64 sums: the figure to ~1e-5 relative at half the time of float64 throughout
    b = blur[inner].astype(np.float32)
    b -= np.float32(b.mean(dtype=np.float64))
    bb = float(np.dot(b.ravel(), b.ravel()))
    if not bb > 0:
        return math.nan
    xs = x[inner].astype(np.float32)
    xs -= np.float32(offset_adu)
    xm = np.float32(xs.mean(dtype=np.float64))
    var = np.maximum(xs, 0.0)
    var *= np.float32(gain_adu_per_e)
    var += np.float32(read_noise_adu * read_noise_adu + 1.0 / 12.0)
    xs -= xm
    xs -= np.float32(float(np.dot(b.ravel(), xs.ravel())) / bb) * b
    xs *= xs
    xs /= var
    return float(math.sqrt(xs.mean(dtype=np.float64)))


def bundle_figure(frames: list[np.ndarray], y: np.ndarray, scale: int, camera: Any, pixel_um: float,
                  wavelength_um: float, na: float) -> float:
    """The bundle's figure: the largest :func:`residual_figure` over its input/output channel pairs (``frames``
    in model order, raw counts; ``y`` output channels first, physical units; ``camera`` a
    :class:`~scopecast.models.manifest.CameraCalibration` with gain and read noise); NaN if none is finite."""
    figs = [residual_figure(f, y[c], scale, camera.offset_adu, camera.gain_adu_per_e, camera.read_noise_adu,
                            pixel_um, wavelength_um, na) for c, f in enumerate(frames)]
    finite = [f for f in figs if math.isfinite(f)]
    return max(finite) if finite else math.nan


class ConsistencyCheck:
    """The data-consistency verdict of one worker (not thread-safe), under its own duty-cycle budget.

    Work is counted in model passes over the bundle's pixels, like the uncertainty check's: every inferred
    bundle earns ``budget`` × its pixels of credit (the worker gives it :data:`BUDGET_SHARE` of the uncertainty
    check's budget, on top of that one); a check costs what the last one took against its bundle's model run
    (:meth:`pay`; :data:`FIRST_COST_PASSES` until one has been paid for). It runs on a scene not yet judged as
    soon as the credit covers one check, on a judged one only when it covers two (one stays in reserve for the
    next new scene). The credit never exceeds two checks' cost, and the first check is advanced (a fresh worker
    judges its first scene at once), so what the checks spend stays within ``budget`` × the model passes plus
    one check. The verdict carries to the later bundles of its scene and is dropped with it (the scene rule is
    the uncertainty check's, :class:`.uncertainty.Scene`).

    ``validated``: the package's ``validated.consistency`` (None: off); ``camera``: its camera calibration;
    ``morphology``: whose threshold applies (None or one not validated: the ``ceiling``, the largest);
    ``budget``: fraction of the model's time (0: never runs; ``inf``: every inferred bundle)."""

    def __init__(self, validated: Any, camera: Any, scale: int, n_inputs: int, n_outputs: int,
                 morphology: str | None = None, budget: float = 0.0) -> None:
        if not budget >= 0:
            raise ValueError(f"consistency budget must be a fraction of inference time >= 0, got {budget}")
        self.validated = validated
        self.scale = scale
        self.camera = camera
        self.budget = budget
        self.why_off = ""
        if validated is None:
            self.why_off = "the package records no validated consistency threshold"
        elif scale < 2 or n_inputs != n_outputs:
            self.why_off = "not a super-resolution package with one output per input"
        elif camera is None or camera.gain_adu_per_e is None or camera.read_noise_adu is None:
            self.why_off = "the package's camera calibration records no gain and read noise"
        self.threshold: float | None = None
        self.against = ""
        if validated is not None:
            self.threshold, self.against = validated_threshold(validated, morphology)
        self.cost_passes = FIRST_COST_PASSES
        self.credit: float | None = None
        self.passes = 0.0  # ordinary model passes (bundle pixels / 1e6 each) and the checks' cost in them
        self.spent_passes = 0.0
        self.checks = 0
        self.bundles = 0
        self._verdict: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return not self.why_off

    def due(self, scene_changed: bool, work: float, inferred: bool) -> bool:
        """Account one bundle (``scene_changed``: not the scene of the last one; ``work``: its input pixels / 1e6;
        ``inferred``: the model ran on it) and say whether the check should run on it now."""
        self.bundles += 1
        if scene_changed:
            self._verdict = None
        if not (self.enabled and inferred and self.budget > 0):
            return False
        cost = self.cost_passes * work
        self.passes += work
        if self.credit is None:  # one check advanced: a fresh worker judges its first scene at once
            self.credit = cost
        self.credit = min(self.credit + self.budget * work, 2 * cost) if math.isfinite(self.budget) else math.inf
        return self.credit >= (cost if self._verdict is None else 2 * cost)

    def run(self, frames: list[np.ndarray], y: np.ndarray, pixel_um: float | None, bundle_id: Any) -> float:
        """Judge ``y`` (the model's answer in physical units, output channels first) against ``frames`` (the
        inputs in model order, raw counts); returns the time it took (ms), for :meth:`pay`."""
        t0 = time.perf_counter()
        v = self.validated
        px = pixel_um if pixel_um and pixel_um > 0 else v.pixel_size_um
        value = bundle_figure(frames, y, self.scale, self.camera, px, v.wavelength_um, v.na)
        judged = math.isfinite(value)
        ms = (time.perf_counter() - t0) * 1e3
        self.checks += 1
        self._verdict = {"value": float(f"{value:.4g}") if judged else None,
                         "ok": None if not judged else bool(value <= (self.threshold or math.inf)),
                         "checked_bundle": bundle_id, "checked_at": self.bundles, "ms": round(ms, 2)}
        return ms

    def pay(self, passes: float, work: float) -> None:
        """Pay for the check just run from the credit: ``passes``, its time over its bundle's model run, of
        ``work`` (the bundle's input pixels / 1e6); the next check is expected to cost as much."""
        if passes > 0:
            self.cost_passes = passes
            self.credit = min((self.credit or 0.0) - passes * work, passes * work)  # at most one check in reserve
            self.spent_passes += passes * work

    def report(self) -> tuple[dict[str, Any], str | None]:
        """``trust.consistency`` for the bundle last passed to :meth:`due`, and the failure reason (or None)."""
        rep: dict[str, Any] = {"threshold": self.threshold, "morphology": self.against or None}
        if not self.enabled:
            return {**rep, "state": f"off: {self.why_off}", "ok": None}, None
        v = self._verdict
        if v is None:
            return {**rep, "state": "pending", "ok": None}, None
        age = self.bundles - v["checked_at"]
        rep.update(state="checked" if age == 0 else "carried", value=v["value"], ok=v["ok"],
                   checked_bundle=v["checked_bundle"], age=age, ms=v["ms"])
        if v["ok"] is not False:
            return rep, None
        return rep, (f"inconsistent with the input: residual {v['value']:.3g} x noise > validated "
                     f"{self.threshold:.3g} ({self.against}{'' if age == 0 else f', checked {age} bundles ago'}): "
                     "blurred by the widefield optics, the output does not reproduce the measured frame")
