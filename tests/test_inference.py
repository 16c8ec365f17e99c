"""Model packages, runtimes, tiling and the worker (real ONNX Runtime sessions)."""

import json
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.inference.package import PackageError, load_package
from scopecast.daemon.inference.runtimes import RuntimeUnavailable, gpu_name, open_runtime
from scopecast.daemon.inference.tiling import plan_tiles, run_tiled
from scopecast.daemon.inference.worker import InferenceWorker, NonFiniteOutput, StreamFrame, BundleMismatch
from scopecast.models.synthetic import write_package

NO_GPU = "no NVIDIA GPU on this machine (NVML not found); GPU runtimes are tested where one is present"


@pytest.fixture(scope="module")
def pkg(tmp_path_factory):
    return load_package(write_package(tmp_path_factory.mktemp("pkg"), ["A", "B", "C"], ["x", "y"], tile=128, halo=16))


@pytest.mark.parametrize("shape", [(300, 420), (129, 700), (1000, 130)])
def test_tiled_output_equals_whole_image_output(pkg, shape):
    rt = open_runtime(pkg, "ort-cpu")
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    plan = plan_tiles(shape, 128, 16, 1)
    assert not plan.whole and plan.n_tiles > 1
    tiled = run_tiled(x, plan, rt.run, batch=3)
    whole = rt.run(x[None])[0]
    interior = (slice(None), slice(8, -8), slice(8, -8))
    rel = np.abs(tiled - whole)[interior].max() / np.abs(whole).max()
    assert rel < 1e-3


def test_tiled_super_resolution_output(tmp_path):
    p = load_package(write_package(tmp_path, ["W"], ["sr"], scale=2, tile=96, halo=16))
    rt = open_runtime(p, "ort-cpu")
    x = np.random.default_rng(2).standard_normal((1, 200, 150)).astype(np.float32)
    tiled = run_tiled(x, plan_tiles((200, 150), 96, 16, 1), rt.run, scale=2)
    whole = rt.run(x[None])[0]
    assert tiled.shape == whole.shape == (1, 400, 300)
    assert np.abs(tiled - whole)[:, 16:-16, 16:-16].max() < 1e-3 * np.abs(whole).max()


def test_small_frames_run_whole_padded_to_the_multiple():
    plan = plan_tiles((100, 90), tile=256, halo=16, multiple=16)
    assert plan.whole and plan.tile == (112, 96)
    out = run_tiled(np.ones((1, 100, 90), np.float32), plan, lambda b: b * 2)
    assert out.shape == (1, 100, 90) and np.all(out == 2)


def test_manifest_errors_name_the_problem(tmp_path, pkg):
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    m = json.loads((pkg.path / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**m, "tile": 100, "multiple": 16}))
    with pytest.raises(PackageError, match="tile 100 is not a multiple of 16"):
        load_package(bad)
    (bad / "manifest.json").write_text(json.dumps({**m, "inputs": []}))
    with pytest.raises(PackageError, match="inputs"):
        load_package(bad)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="invalid manifest"):
        load_package(bad)
    # a name names folders: "" was a Triton repository itself (write_triton_repository replaced it), ".." its parent
    for name in ("", "..", "a/b", "VS v2", "-x"):
        (bad / "manifest.json").write_text(json.dumps({**m, "name": name}))
        with pytest.raises(PackageError, match=f"package name {name!r} is not allowed: use 1-64 letters"):
            load_package(bad)
    (bad / "manifest.json").write_bytes(json.dumps(m).encode("utf-16"))  # saved by an editor in UTF-16
    with pytest.raises(PackageError, match=r"bad/manifest.json: invalid manifest: .*JSON"):
        load_package(bad)
    (bad / "manifest.json").unlink()
    (bad / "manifest.json").mkdir()
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(bad)


