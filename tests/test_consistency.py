"""The data-consistency check (issue 11): a super-resolved output, blurred back by the widefield optics, must
reproduce the frame it came from to within the camera noise.

The figure on synthetic fields whose forward model is known exactly; then real ONNX Runtime sessions on a copy
of the shipped super-resolution package whose ``validated.consistency`` is set so that each test knows which side
of the threshold the bundle's figure lies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import fft as sfft
from scipy import ndimage

from scopecast.daemon.inference.consistency import FIRST_COST_PASSES, ConsistencyCheck, residual_figure, widefield_otf
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.models.manifest import CameraCalibration
from tests.helpers import package_with_validated

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT / "models" / "packages" / "super-resolution"
OFFSET, GAIN, READ = 100.0, 0.5, 0.5
PX, WL, NA = 0.65, 0.6, 0.25


def _scene(seed: int = 0, h: int = 128, scale: int = 2) -> np.ndarray:
    """Lines and a background at ``scale``× the input sampling (arbitrary units)."""
    rng = np.random.default_rng(seed)
    obj = np.full((h * scale, h * scale), 5.0, np.float32)
    for _ in range(30):
        r, c = rng.integers(20, h * scale - 20, 2)
        obj[r - 1:r + 2, max(c - 40, 0):c + 40] += 50.0
    return obj


def _measure(obj: np.ndarray, seed: int = 1, scale: int = 2, gain: float = 3.0) -> np.ndarray:
    """The widefield frame of ``obj``: binned, blurred by the in-focus PSF, ``gain`` counts per unit, shot and
    read noise, rounded to ADU."""
    rng = np.random.default_rng(seed)
    h, w = obj.shape[0] // scale, obj.shape[1] // scale
    b = obj.reshape(h, scale, w, scale).mean(axis=(1, 3))
    img = np.maximum(sfft.irfft2(sfft.rfft2(b) * widefield_otf((h, w), PX, WL, NA), s=(h, w)) * gain, 0)
    e = rng.poisson(img / GAIN) * GAIN
    return np.round(OFFSET + e + rng.normal(0, READ, e.shape)).astype(np.uint16)


def test_the_otf_is_one_at_dc_falls_monotonically_and_is_zero_beyond_the_cutoff():
    otf = widefield_otf((64, 64), PX, WL, NA)
    assert otf.shape == (64, 33) and otf[0, 0] == pytest.approx(1.0)
    fx = np.fft.rfftfreq(64, d=PX)
    row = otf[0]
    assert np.all(np.diff(row) <= 1e-7)
    assert np.all(row[fx > 2 * NA / WL] == 0) and np.all(row[fx < 0.9 * 2 * NA / WL] > 0)


def test_an_output_the_input_supports_scores_the_noise_and_invented_or_missing_structure_scores_far_above():
    obj = _scene()
    x = _measure(obj)
    honest = residual_figure(x, obj, 2, OFFSET, GAIN, READ, PX, WL, NA)
    assert 0.9 < honest < 1.2, honest  # the residual is the camera noise
    # any gain and offset of the output are fitted away (the output's units are not the input's)
    assert residual_figure(x, 7.0 * obj + 3.0, 2, OFFSET, GAIN, READ, PX, WL, NA) == pytest.approx(honest, rel=1e-4)
    invented = obj.copy()
    invented[100:106, 40:200] += 60.0  # a line the specimen does not have
    missing = obj.copy()
    missing[obj > 20] = 5.0 + 0.5 * (missing[obj > 20] - 5.0)
    missing[:128] = 5.0  # half the structure gone
    for wrong in (invented, missing, ndimage.shift(obj, (3, 0), order=1, mode="nearest")):  # drawn, lost, moved 1.5 px
        assert residual_figure(x, wrong, 2, OFFSET, GAIN, READ, PX, WL, NA) > 2.5 * honest
    # a structureless output (a withheld result) is not judged; nor is a field too small to have an inside
    assert math.isnan(residual_figure(x, np.full_like(obj, 3.0), 2, OFFSET, GAIN, READ, PX, WL, NA))
    assert math.isnan(residual_figure(x[:24, :24], obj[:48, :48], 2, OFFSET, GAIN, READ, PX, WL, NA))
    assert math.isnan(residual_figure(x, obj[:100], 2, OFFSET, GAIN, READ, PX, WL, NA))  # shapes do not match


needs_sr = pytest.mark.skipif(not (SR / "manifest.json").exists(), reason="the super-resolution package is not shipped")


def _package(tmp_path: Path, threshold: float | None, name: str = "pkg") -> Any:
    """A copy of the shipped super-resolution package whose validated.consistency has ``threshold`` for cells
    and 4x it for sparse (ceiling); None: no consistency section."""
    section = None if threshold is None else {
        "wavelength_um": WL, "na": NA, "ceiling": 4 * threshold, "method": "test",
        "pixel_size_um": json.loads((SR / "manifest.json").read_text())["pixel_size_um"], "morphologies": {
            "cells": {"threshold": threshold, "median": threshold / 2, "max": threshold / 1.5, "fields": 4},
            "sparse": {"threshold": 4 * threshold, "median": threshold, "max": threshold, "fields": 4}}}
    return package_with_validated(SR, tmp_path / name, "consistency", section)


def _bundle(m: Any, frame: np.ndarray, i: int, x: float = 0.0) -> list[StreamFrame]:
    return [StreamFrame({"channel": m.inputs[0], "acquisition_id": "c", "bundle_id": i, "seq": i, "t_acquired_ns": 1,
                         "pixel_size_um": m.pixel_size_um, "stage_x_um": x, "stage_y_um": 0.0, "stage_z_um": 0.0,
                         "exposure_ms": 10.0}, frame)]


@pytest.fixture(scope="module")
def field() -> np.ndarray:
    """A membrane-like widefield field at the package's median training signal, 128²."""
    m = load_package(SR).manifest if (SR / "manifest.json").exists() else None
    signal = m.input_stats.channels[m.inputs[0]].signal[1] if m else 50.0
    obj = ndimage.gaussian_filter(_scene(3), 1.0)
    return _measure(obj, 4, gain=float(signal) / float(obj.mean()))


