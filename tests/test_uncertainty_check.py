"""The uncertainty check (issue 11): a validated threshold per morphology, under a duty-cycle budget.

Real ONNX Runtime sessions on the shipped virtual-staining package; the thresholds are written into a copy of
its manifest so that each test knows which side of them the bundle's statistic lies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.uncertainty import COPY_COST, Scene
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from tests.helpers import package_with_validated

VS = Path(__file__).resolve().parents[1] / "models" / "packages" / "virtual-staining"
pytestmark = pytest.mark.skipif(not (VS / "manifest.json").exists(),
                                reason="the virtual-staining package is not shipped")


class CountingRuntime:
    """The real runtime, counting the pixels it is asked to infer (one tile batch per call)."""

    def __init__(self, rt: Any) -> None:
        self.rt, self.pixels, self.name = rt, 0, rt.name

    def run(self, x: np.ndarray) -> np.ndarray:
        self.pixels += int(x.shape[0] * x.shape[-2] * x.shape[-1])
        return self.rt.run(x)

    def describe(self) -> dict[str, Any]:
        return self.rt.describe()


def _package(tmp_path: Path, thresholds: dict[str, float] | None, name: str = "pkg") -> Any:
    """A copy of the shipped package whose validated.uncertainty holds ``thresholds`` (None: no thresholds)."""
    section = None if thresholds is None else {
        "statistic": "signal", "tta": 2, "ceiling": max(thresholds.values()), "method": "test",
        "morphologies": {k: {"threshold": v, "median": v / 2, "max": v / 1.5, "fields": 4}
                         for k, v in thresholds.items()}}
    return package_with_validated(VS, tmp_path / name, "uncertainty", section)


@pytest.fixture(scope="module")
def field() -> list[np.ndarray]:
    """A textured field at each channel's median training signal (camera counts with shot noise), 128²."""
    m = load_package(VS).manifest
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 3.0)
    texture /= np.abs(texture).max()
    return [np.clip(m.camera.offset_adu + rng.poisson(m.input_stats.channels[c].signal[1] * (1.0 + 0.5 * texture)),
                    0, 65535).astype(np.uint16) for c in m.inputs]


def _bundle(m: Any, frames: list[np.ndarray], i: int, x: float = 0.0, z: float = 0.0,
            exposure: float = 10.0) -> list[StreamFrame]:
    return [StreamFrame({"channel": n, "acquisition_id": "u", "bundle_id": i, "seq": c, "t_acquired_ns": 1,
                         "pixel_size_um": m.pixel_size_um, "stage_x_um": x, "stage_y_um": 0.0, "stage_z_um": z,
                         "exposure_ms": exposure}, f) for c, (n, f) in enumerate(zip(m.inputs, frames, strict=True))]


def _statistic(tmp_path: Path, field: list[np.ndarray]) -> float:
    pkg = _package(tmp_path, None, "plain")
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=float("inf"))
    check = w.process(_bundle(pkg.manifest, field, 0)).header["trust"]["uncertainty"]["check"]
    assert check["state"].startswith("checked (informational") and check["threshold"] is None and check["ok"] is None
    return float(check["value"])


def test_a_statistic_above_the_validated_threshold_makes_the_result_untrusted(tmp_path, field):
    s = _statistic(tmp_path, field)
    assert s > 0
    pkg = _package(tmp_path, {"cells": s / 2, "sparse": s * 4})
    m = pkg.manifest
    rt = open_runtime(pkg, "ort-cpu")
    inf = float("inf")
    bad = InferenceWorker(pkg, rt, uncertainty_budget=inf, uncertainty_morphology="cells").process(_bundle(m, field, 1))
    t = bad.header["trust"]
    assert t["ok"] is False and t["score"] == 0.0
    [reason] = [r for r in t["reasons"] if r.startswith("uncertainty:")]
    assert f"> validated {s / 2:.3g} (cells, x2)" in reason, reason
    assert t["uncertainty"]["check"]["state"] == "checked" and t["uncertainty"]["check"]["ok"] is False
    # the same bundle against a morphology validated above it, and against the ceiling (morphology unknown)
    for morph, against in (("sparse", "sparse"), (None, "ceiling")):
        t = InferenceWorker(pkg, rt, uncertainty_budget=inf, uncertainty_morphology=morph).process(
            _bundle(m, field, 1)).header["trust"]
        assert not any(r.startswith("uncertainty") for r in t["reasons"]), t["reasons"]
        assert t["uncertainty"]["check"]["ok"] is True and t["uncertainty"]["check"]["morphology"] == against
        assert t["uncertainty"]["check"]["value"] == pytest.approx(s, rel=1e-3)
    # budget 0: no check, the statistic is neither measured nor judged
    t = InferenceWorker(pkg, rt, uncertainty_budget=0.0, uncertainty_morphology="cells").process(
        _bundle(m, field, 1)).header["trust"]
    assert t["uncertainty"]["check"]["state"] == "off" and not any(r.startswith("uncertainty") for r in t["reasons"])


