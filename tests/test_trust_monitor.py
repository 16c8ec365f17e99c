"""The trust monitor's input-domain signals (issue 11): sampling (objective) and focus, and its benchmark.

Bundles come from the real simulated microscope through the daemon's control
socket and go through the engine's worker (a real ONNX Runtime session on a
synthetic package) exactly as live.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.inference.guards import InputGuard, focus_limits, focus_width, measure
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.models.dataset import PairSet, calibrate, calibrate_camera, region_positions
from scopecast.models.synthetic import write_package
from tests.conftest import small_cfg

ROOT = Path(__file__).resolve().parents[1]
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]


@pytest.fixture(scope="module")
def scope(tmp_path_factory):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.service import Daemon

    tmp = tmp_path_factory.mktemp("trust")
    d = Daemon(load_mmcore_backend(small_cfg(tmp, 256)), tmp / "rec", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    c = ControlClient(d.control_address, timeout_s=120)
    d.backend.core.setProperty("Scope", "Sample", "cells")
    yield d, c
    c.close()
    d.close()


def _snaps(c, channels, x, y, z=0.0, exposure_ms=10.0):
    c.request("move_stage", x=x, y=y, z=z)
    out = [c.snap(channel=ch, exposure_ms=exposure_ms) for ch in channels]
    c.request("move_stage", z=0.0)
    return [h for h, _ in out], [f.copy() for _, f in out]


def _objective(d, preset):
    d.backend.core.setConfig("Objective", preset)
    d.backend.core.waitForConfig("Objective", preset)


def _process(worker, headers, frames):
    return worker.process([StreamFrame(h, f) for h, f in zip(headers, frames, strict=True)])


def test_pixel_size_guard_flags_another_objective_and_passes_the_trained_one(scope, tmp_path):
    d, c = scope
    pkg = load_package(write_package(tmp_path / "pkg", CYCLE, ["nuclei"], pixel_size_um=0.65))
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    headers, frames = _snaps(c, CYCLE, 3000.0, 0.0)
    assert {h["pixel_size_um"] for h in headers} == {0.65}
    t = _process(worker, headers, frames).header["trust"]
    assert not [r for r in t["reasons"] if "pixel size" in r], t["reasons"]
    assert t["guards"]["pixel_size_um"] == 0.65 and "pixel size" not in t["guards"]["skipped"]
    _objective(d, "20x")
    try:
        headers, frames = _snaps(c, CYCLE, 3000.0, 0.0)
    finally:
        _objective(d, "10x")
    t = _process(worker, headers, frames).header["trust"]
    assert not t["ok"] and t["score"] == 0.0
    assert "outside training range: pixel size 0.325 µm vs 0.65 µm trained (another objective or binning)" \
        in t["reasons"], t["reasons"]
    # frames that do not say their pixel size, or a package that does not record one: skipped, with the reason
    t = _process(worker, [{k: v for k, v in h.items() if k != "pixel_size_um"} for h in headers], frames
                 ).header["trust"]
    assert not [r for r in t["reasons"] if "pixel size" in r]
    assert t["guards"]["skipped"]["pixel size"] == "the frames carry no pixel_size_um"
    old = load_package(write_package(tmp_path / "old", CYCLE, ["nuclei"]))
    t = _process(InferenceWorker(old, open_runtime(old, "ort-cpu")), headers, frames).header["trust"]
    assert t["guards"]["skipped"]["pixel size"] == "the package records no training pixel size"


@pytest.fixture(scope="module")
def membrane_calibration(scope):
    """Training statistics of the membrane label: 6 in-focus fields (|z| ≤ 1.5 µm) of the training region."""
    _, c = scope
    camera = calibrate_camera(c, 10.0)
    xs = []
    for i, (x, y) in enumerate(region_positions("train", 6, seed=3)):
        xs.append(np.stack(_snaps(c, ["Membrane"], x, y, z=(-1.5, 0.0, 1.5)[i % 3])[1]).astype(np.float32))
    pairs = PairSet(np.stack(xs), np.stack(xs), [], 0.65, camera)
    return pairs, calibrate(pairs, ["Membrane"])


def test_focus_and_kurtosis_are_the_same_in_calibration_and_in_the_guard(membrane_calibration):
    pairs, cal = membrane_calibration
    guard = InputGuard(["Membrane"], cal.camera, cal.input_stats, 0.65)
    figs = [guard.check([f[0].astype(np.uint16)]).channels["Membrane"] for f in pairs.inputs]
    for key in ("focus", "kurtosis"):  # the guard's figures are exactly what training recorded
        live = [g[key] for g in figs]
        assert all(np.isfinite(live))
        assert getattr(cal.input_stats.channels["Membrane"], key) == (min(live), float(np.median(live)), max(live))
    # the figure falls as a field is blurred (a wider structure), and the width inverts it
    f = pairs.inputs[0, 0].astype(np.uint16)
    off, cam = cal.camera.offset_adu, cal.camera
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(f.astype(np.float32), 2.0).round().astype(np.uint16)
    assert measure(blurred, off, cam)["focus"] < measure(f, off, cam)["focus"]
    for w in (0.8, 1.5, 3.0):
        a = 1 / (2 * w * w)
        assert focus_width((1 - np.exp(-a)) / (1 - np.exp(-16 * a))) == pytest.approx(w, rel=1e-6)


def test_defocused_bundle_is_flagged_when_the_package_has_a_focus_range(scope, membrane_calibration, tmp_path):
    _, c = scope
    _, cal = membrane_calibration
    st = cal.input_stats
    assert st.channels["Membrane"].focus is not None
    lo, _ = focus_limits(st.channels["Membrane"].focus)
    fields = {}
    for name, z in (("in focus", 0.0), ("defocus +10 µm", 10.0), ("defocus -10 µm", -10.0)):
        fields[name] = _snaps(c, ["Membrane"], 3000.0, 500.0, z=z)
    kw = {"camera": cal.camera, "normalization": cal.normalization, "pixel_size_um": 0.65}
    pkg = load_package(write_package(tmp_path / "focus", ["Membrane"], ["membrane-sr"], input_stats=st, **kw))
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    for name, (headers, frames) in fields.items():
        t = _process(worker, headers, frames).header["trust"]
        focus = [r for r in t["reasons"] if "focus" in r]
        assert t["guards"]["action"] == "inferred"
        if name == "in focus":
            assert not focus and t["ok"], t["reasons"]
        else:
            assert t["guards"]["channels"]["Membrane"]["focus"] < lo
            assert focus and focus[0].startswith("outside training range: Membrane focus") and not t["ok"], \
                t["reasons"]
            assert "defocus?" in focus[0]
    # a package exported before the focus figure existed: the check is skipped and says so
    old = st.model_copy(deep=True)
    old.channels["Membrane"].focus = None
    pkg = load_package(write_package(tmp_path / "nofocus", ["Membrane"], ["membrane-sr"], input_stats=old, **kw))
    t = _process(InferenceWorker(pkg, open_runtime(pkg, "ort-cpu")), *fields["defocus +10 µm"]).header["trust"]
    assert not [r for r in t["reasons"] if "focus" in r]
    assert "exported before it was measured" in t["guards"]["skipped"]["focus"]


def test_benchmark_runs_on_a_tiny_configuration_and_prints_every_case():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_trust import cases
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_trust.py"), "--fields", "1", "--size", "128",
                        "--fit-fields", "1", "--overhead-size", "128", "--model", "virtual-staining"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    for r in cases("virtual-staining"):
        assert f"| {r['row']} | 1 |" in p.stdout, (r["row"], p.stdout)
    for line in ("False alarms (in-distribution bundles flagged):", "Monitor overhead at 128²",
                 "Spearman rank correlation"):
        assert line in p.stdout, p.stdout
    assert p.stdout.rstrip().endswith(("targets met", "targets NOT met (see the tables)"))


def test_beads_are_flagged_as_isolated_points(scope, membrane_calibration):
    d, c = scope
    _, cal = membrane_calibration
    guard = InputGuard(["Membrane"], cal.camera, cal.input_stats, 0.65)
    st = cal.input_stats.channels["Membrane"]
    assert st.extent is not None and st.extent[0] > 0.3  # cells: structures that reach beyond the optics' spot
    d.backend.core.setProperty("Scope", "Sample", "beads")
    try:
        # exposed to the training fields' signal, so that only the shape of the field differs
        headers, frames = _snaps(c, ["Membrane"], 3000.0, 500.0, exposure_ms=40.0)
    finally:
        d.backend.core.setProperty("Scope", "Sample", "cells")
    v = guard.check(frames, [h["pixel_size_um"] for h in headers])
    assert v.channels["Membrane"]["extent"] < 0.2, v.channels["Membrane"]
    assert any(r.startswith("outside training range: Membrane extent") and "isolated points" in r and "beads?" in r
               for r in v.reasons), v.reasons
    assert not v.withhold  # flagged: the model runs, its answer is not trusted


def test_structure_extent_tells_points_from_lines_blobs_and_bright_backgrounds():
    """The figure on frames whose answer is known: a PSF-sized spot has fallen to a few % 2 px away in every
    direction, a line persists along itself, a disc all around; a bright background has no figure."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)

    def frame(img):
        return (100.0 + img + rng.normal(0, 2.0, img.shape)).round().astype(np.uint16)

    sigma = 0.84  # a Nyquist-sampled in-focus PSF (FOCUS_BLUR_PX)
    points = np.zeros((256, 256))
    for x, y in rng.uniform(10, 246, (40, 2)):
        points += 2000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    lines = np.zeros((256, 256))
    for k in range(8):  # lines at every angle, PSF-wide across
        a, c0 = rng.uniform(0, np.pi), rng.uniform(20, 236)
        dist = (xx - c0) * np.sin(a) - (yy - c0) * np.cos(a)
        lines += 2000.0 * np.exp(-dist ** 2 / (2 * sigma ** 2))
    discs = np.zeros((256, 256))
    for x, y in rng.uniform(10, 246, (20, 2)):
        discs += 2000.0 / (1 + np.exp((np.hypot(xx - x, yy - y) - 4.0) / 0.8))  # 4 px radius
    got = {name: measure(frame(img), 100.0)["extent"] for name, img in
           (("points", points), ("lines", lines), ("discs", discs))}
    assert got["points"] < 0.12, got
    # a line at an angle between the four directions is seen up to 22.5° off it, and the brightest pixels sit
    # where lines cross (one line persists there): still 4x the points' figure
    assert got["lines"] > 0.45 and got["discs"] > 0.8, got
    bright = frame(3000.0 + points)  # the same points on a bright-field's background: the figure says nothing
    assert np.isnan(measure(bright, 100.0)["extent"])
    assert np.isnan(measure(frame(np.zeros((256, 256))), 100.0)["extent"])  # nothing above the noise


