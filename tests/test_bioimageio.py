"""The shipped packages as bioimage.io sees them: ``bioimageio test`` (bioimageio.core) passes, and what
the rdf declares is what the engine computes (raw counts in, physical output out)."""

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core", reason="bioimageio.core (the 'dev' extra) is not installed")

from scopecast.daemon.inference.package import load_package  # noqa: E402
from scopecast.daemon.inference.runtimes import open_runtime  # noqa: E402
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame  # noqa: E402
from scopecast.export.bioimageio import (  # noqa: E402
    TOLERANCE, BioimageioTestError, describe, run_bioimageio_test, write_rdf,
)
from scopecast.export.repackage import raw_test_input, repackage  # noqa: E402
from scopecast.models.manifest import normalize, sha256_file  # noqa: E402

PACKAGES = Path(__file__).resolve().parents[1] / "models" / "packages"
SHIPPED = ["virtual-staining", "super-resolution", "virtual-staining-live", "super-resolution-live"]


def _shipped(name: str) -> Path:
    path = PACKAGES / name
    if not (path / "rdf.yaml").exists():
        pytest.skip(f"package {name} has not been trained and shipped yet")
    return path


def _within_tolerance(got: np.ndarray, expected: np.ndarray) -> bool:
    tol = TOLERANCE["absolute_tolerance"] + TOLERANCE["relative_tolerance"] * np.abs(expected)
    return bool(np.all(np.abs(got.astype(np.float64) - expected) <= tol))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_package_passes_bioimageio_test(name):
    path = _shipped(name)
    t0 = time.perf_counter()
    report = run_bioimageio_test(path)  # raises naming the failing checks
    seconds = time.perf_counter() - t0
    assert report.passed and report.failures == []
    # bioimage.io's own prediction (its pre/postprocessing, its ONNX adapter) vs test_output.npy
    assert report.max_abs_diff <= TOLERANCE["absolute_tolerance"]
    # and with its PyTorch weights (weights.pt, what the ONNX model was exported from)
    assert set(report.max_abs_diff_by_format) == {"onnx", "pytorch_state_dict"}, report.max_abs_diff_by_format
    assert not any("sample_tensor" in w or "Validation" in w or "cover" in w for w in report.warnings), report.warnings
    print(f"{name}: bioimageio test {report.status}, max |Δ| {report.max_abs_diff:.3g}, {seconds:.1f} s")


@pytest.mark.parametrize("name", SHIPPED)
def test_test_tensors_are_raw_counts_in_and_the_engines_physical_output_out(name):
    """The real worker (ONNX Runtime CPU) on the raw frames reproduces test_output.npy within the declared tolerance."""
    path = _shipped(name)
    pkg = load_package(path)
    m = pkg.manifest
    raw, expected = np.load(path / "test_input.npy"), np.load(path / "test_output.npy")
    assert raw.dtype == np.uint16 and raw.shape[:2] == (1, len(m.inputs))
    assert expected.dtype == np.float32 and expected.shape == (1, len(m.outputs), *(s * m.scale_factor
                                                                                  for s in raw.shape[2:]))
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    frames = [StreamFrame({"channel": c}, raw[0, i]) for i, c in enumerate(m.inputs)]
    y, _ = w.postprocess(w.infer(w.preprocess(w.order(frames))))
    assert _within_tolerance(y, expected[0])
    assert np.abs(y - expected[0]).max() < 0.05  # counts: float32 rounding, not a different computation
    # a physical output, not the network's normalized one: it spans the output scaling
    assert np.ptp(expected) > 0.1 * max(m.output_scaling.scale)
    rdf = describe(path, m)
    assert str(rdf.inputs[0].data.type) == "uint16" and rdf.documentation is not None
    assert rdf.inputs[0].sample_tensor is not None and rdf.outputs[0].sample_tensor is not None and rdf.covers
    assert "## Validation" in (path / "card.md").read_text()


@pytest.mark.parametrize("name", SHIPPED)
def test_declared_preprocessing_is_the_engines_normalization(name):
    """bioimageio.core's preprocessing of the rdf on raw counts equals normalize() to float32 rounding."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import create_sample_for_model

    path = _shipped(name)
    m = load_package(path).manifest
    raw = np.load(path / "test_input.npy")
    descr = load_model_description(path / "rdf.yaml", perform_io_checks=False)
    pp = create_prediction_pipeline(descr, devices=["cpu"])
    sample = create_sample_for_model(descr, inputs={descr.inputs[0].id: raw})
    pp.apply_preprocessing(sample)
    theirs = sample.members[descr.inputs[0].id].data.to_numpy()
    ours = normalize(list(raw[0]), m.normalization)
    assert theirs.dtype == np.float32 and theirs.shape == (1, *ours.shape)
    ulp = np.spacing(np.abs(ours).max())
    assert np.abs(theirs[0] - ours).max() <= 2 * ulp


def test_a_package_that_does_not_reproduce_its_output_fails_clearly(tmp_path):
    path = tmp_path / "pkg"
    shutil.copytree(_shipped("super-resolution"), path)
    m = load_package(path).manifest
    with (path / "card.md").open("a") as f:  # the card is a living document: editing it breaks nothing
        f.write("\nA table that `scopecast evaluate --card` added.\n")
    assert run_bioimageio_test(path).passed
    y = np.load(path / "test_output.npy")
    y[0, 0, 5, 5] += 2 * TOLERANCE["absolute_tolerance"] + 1  # one element off by more than the tolerance
    np.save(path / "test_output.npy", y)
    write_rdf(path, m)  # the sha256 follows the tampered file: only the content is wrong
    with pytest.raises(BioimageioTestError, match="Reproduce test outputs"):
        run_bioimageio_test(path)
    report = run_bioimageio_test(path, raise_on_failure=False)
    assert not report.passed and report.max_abs_diff == pytest.approx(2 * TOLERANCE["absolute_tolerance"] + 1, rel=1e-3)
    assert any("1 of 65536 elements disagree" in f for f in report.failures), report.failures


def test_repackage_recovers_raw_counts_and_leaves_model_and_manifest_alone(tmp_path):
    path = tmp_path / "pkg"
    shutil.copytree(_shipped("virtual-staining"), path)
    m = load_package(path).manifest
    raw = np.load(path / "test_input.npy")
    # an older package stored the normalized input
    np.save(path / "test_input.npy", normalize(list(raw[0]), m.normalization)[None])
    before = {f: sha256_file(path / f) for f in ("model.onnx", "model_fp16.onnx", "manifest.json")}
    assert repackage(path, test=False) is None
    assert np.array_equal(np.load(path / "test_input.npy"), raw)
    assert np.array_equal(np.load(path / "test_output.npy"), np.load(PACKAGES / "virtual-staining" / "test_output.npy"))
    assert {f: sha256_file(path / f) for f in before} == before
    load_package(path)  # the engine still loads it
    card = (path / "card.md").read_text()
    assert card.count("## Validation") == 1 and "not run yet" in card
    # something that is not the normalization of integer counts is refused, not guessed
    np.save(path / "test_input.npy", np.full((1, 6, 8, 8), 0.123456, np.float32))
    with pytest.raises(ValueError, match="not the normalization of 16-bit camera counts"):
        raw_test_input(path, m)