@needs_sr
def test_a_figure_above_the_validated_threshold_makes_the_result_untrusted(tmp_path, field):
    plain = _package(tmp_path, 1e6, "plain")
    rt = open_runtime(plain, "ort-cpu")
    t = InferenceWorker(plain, rt, uncertainty_budget=float("inf")).process(_bundle(plain.manifest, field, 0)) \
        .header["trust"]["consistency"]
    assert t["state"] == "checked" and t["ok"] is True and t["morphology"] == "ceiling"
    s = float(t["value"])
    assert 0.5 < s < 50, s  # in units of the camera noise
    pkg = _package(tmp_path, s / 2)
    inf = float("inf")
    bad = InferenceWorker(pkg, rt, uncertainty_budget=inf, uncertainty_morphology="cells").process(
        _bundle(pkg.manifest, field, 1)).header["trust"]
    assert bad["ok"] is False and bad["score"] == 0.0
    [reason] = [r for r in bad["reasons"] if r.startswith("inconsistent with the input")]
    assert f"residual {s:.3g} x noise > validated {s / 2:.3g} (cells)" in reason, reason
    for morph, against in (("sparse", "sparse"), (None, "ceiling")):  # validated above it
        t = InferenceWorker(pkg, rt, uncertainty_budget=inf, uncertainty_morphology=morph).process(
            _bundle(pkg.manifest, field, 1)).header["trust"]
        assert not any(r.startswith("inconsistent") for r in t["reasons"]), t["reasons"]
        assert t["consistency"]["ok"] is True and t["consistency"]["morphology"] == against
        assert t["consistency"]["value"] == pytest.approx(s, rel=1e-3)
    # no check budget: nothing is measured, nothing judged
    t = InferenceWorker(pkg, rt, uncertainty_budget=0.0, uncertainty_morphology="cells").process(
        _bundle(pkg.manifest, field, 1)).header["trust"]
    assert t["consistency"]["state"] == "pending" and not any(r.startswith("inconsistent") for r in t["reasons"])


def test_the_check_runs_on_its_own_credit_judges_new_scenes_first_and_carries_its_verdict(tmp_path):
    """The schedule, driven bundle by bundle with a chosen cost (the worker pays what a check took)."""
    v = _package(tmp_path, 3.0, "v").manifest.validated.consistency
    cam = CameraCalibration(offset_adu=OFFSET, read_noise_adu=READ, gain_adu_per_e=GAIN)
    obj = _scene()
    x = _measure(obj)
    c = ConsistencyCheck(v, cam, 2, 1, 1, budget=1 / 64)  # binary fractions: the credit sums exactly
    work, cost = 0.25, 1 / 16  # a 512² frame; a check of 1/16 model pass
    ran, states = [], []
    for i in range(60):
        if c.due(scene_changed=i in (40, 41, 42), work=work, inferred=i != 50):
            c.run([x], obj, PX, i)
            c.pay(cost, work)
            ran.append(i)
        rep, reason = c.report()
        states.append((rep["state"], rep.get("age")))
        assert reason is None and rep["ok"] in (True, None)
    # the first check is advanced (bundle 0); then the measured cost sets the pace: a judged scene again when the
    # credit covers two checks (every 4 bundles: the budget, spent), a new scene as soon as it covers one (40 and
    # 41 at once; the scene of bundle 42, the third in a row, after 2 more); a withheld bundle (50) earns nothing
    assert ran == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 41, 44, 53, 57], ran
    assert states[0] == ("checked", 0) and states[3] == ("carried", 3)
    assert states[42] == states[43] == ("pending", None) and states[44] == ("checked", 0)
    assert states[50] == ("carried", 6)  # the withheld bundle's scene was judged
    assert c.checks == 15 and c.spent_passes == pytest.approx(15 * cost * work)
    assert c.spent_passes <= c.budget * c.passes + cost * work  # the budget holds, plus the advanced check
    # inf: every inferred bundle; 0: never
    every = ConsistencyCheck(v, cam, 2, 1, 1, budget=float("inf"))
    assert all(every.due(False, work, True) for _ in range(5)) and not every.due(False, work, False)
    never = ConsistencyCheck(v, cam, 2, 1, 1)
    assert not any(never.due(i == 0, work, True) for i in range(100))
    with pytest.raises(ValueError, match="consistency budget"):
        ConsistencyCheck(v, cam, 2, 1, 1, budget=-0.1)


