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

from scopecast.daemon.inference.consistency import ConsistencyCheck, residual_figure, widefield_otf
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


@needs_sr
def test_the_verdict_carries_within_a_scene_is_dropped_with_it_and_its_time_is_charged_to_the_check(tmp_path, field):
    pkg = _package(tmp_path, 1e6)
    rt = open_runtime(pkg, "ort-cpu")
    w = InferenceWorker(pkg, rt, uncertainty_budget=0.5)
    states = []
    for i in range(8):  # a new scene at bundle 4
        t = w.process(_bundle(pkg.manifest, field, i, x=0.0 if i < 4 else 500.0)).header["trust"]
        states.append((t["consistency"]["state"], t["uncertainty"]["check"]["state"]))
    # both checks run on the same bundles: the consistency verdict is checked or carried exactly when the
    # uncertainty one is, and is dropped with it at the new scene
    for cons, unc in states:
        assert cons.split()[0] == unc.split()[0], states
    assert states[4][0] in ("pending", "checked") and "carried" in [s for s, _ in states[:4]], states
    chk = w.check_uncertainty
    assert w.check_consistency.checks == chk.checks >= 2
    # the extra passes include the consistency check's time, beyond the copies' own (1 per check at tta 2)
    assert chk.extra_passes > chk.checks * (chk.tta - 1) * field.size / 1e6


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
        rep, reason = c.report(0)
        assert not c.enabled and why in rep["state"] and rep["state"].startswith("off: ") and reason is None