def test_output_ringing_is_clipped_but_not_flagged_and_an_excursion_is():
    from scopecast.daemon.inference.guards import OutputGuard
    from scopecast.models.manifest import ModelManifest, OutputRange

    m = ModelManifest(name="x", sha256="0", inputs=["Membrane"], outputs=["sr"],
                      output_range=OutputRange(min=[100.0], max=[10100.0]))
    g = OutputGuard(m)
    y = np.full((1, 64, 64), 150.0, np.float32)
    y[0, 20:24] = 9000.0  # a bright membrane
    y[0, 19] = y[0, 24] = 100.0 - 0.08 * 8900  # its ringing: 8 % of the step below the dark level
    fig, reasons, margin = g.apply(y)
    assert reasons == [] and fig["clipped"]["sr"] > 0.001 and fig["beyond"]["sr"] == 0.0 and y.min() == 100.0
    y[0, 40:44] = -3000.0  # far below anything physical: flagged (and clipped)
    fig, reasons, margin = g.apply(y)
    assert reasons and reasons[0].startswith("beyond physical range: sr") and margin < 0 and y.min() == 100.0
    # the extremes the worker hands over give the same verdict as measuring them here
    y[0, 40:44] = -3000.0
    y2 = y.copy()
    with_extremes = g.apply(y2, np.array([[y2.min(), y2.max()]], np.float32))
    assert with_extremes == g.apply(y) and np.array_equal(y, y2)
