"""Per-pixel uncertainty by dihedral test-time augmentation (daemon/inference/uncertainty.py, worker option)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.uncertainty import DIHEDRAL, apply, invert, summary, tta_std, tta_stds
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

VS = Path(__file__).resolve().parents[1] / "models" / "packages" / "virtual-staining"


def test_the_eight_transforms_are_the_dihedral_group_and_invert():
    x = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)  # not square: rotations swap the axes
    seen = set()
    for t in DIHEDRAL:
        y = apply(x, t)
        assert np.array_equal(invert(y, t), x)
        seen.add(y.tobytes() + bytes(y.shape))
    assert len(seen) == 8 and DIHEDRAL[0] == (0, False)
    assert all(apply(x, t).shape == x.shape for t in DIHEDRAL[:4])  # the first four keep the field's shape


def test_tta_std_is_zero_for_an_equivariant_map_and_the_spread_otherwise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 32, 32)).astype(np.float32)
    blur = lambda a: ndimage.gaussian_filter(a, (0, 1.5, 1.5), mode="reflect")  # noqa: E731 - isotropic
    assert tta_std(x, blur, 8).max() < 1e-5
    shift = lambda a: np.roll(a, 1, axis=-1)  # noqa: E731 - not rotation invariant
    got = tta_std(x, shift, 4)
    answers = np.stack([invert(shift(np.ascontiguousarray(apply(x, t))), t) for t in DIHEDRAL[:4]])
    np.testing.assert_allclose(got, answers.std(axis=0), rtol=1e-5, atol=1e-6)
    assert got.mean() > 0.5
    with pytest.raises(ValueError, match="dihedral copies"):
        tta_std(x, shift, 3)
    s = summary(np.stack([got, 2 * got]), ["a", "b"], [2.0, 2.0], 4)
    assert s["tta"] == 4 and s["channels"]["b"]["mean"] == pytest.approx(got.mean(), rel=1e-3)
    assert s["mean"] == s["channels"]["b"]["mean"] and s["p99"] >= s["mean"]


def test_tta_stds_of_every_copy_count_are_the_spread_of_the_answers_and_leave_the_identity_alone():
    """One pass gives 2, 4 and 8 copies (2: half the difference; more: Welford in place), with channels permuted
    by the transform; the caller's answer to the bundle itself is read, never written."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 24, 24)).astype(np.float32)
    f = lambda a: np.stack([2 * a[0] + np.roll(a[1], 1, axis=-1), a[2] ** 2])  # noqa: E731 - no symmetry
    order = [2, 0, 1]
    got = tta_stds(x, lambda a: f(a[order]), (2, 4, 8))
    for n in (2, 4, 8):
        answers = np.stack([invert(f(np.ascontiguousarray(apply(x, t))[order]), t) for t in DIHEDRAL[:n]])
        np.testing.assert_allclose(got[n], answers.std(axis=0), rtol=1e-5, atol=1e-6)
        assert got[n].mean() > 0.1
    identity = f(x[order])
    kept = identity.copy()
    two = tta_stds(x, lambda a: f(a[order]), (2,), identity=identity)
    assert np.array_equal(identity, kept) and np.array_equal(two[2], got[2])


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_worker_publishes_an_uncertainty_channel_per_output_and_a_trust_summary():
    pkg = load_package(VS)
    m = pkg.manifest
    # a textured field at each channel's median training signal (camera counts with shot noise): inferred, not
    # withheld (it need not be trusted: the uncertainty is published either way)
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=(128, 128)), 3.0)
    texture /= np.abs(texture).max()
    off = m.camera.offset_adu
    raw = [np.clip(off + rng.poisson(m.input_stats.channels[c].signal[1] * (1.0 + 0.5 * texture)), 0, 65535)
           .astype(np.uint16) for c in m.inputs]

    def bundle(frames):
        return [StreamFrame({"channel": n, "acquisition_id": "u", "bundle_id": 1, "seq": i, "t_acquired_ns": 1,
                             "pixel_size_um": m.pixel_size_um}, f) for i, (n, f) in enumerate(zip(m.inputs, frames))]

    rt = open_runtime(pkg, "ort-cpu")
    plain = InferenceWorker(pkg, rt).process(bundle(raw))
    assert plain.header["channels"] == m.outputs and set(plain.header["trust"]["uncertainty"]) == {"check"}
    w = InferenceWorker(pkg, rt, uncertainty=4)
    r = w.process(bundle(raw))
    assert r.header["trust"]["guards"]["action"] == "inferred", r.header["trust"]["reasons"]
    n = len(m.outputs)
    assert r.header["channels"] == m.outputs + [f"{o}:std" for o in m.outputs]
    assert r.data.shape == (2 * n, *raw[0].shape) and r.header["shape"] == list(r.data.shape)
    np.testing.assert_array_equal(r.data[:n], plain.data)  # the published image is the model's own answer
    std = r.data[n:]
    assert np.isfinite(std).all() and std.min() >= 0 and std.max() > 0
    u = r.header["trust"]["uncertainty"]
    assert u["tta"] == 4 and set(u["channels"]) == set(m.outputs) and u["ms"] > 0
    scale = m.output_scaling.scale
    for c, o in enumerate(m.outputs):
        assert u["channels"][o]["mean"] == pytest.approx(std[c].mean() / scale[c], rel=1e-3)
    # a withheld bundle: nothing inferred, a zero uncertainty channel, no summary (the check's state only)
    dead = w.process(bundle([np.zeros_like(f) for f in raw]))
    assert dead.header["trust"]["guards"]["action"] == "withheld"
    assert set(dead.header["trust"]["uncertainty"]) == {"check"}
    assert dead.data.shape == r.data.shape and not dead.data[n:].any()
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        InferenceWorker(pkg, rt, uncertainty=3)


