"""The input guards' figures are what they were before their cost was cut (issue 11: the monitor's overhead).

``guard_figures.measure_bundle`` now fills reused per-thread buffers, partitions a copy of the subsample
instead of arg-partitioning it, and takes fewer numpy calls. Every figure must stay what the straightforward
formulation below (the one the training ranges and validated thresholds were measured with) gives, bit for
bit: on bundles from the simulated scope in each of the trust benchmark's cases, and on synthetic edge cases.
The output guard's clipping must stay ``np.clip``'s, its counts the full comparisons'. A performance change
needs no failing test on the old code; this one fails as soon as a figure moves.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest

from scopecast.daemon.inference import guard_figures as gf
from scopecast.daemon.inference.guards import GIBBS, OUTPUT_RANGE_TOLERANCE, OutputGuard
from scopecast.models.manifest import CameraCalibration, ModelManifest, Normalization, OutputRange
from tests.conftest import small_cfg

CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
CAMERA = CameraCalibration(offset_adu=100.0, read_noise_adu=0.85, gain_adu_per_e=0.49, saturation_adu=15100.0)


# ----------------------------------------------------------------------------- the reference figures
def _reference(frames: list[np.ndarray], offset: float, camera: CameraCalibration | None,
               ceiling_adu: float | None = None) -> list[dict[str, Any]]:
    """The figures as first written (per bundle, fresh arrays, ``np.argpartition`` for the brightest)."""
    if len({(f.shape, f.dtype) for f in frames}) > 1:
        return [_reference([f], offset, camera, ceiling_adu)[0] for f in frames]
    k = gf.sample_stride(frames[0].shape)
    sub = frames[0][::k, ::k].shape
    sf = np.empty((len(frames), sub[0] * sub[1]), np.float32)
    for c, f in enumerate(frames):
        sf[c].reshape(sub)[...] = f[::k, ::k]
    n = sf.shape[1]
    top = min(n - 1, int(round((1.0 - gf.PEAK_FRACTION) * (n - 1))))
    his, means = sf.max(axis=1), sf.mean(axis=1)
    figs: list[dict[str, Any]] = [{"max": float(b)} for b in his]
    finite = np.isfinite(his) & np.isfinite(means)
    if not finite.all():
        for c in np.flatnonzero(~finite):
            figs[c].update(finite=False, mean=math.nan, signal=math.nan, std=math.nan, contrast=math.nan,
                           snr=math.nan, peak=math.nan, peak_snr=math.nan, kurtosis=math.nan, focus=math.nan,
                           extent=math.nan, saturated=0.0, ceiling=None)
        ok = [c for c in range(len(frames)) if finite[c]]
        for c, fig in zip(ok, _reference([frames[c] for c in ok], offset, camera, ceiling_adu) if ok else [],
                          strict=True):
            figs[c] = fig
        return figs
    order = np.argpartition(sf, top, axis=1)
    peaks = np.take_along_axis(sf, order[:, top:top + 1], axis=1)[:, 0].astype(np.float64) - offset
    brightest = order[:, top:]
    ceilings = [float(x) for x in ((camera.saturation_adu if camera else None), ceiling_adu) if x]
    if np.issubdtype(frames[0].dtype, np.integer):
        ceilings.append(float(np.iinfo(frames[0].dtype).max))
    ceiling = min(ceilings) if ceilings else None
    sats, ceils = [0.0] * len(frames), [ceiling] * len(frames)
    if ceiling is not None and float(his.max()) >= ceiling:
        sats = list(np.count_nonzero(sf >= np.float32(ceiling), axis=1) / n)
    if camera is None or not camera.saturation_adu:
        for c in range(len(frames)):
            row, hi = sf[c], float(his[c])
            if sats[c] > gf.SATURATED_MAX or not (offset < hi and float(row.min()) < hi):
                continue
            at_max = int(np.count_nonzero(row == np.float32(hi)))
            if at_max > gf.SATURATED_MAX * n:
                edge = np.float32(hi - max(1.0, 0.01 * (hi - offset)))
                below = int(np.count_nonzero((row < np.float32(hi)) & (row >= edge)))
                if at_max > 2 * below:
                    sats[c], ceils[c] = at_max / n, hi
    sf -= means.astype(np.float32)[:, None]
    var = np.vecdot(sf, sf) / n
    sf *= sf
    m4 = np.vecdot(sf, sf) / n
    for c, f in enumerate(frames):
        signal, peak = float(means[c]) - offset, float(peaks[c])
        std = math.sqrt(max(float(var[c]), 0.0))
        noise, peak_noise = gf._noise(f, k, signal, peak, camera)
        figs[c].update(finite=True, mean=float(means[c]), signal=signal, std=std, contrast=std / max(signal, noise),
                       snr=signal / noise, noise=noise, peak=peak, peak_snr=peak / peak_noise,
                       saturated=float(sats[c]), ceiling=ceils[c],
                       kurtosis=float(m4[c]) / std ** 4 if std > 0 else math.nan)
    for c, fo in enumerate(_reference_focus(frames, [fig["noise"] for fig in figs], k)):
        figs[c]["focus"] = fo
    clear = [fig["peak_snr"] >= gf.ROSE_SNR and fig["signal"] < 0.5 * fig["peak"] for fig in figs]
    for c, f in enumerate(frames):
        figs[c]["extent"] = _reference_extent(f, brightest[c], sub[1], k, offset) if clear[c] else math.nan
    return figs


def _reference_focus(frames: list[np.ndarray], noises: list[float], k: int) -> list[float]:
    h, w = frames[0].shape
    if h <= 4 or w < 8:
        return [math.nan] * len(frames)
    kr, n = 4 * k, len(frames)
    rows = np.stack([f[::kr] for f in frames]).astype(np.float32)
    cols = np.stack([f[:, ::kr] for f in frames]).astype(np.float32)
    d = []
    for s in (1, 4):
        a = (rows[:, :, s:] - rows[:, :, :-s]).reshape(n, -1)
        b = (cols[:, s:] - cols[:, :-s]).reshape(n, -1)
        d.append((np.vecdot(a, a) + np.vecdot(b, b)) / (a.shape[1] + b.shape[1]))
    out = []
    for c, noise in enumerate(noises):
        n2 = 2.0 * noise * noise
        fine, coarse = float(d[0][c]) - n2, float(d[1][c]) - n2
        ok = math.isfinite(fine) and math.isfinite(coarse) and coarse > n2
        out.append(max(fine, 0.0) / coarse if ok else math.nan)
    return out


def _reference_extent(f: np.ndarray, brightest: np.ndarray, sub_w: int, k: int, offset: float) -> float:
    h, w = f.shape
    lo = k + gf.EXTENT_LAG_PX
    if min(h, w) <= 2 * lo:
        return math.nan
    window, around = gf._extent_offsets(w, k)
    sy, sx = np.divmod(brightest, sub_w)
    centre = np.clip(sy * k, lo, h - 1 - lo) * w + np.clip(sx * k, lo, w - 1 - lo)
    flat = f.reshape(-1)
    idx = centre[:, None] + window
    peak = np.unique(np.take_along_axis(idx, flat[idx].argmax(axis=1)[:, None], axis=1))
    if peak.size < 4:
        return math.nan
    at = flat[peak[:, None] + around].astype(np.float64) - offset
    r = np.sort(0.5 * (at[:, 1::2] + at[:, 2::2]).max(axis=1) / np.maximum(at[:, 0], 1.0))
    half = r.size // 2
    return float(r[half] if r.size % 2 else 0.5 * (r[half - 1] + r[half]))


def _assert_same(frames: list[np.ndarray], offset: float, camera: CameraCalibration | None,
                 ceiling_adu: float | None = None, what: str = "") -> None:
    got, want = gf.measure_bundle(frames, offset, camera, ceiling_adu), _reference(frames, offset, camera, ceiling_adu)
    for c, (g, r) in enumerate(zip(got, want, strict=True)):
        assert g.keys() == r.keys(), (what, c)
        for key in r:
            a, b = g[key], r[key]
            same = (a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
            assert same, f"{what} frame {c}: {key} {a!r} != {b!r} (as first measured)"


# ----------------------------------------------------------------------------- bundles from the simulated scope
@pytest.fixture(scope="module")
def sim_bundles(tmp_path_factory):
    """The trust benchmark's cases at 256², both live tiers' channels: in distribution (cells, epithelium,
    sparse, debris), held out (fibroblasts, clusters, filaments), blank, beads, saturated, under-exposed,
    defocus 10 and 20 µm, the 4x and 20x objectives."""
    from scopecast.daemon.backend import load_mmcore_backend

    backend = load_mmcore_backend(small_cfg(tmp_path_factory.mktemp("guard-parity"), 256))
    cases = [("cells", 10.0, 0.0, "10x"), ("epithelium", 10.0, 0.0, "10x"), ("sparse", 10.0, 0.0, "10x"),
             ("debris", 10.0, 0.0, "10x"), ("fibroblasts", 10.0, 0.0, "10x"), ("clusters", 10.0, 0.0, "10x"),
             ("filaments", 10.0, 0.0, "10x"), ("blank", 10.0, 0.0, "10x"), ("beads", 10.0, 0.0, "10x"),
             ("cells", 64.0, 0.0, "10x"), ("cells", 0.5, 0.0, "10x"), ("cells", 10.0, 10.0, "10x"),
             ("cells", 10.0, -20.0, "10x"), ("cells", 10.0, 0.0, "4x"), ("cells", 10.0, 0.0, "20x")]

    def snap(channel: str, exposure_ms: float) -> np.ndarray:
        backend.set_channel(channel)
        return backend.snap(exposure_ms=exposure_ms).data.copy()

    out = []
    try:
        for i, (kind, exposure, z, objective) in enumerate(cases):
            backend.core.setProperty("Scope", "Sample", kind)
            backend.set_objective(objective)
            backend.move_um(x=-1500.0 + 211.0 * i, y=700.0 - 97.0 * i, z=z)
            vs = [snap(ch, exposure) for ch in CYCLE]
            sr = [snap("Membrane", exposure * (40.0 if exposure > 10 else 1.0))]
            out.append((f"{kind} {exposure:g} ms z {z:g} {objective}", vs, sr))
    finally:
        backend.close()
    return out


def test_figures_on_the_benchmark_cases_are_unchanged(sim_bundles):
    for what, vs, sr in sim_bundles:
        for camera in (CAMERA, None):
            offset = CAMERA.offset_adu if camera else 100.0
            _assert_same(vs, offset, camera, what=f"{what}, virtual-staining channels")
            _assert_same(sr, offset, camera, what=f"{what}, Membrane")
            _assert_same(vs[-1:], offset, camera, 4095.0, what=f"{what}, DF, a 12-bit detector")


# ----------------------------------------------------------------------------- synthetic edge cases
def _synthetic(kind: str, shape: tuple[int, int], dtype: Any, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(n):
        x = rng.poisson(rng.uniform(0.5, 3000.0), shape).astype(np.float64) + 100.0
        if kind == "flat":
            x[:] = 100.0 + 7 * c
        elif kind == "saturated":
            x = np.minimum(x * 10.0, 15100.0)
        elif kind == "pile-up":
            x = np.minimum(x, np.percentile(x, 99.0))
        elif kind == "beads":
            x[:] = rng.poisson(2.0, shape) + 100.0
            x[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = 5000.0
        elif kind == "ties":  # few grey levels: the brightest 0.1 % tied at their level
            x = 100.0 + rng.integers(0, 6, shape) * 50.0
        elif kind == "bright ties":  # points and blobs of three levels on a dark field: tied structure levels
            x = rng.poisson(1.0, shape) + 100.0
            for _ in range(max(1, shape[0] * shape[1] // 400)):
                y0, x0, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), int(rng.integers(0, 3))
                x[max(0, y0 - r):y0 + r + 1, max(0, x0 - r):x0 + r + 1] = 100.0 + 1000.0 * rng.integers(1, 4)
        elif kind == "nan" and c == 0:
            x[shape[0] // 2, shape[1] // 3] = np.nan
        elif kind == "zeros":
            x[:] = 0.0
        if np.issubdtype(dtype, np.integer):
            x = np.clip(np.nan_to_num(x), 0, np.iinfo(dtype).max)
        frames.append(x.astype(dtype))
    return frames


@pytest.mark.parametrize("kind", ["cells", "flat", "saturated", "pile-up", "beads", "ties", "bright ties", "nan",
                                  "zeros"])
@pytest.mark.parametrize("shape", [(512, 512), (300, 411), (17, 33), (5, 7), (1, 1)])
def test_figures_on_synthetic_edge_cases_are_unchanged(kind, shape):
    for i, (dtype, n) in enumerate([(np.uint16, 6), (np.uint16, 1), (np.float32, 2), (np.float64, 1), (np.uint8, 3)]):
        if kind == "nan" and np.issubdtype(dtype, np.integer):
            continue
        frames = _synthetic(kind, shape, dtype, n, seed=hash((kind, shape, i)) % 2 ** 32)
        for camera, ceiling in ((CAMERA, None), (None, 4095.0), (None, None)):
            _assert_same(frames, 100.0, camera, ceiling, what=f"{kind} {shape} {np.dtype(dtype).name} x{n}")
    if shape[0] > 2:  # frames of two shapes in one bundle: measured one by one
        frames = _synthetic(kind, shape, np.float32, 2, seed=3)
        _assert_same([frames[0], frames[1][:-1]], 100.0, None, what=f"{kind} {shape}, two shapes")


def test_the_brightest_are_argpartitions_choice_among_tied_pixels():
    """Where more sampled pixels than the brightest 0.1 % hold the structure level, which of them count is
    ``np.argpartition``'s choice, as first measured (the extent figure is taken around them)."""
    rng = np.random.default_rng(7)
    mask = np.empty(16384, bool)
    tied = 0
    for t in range(200):
        rows = (rng.integers(0, [3, 8, 40, 4000][t % 4], (3, 16384)) * 50.0 + 100.0).astype(np.float32)
        top = int(round((1.0 - gf.PEAK_FRACTION) * 16383))
        want = np.argpartition(rows, top, axis=1)[:, top:]
        for c in range(3):
            level = float(np.partition(rows[c], top)[top])
            tied += int(np.count_nonzero(rows[c] >= level) > rows.shape[1] - top)
            assert set(gf._brightest(rows[c], level, top, mask).tolist()) == set(want[c].tolist())
    assert tied > 100  # the case in question was exercised