def test_the_budget_bounds_the_extra_inferences_counted_at_the_runtime(tmp_path, field):
    pkg = _package(tmp_path, {"cells": 1e9})
    m = pkg.manifest
    rt = CountingRuntime(open_runtime(pkg, "ort-cpu"))
    plain = InferenceWorker(pkg, rt, uncertainty_budget=0.0)
    plain.process(_bundle(m, field, 0))
    one = rt.pixels  # one ordinary inference
    rt.pixels = 0
    budget, k = 0.2, 24
    w = InferenceWorker(pkg, rt, uncertainty_budget=budget)
    states = []
    for i in range(k):  # a new scene every 6 bundles
        states.append(w.process(_bundle(m, field, i, x=1000.0 * (i // 6))).header["trust"]["uncertainty"]["check"])
    extra = rt.pixels - k * one
    assert extra <= budget * k * one, (extra, k * one)
    assert extra == w.check_uncertainty.checks * one and w.check_uncertainty.checks >= 3  # each check: one copy
    assert states[0]["state"] == "pending" and any(s["state"] == "carried" for s in states)


def test_the_verdict_carries_within_a_scene_and_resets_on_a_new_one(tmp_path, field):
    s = _statistic(tmp_path, field)
    pkg = _package(tmp_path, {"cells": s / 2})  # every check fails
    m = pkg.manifest
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=0.3 * COPY_COST)
    # credit 0.3 a bundle, a check costs 1 (in units of COPY_COST passes): pending, pending, pending, checked
    # (0.2 left), carried (0.5), then a new scene: the old verdict is dropped, pending until the credit covers a
    # check (0.8, then 1.1)
    scenes = [dict(x=0.0)] * 5 + [dict(x=0.0, z=5.0)] * 2
    got = [w.process(_bundle(m, field, i, **sc)).header["trust"] for i, sc in enumerate(scenes)]
    states = [t["uncertainty"]["check"]["state"] for t in got]
    assert states == ["pending"] * 3 + ["checked", "carried", "pending", "checked"], states
    flagged = [any(r.startswith("uncertainty:") for r in t["reasons"]) for t in got]
    assert flagged == [False] * 3 + [True, True, False, True], flagged
    carried = got[4]["uncertainty"]["check"]
    assert carried["checked_bundle"] == 3 and carried["age"] == 1
    assert "checked 1 bundles ago" in [r for r in got[4]["reasons"] if r.startswith("uncertainty:")][0]


def test_a_package_without_thresholds_stays_informational(tmp_path, field):
    pkg = _package(tmp_path, None)
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=float("inf"))
    t = w.process(_bundle(pkg.manifest, field, 0)).header["trust"]
    c = t["uncertainty"]["check"]
    assert c["threshold"] is None and c["ok"] is None and c["value"] > 0 and "informational" in c["state"]
    assert c["morphology"] == "no validated threshold"
    assert not any(r.startswith("uncertainty") for r in t["reasons"])


def test_scenes_are_told_apart_by_what_the_frame_headers_carry():
    h = {"acquisition_id": "a", "stage_x_um": 0.0, "stage_y_um": 0.0, "stage_z_um": 0.0, "pixel_size_um": 0.65,
         "exposure_ms": 10.0}
    a = Scene.of(h, 512)  # field of view 333 µm
    assert a.same(Scene.of({**h, "stage_x_um": 50.0, "stage_z_um": 0.5}, 512))
    for change in ({"stage_x_um": 100.0}, {"stage_y_um": -100.0}, {"stage_z_um": 2.0}, {"pixel_size_um": 0.325},
                   {"exposure_ms": 12.0}, {"acquisition_id": "b"}):
        assert not a.same(Scene.of({**h, **change}, 512)), change
    bare = Scene.of({"acquisition_id": "a"}, 512)  # a header without position proves nothing: never the same
    assert not bare.same(bare) and not a.same(None)


SR = Path(__file__).resolve().parents[1] / "models" / "packages" / "super-resolution"


@pytest.mark.skipif(not (SR / "manifest.json").exists(), reason="the super-resolution package is not shipped")
def test_shipped_thresholds_flag_filaments_and_trust_membranes_on_the_simulated_scope(tmp_path):
    """The case the input guards miss (a held-out morphology where the model is no better than Richardson-Lucy):
    a filaments field from the simulator goes untrusted by the uncertainty check against the shipped package's
    validated ceiling; a membranes field (a training morphology, held-out slide region) stays trusted."""
    from scopecast.models.dataset import _as_counts, calibrate_camera, field_plan
    from scopecast.models.evaluate_morphology import _capture, _Sim

    pkg = load_package(SR)
    assert pkg.manifest.validated.uncertainty is not None, "the shipped package has no uncertainty thresholds"
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=float("inf"))
    sim = _Sim(256, tmp_path)
    try:
        sim.set_sample("cells")
        cam = calibrate_camera(sim.client)
        got = {}
        for kind in ("filaments", "membranes"):
            fl = field_plan("super-resolution", "val", 1, 31, [kind], blank_fraction=0.0, exposure_ms=(11.2, 11.2),
                            defocus_um=0.0)
            p = _capture(sim, "super-resolution", fl, kind, cam)
            got[kind] = w.process([StreamFrame({"channel": "Membrane", "pixel_size_um": float(p.pixel_size_um),
                                                "bundle_id": 0}, _as_counts(p.inputs[0][0]))]).header["trust"]
    finally:
        sim.close()
    fil, mem = got["filaments"], got["membranes"]
    assert fil["ok"] is False and any(r.startswith("uncertainty: signal") and "(ceiling, x2)" in r
                                      for r in fil["reasons"]), fil["reasons"]
    assert mem["ok"] is True and mem["uncertainty"]["check"]["ok"] is True, mem["reasons"]
    assert fil["uncertainty"]["check"]["value"] > mem["uncertainty"]["check"]["value"]


def test_the_int8_variant_is_judged_by_its_own_validated_thresholds(tmp_path, field):
    """Rounding changes the spread between the dihedral copies: an INT8 file is checked against the thresholds
    measured on it (``variants.int8.validated``), the FP32 file against the package's; a variant that records
    none falls back to the package's."""
    if "int8" not in load_package(VS).manifest.variants:
        pytest.skip("the shipped virtual-staining package has no INT8 variant")
    dst = tmp_path / "pkg"
    shutil.copytree(VS, dst)
    m = json.loads((dst / "manifest.json").read_text())

    def thresholds(v: float) -> dict[str, Any]:
        return {"statistic": "signal", "tta": 2, "ceiling": v, "method": "test",
                "morphologies": {"cells": {"threshold": v, "median": v / 2, "max": v / 1.5, "fields": 4}}}

    m["validated"]["uncertainty"] = thresholds(1e9)  # the package's: nothing fails it
    m["variants"]["int8"]["validated"] = {**m["validated"], "uncertainty": thresholds(1e-9)}  # everything fails
    (dst / "manifest.json").write_text(json.dumps(m))

    def check(precision: str) -> dict[str, Any]:
        pkg = load_package(dst, precision)
        w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty_budget=float("inf"))
        return w.process(_bundle(pkg.manifest, field, 1)).header["trust"]

    t8, t32 = check("int8"), check("fp32")
    assert t8["uncertainty"]["check"]["ok"] is False and t8["uncertainty"]["check"]["threshold"] == pytest.approx(1e-9)
    assert t8["ok"] is False and any(r.startswith("uncertainty:") for r in t8["reasons"]), t8["reasons"]
    assert t32["uncertainty"]["check"]["ok"] is True and t32["uncertainty"]["check"]["threshold"] == pytest.approx(1e9)
    assert not any(r.startswith("uncertainty") for r in t32["reasons"]), t32["reasons"]
    del m["variants"]["int8"]["validated"]
    (dst / "manifest.json").write_text(json.dumps(m))
    assert check("int8")["uncertainty"]["check"]["threshold"] == pytest.approx(1e9)