@needs_sr
def test_through_the_worker_a_new_scene_is_judged_within_a_few_bundles_and_within_the_budget(tmp_path, field):
    pkg = _package(tmp_path, 1e6)
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=0.1)  # consistency: 0.04
    cons = w.check_consistency
    measured, pay = [], cons.pay

    def fixed_pay(passes: float, work: float) -> None:  # what the worker measured; the schedule runs on a fixed
        measured.append(passes)                        # cost, so a loaded machine cannot move it
        pay(0.1, work)

    cons.pay = fixed_pay
    states = []
    for i in range(24):  # a new scene every 8 bundles
        t = w.process(_bundle(pkg.manifest, field, i, x=500.0 * (i // 8))).header["trust"]
        states.append((t["consistency"]["state"], t["uncertainty"]["check"]["state"].split()[0]))
    # the worker pays for every check with its measured time over the bundle's model run
    assert len(measured) == cons.checks >= 3 and all(0 < p < math.inf for p in measured), measured
    for k in range(3):  # every scene judged within 3 bundles, re-checked as the credit allows, never carried over
        scene = [s for s, _ in states[8 * k:8 * k + 8]]
        assert "checked" in scene[:3] and "carried" in scene and scene[0] != "carried", states
        first = scene.index("checked")
        assert all(s in ("checked", "carried") for s in scene[first:]), states
    # it judges scenes the uncertainty check (1.5 passes a check, 0.1 a bundle) has not reached yet
    assert [u for _, u in states[:8]] == ["pending"] * 8 and states[0][0] == "checked", states
    assert cons.spent_passes <= cons.budget * cons.passes + FIRST_COST_PASSES * field.size / 1e6  # the budget
    # a withheld bundle (all zeros: missing) is not judged (nothing was inferred), though its new scene is due
    n = cons.checks
    t = w.process(_bundle(pkg.manifest, np.zeros_like(field), 24, x=5000.0)).header["trust"]
    assert t["guards"]["action"] == "withheld" and t["consistency"]["state"] == "pending" and cons.checks == n
    # the uncertainty check's own accounting is unchanged: its extra passes are its copies' alone
    chk = w.check_uncertainty
    assert chk.extra_passes == pytest.approx(chk.checks * (chk.tta - 1) * field.size / 1e6)


@needs_sr
def test_packages_it_does_not_apply_to_say_why_it_is_off(tmp_path, field):
    none = _package(tmp_path, None, "none")
    t = InferenceWorker(none, open_runtime(none, "ort-cpu"), uncertainty_budget=float("inf")).process(
        _bundle(none.manifest, field, 0)).header["trust"]["consistency"]
    assert t["state"] == "off: the package records no validated consistency threshold" and t["ok"] is None
    v = _package(tmp_path, 3.0, "v").manifest.validated.consistency
    cam = CameraCalibration(offset_adu=OFFSET, read_noise_adu=READ, gain_adu_per_e=GAIN)
    assert ConsistencyCheck(v, cam, 2, 1, 1).enabled
    for args, why in (((cam, 1, 6, 2), "not a super-resolution package"),  # virtual staining: no forward model
                      ((cam, 2, 2, 1), "not a super-resolution package"),
                      ((CameraCalibration(offset_adu=OFFSET), 2, 1, 1), "records no gain and read noise"),
                      ((None, 2, 1, 1), "records no gain and read noise")):
        c = ConsistencyCheck(v, *args)
        rep, reason = c.report()
        assert not c.enabled and why in rep["state"] and rep["state"].startswith("off: ") and reason is None