def test_corrupt_model_file_is_refused(tmp_path):
    p = write_package(tmp_path, ["A"], ["x"])
    data = bytearray((p / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (p / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="does not match the manifest"):
        load_package(p)


def test_unloadable_model_names_the_file(tmp_path):
    from scopecast.models.manifest import sha256_file

    p = write_package(tmp_path, ["A"], ["x"])
    (p / "model.onnx").write_bytes(b"this is not an onnx model")
    m = json.loads((p / "manifest.json").read_text())
    m["sha256"] = sha256_file(p / "model.onnx")
    (p / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RuntimeError, match="cannot load .*model.onnx"):
        open_runtime(load_package(p), "ort-cpu")


def test_cpu_sessions_are_specialized_to_the_input_shape_with_the_same_output(pkg, monkeypatch):
    import scopecast.daemon.inference.runtimes as runtimes

    monkeypatch.setattr(runtimes, "SHAPED_SESSIONS", 2)
    rt = open_runtime(pkg, "ort-cpu", threads=1)
    assert rt.session.get_inputs()[0].shape[2:] == ["H", "W"]  # the package's model is dynamic
    rng = np.random.default_rng(3)
    shapes = [(1, 3, 64, 96), (2, 3, 64, 96), (1, 3, 128, 128)]
    for i, shape in enumerate(shapes):
        x = rng.standard_normal(shape).astype(np.float32)
        got = rt.run(x)
        generic = rt.session.run([rt.output_name], {rt.input_name: x})[0]
        np.testing.assert_allclose(got, generic, rtol=1e-5, atol=1e-5)
        specialized = rt._shaped[shape]
        assert specialized is not rt.session
        assert specialized.get_inputs()[0].shape == list(shape)  # static: what the graph optimizer was given
        assert rt.describe()["shapes"] == [list(s) for s in shapes[max(0, i - 1):i + 1]]  # at most 2 kept
    assert rt.run(x) is not None and list(rt._shaped) == shapes[1:]


def test_auto_runtime_falls_back_and_says_why(pkg):
    rt = open_runtime(pkg)
    if gpu_name() is None:
        assert rt.name == "ort-cpu"
        assert any("tensorrt" in r for r in rt.skipped) and any("ort-cuda" in r for r in rt.skipped)
    with pytest.raises(ValueError, match="unknown runtime 'ort-metal'") as e:
        open_runtime(pkg, "ort-metal")
    assert "auto," in str(e.value) and "triton://HOST:PORT/MODEL" in str(e.value)  # every name it takes


@pytest.mark.skipif(gpu_name() is not None, reason="a GPU is present: the fallback path does not apply")
@pytest.mark.parametrize("name", ["ort-cuda", "ort-tensorrt", "tensorrt"])
def test_gpu_runtimes_refuse_clearly_without_gpu(pkg, name):
    with pytest.raises(RuntimeUnavailable) as e:
        open_runtime(pkg, name)
    assert any(s in str(e.value) for s in ("no NVIDIA GPU", "has no", "no TensorRT engine"))


@pytest.mark.gpu
@pytest.mark.skipif(gpu_name() is None, reason=NO_GPU)
@pytest.mark.parametrize("name", ["ort-cuda", "ort-tensorrt"])
def test_gpu_runtimes_match_cpu(pkg, name, tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 3, 128, 128)).astype(np.float32)
    cpu = open_runtime(pkg, "ort-cpu").run(x)
    gpu = _gpu_runtime(pkg, name, tmp_path).run(x)
    tol = 1e-2 if pkg.manifest.fp16 else 1e-3
    assert np.abs(gpu - cpu).max() < tol * np.abs(cpu).max()


_PROVIDER = {"ort-cuda": "CUDAExecutionProvider", "ort-tensorrt": "TensorrtExecutionProvider"}


def _gpu_runtime(pkg, name, cache_dir):
    """``name`` opened on this GPU machine, or the test skipped with the reason it cannot run here (TensorRT's
    libraries are a separate install from onnxruntime-gpu's)."""
    try:
        return open_runtime(pkg, name, cache_dir=cache_dir)
    except RuntimeUnavailable as e:
        pytest.skip(f"{name} cannot run on this GPU machine: {e}")


@pytest.mark.gpu
@pytest.mark.skipif(gpu_name() is None, reason=NO_GPU)
@pytest.mark.parametrize("name", ["ort-cuda", "ort-tensorrt", "auto"])
def test_a_gpu_runtime_runs_on_the_provider_it_is_named_for(pkg, name, tmp_path):
    rt = _gpu_runtime(pkg, name, tmp_path)
    if name == "auto":
        assert rt.name != "ort-cpu", rt.skipped  # a GPU machine with onnxruntime-gpu: auto picks a GPU runtime
    if rt.name in _PROVIDER:  # ONNX Runtime falls back to the next provider when one cannot start
        assert rt.describe()["providers"][0] == _PROVIDER[rt.name]


@pytest.mark.gpu
@pytest.mark.skipif(gpu_name() is None, reason=NO_GPU)
@pytest.mark.parametrize("name", ["virtual-staining", "super-resolution"])
def test_a_shipped_model_on_the_gpu_computes_what_its_card_validated_on_the_cpu(name):
    pkg = load_package(Path(__file__).resolve().parents[1] / "models" / "packages" / name)
    x = np.random.default_rng(5).standard_normal((1, len(pkg.manifest.inputs), 256, 256)).astype(np.float32)
    cpu = open_runtime(pkg, "ort-cpu").run(x)
    gpu = _gpu_runtime(pkg, "ort-cuda", None).run(x)
    assert np.abs(gpu - cpu).max() < 1e-4 * np.abs(cpu).max()  # full FP32: TF32 convolutions gave ~1e-2


def test_a_provider_that_fell_back_is_refused_naming_the_fallback():
    from scopecast.daemon.inference.runtimes import _require_provider

    _require_provider(["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider", "1.30.0")
    _require_provider(["CPUExecutionProvider"], "CPUExecutionProvider", "1.30.0")
    with pytest.raises(RuntimeUnavailable, match="TensorrtExecutionProvider but could not start it here.*"
                                                 "fell back to CUDAExecutionProvider, CPUExecutionProvider"):
        _require_provider(["CUDAExecutionProvider", "CPUExecutionProvider"], "TensorrtExecutionProvider", "1.30.0")


def _frames(channels, shape=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return [StreamFrame({"channel": c, "seq": i, "bundle_id": 7, "acquisition_id": "a", "t_acquired_ns": i,
                         "pixel_size_um": 0.65}, rng.integers(100, 4000, shape).astype(np.uint16), 1)
            for i, c in enumerate(channels)]


def test_worker_orders_channels_normalizes_and_reports(pkg):
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    frames = _frames(["C", "A", "B", "Extra"])
    r = w.process(frames)
    assert r.header["source_seqs"] == [1, 2, 0]  # model order A, B, C
    assert r.data.shape == (2, 64, 64) and r.header["channels"] == ["x", "y"]
    x = w.preprocess(w.order(frames))
    assert np.percentile(x[0], 1) == pytest.approx(0, abs=0.02) and np.percentile(x[0], 99.8) == pytest.approx(1, abs=0.02)
    with pytest.raises(BundleMismatch, match=r"needs channels \['A', 'B', 'C'\].*missing \['C'\]"):
        w.process(_frames(["A", "B"]))


def test_a_bundle_normalized_beside_the_guards_gives_the_step_by_step_result(pkg, tmp_path):
    """Several frames are normalized on the worker's second thread while the guards run: bundles one after
    another (the one reused input buffer) give exactly what the steps one at a time give. Frames large
    enough that normalizing takes longer than the guards (subsampled): an input read before it is ready
    holds the bundle before's."""
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    for seed in range(3):
        frames = _frames(["C", "A", "B"], shape=(1536, 1536), seed=seed)
        r = w.process(frames)
        y, _ = w.postprocess(w.infer(w.preprocess(w.order(frames))))
        assert np.array_equal(r.data, y), seed
    assert w._beside is not None  # the second thread did the normalizing
    single = load_package(write_package(tmp_path, ["A"], ["x"]))
    one = InferenceWorker(single, open_runtime(single, "ort-cpu"))
    one.process(_frames(["A"]))
    assert one._beside is None  # one frame: normalized in line


def test_nan_output_is_an_error(tmp_path):
    p = load_package(write_package(tmp_path, ["A"], ["x"], nan_output=True))
    w = InferenceWorker(p, open_runtime(p, "ort-cpu"))
    with pytest.raises(NonFiniteOutput, match="NaN/Inf"):
        w.process(_frames(["A"]))


def test_postprocess_extremes_are_exactly_the_scaled_outputs_and_catch_inf(pkg):
    """The output guard trusts the extremes postprocess hands it: they must be the scaled output's own min and
    max, bit for bit, whatever the sign of the scale; an Inf (which a sum would also catch) must raise."""
    from scopecast.models.manifest import OutputScaling

    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    w.m = w.m.model_copy(update={"output_scaling": OutputScaling(scale=[1234.567, -0.0371], offset=[99.9, 7.25])})
    rng = np.random.default_rng(3)
    y = rng.normal(0.3, 0.4, (2, 97, 131)).astype(np.float32)
    got, ext = w.postprocess(y.copy())
    assert np.array_equal(ext[:, 0], got.min(axis=(1, 2))) and np.array_equal(ext[:, 1], got.max(axis=(1, 2)))
    assert ext[1, 0] < ext[1, 1]  # the negative scale swapped them
    y[1, 5, 7] = np.inf
    with pytest.raises(NonFiniteOutput, match="1 NaN/Inf"):
        w.postprocess(y)


def test_default_threads_follow_the_process_affinity_not_the_machine(monkeypatch):
    """An engine pinned with --cpus to one core of eight gets one intra-op thread, not seven."""
    from scopecast.daemon.inference import runtimes

    monkeypatch.setattr(runtimes.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(runtimes.os, "sched_getaffinity", lambda pid: {3})
    assert runtimes.default_threads(1) == 1
    monkeypatch.setattr(runtimes.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert runtimes.default_threads(1) == 7 and runtimes.default_threads(2) == 3


def _lie(path, **fields):
    """Edit a package's manifest so it no longer describes its model (the sha256 of the model still matches)."""
    m = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**m, **fields}))
    return path


def test_a_scale_factor_the_model_does_not_have_is_refused_not_cropped(tmp_path):
    """A 2x model declared 1x: the warm-up on load refuses it, naming scale_factor; an unwarmed worker fails the
    bundle with the same reason on the whole-frame and the tiled path. The top-left quarter of the output was
    published, with the input's pixel size, trusted."""
    p = _lie(write_package(tmp_path / "sr", ["W"], ["sr"], scale=2, tile=64, halo=8), scale_factor=1)
    pkg = load_package(p)
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1), uncertainty_budget=0)
    with pytest.raises(PackageError, match="with scale_factor 1 it must return"):
        w.warm_up((48, 48))
    rng = np.random.default_rng(0)
    for i, size in enumerate((48, 150)):  # whole frame, tiles
        frame = StreamFrame({"channel": "W", "bundle_id": i, "acquisition_id": "a", "seq": i},
                            rng.integers(100, 4000, (size, size)).astype(np.uint16))
        with pytest.raises(ValueError, match="the manifest's scale_factor does not match the model"):
            w.process([frame])


