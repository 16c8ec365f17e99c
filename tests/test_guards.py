"""Calibrated normalization, input guards and the trust verdict (issue 10, item 1).

Bundles come from the real simulated microscope through the daemon's control
socket; guards are checked on bundles a microscopist would meet (blank slide,
0.5 ms exposure, saturated bright-field, a stuck or dead channel, another
sample type), and end to end through a real daemon and a real engine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from scopecast.daemon.inference.guards import InputGuard, OutputGuard, SATURATED_MAX, measure, trust
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.models.dataset import PairSet, calibrate, calibrate_camera, region_positions
from scopecast.models.manifest import ModelManifest, Normalization, normalize, percentiles
from scopecast.models.synthetic import write_package
from tests.conftest import small_cfg

CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
PACKAGES = Path(__file__).resolve().parents[1] / "models" / "packages"


# ----------------------------------------------------------------------------- normalization
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_percentiles_are_numpys_exactly(dtype):
    rng = np.random.default_rng(0)
    for n, top in [(1, 9), (2, 255), (257, 30), (512 * 512, 255), (4099, 255)]:
        a = rng.integers(0, top + 1, n).astype(dtype)
        qs = [0.0, 1.0, 37.3, 50.0, 99.8, 100.0]
        assert percentiles(a, qs) == [float(v) for v in np.percentile(a, qs)]


def test_percentile_normalization_is_bioimageio_scale_range():
    """scale_range: (x - p_low) / (p_high - p_low + eps), exact percentiles of each image and channel."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(100, 15000, (256, 200)).astype(np.uint16) for _ in range(3)]
    frames[1][:50] = 15100  # a skewed channel: a strided estimate would miss the top end
    norm = Normalization(kind="percentile", low=1.0, high=99.8)
    x = normalize(frames, norm)
    for c, f in enumerate(frames):
        lo, hi = np.percentile(f, [1.0, 99.8])
        np.testing.assert_allclose(x[c], (f - lo) / (hi - lo + norm.eps), rtol=2e-6, atol=2e-6)


def test_calibrated_normalization_is_the_declared_scale_linear(tmp_path):
    from scopecast.export.bioimageio import preprocessing

    norm = Normalization(kind="calibrated", offset=[100.0, 100.0], scale=[4400.0, 1600.0])
    p = write_package(tmp_path, ["BF", "DF"], ["nuclei"], normalization=norm)
    m = load_package(p).manifest
    (step,) = preprocessing(m)
    assert step["id"] == "scale_linear" and step["kwargs"]["axis"] == "channel"
    gain, offset = step["kwargs"]["gain"], step["kwargs"]["offset"]
    frames = [np.random.default_rng(c).integers(0, 20000, (64, 64)).astype(np.uint16) for c in range(2)]
    x = normalize(frames, m.normalization)
    for c, f in enumerate(frames):  # exactly what bioimage.io computes from the rdf, in float32
        assert np.array_equal(x[c], f.astype(np.float32) * np.float32(gain[c]) + np.float32(offset[c]))
        np.testing.assert_allclose(x[c], (f - 100.0) / norm.scale[c], rtol=1e-6, atol=1e-6)
    blank = [np.full((8, 8), 100, np.uint16)] * 2
    assert np.abs(normalize(blank, norm)).max() < 1e-6  # no light in, nothing out: no stretching of noise
    with pytest.raises(ValueError, match="positive scales"):
        Normalization(kind="calibrated", offset=[100.0], scale=[0.0])
    with pytest.raises(ValueError, match="2 channel values for 3 inputs"):
        ModelManifest(name="x", sha256="0", inputs=["a", "b", "c"], outputs=["y"], normalization=norm)