def test_each_thread_measures_with_its_own_buffers():
    """An engine runs one worker thread per model pass: bundles of one kind measured at once on several threads
    get the figures each gets alone."""
    bundles = [_synthetic(k, (256, 256), np.uint16, 6, seed=s) for s, k in enumerate(["cells", "beads", "ties"] * 2)]
    want = [_reference(b, 100.0, CAMERA) for b in bundles]
    got: dict[int, list[list[dict[str, Any]]]] = {i: [] for i in range(len(bundles))}
    start = threading.Barrier(len(bundles))

    def run(i: int) -> None:
        start.wait()
        for _ in range(20):
            got[i].append(gf.measure_bundle(bundles[i], 100.0, CAMERA))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bundles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in got.items():
        assert len(runs) == 20
        for figs in runs:
            assert [f["peak"] for f in figs] == [f["peak"] for f in want[i]]
            assert [f["focus"] for f in figs] == pytest.approx([f["focus"] for f in want[i]], nan_ok=True, rel=0, abs=0)
            assert [f["kurtosis"] for f in figs] == [f["kurtosis"] for f in want[i]]


# ----------------------------------------------------------------------------- the output guard
def _reference_apply(y: np.ndarray, lo: list[float], hi: list[float]) -> tuple[list[int], list[int]]:
    """Per channel: pixels outside the range, pixels outside by more than the tolerance; ``y`` clipped."""
    outside, far = [], []
    for c in range(y.shape[0]):
        ch, a, b = y[c], np.float32(lo[c]), np.float32(hi[c])
        mn, mx = ch.min(), ch.max()
        span = float(min(mx, b)) - float(max(mn, a))
        tol = np.float32(max(float(np.float32(OUTPUT_RANGE_TOLERANCE * float(b - a))), GIBBS * max(span, 0.0)))
        inside = not (mn < a or mx > b)
        outside.append(0 if inside else int(np.count_nonzero(ch < a) + np.count_nonzero(ch > b)))
        far.append(0 if inside else int(np.count_nonzero(ch < a - tol) + np.count_nonzero(ch > b + tol)))
        if not inside:
            np.clip(ch, a, b, out=ch)
    return outside, far