def test_mirrored_copies_are_physical_inputs_on_the_simulated_scope(tmp_path):
    """The copies the TTA feeds the model are what the microscope would record of the mirrored field: on the
    simulator, DPC-Left of a mirrored specimen is the mirrored DPC-Right of the specimen (and Top/Bottom under
    an up-down mirror), which is what channel_order permutes; mirroring without the swap is not."""
    from conftest import small_cfg

    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.inference.uncertainty import channel_order

    rng = np.random.default_rng(0)
    opd = ndimage.gaussian_filter(rng.normal(0, 1, (256, 256)), 4)
    opd *= 0.3 / opd.std()
    b = load_mmcore_backend(small_cfg(tmp_path, 64))
    try:
        b.core.setProperty("Camera", "Noise", "Off")
        b.core.setProperty("Scope", "SpecimenPixelSizeUm", 0.325)

        def snap_all(o, name):
            np.savez(tmp_path / name, opd=o)
            b.core.setProperty("Scope", "SpecimenFile", str(tmp_path / name))
            out = {}
            for ch in ("DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom"):
                b.set_channel(ch)
                out[ch] = b.snap(exposure_ms=10).data.astype(np.float64)
            return out

        names = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom"]
        plain = np.stack([snap_all(opd, "a.npz")[c] for c in names])
        for t, mirrored in (((0, True), opd[:, ::-1]), ((2, True), opd[::-1, :])):
            seen = np.stack([snap_all(np.ascontiguousarray(mirrored), "m.npz")[c] for c in names])
            order = channel_order(names, t)
            right = apply(plain[order], t)  # what the TTA feeds the model
            wrong = apply(plain, t)  # mirrored frames without the swap
            err = lambda a: float(np.abs(a - seen).mean() / seen.std())  # noqa: E731
            assert err(right) < 0.1 and err(wrong) > 3 * err(right), (t, err(right), err(wrong))
    finally:
        b.close()