# ----------------------------------------------------------------------------- a real scope
@pytest.fixture(scope="module")
def scope(tmp_path_factory):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.service import Daemon

    tmp = tmp_path_factory.mktemp("guards")
    d = Daemon(load_mmcore_backend(small_cfg(tmp, 256)), tmp / "rec", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    c = ControlClient(d.control_address, timeout_s=120)
    yield d, c
    c.close()
    d.close()


def _sample(daemon, kind: str) -> None:
    daemon.backend.core.setProperty("Scope", "Sample", kind)


def _bundle(scope, x, y, exposure_ms=10.0, sample="cells", channels=CYCLE):
    d, c = scope
    _sample(d, sample)
    c.request("move_stage", x=x, y=y)
    return [c.snap(channel=ch, exposure_ms=exposure_ms)[1].copy() for ch in channels]


@pytest.fixture(scope="module")
def calibration(scope):
    """Training statistics from 8 fields of the training region (targets: the fluorescence at each field)."""
    camera = calibrate_camera(scope[1], 10.0)
    xs, ys = [], []
    for x, y in region_positions("train", 8, seed=0):
        xs.append(np.stack(_bundle(scope, x, y)).astype(np.float32))
        ys.append(np.stack(_bundle(scope, x, y, 100.0, channels=["Nuclei", "Membrane"])).astype(np.float32))
    pairs = PairSet(np.stack(xs), np.stack(ys), [], 0.65, camera)
    return calibrate(pairs, CYCLE)


@pytest.fixture(scope="module")
def validation(scope):
    """In-distribution bundles: cells in the separate validation region, the training exposure."""
    return [_bundle(scope, x, y) for x, y in region_positions("val", 6, seed=1000)]


def test_camera_calibration_measures_the_simulated_camera(calibration):
    cam = calibration.camera  # the simulator's camera: offset 100 ADU, 0.5 ADU/e-, full well 30000 e-
    assert abs(cam.offset_adu - 100.0) < 1.0
    assert cam.gain_adu_per_e == pytest.approx(0.5, rel=0.1)
    assert cam.saturation_adu == 100 + 0.5 * 30000
    n = calibration.normalization
    assert n.kind == "calibrated" and n.offset == [cam.offset_adu] * 6
    st = calibration.input_stats.channels
    assert n.scale == [st[c].p_high - cam.offset_adu for c in CYCLE]
    assert calibration.input_stats.fields == 8 and st["DF"].saturated_max == 0.0
    assert all(lo < hi for lo, hi in zip(calibration.output_range.min, calibration.output_range.max, strict=True))


def _guards(calibration):
    return {"calibrated": InputGuard(CYCLE, calibration.camera, calibration.input_stats),
            "old package": InputGuard(CYCLE)}


@pytest.mark.parametrize("kind", ["calibrated", "old package"])
def test_in_distribution_bundles_are_trusted(calibration, validation, kind):
    guard = _guards(calibration)[kind]
    for bundle in validation:
        v = guard.check(bundle)
        t = trust(v)
        assert v.reasons == [] and not v.withhold and t["ok"] and 0 < t["score"] <= 1
    if kind == "old package":
        assert "training range" in trust(v)["guards"]["skipped"]


def _case(scope, validation, case):
    b = [f.copy() for f in validation[0]]
    if case == "blank slide":
        return _bundle(scope, 3000.0, 0.0, sample="blank")
    if case == "0.5 ms exposure":
        return _bundle(scope, 3000.0, 0.0, exposure_ms=0.5)
    if case == "saturated BF":  # 30 ms: bright-field clips at full well, DPC and DF do not
        return _bundle(scope, 3000.0, 0.0, exposure_ms=30.0)
    if case == "flat DF":
        b[5] = np.full_like(b[5], 400)
    if case == "missing DF":
        b[5] = np.zeros_like(b[5])
    if case == "NaN BF":
        b[4] = b[4].astype(np.float32)
        b[4][10, 10] = np.nan
    return b


# (case, expected reason prefix with the calibrated package, with an old package)
BAD = [
    ("blank slide", "no specimen: DF SNR", "under-exposed: DF SNR"),  # old: no training SNR to tell
    ("0.5 ms exposure", "under-exposed: BF brightest 0.1 %", None),  # an old package has no training level to compare
    ("saturated BF", "saturated: BF", "saturated: BF"),
    ("flat DF", "flat: DF is constant at 400", "saturated or flat: DF is constant at 400"),
    ("missing DF", "missing: DF is all zeros", "missing: DF is all zeros"),
    ("NaN BF", "non-finite: BF", "non-finite: BF"),
]


@pytest.mark.parametrize("kind", ["calibrated", "old package"])
@pytest.mark.parametrize("case,calibrated_reason,old_reason", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_withheld_with_a_reason(scope, calibration, validation, kind, case, calibrated_reason,
                                               old_reason):
    expected = calibrated_reason if kind == "calibrated" else old_reason
    if expected is None:
        pytest.skip("without training statistics a dim but clean exposure is not distinguishable from a dim sample")
    v = _guards(calibration)[kind].check(_case(scope, validation, case))
    t = trust(v)
    assert v.withhold and not t["ok"] and t["score"] == 0.0 and t["guards"]["action"] == "withheld"
    assert any(r.startswith(expected) for r in t["reasons"]), t["reasons"]
    json.dumps(t, allow_nan=False)  # strict JSON for every client


def test_under_exposure_is_flagged_at_every_position(scope, calibration):
    guard = InputGuard(CYCLE, calibration.camera, calibration.input_stats)
    for x, y in region_positions("val", 4, seed=7):
        reasons = guard.check(_bundle(scope, x, y, exposure_ms=0.5)).reasons
        assert [r for r in reasons if r.startswith("under-exposed: BF brightest 0.1 %")], reasons


def test_another_sample_type_is_flagged_not_withheld(scope, calibration):
    """A phase grating is no cell field: the model still runs, but the result says it is outside training."""
    v = InputGuard(CYCLE, calibration.camera, calibration.input_stats).check(
        _bundle(scope, 3000.0, 0.0, sample="phase-grating"))
    assert not v.withhold and v.reasons and all(r.startswith("outside training range:") for r in v.reasons), \
        [r for r in v.reasons if not r.startswith("outside")]
    assert not trust(v)["ok"] and trust(v)["score"] == 0.0


def test_exposure_is_judged_on_the_structure_not_on_the_mean():
    """A sparse dark-field: the mean sits a few noise units above the offset however long the exposure, but its
    scatterers are bright: it is well exposed (with or without training statistics, with or without a bright-field
    beside it). An empty field has no structure above the noise (Rose: 5 sigma): withheld, as "no specimen" when a
    bright-field shows the exposure is right. A short exposure whose structure still clears Rose is caught below
    half the dimmest training field's structure."""
    from scopecast.daemon.inference.guards import ROSE_SNR
    from scopecast.models.manifest import CameraCalibration, ChannelStats, InputStats

    cam = CameraCalibration(offset_adu=100.0, read_noise_adu=0.5, gain_adu_per_e=0.5, saturation_adu=15100.0)
    rng = np.random.default_rng(1)
    mask = rng.random((256, 256)) < 0.01
    f = (100 + rng.poisson(np.where(mask, 800.0, 0.0)) // 2).astype(np.uint16)  # 1 % scatterers at ~400 ADU
    fig = measure(f, 100.0, cam)
    assert fig["snr"] < 3 and fig["peak"] > 300 and fig["peak_snr"] > 4 * ROSE_SNR, fig
    dark = ChannelStats(signal=(3.0, 60.0, 500.0), contrast=(0.5, 2.0, 20.0), snr_min=2.0, saturated_max=0.0,
                        p_low=100.0, p_high=600.0, peak=(300.0, 800.0, 3000.0))
    bf = rng.poisson(6000, (256, 256)).astype(np.uint16) // 2 + np.uint16(100)
    bf_st = ChannelStats(signal=(2000.0, 3000.0, 5000.0), contrast=(0.001, 0.02, 0.1), snr_min=80.0,
                         saturated_max=0.0, p_low=2000.0, p_high=5000.0, peak=(2200.0, 3300.0, 5500.0))
    stats = InputStats(fields=10, channels={"BF": bf_st, "DF": dark})
    for guard in (InputGuard(["BF", "DF"], cam), InputGuard(["BF", "DF"], cam, stats),
                  InputGuard(["DF"], cam, InputStats(fields=10, channels={"DF": dark}))):
        v = guard.check([bf, f][-len(guard.inputs):])
        assert not v.withhold and not any(r.startswith("under-exposed") for r in v.reasons), v.reasons
    blank = np.full((256, 256), 100, np.uint16) + rng.poisson(0.3, (256, 256)).astype(np.uint16)
    assert measure(blank, 100.0, cam)["peak_snr"] < ROSE_SNR
    v = InputGuard(["BF", "DF"], cam, stats).check([bf, blank])
    # a bright-field within its training range shows the exposure is right: the dark-field is dark because the
    # field is empty, and the reason says so (withheld all the same)
    assert v.withhold and any(r.startswith("no specimen: DF SNR") and "BF well exposed" in r for r in v.reasons), \
        v.reasons
    alone = InputGuard(["DF"], cam, InputStats(fields=10, channels={"DF": dark})).check([blank])
    assert alone.withhold and alone.reasons[0].startswith("under-exposed: DF SNR"), alone.reasons
    short = [(bf - 100) // 20 + 100, (f - 100) // 20 + 100]  # a 20x shorter exposure: structure ~20 ADU, SNR > 5
    assert measure(short[1], 100.0, cam)["peak_snr"] > ROSE_SNR
    dim = InputGuard(["BF", "DF"], cam, stats).check(short)
    assert dim.withhold and {r.split(" ")[1] for r in dim.reasons if r.startswith("under-exposed:")} == {"BF", "DF"}
    assert any(r.startswith("under-exposed: DF brightest 0.1 %") and "< 150" in r for r in dim.reasons), dim.reasons
    # a dark-field that passes beside a dim bright-field does not show the exposure is right: its level is the
    # specimen's (training fields near the detection limit), so the bright-field stays under-exposed
    bright_df = InputStats(fields=10, channels={"BF": bf_st, "DF": dark.model_copy(update={"peak": (10.0, 50.0, 90.0)})})
    both = InputGuard(["BF", "DF"], cam, bright_df).check([short[0], f])
    assert both.withhold and any(r.startswith("under-exposed: BF brightest") for r in both.reasons), both.reasons
    faint = InputGuard(["BF", "DF"], cam, stats).check([bf, short[1]])  # the bright-field shows the exposure is right
    assert not faint.withhold and any(r.startswith("outside training range: DF brightest 0.1 %") and
                                      "a dimmer specimen than any in training" in r for r in faint.reasons), faint
    old = InputGuard(["BF", "DF"], cam, InputStats(fields=10, channels={
        "BF": bf_st.model_copy(update={"peak": None}), "DF": dark.model_copy(update={"peak": None})})).check(short)
    assert not old.withhold and "structure level" in old.skipped  # older packages: Rose only, and they say so


def test_an_exposure_time_beyond_the_training_fields_is_flagged(calibration, validation):
    """The header's exposure_ms against the training fields' (x2 either way, as every training-range check)."""
    stats = calibration.input_stats.model_copy(update={"exposure_ms": (5.0, 15.0)})
    guard = InputGuard(CYCLE, calibration.camera, stats)
    bundle = validation[0]
    assert guard.check(bundle, exposures_ms=[10.0] * 6).reasons == []
    for e, text in ((1.25, "exposure 1.25 ms not in 2.5…30 ms (training fields 5…15 ms)"), (40.0, "exposure 40 ms")):
        v = guard.check(bundle, exposures_ms=[e] * 6)
        assert not v.withhold and any(r.startswith(f"outside training range: {text}") for r in v.reasons), v.reasons
    assert "exposure" in guard.check(bundle).skipped  # the frames do not say
    assert "exposure" in InputGuard(CYCLE, calibration.camera, calibration.input_stats.model_copy(
        update={"exposure_ms": None})).check(bundle, exposures_ms=[1.0] * 6).skipped


def test_saturation_from_the_dtype_and_from_a_pile_up():
    rng = np.random.default_rng(3)
    f = rng.normal(3000, 50, (256, 256)).astype(np.uint16)
    assert measure(f, 100.0)["saturated"] == 0.0
    g = f.copy()
    g[:20] = 65535  # at the dtype's ceiling
    assert measure(g, 100.0)["saturated"] == pytest.approx(20 / 256, rel=0.05)
    h = np.minimum(rng.normal(4000, 300, (256, 256)), 4095).astype(np.uint16)  # a 12-bit camera, clipping
    fig = measure(h, 100.0)
    assert fig["saturated"] > SATURATED_MAX and fig["ceiling"] == 4095
    few = f.copy()
    few[0, :4] = 60000  # a handful of hot pixels is no saturation
    assert measure(few, 100.0)["saturated"] < SATURATED_MAX


# ----------------------------------------------------------------------------- the worker
def _stream(bundle, bundle_id=1):
    return [StreamFrame({"channel": ch, "seq": i, "bundle_id": bundle_id, "acquisition_id": "t",
                         "t_acquired_ns": i + 1, "pixel_size_um": 0.65}, f, 1)
            for i, (ch, f) in enumerate(zip(CYCLE, bundle, strict=True))]


def _calibrated_package(path, calibration, **kw):
    kw.setdefault("output_range", calibration.output_range)
    return load_package(write_package(
        path, CYCLE, ["nuclei", "membrane"], name="calibrated", width=8, layers=3, tile=128,
        normalization=calibration.normalization, camera=calibration.camera, input_stats=calibration.input_stats,
        output_scaling={"scale": [1000.0, 1000.0], "offset": [108.0, 103.0]}, **kw))


def test_worker_withholds_a_blank_slide_and_says_why(tmp_path, scope, calibration, validation):
    pkg = _calibrated_package(tmp_path, calibration)
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    r = w.process(_stream(_case(scope, validation, "blank slide")))
    t = r.header["trust"]
    assert not t["ok"] and t["guards"]["action"] == "withheld" and t["guards"]["output"]["withheld"]
    assert r.data.shape == (2, 256, 256) and np.array_equal(r.data[0], np.full((256, 256), 108.0, np.float32))
    assert (r.data[0] > 108.0 + 0.5 * 1000.0).mean() <= 0.005  # predicted positive area: none
    ok = w.process(_stream(validation[1]))
    assert ok.header["trust"]["guards"]["action"] == "inferred"
    lo, hi = calibration.output_range.min, calibration.output_range.max
    for c in range(2):  # clipped to the range as float32 (the output's dtype) represents it
        assert np.float32(lo[c]) <= ok.data[c].min() and ok.data[c].max() <= np.float32(hi[c])


@pytest.mark.parametrize("last_frame_at, moved", [
    ((0.0, 0.0, 0.0), False), ((0.3, 0.0, 0.3), False),  # within a pixel (0.65 µm) and 0.5 µm of focus
    ((40000.0, 0.0, 0.0), True), ((0.0, 2.0, 0.0), True), ((0.0, 0.0, 2.0), True)])
def test_a_bundle_taken_across_a_stage_move_is_withheld(tmp_path, calibration, validation, last_frame_at, moved):
    """A stage moved during live lands between two frames of a bundle: five channels of one field and the last
    of another were inferred as one and published trusted (a colony trigger fired on such a bundle)."""
    pkg = _calibrated_package(tmp_path, calibration)
    frames = _stream(validation[1])
    for i, f in enumerate(frames):
        x, y, z = last_frame_at if i == len(frames) - 1 else (0.0, 0.0, 0.0)
        f.header.update(stage_x_um=x, stage_y_um=y, stage_z_um=z)
    t = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu")).process(frames).header["trust"]
    said = [r for r in t["reasons"] if r.startswith("moved: the stage moved during the bundle")]
    assert bool(said) == moved and (t["guards"]["action"] == "withheld") == moved, t["reasons"]


def test_outputs_beyond_the_physical_range_are_clipped_and_flagged(tmp_path, calibration, validation):
    narrow = {"min": [150.0, 150.0], "max": [160.0, 160.0]}
    pkg = _calibrated_package(tmp_path, calibration, output_range=narrow)
    r = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu")).process(_stream(validation[0]))
    t = r.header["trust"]
    assert not t["ok"] and t["score"] == 0.0 and t["guards"]["action"] == "inferred"
    assert any(x.startswith("beyond physical range: nuclei") for x in t["reasons"])
    assert r.data.min() >= 150.0 and r.data.max() <= 160.0
    assert t["guards"]["output"]["clipped"]["nuclei"] > 0.001
    g = OutputGuard(pkg.manifest)
    assert np.array_equal(g.blank((2, 4, 4))[1], np.full((4, 4), 150.0, np.float32))  # background kept in range


def test_normalization_is_the_same_in_training_and_in_the_engine(tmp_path, calibration, validation):
    pytest.importorskip("torch", reason="the 'train' extra (torch) is not installed")
    from scopecast.models.training import prepare

    pkg = _calibrated_package(tmp_path, calibration)
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    pairs = PairSet(np.stack([np.stack(b).astype(np.float32) for b in validation]),
                    np.zeros((len(validation), 2, 256, 256), np.float32), [], 0.65)
    for norm in (calibration.normalization, Normalization(kind="percentile")):
        w.m.normalization = norm
        x_train, _, _ = prepare(pairs, norm)
        for i, b in enumerate(validation):  # the engine gets the uint16 camera frames
            assert np.array_equal(w.preprocess(w.order(_stream(b))), x_train[i])


def test_calibrated_training_and_export(tmp_path):
    """gather -> train (calibrated) -> export: the manifest carries what the guards need, the rdf says exactly it."""
    pytest.importorskip("torch", reason="the 'train' extra (torch) is not installed")
    import yaml

    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon
    from scopecast.export.package import export_package
    from scopecast.models.dataset import gather, load_pairs
    from scopecast.models.training import TrainConfig, train

    d = Daemon(load_mmcore_backend(small_cfg(tmp_path, 64)), tmp_path / "rec", "tcp://127.0.0.1:*",
               "tcp://127.0.0.1:*").start()
    try:
        index = gather(d.control_address, "virtual-staining", tmp_path / "vs", n_train=3, n_val=2, seed=4)
        gather(d.control_address, "virtual-staining", tmp_path / "more", n_train=2, n_val=0, seed=5)
    finally:
        d.close()
    assert index["camera"]["saturation_adu"] == 15100.0
    cfg = TrainConfig(depth=2, width=4, steps=4, batch=2, crop=32, normalization="calibrated")
    ckpt = train(tmp_path / "vs", tmp_path / "run", cfg, progress=False)
    res = export_package(ckpt, tmp_path / "pkg", tile=64, halo=8)
    m = load_package(tmp_path / "pkg").manifest
    assert m.normalization.kind == "calibrated" and m.camera.offset_adu == pytest.approx(index["camera"]["offset_adu"])
    assert set(m.input_stats.channels) == set(m.inputs) and len(m.output_range.max) == 2
    assert res.manifest.provenance["guards_on_validation"]["fields"] == 2
    rdf = yaml.safe_load((tmp_path / "pkg" / "rdf.yaml").read_text())
    _, pre, _ = rdf["inputs"][0]["preprocessing"]  # ensure_dtype float32, scale_linear, ensure_dtype float32
    assert pre["id"] == "scale_linear" and [pre["kwargs"]["gain"], pre["kwargs"]["offset"]] == list(
        m.normalization.linear())
    val = load_pairs(tmp_path / "vs", "val")
    x = np.load(tmp_path / "pkg" / "test_input.npy")
    assert np.array_equal(x[0], val.inputs[0][:, :x.shape[2], :x.shape[3]])  # raw counts, as the engine gets them
    assert "constants fixed from the training fields" in (tmp_path / "pkg" / "card.md").read_text()
    # more fields of the training distribution for the guards' ranges: the model and its normalization untouched
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_trust_models import measure_input_stats, write_input_stats

    before = (tmp_path / "pkg" / "manifest.json").read_text()
    st = measure_input_stats(tmp_path / "pkg", [tmp_path / "more"])
    assert st["fields"] == 5 and "3 of vs" in st["source"] and "2 of more (seed 5)" in st["source"]
    write_input_stats(tmp_path / "pkg", st)
    m2 = load_package(tmp_path / "pkg").manifest
    assert m2.model_dump(exclude={"input_stats"}) == m.model_dump(exclude={"input_stats"})
    for name, c in m2.input_stats.channels.items():
        old = m.input_stats.channels[name]
        assert (c.p_low, c.p_high) == (old.p_low, old.p_high) and c.peak is not None
        assert c.signal[0] <= old.signal[0] and c.signal[2] >= old.signal[2]  # 5 fields span at least the 3
    assert before != (tmp_path / "pkg" / "manifest.json").read_text()


# ----------------------------------------------------------------------------- end to end
class _Results:
    """A plain ZeroMQ client of the result stream (docs/protocol.md)."""

    def __init__(self, address):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"result")
        self.sock.connect(address)

    def for_acquisition(self, acquisition_id, n, timeout=120.0):
        """The next ``n`` results of bundles of ``acquisition_id`` (others are skipped)."""
        out, t_end = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < t_end:
            if not self.sock.poll(500):
                continue
            _, head, data = self.sock.recv_multipart()
            h = json.loads(head)
            if h["acquisition_id"] == acquisition_id:
                out.append((h, np.frombuffer(data, "<f4").reshape(h["shape"])))
        assert len(out) == n, f"{len(out)} of {n} results for {acquisition_id} within {timeout} s"
        return out

    def close(self):
        self.sock.close()


def _live(client, sub, n, **kw):
    """Results of ``n`` bundles of a new live acquisition (so every one was acquired with these settings)."""
    job = client.request("start_live", channels=CYCLE, **kw)
    try:
        return sub.for_acquisition(job["acquisition_id"], n)
    finally:
        client.request("stop")


def _engine(daemon, package):
    from scopecast.daemon.inference.engine import InferenceEngine

    return InferenceEngine(package, daemon.stream_address, results_address="tcp://127.0.0.1:*",
                           control_address=None, runtime="ort-cpu", warmup_shape=None).start()


def _positive_area(h, y, package):
    """Fraction of the field the stain calls positive: above half the nuclei channel's training scale."""
    s = load_package(package).manifest.output_scaling
    return float((y[0] > s.offset[0] + 0.5 * s.scale[0]).mean())


@pytest.mark.parametrize("which", ["shipped virtual-staining", "calibrated"])
def test_blank_slide_and_saturated_bright_field_end_to_end(daemon, client, tmp_path, which, request):
    if which == "calibrated":
        cal = request.getfixturevalue("calibration")
        package = _calibrated_package(tmp_path, cal).path
        lo, hi = cal.output_range.min, cal.output_range.max
    else:
        package = PACKAGES / "virtual-staining"
        if not package.exists():
            pytest.skip("the virtual-staining package has not been trained and shipped yet")
        lo = hi = None
    engine = _engine(daemon, package)
    sub = _Results(engine.results_address)
    try:
        client.request("move_stage", x=3000.0, y=0.0)
        _sample(daemon, "cells")  # in distribution: trusted (the guards do not flag everything)
        for h, y in _live(client, sub, 2, exposure_ms=10.0):
            t = h["trust"]
            assert t["guards"]["action"] == "inferred"
            if lo is None:  # a trained model on cells it was trained for
                assert t["ok"] and t["reasons"] == [] and t["score"] > 0, t["reasons"]
            else:  # a random synthetic network: its outputs may leave the range; the inputs pass
                assert [r for r in t["reasons"] if not r.startswith("beyond physical range")] == []
                assert all(lo[c] <= y[c].min() and y[c].max() <= hi[c] for c in range(2))
        _sample(daemon, "blank")  # the evaluation's case: stains painted over half the field
        for h, y in _live(client, sub, 3, exposure_ms=10.0):
            t = h["trust"]
            assert not t["ok"] and t["score"] == 0.0 and t["guards"]["action"] == "withheld"
            assert any(r.startswith("no specimen: DF SNR") for r in t["reasons"]), t["reasons"]
            assert _positive_area(h, y, package) <= 0.005
        _sample(daemon, "cells")
        for h, y in _live(client, sub, 3, exposure_ms=30.0):  # bright-field clipped at full well
            t = h["trust"]
            assert not t["ok"] and t["guards"]["action"] == "withheld"
            assert any(r.startswith("saturated: BF") for r in t["reasons"]), t["reasons"]
            assert np.isfinite(y).all() and _positive_area(h, y, package) <= 0.005
            if lo is not None:
                assert all(lo[c] <= y[c].min() and y[c].max() <= hi[c] for c in range(2))
    finally:
        sub.close()
        engine.close()
        _sample(daemon, "cells")