def test_the_output_guard_clips_and_counts_as_np_clip_and_full_comparisons():
    lo, hi = [41.1, -329.5], [10780.9, 68702.1]
    m = ModelManifest(name="x", sha256="0", inputs=["a"], outputs=["p", "q"],
                      normalization=Normalization(kind="calibrated", offset=[100.0], scale=[1000.0]),
                      output_range=OutputRange(min=lo, max=hi))
    guard = OutputGuard(m)
    rng = np.random.default_rng(11)
    for t in range(60):
        spread = [0.05, 0.3, 0.7, 1.5][t % 4]
        y = (np.array(lo)[:, None, None] + (np.array(hi) - np.array(lo))[:, None, None] *
             rng.normal(0.5, spread, (2, 96, 80))).astype(np.float32)
        want_y = y.copy()
        outside, far = _reference_apply(want_y, lo, hi)
        fig, reasons, margin = guard.apply(y, None if t % 2 else np.stack([y.min(axis=(1, 2)), y.max(axis=(1, 2))], 1))
        assert np.array_equal(y, want_y)
        for c, name in enumerate(m.outputs):
            assert fig["clipped"][name] == pytest.approx(outside[c] / y[c].size, rel=1e-3, abs=0)
            assert fig["beyond"][name] == pytest.approx(far[c] / y[c].size, rel=1e-3, abs=0)
        assert bool(reasons) == any(f / y[0].size > 1e-3 for f in far)
