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
                            ceiling (the lowest of camera ``saturation_adu``, the
                            frame's ``extra.bit_depth`` maximum and the dtype maximum,
                            or a pile-up at the frame maximum when none is known)
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
                            fields' exposures (the header's ``exposure_ms``), or the
                            brightest structures are isolated points: their extent
                            (:func:`structure_extents`) below ½ × the training fields'
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

The figures themselves, and what they cost, are :mod:`.guard_figures`'s;
benchmarks/bench_trust.py measures the whole monitor against the model's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scopecast.models.manifest import CameraCalibration, InputStats, ModelManifest

from .guard_figures import (
    EXTENT_LAG_PX,
    FOCUS_BLUR_PX,
    PEAK_FRACTION,
    ROSE_SNR,
    SATURATED_MAX,
    focus_figure,
    focus_figures,
    focus_limits,
    focus_width,
    measure,
    measure_bundle,
    sample_stride,
    structure_extents,
)

__all__ = [
    "DEFAULT_OFFSET_ADU", "FOCUS_BLUR_PX", "GIBBS", "OUTPUT_CLIPPED_MAX", "OUTPUT_RANGE_TOLERANCE",
    "PEAK_FRACTION", "PIXEL_SIZE_TOLERANCE", "RANGE_FACTOR", "ROSE_SNR", "SATURATED_MAX", "EXTENT_LAG_PX",
    "MOVED_XY_PX", "MOVED_Z_UM",
    "GuardVerdict", "InputGuard", "OutputGuard", "trust",
    # the figures (guard_figures), re-exported
    "focus_figure", "focus_figures", "focus_limits", "focus_width", "measure", "measure_bundle", "structure_extents",
]

#: How far (as a factor) beyond the training fields' range an input may lie.
RANGE_FACTOR = 2.0
#: Largest fraction of output pixels allowed beyond the physical range (they are clipped).
OUTPUT_CLIPPED_MAX = 1e-3
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
#: A bundle's frames are one field only if the stage stayed within this many pixels (XY) of where the first was
#: taken: the model combines its channels pixel by pixel (a DPC pair is a difference of two frames), and
#: training bundles never moved at all. A stage moved during live (by a client, a trigger, or the joystick)
#: lands between two frames of a bundle; its result would mix two fields.
MOVED_XY_PX = 1.0
#: ... and within this far in Z (µm): a focus step between channels; training bundles were taken at one focus.
MOVED_Z_UM = 0.5


