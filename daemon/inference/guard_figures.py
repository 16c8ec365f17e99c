"""The figures the input guards measure on a frame (:mod:`.guards` checks them against the training ranges).

Every figure reads a strided ~128×128 subsample, every 16th full row and column (the focus figure) and a
few small windows around the brightest structures (their extent); each reduction is one numpy call over
the bundle. Training measures its fields with the same functions (``models.dataset.channel_stats``), so
a live bundle is compared with its training distribution like with like. What costs at 512² × 6 is
reading a bundle that inference has just pushed out of the cache, and the count of numpy calls; the
arrays they fill are one thread's :class:`_Workspace`, reused bundle after bundle (allocated afresh,
~3 MB of them cost ~740 page faults per bundle, more than the arithmetic: glibc hands blocks this large
back to the system when they are freed). benchmarks/bench_trust.py measures the monitor against the model.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from scopecast.models.manifest import CameraCalibration

__all__ = [
    "EXTENT_LAG_PX", "FOCUS_BLUR_PX", "PEAK_FRACTION", "ROSE_SNR", "SATURATED_MAX", "focus_figure", "focus_figures",
    "focus_limits", "focus_width", "measure", "measure_bundle", "sample_stride", "structure_extents",
]

#: Largest fraction of pixels allowed at the detector's ceiling.
SATURATED_MAX = 1e-3
#: Smallest signal-to-noise ratio of the structure (the brightest ``PEAK_FRACTION`` of the pixels above the
#: offset / the noise at that level) for it to be detectable: the Rose criterion.
ROSE_SNR = 5.0
#: The structure level of a frame: this top fraction of its (sampled) pixels.
PEAK_FRACTION = 1e-3
#: Blur (Gaussian σ, px, added in quadrature to the structure width) beyond the least sharp training field
#: that the focus check accepts: the in-focus PSF's σ (0.21 λ/NA) at Nyquist sampling (pixel λ/4NA) is
#: 0.84 px; defocus beyond the depth of field adds a blur at least that wide (it doubles the PSF's variance).
FOCUS_BLUR_PX = 0.84

_SAMPLES = 128 * 128  # guard statistics: pixels per channel (strided subsample); noise: a quarter of its rows
_QUANT_VAR = 1.0 / 12.0  # rounding to integer ADU adds this variance
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)  # median |x_i - x_i+1| of Gaussian noise -> sigma
_FOCUS_LAGS = (1, 4)  # focus figure: structure at the finest scale over structure at 4 px
#: focus figure: every 4k-th row and column (32 + 32 of a 512² frame)
_FOCUS_ROW_STRIDE = 4
#: Structure extent: the distance (px) from a maximum at which it is measured. 2.4 σ of a Nyquist-sampled
#: in-focus PSF (:data:`FOCUS_BLUR_PX`), where an isolated point has fallen below 6 % of its peak
#: (exp(-2² / 2·0.84²)); a coarser sampling (a smaller σ in pixels) makes that smaller still.
EXTENT_LAG_PX = 2


def sample_stride(shape: tuple[int, ...]) -> int:
    """The stride of the guards' subsample of a frame of ``shape``: ~128×128 pixels (1 up to 128²)."""
    return max(1, int(math.ceil(math.sqrt(shape[0] * shape[1] / _SAMPLES))))