@pytest.mark.parametrize(("lie", "why"), [
    ({"outputs": ["x"]}, r"the model produces 2 output channels; the manifest's outputs are 1 \(\['x'\]\)"),
    ({"inputs": ["A"]}, r"the model failed on an input of the manifest's shape \(1 channels \['A'\], 64×64\)"),
])
def test_warm_up_refuses_a_manifest_whose_channels_the_model_does_not_have(tmp_path, lie, why):
    """Checked at load (engine start and load_model warm up), not on every bundle after the swap."""
    pkg = load_package(_lie(write_package(tmp_path / "p", ["A", "B"], ["x", "y"], tile=64, halo=8), **lie))
    w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1), uncertainty_budget=0)
    with pytest.raises(PackageError, match=why):
        w.warm_up((64, 64))


def test_results_name_the_precision_and_the_file_that_computed_them():
    """An INT8 result carried the FP32 file's sha256 and nothing saying it was INT8: afterwards the two could not
    be told apart. ``model_sha256`` stays the package's id; ``precision`` and ``weights_sha256`` say what ran."""
    from scopecast.models import packages_root
    from scopecast.models.manifest import sha256_file

    vs = packages_root() / "virtual-staining"  # ships an INT8 variant
    raw = np.load(vs / "test_input.npy")[0]
    for precision, file in (("int8", "model_int8.onnx"), ("fp32", "model.onnx")):
        pkg = load_package(vs, precision)
        w = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1), uncertainty_budget=0)
        frames = [StreamFrame({"channel": c, "bundle_id": 1, "acquisition_id": "a", "seq": i, "exposure_ms": 10.0,
                               "pixel_size_um": 0.65}, raw[i]) for i, c in enumerate(pkg.manifest.inputs)]
        h = w.process(frames).header
        assert h["precision"] == precision and h["weights_sha256"] == sha256_file(vs / file)
        assert h["model_sha256"] == pkg.manifest.sha256 == sha256_file(vs / "model.onnx")