def _r(v: float, digits: int = 4) -> float | None:
    """A finite, rounded float for the wire (None for NaN/Inf)."""
    v = float(v)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")


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
              exposures_ms: list[float | None] | None = None,
              positions_um: list[tuple[float | None, float | None, float | None]] | None = None,
              ceilings_adu: list[float | None] | None = None) -> GuardVerdict:
        """Measure and check a bundle (frames in model input order, raw counts).

        ``pixel_sizes_um``: the frames' header pixel sizes (µm at the sample), compared with the
        package's training sampling; ``exposures_ms``: their exposure times, compared with the training
        fields' (``InputStats.exposure_ms``); ``positions_um``: their stage positions (x, y, z), which must
        agree (:data:`MOVED_XY_PX`, :data:`MOVED_Z_UM`); ``ceilings_adu``: the level at which the detector that
        took each frame clips (its bit depth's maximum), a ceiling for the saturation check beside the package's
        camera's; ``None`` (or 0) where a frame does not say."""
        v = GuardVerdict()
        self._check_moved(v, positions_um, pixel_sizes_um)
        self._check_sampling(v, pixel_sizes_um)
        self._check_exposure(v, exposures_ms)
        if self.camera is not None:
            v.offset, v.offset_source = float(self.camera.offset_adu), "camera calibration"
        else:
            darkest = min(float(f[::sample_stride(f.shape), ::sample_stride(f.shape)].min()) for f in frames)
            v.offset = min(DEFAULT_OFFSET_ADU, darkest) if math.isfinite(darkest) else DEFAULT_OFFSET_ADU
            v.offset_source = f"assumed: min({DEFAULT_OFFSET_ADU:g} ADU, darkest pixel); package records no camera"
        ceiling = min((c for c in ceilings_adu or () if c), default=None)
        if self.stats is None:
            v.skipped["training range"] = "the package records no training input statistics"
        figures = measure_bundle(frames, v.offset, self.camera, ceiling)
        for name, f, fig in zip(self.inputs, frames, figures, strict=True):
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

    def _check_moved(self, v: GuardVerdict, positions_um: list[tuple[float | None, ...]] | None,
                     pixel_sizes_um: list[float | None] | None) -> None:
        """The stage moved between the bundle's frames: they show different fields (withheld)."""
        if not positions_um or len(positions_um) < 2:
            return

        def spread(axis: int) -> float:
            vals = [float(p[axis]) for p in positions_um if p[axis] is not None and math.isfinite(p[axis])]
            return max(vals) - min(vals) if vals else 0.0

        px = (_header_values(pixel_sizes_um) or [self.pixel_size_um or 1.0])[0]
        dxy, dz = math.hypot(spread(0), spread(1)), spread(2)
        if dxy > MOVED_XY_PX * px or dz > MOVED_Z_UM:
            self._fail(v, f"moved: the stage moved during the bundle (xy {dxy:.3g} µm, z {dz:.3g} µm): its frames "
                          "show different fields", True)

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
        self._check_extent(v, name, fig, st)
        self._check_focus(v, name, fig, st)
        return None

    def _check_extent(self, v: GuardVerdict, name: str, fig: dict[str, Any], st: Any) -> None:
        """Point sources: the brightest structures are isolated spots of the optics' own size (sub-resolution
        beads, not the extended structures of cells), which no training field was made of. Only the lower side:
        the figure is bounded by ~1 (structure persisting everywhere), which twice the largest training field's
        never reaches."""
        e = fig.get("extent", math.nan)
        if not math.isfinite(e):  # no structure above the noise, a bright background, too few maxima inside
            return
        if st.extent is None:
            v.skipped["extent"] = "the package records no training structure extent (exported before it was " \
                                  "measured)"
            return
        lo, _, hi = st.extent
        m_e = _log_margin(e, lo, math.inf, RANGE_FACTOR)
        if m_e < 0:
            self._fail(v, f"outside training range: {name} extent {e:.2g} < {lo / RANGE_FACTOR:.2g} (training "
                          f"fields {lo:.2g}…{hi:.2g}): its brightest structures are isolated points, fallen to "
                          f"{e:.0%} of their peak {EXTENT_LAG_PX} px away in every direction (beads? "
                          "sub-resolution objects)", False)
        v.margins.append(m_e)

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
        self._mask: np.ndarray | None = None  # :meth:`_clip_side`'s comparisons (a worker's: one thread's)

    def blank(self, shape: tuple[int, int, int]) -> np.ndarray:
        """A withheld result: every pixel of each channel at its background level."""
        y = np.empty(shape, np.float32)
        y[...] = self.fill[:, None, None]
        return y

    def apply(self, y: np.ndarray, extremes: np.ndarray | None = None) -> tuple[dict[str, Any], list[str], float]:
        """Clip ``y`` (C, H, W, physical units) in place; ``(figures, reasons, margin)``.

        ``extremes``: each channel's ``[min, max]`` when the caller has them (the worker's finite check
        measures them; ``(C, 2)``), else measured here. Within the range that is the whole check; otherwise,
        per violated side, one pass counts the pixels far outside (only when the extreme is), one the pixels
        outside, and those alone are set to the limit (:meth:`_clip_side`: what ``np.clip`` gives, without
        rewriting the channel).
        Every pixel outside the range is clipped (``clipped``: their fraction); the check counts only pixels
        beyond it by more than ``OUTPUT_RANGE_TOLERANCE`` of the range or ``GIBBS`` of the output's own span
        (``beyond``): a background predicted a few counts under the dark level, or the ringing of an upsampler
        beside a bright edge, is the model's error, not an intensity no specimen gave in training."""
        if self.lo is None or self.hi is None:
            return {"range": None, "clipped": None}, [], 1.0
        if extremes is None:
            extremes = np.stack([y.min(axis=(1, 2)), y.max(axis=(1, 2))], axis=1)
        clipped, beyond, reasons, margin = {}, {}, [], 1.0
        for c, name in enumerate(self.outputs):
            ch, lo, hi = y[c], self.lo[c], self.hi[c]
            frac = far = 0.0
            tol = np.float32(OUTPUT_RANGE_TOLERANCE * float(hi - lo))
            mn, mx = np.float32(extremes[c, 0]), np.float32(extremes[c, 1])
            if mn < lo or mx > hi:
                # a band-limited reconstruction rings by up to the Gibbs fraction of a step on either side
                span = float(min(mx, hi)) - float(max(mn, lo))
                tol = np.float32(max(float(tol), GIBBS * max(span, 0.0)))
                n_far, n_out = 0, 0
                for side, level, worst in ((np.less, lo, mn), (np.greater, hi, mx)):
                    n_far_side, n_out_side = self._clip_side(ch, side, level, worst, tol)
                    n_far, n_out = n_far + n_far_side, n_out + n_out_side
                frac, far = n_out / ch.size, n_far / ch.size
            clipped[name], beyond[name] = _r(frac), _r(far)
            margin = min(margin, 1.0 - far / OUTPUT_CLIPPED_MAX)
            if far > OUTPUT_CLIPPED_MAX:
                reasons.append(f"beyond physical range: {name} {100 * far:.3g} % of pixels outside "
                               f"{float(lo):.5g}…{float(hi):.5g} by more than {float(tol):.4g} (clipped)")
        rng = {n: [_r(lo, 6), _r(hi, 6)] for n, lo, hi in zip(self.outputs, self.lo, self.hi, strict=True)}
        return {"range": rng, "clipped": clipped, "beyond": beyond}, reasons, margin

    def _clip_side(self, ch: np.ndarray, side: Any, level: np.float32, worst: np.float32,
                   tol: np.float32) -> tuple[int, int]:
        """Clip one side of channel ``ch`` in place: ``side`` (``np.less`` for the lower limit, ``np.greater``
        for the upper) tells the pixels beyond ``level``; ``worst``, the channel's extreme on that side, skips
        the passes it cannot need. Returns how many pixels were beyond ``level`` by more than ``tol`` and how
        many beyond it at all; those are set to ``level`` (exactly ``np.clip``'s result on that side)."""
        if not side(worst, level):
            return 0, 0
        beyond = level - tol if side is np.less else level + tol
        mask = self._mask
        if mask is None or mask.shape != ch.shape:  # reused bundle after bundle (a 1024² one is 1 MB)
            mask = self._mask = np.empty(ch.shape, bool)
        n_far = 0
        if side(worst, beyond):
            side(ch, beyond, out=mask)
            n_far = int(np.count_nonzero(mask))
        side(ch, level, out=mask)
        n_out = int(np.count_nonzero(mask))
        np.copyto(ch, level, where=mask)
        return n_far, n_out


_WIRE_FIGURES = ("signal", "snr", "peak", "peak_snr", "contrast", "kurtosis", "focus", "extent", "saturated", "mean",
                 "std")


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
                   "focus_blur_px": FOCUS_BLUR_PX, "moved_xy_px": MOVED_XY_PX, "moved_z_um": MOVED_Z_UM},
    }
    return {"ok": ok, "score": round(score, 4), "reasons": reasons, "guards": guards}