class _Workspace:
    """The arrays the figures of bundles of ``n`` frames of ``shape`` and ``dtype`` fill, at guard stride ``k``:
    one thread's, reused bundle after bundle (:func:`_workspace`). Nothing returned to a caller is a view of
    them."""

    def __init__(self, n: int, shape: tuple[int, int], k: int, dtype: np.dtype) -> None:
        h, w = shape
        sub = (-(-h // k), -(-w // k))
        kr = _FOCUS_ROW_STRIDE * k
        self.sub = np.empty((n, *sub), np.float32)  # the strided subsample of each frame, as float32
        # its copy to partition in place (the structure level): in the frames' own dtype where that holds
        # integers of at most 16 bits (every value exact in float32, so the same order statistics; a 16-bit
        # partition is ~4x faster)
        native = np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2
        self.part = np.empty((n, *sub), dtype if native else np.float32)
        self.native = native
        self.mask = np.empty((n, sub[0] * sub[1]), bool)  # sampled pixels at or above the level
        self.rows = np.empty((n, -(-h // kr), w), np.float32)  # focus figure: every kr-th full row
        self.cols = np.empty((n, h, -(-w // kr)), np.float32)  # ... and column, not transposed
        self.diff = np.empty(max(self.rows.size, self.cols.size), np.float32)  # one lag's differences


_WORKSPACES = threading.local()  # an engine runs a worker thread per model pass: each its own workspaces
_WORKSPACES_KEPT = 4  # per thread: the bundle kinds last measured (a worker sees one; training a few)


def _workspace(n: int, shape: tuple[int, int], k: int, dtype: np.dtype) -> _Workspace:
    """This thread's :class:`_Workspace` for ``n`` frames of ``shape`` and ``dtype`` at stride ``k`` (the last
    :data:`_WORKSPACES_KEPT` kinds are kept)."""
    cache: dict[tuple[Any, ...], _Workspace] | None = getattr(_WORKSPACES, "cache", None)
    if cache is None:
        cache = _WORKSPACES.cache = {}
    key = (n, shape[0], shape[1], k, dtype)
    ws = cache.pop(key, None)
    if ws is None:
        ws = _Workspace(n, shape, k, dtype)
        while len(cache) >= _WORKSPACES_KEPT:
            cache.pop(next(iter(cache)))
    cache[key] = ws  # the most recently used last
    return ws


def measure(frame: np.ndarray, offset: float, camera: CameraCalibration | None = None) -> dict[str, Any]:
    """Guard figures of one frame (raw counts) given the camera ``offset`` (ADU): :func:`measure_bundle`
    of a bundle of one (training measures its fields with this, the engine its bundles with that: the
    same figures)."""
    return measure_bundle([frame], offset, camera)[0]


def measure_bundle(frames: list[np.ndarray], offset: float, camera: CameraCalibration | None = None,
                   ceiling_adu: float | None = None) -> list[dict[str, Any]]:
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
    pixels at the ceiling (``ceiling``, ADU: the lowest of the package's camera's ``saturation_adu``, the
    detector's own ``ceiling_adu`` (its bit depth; the package may come from another camera) and the dtype's
    maximum); ``kurtosis``; ``focus`` (:func:`focus_figure`); ``extent``
    (:func:`structure_extents`).

    Frames of one shape and dtype (a bundle from one camera) are measured together, each reduction one
    numpy call over the bundle. Right after an inference every call runs cold (its data and numpy's own
    code), so the count of calls matters as much as the pixels read; benchmarks/bench_trust.py measures the
    whole monitor as live.
    """
    kinds = {(f.shape, f.dtype) for f in frames}
    if len(kinds) > 1:
        return [measure_bundle([f], offset, camera, ceiling_adu)[0] for f in frames]
    if not frames:
        return []
    shape, dtype = kinds.pop()
    k = sample_stride(shape)
    nf = len(frames)
    ws = _workspace(nf, shape, k, dtype)
    # the focus figure's rows and columns first: the columns touch every cache line of a frame in order, a
    # sweep the strided subsample then reads from the cache (the other way round it reads them cold)
    _focus_gather(frames, k, ws)
    # the subsample: one strided read of every frame, one call; its copy to partition (below) beside it
    if ws.native:
        np.concatenate([f[None, ::k, ::k] for f in frames], out=ws.part)
        np.copyto(ws.sub, ws.part)
    else:
        np.concatenate([f[None, ::k, ::k] for f in frames], out=ws.sub, casting="unsafe")  # any dtype, cast
        np.copyto(ws.part, ws.sub)
    sf = ws.sub.reshape(nf, -1)
    n = sf.shape[1]
    top = min(n - 1, int(round((1.0 - PEAK_FRACTION) * (n - 1))))
    his = np.maximum.reduce(sf, axis=1)  # sf.max(axis=1), sf.mean(axis=1), without their Python wrappers
    means = np.add.reduce(sf, axis=1)
    means /= n  # NaN or Inf in a frame makes its maximum or mean non-finite
    his_l, means_l = his.tolist(), means.tolist()
    figs: list[dict[str, Any]] = [{"max": b} for b in his_l]
    finite = [math.isfinite(b) and math.isfinite(m) for b, m in zip(his_l, means_l, strict=True)]
    if not all(finite):
        for c in range(nf):
            if not finite[c]:
                figs[c].update(finite=False, mean=math.nan, signal=math.nan, std=math.nan, contrast=math.nan,
                               snr=math.nan, peak=math.nan, peak_snr=math.nan, kurtosis=math.nan, focus=math.nan,
                               extent=math.nan, saturated=0.0, ceiling=None)
        if any(finite):
            ok = [c for c in range(nf) if finite[c]]
            for c, fig in zip(ok, measure_bundle([frames[c] for c in ok], offset, camera, ceiling_adu),
                                   strict=True):
                figs[c] = fig
        return figs
    # the structure level: the top-th smallest sampled value (a partition of the copy, in place)
    part = ws.part.reshape(nf, -1)
    part.partition(top, axis=1)
    levels = [float(v) for v in part[:, top].tolist()]
    peaks = [v - offset for v in levels]
    noises = [_noise(f, k, means_l[c] - offset, peaks[c], camera) for c, f in enumerate(frames)]
    # structures on a dark background only: where the field's mean is above half its structure level (bright-
    # field, DPC) the brightest pixels are the illumination, not a structure. Their brightest sampled pixels
    # (the extent figure's) are found before the moments below overwrite the subsample
    clear = [peaks[c] / noises[c][1] >= ROSE_SNR and means_l[c] - offset < 0.5 * peaks[c] for c in range(nf)]
    brightest = [_brightest(sf[c], levels[c], top, ws.mask[c]) if clear[c] else _NONE for c in range(nf)]
    sats, ceils = _saturation(sf, his_l, dtype, offset, camera, ceiling_adu)
    sf -= means[:, None]
    var = np.vecdot(sf, sf) / n
    sf *= sf  # squared deviations: the 4th moment (sparsity of the structure)
    m4 = np.vecdot(sf, sf) / n
    for c, (v, q) in enumerate(zip(var.tolist(), m4.tolist(), strict=True)):
        signal, peak = means_l[c] - offset, peaks[c]
        std = math.sqrt(max(v, 0.0))
        kurtosis = q / std ** 4 if std > 0 else math.nan
        noise, peak_noise = noises[c]
        figs[c].update(finite=True, mean=means_l[c], signal=signal, std=std, contrast=std / max(signal, noise),
                       snr=signal / noise, noise=noise, peak=peak, peak_snr=peak / peak_noise,
                       saturated=float(sats[c]), ceiling=ceils[c], kurtosis=kurtosis)
    for c, fo in enumerate(_focus_of(ws, shape, [fig["noise"] for fig in figs])):
        figs[c]["focus"] = fo
    for c, e in enumerate(structure_extents(frames, brightest, ws.sub.shape[2], k, offset, clear)):
        figs[c]["extent"] = e
    return figs


def _saturation(sf: np.ndarray, his: list[float], dtype: np.dtype, offset: float, camera: CameraCalibration | None,
                ceiling_adu: float | None) -> tuple[list[float], list[float | None]]:
    """Each frame's saturated fraction of the subsample ``sf`` (``his``: its maxima) and the ceiling it was
    counted at: a known ceiling (:func:`_ceiling`), else a pile-up at the frame maximum."""
    nf, n = sf.shape
    ceiling = _ceiling(dtype, camera.saturation_adu if camera is not None else None, ceiling_adu)
    sats = [0.0] * nf
    ceils: list[float | None] = [ceiling] * nf
    if ceiling is not None and max(his) >= ceiling:
        sats = list(np.count_nonzero(sf >= np.float32(ceiling), axis=1) / n)
    if camera is None or not camera.saturation_adu:
        for c in range(nf):
            row, hi = sf[c], his[c]
            if sats[c] > SATURATED_MAX or not (offset < hi and float(row.min()) < hi):
                continue
            at_max = int(np.count_nonzero(row == np.float32(hi)))
            if at_max > SATURATED_MAX * n:
                edge = np.float32(hi - max(1.0, 0.01 * (hi - offset)))  # the top 1 % of the signal range
                below = int(np.count_nonzero((row < np.float32(hi)) & (row >= edge)))
                if at_max > 2 * below:  # clipped: far more pixels at the maximum than just below it
                    sats[c], ceils[c] = at_max / n, hi
    return sats, ceils


@functools.lru_cache(maxsize=64)
def _ceiling(dtype: np.dtype, saturation_adu: float | None, ceiling_adu: float | None) -> float | None:
    """The lowest known ceiling (ADU): the package's camera's ``saturation_adu``, the detector's
    ``ceiling_adu`` and an integer dtype's maximum; None when none is known."""
    ceilings = [float(x) for x in (saturation_adu, ceiling_adu) if x]
    if np.issubdtype(dtype, np.integer):
        ceilings.append(float(np.iinfo(dtype).max))
    return min(ceilings) if ceilings else None


_NONE = np.empty(0, np.intp)


def _brightest(row: np.ndarray, level: float, top: int, mask: np.ndarray) -> np.ndarray:
    """The brightest :data:`PEAK_FRACTION` of a frame's subsample ``row``: the indices of its ``n - top``
    largest values, ``level`` the ``top``-th smallest (``mask``: a buffer of ``row``'s size). When exactly
    ``n - top`` values reach the level they are the set; when more do (ties at the level), which of the tied
    ones count is ``np.argpartition``'s choice, so it makes it, on this row alone (it chooses as on the
    bundle's rows together), as the figure was first defined."""
    np.greater_equal(row, np.float32(level), out=mask)
    if np.count_nonzero(mask) == row.size - top:
        return np.flatnonzero(mask)
    return np.argpartition(row, top)[top:]


def structure_extents(frames: list[np.ndarray], brightest: Sequence[np.ndarray], sub_w: int, k: int,
                      offset: float, clear: list[bool]) -> list[float]:
    """How far the brightest structures of each frame reach: ~0.1 for isolated points (beads), 0.4–1 for cells.

    Around each of the brightest sampled pixels (``brightest[c]``: indices into frame ``c``'s ``k``-strided
    subsample of row length ``sub_w``) the full-resolution maximum within ``k`` px is found (a stride can miss
    a point's centre); the figure of a maximum is how much of its level above the ``offset`` is left
    :data:`EXTENT_LAG_PX` px away, along the axis or diagonal where the structure persists most (the mean of
    both sides): a point has fallen to the background in every direction, a membrane persists along itself, a
    cell body or a blurred field all around. The frame's figure is the median over its distinct maxima (at
    least 4, else NaN); NaN where ``clear`` is false (no structure above the noise: the other checks speak
    for that frame; or a bright background). Windows at the frame's edge are moved inside it. A frame costs
    ~8 small numpy calls (two gathers: the windows, and 9 pixels at each maximum).
    """
    out = [math.nan] * len(frames)
    for c, f in enumerate(frames):
        if not clear[c] or len(brightest[c]) == 0:
            continue
        h, w = f.shape
        lo = k + EXTENT_LAG_PX
        if min(h, w) <= 2 * lo:
            continue
        window, around = _extent_offsets(w, k)
        centre = _extent_centres(h, w, k, sub_w)[brightest[c]]
        flat = f.reshape(-1)
        best = centre + window[flat[centre[:, None] + window].argmax(axis=1)]  # each window's maximum
        peak = sorted(set(best.tolist()))  # the distinct maxima
        if len(peak) < 4:
            continue
        # the maximum, then both sides of the row, the column and both diagonals. A maximum is at least the
        # brightest 0.1 %'s level, far above the offset, unless its window was moved in from the frame's edge:
        # a floor of 1 ADU keeps such a one from dividing by zero. ~17 maxima: in Python, not numpy calls
        at = flat[np.add.outer(peak, around)].tolist()
        r = []
        for row in at:
            a = [float(v) - offset for v in row]
            r.append(0.5 * max(a[1] + a[2], a[3] + a[4], a[5] + a[6], a[7] + a[8]) / max(a[0], 1.0))
        r.sort()
        half = len(r) // 2
        out[c] = r[half] if len(r) % 2 else 0.5 * (r[half - 1] + r[half])  # the median
    return out


@functools.lru_cache(maxsize=16)
def _extent_centres(h: int, w: int, k: int, sub_w: int) -> np.ndarray:
    """For each pixel of a ``k``-strided subsample (row length ``sub_w``) of an ``h`` × ``w`` frame, the flat
    index of its full-resolution pixel, moved inside the frame by the extent's search window and lag."""
    lo = k + EXTENT_LAG_PX
    sy, sx = np.divmod(np.arange(-(-h // k) * sub_w), sub_w)
    centres = np.clip(sy * k, lo, h - 1 - lo) * w + np.clip(sx * k, lo, w - 1 - lo)
    centres.flags.writeable = False
    return centres


@functools.lru_cache(maxsize=64)
def _extent_offsets(w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat index offsets in a frame of row length ``w``: the (2k+1)² search window, and a maximum with both
    sides of the row, the column and both diagonals at :data:`EXTENT_LAG_PX`."""
    r = np.arange(-k, k + 1)
    window = (r[:, None] * w + r[None, :]).ravel()
    d = EXTENT_LAG_PX
    dy = np.array([0, 0, 0, d, -d, d, -d, d, -d])
    dx = np.array([0, d, -d, 0, 0, d, -d, -d, d])
    return window, dy * w + dx


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
        k = sample_stride((h, w))
    ws = _workspace(len(frames), (h, w), k, frames[0].dtype)
    _focus_gather(frames, k, ws)
    return _focus_of(ws, (h, w), noises)


def _focus_measurable(shape: tuple[int, ...]) -> bool:
    return shape[0] > max(_FOCUS_LAGS) and shape[1] >= 8


def _focus_gather(frames: list[np.ndarray], k: int, ws: _Workspace) -> None:
    """Every ``4k``-th full row and column of each frame into ``ws.rows`` and ``ws.cols``, as float32: one
    read and cast each, one call for all frames (nothing when the frames are too small for the figure)."""
    if not _focus_measurable(frames[0].shape):
        return
    kr = _FOCUS_ROW_STRIDE * k
    np.concatenate([f[None, :, ::kr] for f in frames], out=ws.cols, casting="unsafe")  # not transposed
    np.concatenate([f[None, ::kr] for f in frames], out=ws.rows, casting="unsafe")


def _focus_of(ws: _Workspace, shape: tuple[int, int], noises: list[float]) -> list[float]:
    """The focus figures from the rows and columns :func:`_focus_gather` put in ``ws`` (``shape``: the
    frames'; ``noises``: theirs, ADU)."""
    if not _focus_measurable(shape):
        return [math.nan] * len(noises)
    h, w = shape
    rows, cols = ws.rows, ws.cols
    n, r, nc = len(noises), rows.shape[1], cols.shape[2]
    d = []
    for s in _FOCUS_LAGS:  # pairs along the rows, then down the columns (axis 1: no strided write)
        a = np.subtract(rows[:, :, s:], rows[:, :, :-s], out=ws.diff[:n * r * (w - s)].reshape(n, r, w - s))
        a = a.reshape(n, -1)
        da = np.vecdot(a, a)
        b = np.subtract(cols[:, s:], cols[:, :-s], out=ws.diff[:n * (h - s) * nc].reshape(n, h - s, nc))
        b = b.reshape(n, -1)
        d.append(((da + np.vecdot(b, b)) / (a.shape[1] + b.shape[1])).tolist())
    out = []
    for c, noise in enumerate(noises):
        n2 = 2.0 * noise * noise
        fine, coarse = d[0][c] - n2, d[1][c] - n2
        if not (math.isfinite(fine) and math.isfinite(coarse)) or coarse <= n2:
            out.append(math.nan)
        else:
            out.append(max(fine, 0.0) / coarse)
    return out


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
