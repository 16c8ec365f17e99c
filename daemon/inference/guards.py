"""Input guards and the trust verdict: can the model honestly answer this bundle?

Before a bundle is normalized, every channel is measured (:func:`measure`, on
a strided ~128×128 subsample: these are guard statistics, never the
normalization, which is exact) and checked. Training measures its fields with
the same function, so the comparison with the training distribution
(``ModelManifest.input_stats``) is like with like.

==========================  =========================================================  =========
check                       fails when                                                 action
==========================  =========================================================  =========
missing                     the frame is all zeros                                     withhold
non-finite                  a float frame holds NaN or Inf                             withhold
saturated                   more than 0.1 % of the pixels sit at the detector's        withhold
                            ceiling (camera ``saturation_adu``, the dtype maximum, or
                            a pile-up at the frame maximum when neither is known)
flat                        every sampled pixel has the same value (and the frame is   withhold
                            not saturated): a stuck or synthetic frame; "saturated or
                            flat" when the clip level is unknown and the value is
                            above the offset (a fully clipped frame looks the same)
under-exposed               the structure (the brightest 0.1 % of the sampled pixels,  withhold
                            above the camera offset: ``peak``) is less than 5× its
                            noise (the Rose criterion), or below ½ × the dimmest
                            training field's structure
no specimen                 a channel fails the Rose criterion while a channel whose   withhold
                            level the illumination sets (bright-field, DPC: every
                            training field's mean SNR ≥ 10) is well exposed: the
                            exposure is right, so the dark channel (dark-field) is
                            dark because the field is empty (said instead of
                            "under-exposed"); one with faint structure beside it is
                            flagged "outside training range" instead
outside training range      the signal is above 2× the brightest training field's, or  flag
                            the contrast (std / signal) or the kurtosis (sparsity) is
                            outside ½×…2× the training fields' range, or the focus figure (:func:`focus_figure`)
                            says the field is blurred by more than 0.84 px beyond the
                            least sharp training field (or sharper by as much than
                            the sharpest), or the frames' pixel size differs from the
                            training pixel size by more than 10 % (another objective),
                            or their exposure time is outside ½×…2× the training
                            fields' exposures (the header's ``exposure_ms``)
beyond physical range       more than 0.1 % of the output pixels lie outside the       flag
                            training targets' min/max by more than 1 % of that range
                            or 8.95 % (Gibbs) of the output's own span, whichever is
                            larger (every pixel outside it is clipped to it)
==========================  =========================================================  =========

*Withhold*: the model is not run; the result carries a blank image (every
pixel at the output's background level) and ``trust.ok = false``. A saturated,
empty or under-exposed input holds no information the network could turn into
a stain, so any image it produced would be invented. *Flag*: the model runs,
its output is clipped to the physical range, and ``trust.ok = false``.

The thresholds are policy, chosen from the physics, not fitted to any test.
Exposure is judged on the specimen's structure, not on the field's mean: a
sparse field (a few cells, a dark-field of scattered debris) has a mean a few
noise units above the offset however long the exposure, while its cells are
bright; an empty field, or a short exposure, has no structure that stands out.
The structure level is the 99.9th percentile of the sampled pixels (the
brightest 0.1 %: ~260 pixels of a 512² frame, a structure rather than a few hot
pixels, as for saturation), and a feature is detectable when it stands 5 noise
standard deviations above the background (Rose). Pure read noise reaches
~3.1 σ at its 99.9th percentile, so an empty field always fails; a short
exposure that still clears Rose is caught below ½ × the dimmest training
field's structure. 0.1 % saturated is ~260 pixels of a 512²
frame, a structure rather than a few hot pixels; a factor of 2 (one photographic
stop) beyond anything seen in training is extrapolation. Packages without
training statistics (older ones) skip the training-range checks (``guards.skipped``
says so) and assume a camera offset of min(100 ADU, the darkest sampled pixel),
with the noise estimated from the frame itself (:func:`measure`); without a
training level, a dim but clean exposure (e.g. 0.5 ms instead of 10 ms) passes
as long as its structure clears the Rose criterion.

Cost at 512×512×6 (uint16, this project's 2-core CI machine): see
benchmarks/bench_trust.py, which measures the whole monitor against the model's
time. Every figure reads a strided subsample and every 16th full row and column
(the focus figure), each reduction one numpy call over the bundle; what costs
is reading a bundle that inference has just pushed out of the cache.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopecast.models.manifest import CameraCalibration, InputStats, ModelManifest

__all__ = [
    "DEFAULT_OFFSET_ADU", "FOCUS_BLUR_PX", "GIBBS", "OUTPUT_CLIPPED_MAX", "OUTPUT_RANGE_TOLERANCE",
    "PEAK_FRACTION", "PIXEL_SIZE_TOLERANCE", "RANGE_FACTOR", "ROSE_SNR", "SATURATED_MAX", "GuardVerdict",
    "InputGuard", "OutputGuard",
    "focus_figure", "focus_figures", "focus_limits", "focus_width", "measure", "measure_bundle", "trust",
]

#: Largest fraction of pixels allowed at the detector's ceiling.
SATURATED_MAX = 1e-3
#: Smallest signal-to-noise ratio of the structure (the brightest ``PEAK_FRACTION`` of the pixels above the
#: offset / the noise at that level) for it to be detectable: the Rose criterion.
ROSE_SNR = 5.0
#: The structure level of a frame: this top fraction of its (sampled) pixels.
PEAK_FRACTION = 1e-3
#: How far (as a factor) beyond the training fields' range an input may lie.
RANGE_FACTOR = 2.0
#: Largest fraction of output pixels allowed beyond the physical range (they are clipped).
OUTPUT_CLIPPED_MAX = 1e-3
#: Blur (Gaussian σ, px, added in quadrature to the structure width) beyond the least sharp training field
#: that the focus check accepts: the in-focus PSF's σ (0.21 λ/NA) at Nyquist sampling (pixel λ/4NA) is
#: 0.84 px; defocus beyond the depth of field adds a blur at least that wide (it doubles the PSF's variance).
FOCUS_BLUR_PX = 0.84
#: Largest relative difference between a bundle's pixel size and the training pixel size.
PIXEL_SIZE_TOLERANCE = 0.1
#: Output pixels count as beyond the physical range only past it by more than this fraction of the range
#: (1 %: ~2.5 grey levels of a display spanning the range; a background predicted a few counts under the
#: dark level is model error, not an intensity outside anything the training targets held). All are clipped.
OUTPUT_RANGE_TOLERANCE = 0.01
#: ... or by more than this fraction of the output's own span within the range, whichever is larger: the
#: Gibbs overshoot of a band-limited step (8.95 % of the jump, on either side). An upsampling network rings
#: like that beside bright edges (negative counts next to a bright membrane); it is clipped, not invented.
GIBBS = 0.0895
#: Camera offset assumed when the package does not record the camera (typical sCMOS).
DEFAULT_OFFSET_ADU = 100.0

_SAMPLES = 128 * 128  # guard statistics: pixels per channel (strided subsample); noise: a quarter of its rows
_QUANT_VAR = 1.0 / 12.0  # rounding to integer ADU adds this variance
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)  # median |x_i - x_i+1| of Gaussian noise -> sigma
_FOCUS_LAGS = (1, 4)  # focus figure: structure at the finest scale over structure at 4 px
#: focus figure: every 4k-th row and column (32 + 32 of a 512² frame)
_FOCUS_ROW_STRIDE = 4


def _r(v: float, digits: int = 4) -> float | None:
    """A finite, rounded float for the wire (None for NaN/Inf)."""
    v = float(v)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


def _step(shape: tuple[int, ...]) -> int:
    return max(1, int(math.ceil(math.sqrt(shape[0] * shape[1] / _SAMPLES))))


def measure(frame: np.ndarray, offset: float, camera: CameraCalibration | None = None) -> dict[str, Any]:
    """Guard figures of one frame (raw counts) given the camera ``offset`` (ADU): :func:`measure_bundle`
    of a bundle of one (training measures its fields with this, the engine its bundles with that: the
    same figures)."""
    return measure_bundle([frame], offset, camera)[0]


def measure_bundle(frames: list[np.ndarray], offset: float,
                   camera: CameraCalibration | None = None) -> list[dict[str, Any]]:
    """Guard figures of each frame (raw counts) given the camera ``offset`` (ADU).

    ``signal``: mean above the offset; ``contrast``: std / signal (or / noise when the
    signal is lower); ``snr``:
    signal / noise, the noise from the camera model (read noise, shot noise at
    the recorded gain, rounding) when the package records gain and read noise;
    else the smaller of the median absolute difference of neighbouring pixels
    (robust, but fine structure adds to it) and Poisson noise at 1 ADU per
    photoelectron, never below the rounding noise; ``peak``: the structure, the
    brightest :data:`PEAK_FRACTION` of the sampled pixels above the offset, and
    ``peak_snr`` its SNR (the camera model's noise at that level; without one,
    the frame's noise estimate, at least Poisson at 1 ADU per photoelectron); ``saturated``: fraction of
    pixels at the ceiling (``ceiling``, ADU); ``kurtosis``; ``focus`` (:func:`focus_figure`).

    Frames of one shape and dtype (a bundle from one camera) are measured together, each reduction one
    numpy call over the bundle; what remains at 512² × 6 is mostly reading frames that inference has just
    pushed out of the cache (0.45 ms warm, ~1.1–1.5 ms cold on the dev machine).
    """
    kinds = {(f.shape, f.dtype) for f in frames}
    if len(kinds) > 1:
        return [measure_bundle([f], offset, camera)[0] for f in frames]
    if not frames:
        return []
    shape, dtype = kinds.pop()
    k = _step(shape)
    sub = frames[0][::k, ::k].shape
    sf = np.empty((len(frames), sub[0] * sub[1]), np.float32)
    for c, f in enumerate(frames):
        sf[c].reshape(sub)[...] = f[::k, ::k]  # one strided read and cast per frame
    n = sf.shape[1]
    top = min(n - 1, int(round((1.0 - PEAK_FRACTION) * (n - 1))))
    his, means = sf.max(axis=1), sf.mean(axis=1)  # NaN or Inf in a frame makes one of them non-finite
    figs: list[dict[str, Any]] = [{"max": float(b)} for b in his]
    finite = np.isfinite(his) & np.isfinite(means)
    if not finite.all():
        for c in np.flatnonzero(~finite):
            figs[c].update(finite=False, mean=math.nan, signal=math.nan, std=math.nan, contrast=math.nan,
                           snr=math.nan, peak=math.nan, peak_snr=math.nan, kurtosis=math.nan, focus=math.nan,
                           saturated=0.0, ceiling=None)
        if finite.any():
            ok = [c for c in range(len(frames)) if finite[c]]
            for c, fig in zip(ok, measure_bundle([frames[c] for c in ok], offset, camera), strict=True):
                figs[c] = fig
        return figs
    peaks = np.partition(sf, top, axis=1)[:, top].astype(np.float64) - offset
    # saturation: a known ceiling (camera, dtype), else a pile-up at the frame maximum
    ceilings = []
    if camera is not None and camera.saturation_adu:
        ceilings.append(float(camera.saturation_adu))
    if np.issubdtype(dtype, np.integer):
        ceilings.append(float(np.iinfo(dtype).max))
    ceiling = min(ceilings) if ceilings else None
    sats = [0.0] * len(frames)
    ceils: list[float | None] = [ceiling] * len(frames)
    if ceiling is not None and float(his.max()) >= ceiling:
        sats = list(np.count_nonzero(sf >= np.float32(ceiling), axis=1) / n)
    if camera is None or not camera.saturation_adu:
        for c in range(len(frames)):
            row, hi = sf[c], float(his[c])
            if sats[c] > SATURATED_MAX or not (offset < hi and float(row.min()) < hi):
                continue
            at_max = int(np.count_nonzero(row == np.float32(hi)))
            if at_max > SATURATED_MAX * n:
                edge = np.float32(hi - max(1.0, 0.01 * (hi - offset)))  # the top 1 % of the signal range
                below = int(np.count_nonzero((row < np.float32(hi)) & (row >= edge)))
                if at_max > 2 * below:  # clipped: far more pixels at the maximum than just below it
                    sats[c], ceils[c] = at_max / n, hi
    sf -= means.astype(np.float32)[:, None]
    var = np.vecdot(sf, sf) / n
    sf *= sf  # squared deviations: the 4th moment (sparsity of the structure)
    m4 = np.vecdot(sf, sf) / n
    for c, f in enumerate(frames):
        signal, peak = float(means[c]) - offset, float(peaks[c])
        std = math.sqrt(max(float(var[c]), 0.0))
        kurtosis = float(m4[c]) / std ** 4 if std > 0 else math.nan
        noise, peak_noise = _noise(f, k, signal, peak, camera)
        figs[c].update(finite=True, mean=float(means[c]), signal=signal, std=std, contrast=std / max(signal, noise),
                       snr=signal / noise, noise=noise, peak=peak, peak_snr=peak / peak_noise,
                       saturated=float(sats[c]), ceiling=ceils[c], kurtosis=kurtosis)
    for c, fo in enumerate(focus_figures(frames, [fig["noise"] for fig in figs], k)):
        figs[c]["focus"] = fo
    return figs


def _noise(frame: np.ndarray, k: int, signal: float, peak: float,
           camera: CameraCalibration | None) -> tuple[float, float]:
    """The noise (ADU) at the mean signal and at the structure level (see :func:`measure_bundle`)."""
    if camera is not None and camera.gain_adu_per_e and camera.read_noise_adu is not None:
        r2, g = camera.read_noise_adu ** 2 + _QUANT_VAR, camera.gain_adu_per_e
        return math.sqrt(r2 + g * max(signal, 0.0)), math.sqrt(r2 + g * max(peak, 0.0))
    w, kr = frame.shape[1], 4 * k  # ~4096 neighbour pairs
    a = frame[::kr, 0:w - 1:k]
    b = frame[::kr, 1:w:k]
    wide = np.int32 if np.issubdtype(frame.dtype, np.integer) else np.float32
    d = np.abs(a.astype(wide) - b).ravel()
    mad = float(np.partition(d, d.size // 2)[d.size // 2]) if d.size else math.inf
    # the neighbour spread over-estimates the noise where the sample has fine structure;
    # Poisson noise at 1 ADU per photoelectron bounds it from the other side
    noise = max(min(_MAD_TO_SIGMA * mad, math.sqrt(max(signal, 0.0))), math.sqrt(_QUANT_VAR))
    # at the structure: at least Poisson at 1 ADU per photoelectron (the offset, the darkest pixel, sits a few
    # noise units low, so an empty field's structure would otherwise look like a feature)
    return noise, max(noise, math.sqrt(max(peak, 0.0)))


def focus_figure(frame: np.ndarray, noise: float, k: int | None = None) -> float:
    """Sharpness of a frame: how much of its structure lives at the finest sampled scale (NaN: not measurable).

    ``D(s)`` is the mean squared difference of pixels ``s`` apart (the structure function), along every
    ``4k``-th full-resolution row and column (``k`` the guard stride: ~32 rows and 32 columns of a 512² frame;
    never a strided subsample, which would alias away the fine detail). Columns cost a read of every cache
    line of the frame, but the cheaper alternatives tried (vertical pairs from 3 rows per base row, at the
    base rows or halfway between them) gave a noisier figure at the extremes of the training fields, where the
    guards extrapolate from (the dark-field's least sharp of 441 VS training fields 0.124–0.128 against 0.144
    with full columns), and so a weaker defocus check. Independent noise adds
    ``2 noise²`` at every lag, so it is subtracted; the figure is ``(D(1) − 2n²) / (D(4) − 2n²)``: near 1
    when the structure varies from pixel to pixel (sharp, or sampled coarsely), ~1/16 for structure smooth
    over many pixels (defocus spreads a point over a blur disc of radius ≈ z·NA, and a finer pixel —
    another objective — makes the same structure span more pixels). NaN when the structure at 4 px is not
    above the noise's own contribution (a blank or nearly uniform field: the other checks speak for it).
    Training (:func:`scopecast.models.dataset.calibrate`) records it with this same function.
    """
    return focus_figures([frame], [noise], k)[0]


def focus_figures(frames: list[np.ndarray], noises: list[float], k: int | None = None) -> list[float]:
    """:func:`focus_figure` of frames of one shape, each structure function one numpy call over them all."""
    if not frames:
        return []
    h, w = frames[0].shape
    if k is None:
        k = _step((h, w))
    lag = max(_FOCUS_LAGS)
    if h <= lag or w < 8:
        return [math.nan] * len(frames)
    kr = _FOCUS_ROW_STRIDE * k
    n = len(frames)
    rows = np.empty((n, (h + kr - 1) // kr, w), np.float32)
    cols = np.empty((n, (w + kr - 1) // kr, h), np.float32)
    for c, f in enumerate(frames):  # one read and cast each: every kr-th full row, every kr-th full column
        rows[c] = f[::kr]
        cols[c] = f[:, ::kr].T
    d = []
    for s in _FOCUS_LAGS:
        tot, cnt = 0.0, 0
        for a in (rows, cols):
            diff = (a[:, :, s:] - a[:, :, :-s]).reshape(n, -1)
            tot = tot + np.vecdot(diff, diff)
            cnt += diff.shape[1]
        d.append(tot / cnt)
    out = []
    for c, noise in enumerate(noises):
        n2 = 2.0 * noise * noise
        fine, coarse = float(d[0][c]) - n2, float(d[1][c]) - n2
        if not (math.isfinite(fine) and math.isfinite(coarse)) or coarse <= n2:
            out.append(math.nan)
        else:
            out.append(max(fine, 0.0) / coarse)
    return out


@dataclass
class GuardVerdict:
    """The input checks of one bundle."""

    withhold: bool = False
    reasons: list[str] = field(default_factory=list)
    hard: list[bool] = field(default_factory=list)  # per reason: does it withhold the bundle
    margins: list[float] = field(default_factory=list)  # per passed check: 0 at its threshold, 1 well inside
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    offset: float = 0.0
    offset_source: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    pixel_size_um: float | list[float] | None = None  # the bundle's sampling (header), when it says


def _header_values(values: list[float | None] | None) -> list[float]:
    """The distinct positive finite values the bundle's frame headers give (sorted); [] when none says."""
    return sorted({float(x) for x in (values or []) if x and math.isfinite(x) and x > 0})


def _log_margin(value: float, lo: float, hi: float, factor: float) -> float:
    """1 inside [lo, hi]; falls (in log) to 0 at [lo / factor, hi * factor]; negative beyond."""
    if value <= 0 or lo <= 0:
        return 1.0 if value >= lo else -1.0
    if value < lo:
        return 1.0 - math.log(lo / value) / math.log(factor)
    if value > hi:
        return 1.0 - math.log(value / hi) / math.log(factor)
    return 1.0


class InputGuard:
    """Checks bundles for one package (see the module docstring for the checks)."""

    def __init__(self, inputs: list[str], camera: CameraCalibration | None = None,
                 stats: InputStats | None = None, pixel_size_um: float | None = None) -> None:
        self.inputs = list(inputs)
        self.camera = camera
        self.stats = stats
        self.pixel_size_um = pixel_size_um if pixel_size_um and pixel_size_um > 0 else None
        #: channels whose level the illumination sets, not the specimen: every training field's mean signal at
        #: least 2 x the Rose criterion above the noise (bright-field, DPC; not dark-field or fluorescence, whose
        #: sparse fields are nearly black at any exposure). Only they can show that an exposure is right.
        self.witnesses = {n for n, c in (stats.channels.items() if stats is not None else ())
                          if isinstance(c.snr_min, int | float) and c.snr_min >= 2 * ROSE_SNR}

    @classmethod
    def from_manifest(cls, m: ModelManifest) -> InputGuard:
        return cls(m.inputs, m.camera, m.input_stats, m.pixel_size_um)

    def check(self, frames: list[np.ndarray], pixel_sizes_um: list[float | None] | None = None,
              exposures_ms: list[float | None] | None = None) -> GuardVerdict:
        """Measure and check a bundle (frames in model input order, raw counts).

        ``pixel_sizes_um``: the frames' header pixel sizes (µm at the sample), compared with the
        package's training sampling; ``exposures_ms``: their exposure times, compared with the training
        fields' (``InputStats.exposure_ms``); ``None`` (or 0) where a frame does not say."""
        v = GuardVerdict()
        self._check_sampling(v, pixel_sizes_um)
        self._check_exposure(v, exposures_ms)
        if self.camera is not None:
            v.offset, v.offset_source = float(self.camera.offset_adu), "camera calibration"
        else:
            darkest = min(float(f[::_step(f.shape), ::_step(f.shape)].min()) for f in frames)
            v.offset = min(DEFAULT_OFFSET_ADU, darkest) if math.isfinite(darkest) else DEFAULT_OFFSET_ADU
            v.offset_source = f"assumed: min({DEFAULT_OFFSET_ADU:g} ADU, darkest pixel); package records no camera"
        if self.stats is None:
            v.skipped["training range"] = "the package records no training input statistics"
        for name, f, fig in zip(self.inputs, frames, measure_bundle(frames, v.offset, self.camera), strict=True):
            v.channels[name] = fig
            self._check_channel(v, name, f, fig)
        self._check_specimen(v)
        return v

    def _check_specimen(self, v: GuardVerdict) -> None:
        """A dark channel beside a well-exposed one is dark because of the specimen, not the exposure.

        When a channel that witnesses the exposure (:attr:`witnesses`) is well exposed (its structure clear of
        the noise and within its training range, not saturated), the bundle's exposure is shown to be right. A channel with no structure
        above the noise (the dark-field of an empty region, where nothing scatters) then says ``no specimen``
        instead of ``under-exposed`` (withheld all the same); a channel with structure, but dimmer than any
        training field's (a weakly scattering specimen: a phase grating's dark-field) is ``outside training
        range``: flagged, not withheld. A short exposure dims every channel and stays ``under-exposed``."""
        if self.stats is None:
            return
        bad = ("under-exposed", "saturated", "saturated or flat", "missing", "flat", "non-finite")
        troubled = {r.split(": ", 1)[1].split(" ", 1)[0] for r in v.reasons if r.split(": ", 1)[0] in bad}
        lit = [n for n in self.inputs if n not in troubled and n in v.channels and n in self.witnesses]
        if not lit:
            return
        witness = f"; {', '.join(lit)} well exposed"
        for i, r in enumerate(v.reasons):
            if not r.startswith("under-exposed: "):
                continue
            what = r.removeprefix("under-exposed: ")
            if " SNR " in r:  # the Rose criterion: nothing there
                v.reasons[i] = f"no specimen: {what}{witness}: nothing in the field scatters or fluoresces " \
                               "(an empty region?)"
            else:  # structure, but dimmer than any training field's
                v.reasons[i] = f"outside training range: {what}{witness}: a dimmer specimen than any in training"
                v.hard[i] = False
        v.withhold = any(v.hard)

    def _check_sampling(self, v: GuardVerdict, pixel_sizes_um: list[float | None] | None) -> None:
        """Another objective (or camera binning) than training: the same specimen at another sampling."""
        if self.pixel_size_um is None:
            v.skipped["pixel size"] = "the package records no training pixel size"
            return
        got = _header_values(pixel_sizes_um)
        if not got:
            v.skipped["pixel size"] = "the frames carry no pixel_size_um"
            return
        v.pixel_size_um = got[0] if len(got) == 1 else got
        worst = max(got, key=lambda p: abs(math.log(p / self.pixel_size_um)))
        dev = abs(worst / self.pixel_size_um - 1.0)
        if dev > PIXEL_SIZE_TOLERANCE:
            px = " / ".join(f"{p:.4g}" for p in got)
            self._fail(v, f"outside training range: pixel size {px} µm vs {self.pixel_size_um:.4g} µm trained "
                          "(another objective or binning)", False)
        else:
            v.margins.append(1.0 - dev / PIXEL_SIZE_TOLERANCE)

    def _check_exposure(self, v: GuardVerdict, exposures_ms: list[float | None] | None) -> None:
        """An exposure time a factor of 2 beyond the training fields' (the factor of every training-range
        check): the model never saw that balance of signal and noise. Flagged; a short exposure whose structure
        also drowns is withheld by the under-exposure check."""
        rng = self.stats.exposure_ms if self.stats is not None else None
        if rng is None:
            v.skipped["exposure"] = "the package records no training exposure range"
            return
        got = _header_values(exposures_ms)
        if not got:
            v.skipped["exposure"] = "the frames carry no exposure_ms"
            return
        lo, hi = rng
        m = min(_log_margin(e, lo, hi, RANGE_FACTOR) for e in got)
        if m < 0:
            e = " / ".join(f"{x:.4g}" for x in got)
            self._fail(v, f"outside training range: exposure {e} ms not in {lo / RANGE_FACTOR:.3g}…"
                          f"{hi * RANGE_FACTOR:.3g} ms (training fields {lo:.3g}…{hi:.3g} ms)", False)
        else:
            v.margins.append(m)

    def _fail(self, v: GuardVerdict, reason: str, hard: bool) -> None:
        v.reasons.append(reason)
        v.hard.append(hard)
        v.withhold |= hard

    def _check_channel(self, v: GuardVerdict, name: str, f: np.ndarray, fig: dict[str, Any]) -> None:
        if not fig["finite"]:
            return self._fail(v, f"non-finite: {name} holds NaN or Inf", True)
        if fig["max"] == 0:
            return self._fail(v, f"missing: {name} is all zeros", True)
        if fig["saturated"] > SATURATED_MAX:
            return self._fail(v, f"saturated: {name} {100 * fig['saturated']:.3g} % at {fig['ceiling']:.6g} ADU", True)
        v.margins.append(1.0 - fig["saturated"] / SATURATED_MAX)
        if fig["std"] == 0:
            ceiling_unknown = self.camera is None or not self.camera.saturation_adu
            if ceiling_unknown and fig["max"] > v.offset:  # a clipped frame looks exactly like this
                return self._fail(v, f"saturated or flat: {name} is constant at {fig['max']:.6g} ADU "
                                     "(the package does not record the camera's ceiling)", True)
            return self._fail(v, f"flat: {name} is constant at {fig['max']:.6g}", True)
        st = self.stats.channels.get(name) if self.stats is not None else None
        if fig["peak_snr"] < ROSE_SNR:
            return self._fail(v, f"under-exposed: {name} SNR {fig['peak_snr']:.2g} < {ROSE_SNR:g} at its brightest "
                                 f"{100 * PEAK_FRACTION:g} % ({fig['peak']:.3g} ADU above the offset): nothing stands "
                                 "out of the noise", True)
        v.margins.append(min(1.0, fig["peak_snr"] / ROSE_SNR - 1.0))
        if st is None:
            return None
        if st.peak is None:
            v.skipped["structure level"] = "the package records no training structure level (exported before it " \
                                           "was measured): short exposures are judged by the Rose criterion only"
        else:
            plo, _, phi = st.peak
            m_pk = _log_margin(fig["peak"], plo, math.inf, RANGE_FACTOR)
            if m_pk < 0:
                return self._fail(v, f"under-exposed: {name} brightest {100 * PEAK_FRACTION:g} % at {fig['peak']:.3g} "
                                     f"ADU < {plo / RANGE_FACTOR:.3g} (training fields {plo:.3g}…{phi:.3g} ADU)", True)
            v.margins.append(m_pk)
        lo, _, hi = st.signal
        m_sig = 1.0 - math.log(fig["signal"] / hi) / math.log(RANGE_FACTOR) if fig["signal"] > hi > 0 else 1.0
        if m_sig < 0:
            self._fail(v, f"outside training range: {name} signal {fig['signal']:.3g} ADU > "
                          f"{hi * RANGE_FACTOR:.3g} (training fields {lo:.3g}…{hi:.3g} ADU)", False)
        clo, _, chi = st.contrast
        m_con = _log_margin(fig["contrast"], clo, chi, RANGE_FACTOR)
        if m_con < 0:
            self._fail(v, f"outside training range: {name} contrast {fig['contrast']:.3g} not in "
                          f"{clo / RANGE_FACTOR:.3g}…{chi * RANGE_FACTOR:.3g} "
                          f"(training fields {clo:.3g}…{chi:.3g})", False)
        v.margins += [m_sig, m_con]
        self._check_kurtosis(v, name, fig, st)
        self._check_focus(v, name, fig, st)
        return None

    def _check_kurtosis(self, v: GuardVerdict, name: str, fig: dict[str, Any], st: Any) -> None:
        """Sparsity: isolated point emitters (beads, debris) pile the signal into a few pixels (kurtosis ~ 1 / the
        fraction of the field they cover); a field far sparser than any training field is another specimen."""
        if st.kurtosis is None:
            v.skipped["kurtosis"] = "the package records no training kurtosis (exported before it was measured)"
            return
        kv = fig.get("kurtosis", math.nan)
        if not math.isfinite(kv):
            return
        klo, _, khi = st.kurtosis
        m_k = _log_margin(kv, klo, khi, RANGE_FACTOR)
        if m_k < 0:
            what = "sparser" if kv > khi else "more uniform"
            self._fail(v, f"outside training range: {name} kurtosis {kv:.3g} not in {klo / RANGE_FACTOR:.3g}…"
                          f"{khi * RANGE_FACTOR:.3g} (training fields {klo:.3g}…{khi:.3g}; {what} than any: "
                          "another specimen, e.g. beads?)", False)
        v.margins.append(m_k)

    def _check_focus(self, v: GuardVerdict, name: str, fig: dict[str, Any], st: Any) -> None:
        if st.focus is None:
            v.skipped["focus"] = "the package records no training focus figure (exported before it was measured)"
            return
        f = fig.get("focus", math.nan)
        if not math.isfinite(f):  # no structure above the noise: nothing to judge sharpness on
            return
        lo, hi = focus_limits(st.focus)
        if f < lo:
            self._fail(v, f"outside training range: {name} focus {f:.3g} < {lo:.3g}, blurred by more than "
                          f"{FOCUS_BLUR_PX:g} px beyond the least sharp training field ({st.focus[0]:.3g}): defocus?",
                       False)
        elif hi is not None and f > hi:
            self._fail(v, f"outside training range: {name} focus {f:.3g} > {hi:.3g}, sharper by more than "
                          f"{FOCUS_BLUR_PX:g} px than the sharpest training field ({st.focus[2]:.3g})", False)
        w, (wlo, whi) = focus_width(f), (focus_width(st.focus[2]), focus_width(st.focus[0]))
        # margin: 1 inside the training widths, 0 at the limit (the tolerance added in quadrature)
        if w > whi:
            m = 1.0 - (w * w - whi * whi) / FOCUS_BLUR_PX ** 2
        elif w < wlo:
            m = 1.0 - (wlo * wlo - w * w) / FOCUS_BLUR_PX ** 2
        else:
            m = 1.0
        v.margins.append(m)


@functools.lru_cache(maxsize=1024)  # a pure function; the training ranges' widths recur on every bundle
def focus_width(f: float) -> float:
    """The focus figure as a structure width (px): the ``w`` of a Gaussian autocorrelation ``exp(-s²/2w²)``
    with the same figure, ``(1 - exp(-1/2w²)) / (1 - exp(-16/2w²))`` (1 at w → 0, 1/16 at w → ∞).

    Blurs add in quadrature in this width (a Gaussian blur of σ px turns ``w`` into ``sqrt(w² + 2σ²)``
    for the autocorrelation; the limits below use ``sqrt(w² + FOCUS_BLUR_PX²)``)."""
    f = min(max(f, 1.0 / 16 + 1e-9), 1.0 - 1e-9)
    lo, hi = 1e-3, 1e3  # bisection in log w: f decreases with w
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        a = 1.0 / (2.0 * mid * mid)
        fm = -math.expm1(-a) / -math.expm1(-16.0 * a)
        lo, hi = (mid, hi) if fm > f else (lo, mid)
    return math.sqrt(lo * hi)


def _focus_of_width(w: float) -> float:
    a = 1.0 / (2.0 * w * w)
    return -math.expm1(-a) / -math.expm1(-16.0 * a)


def focus_limits(train: tuple[float, float, float]) -> tuple[float, float | None]:
    """The accepted focus figures for a training range ``[min, median, max]``: the least sharp training field
    blurred by a further ``FOCUS_BLUR_PX`` (in quadrature), and the sharpest sharpened by as much
    (None when that would be sharper than any structure can be)."""
    w_blur = focus_width(train[0])
    w_sharp = focus_width(train[2])
    lo = _focus_of_width(math.sqrt(w_blur * w_blur + FOCUS_BLUR_PX ** 2))
    s2 = w_sharp * w_sharp - FOCUS_BLUR_PX ** 2
    return lo, (_focus_of_width(math.sqrt(s2)) if s2 > 0.25 else None)


class OutputGuard:
    """Clips outputs to the package's physical range and reports what was beyond it."""

    def __init__(self, m: ModelManifest) -> None:
        self.outputs = list(m.outputs)
        r = m.output_range
        self.lo = None if r is None else [np.float32(x) for x in r.min]
        self.hi = None if r is None else [np.float32(x) for x in r.max]
        s = m.output_scaling
        # the background level of a withheld result: model output 0 in physical units
        if s is not None:
            fill = list(s.offset)
        elif r is not None:
            fill = list(r.min)
        else:
            fill = [0.0] * len(self.outputs)
        if r is not None:
            fill = [min(max(f, lo), hi) for f, lo, hi in zip(fill, r.min, r.max, strict=True)]
        self.fill = np.asarray(fill, np.float32)

    def blank(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A withheld result: every pixel of each channel at its background level."""
        y = np.empty(shape, np.float32)
        y[...] = self.fill[:, None, None]
        return y

    def apply(self, y: np.ndarray) -> tuple[dict[str, Any], list[str], float]:
        """Clip ``y`` (C, H, W, physical units) in place; ``(figures, reasons, margin)``.

        Every pixel outside the range is clipped (``clipped``: their fraction); the check counts only pixels
        beyond it by more than ``OUTPUT_RANGE_TOLERANCE`` of the range or ``GIBBS`` of the output's own span
        (``beyond``): a background predicted a few counts under the dark level, or the ringing of an upsampler
        beside a bright edge, is the model's error, not an intensity no specimen gave in training."""
        if self.lo is None or self.hi is None:
            return {"range": None, "clipped": None}, [], 1.0
        clipped, beyond, reasons, margin = {}, {}, [], 1.0
        for c, name in enumerate(self.outputs):
            ch, lo, hi = y[c], self.lo[c], self.hi[c]
            frac = far = 0.0
            tol = np.float32(OUTPUT_RANGE_TOLERANCE * float(hi - lo))
            mn, mx = ch.min(), ch.max()  # once: each is a pass over the output
            if mn < lo or mx > hi:
                # a band-limited reconstruction rings by up to the Gibbs fraction of a step on either side
                span = float(min(mx, hi)) - float(max(mn, lo))
                tol = np.float32(max(float(tol), GIBBS * max(span, 0.0)))
                # one comparison pass per violated side (a pass over the output each)
                frac = float((np.count_nonzero(ch < lo) if mn < lo else 0) +
                             (np.count_nonzero(ch > hi) if mx > hi else 0)) / ch.size
                if mn < lo - tol or mx > hi + tol:
                    far = float((np.count_nonzero(ch < lo - tol) if mn < lo - tol else 0) +
                                (np.count_nonzero(ch > hi + tol) if mx > hi + tol else 0)) / ch.size
                np.clip(ch, lo, hi, out=ch)
            clipped[name], beyond[name] = _r(frac), _r(far)
            margin = min(margin, 1.0 - far / OUTPUT_CLIPPED_MAX)
            if far > OUTPUT_CLIPPED_MAX:
                reasons.append(f"beyond physical range: {name} {100 * far:.3g} % of pixels outside "
                               f"{float(lo):.5g}…{float(hi):.5g} by more than {float(tol):.4g} (clipped)")
        rng = {n: [_r(lo, 6), _r(hi, 6)] for n, lo, hi in zip(self.outputs, self.lo, self.hi, strict=True)}
        return {"range": rng, "clipped": clipped, "beyond": beyond}, reasons, margin


_WIRE_FIGURES = ("signal", "snr", "peak", "peak_snr", "contrast", "kurtosis", "focus", "saturated", "mean", "std")


def trust(verdict: GuardVerdict, output: dict[str, Any] | None = None, output_reasons: list[str] | None = None,
          output_margin: float = 1.0) -> dict[str, Any]:
    """The result header's ``trust`` object (see docs/protocol.md).

    ``ok``: every check passed. ``score``: 0 when any check failed; otherwise
    the smallest margin to a check's threshold (1 = comfortably inside every
    limit). ``reasons``: one short line per failed check. ``guards``: the
    figures behind them.
    """
    reasons = verdict.reasons + list(output_reasons or [])
    ok = not reasons
    margins = verdict.margins + [output_margin]
    score = max(0.0, min(1.0, min(margins))) if ok else 0.0
    out = output if output is not None else {"range": None, "clipped": None}
    skipped = dict(verdict.skipped)
    if out.get("range") is None:
        skipped["output range"] = "the package records no output_range"
    guards: dict[str, Any] = {
        "action": "withheld" if verdict.withhold else "inferred",
        "offset_adu": _r(verdict.offset, 6), "offset_source": verdict.offset_source,
        "pixel_size_um": verdict.pixel_size_um,
        "channels": {n: {k: _r(f[k]) for k in _WIRE_FIGURES if k in f} for n, f in verdict.channels.items()},
        "output": out,
        "skipped": skipped,
        "limits": {"saturated_max": SATURATED_MAX, "rose_snr": ROSE_SNR, "peak_fraction": PEAK_FRACTION,
                   "range_factor": RANGE_FACTOR,
                   "output_clipped_max": OUTPUT_CLIPPED_MAX, "output_range_tolerance": OUTPUT_RANGE_TOLERANCE,
                   "gibbs": GIBBS,
                   "pixel_size_tolerance": PIXEL_SIZE_TOLERANCE,
                   "focus_blur_px": FOCUS_BLUR_PX},
    }
    return {"ok": ok, "score": round(score, 4), "reasons": reasons, "guards": guards}
