"""Gathering, training and exporting models (tiny data and budgets: the pipeline, not the quality)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the 'train' extra (torch) is not installed")

from scopecast.daemon.inference.package import load_package  # noqa: E402
from scopecast.daemon.inference.runtimes import open_runtime  # noqa: E402
from scopecast.export.onnx_export import ExportError, ParityError, export_onnx, parity  # noqa: E402
from scopecast.export.package import export_package  # noqa: E402
from scopecast.models import architectures  # noqa: E402
from scopecast.models.dataset import REGIONS, gather, load_pairs  # noqa: E402
from scopecast.models.manifest import normalize, sha256_file  # noqa: E402
from scopecast.models.training import TrainConfig, load_checkpoint, train  # noqa: E402
from tests.conftest import small_cfg  # noqa: E402

PACKAGES = Path(__file__).resolve().parents[1] / "models" / "packages"


def _physical(pkg, raw):
    """The engine's computation on raw counts: normalize, ONNX Runtime, output scaling."""
    m = pkg.manifest
    y = open_runtime(pkg, "ort-cpu").run(normalize(list(raw[0]), m.normalization)[None])
    s = m.output_scaling
    return y * np.asarray(s.scale, np.float32)[:, None, None] + np.asarray(s.offset, np.float32)[:, None, None]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    tmp = tmp_path_factory.mktemp("ds")
    d = Daemon(load_mmcore_backend(small_cfg(tmp, 64)), tmp / "rec", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        vs = gather(d.control_address, "virtual-staining", tmp / "vs", n_train=3, n_val=2, seed=1)
        gather(d.control_address, "super-resolution", tmp / "sr", n_train=3, n_val=2, seed=2)
    finally:
        d.close()
    return tmp / "vs", tmp / "sr", vs


def test_gathered_splits_come_from_separate_slide_regions(tiny_dataset):
    vs_dir, sr_dir, index = tiny_dataset
    tr, va = load_pairs(vs_dir, "train"), load_pairs(vs_dir, "val")
    assert tr.inputs.shape == (3, 6, 64, 64) and tr.targets.shape == (3, 2, 64, 64)
    assert all(REGIONS["train"][0][0] <= x <= REGIONS["train"][0][1] for x, _ in tr.positions)
    assert all(REGIONS["val"][0][0] <= x <= REGIONS["val"][0][1] for x, _ in va.positions)
    sr = load_pairs(sr_dir, "train")
    assert sr.inputs.shape == (3, 1, 64, 64) and sr.targets.shape == (3, 1, 128, 128)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    vs_dir, _, _ = tiny_dataset
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(task="virtual-staining", depth=2, width=4, steps=12, batch=2, crop=32, checkpoint_every=5, seed=3)
    return train(vs_dir, out, cfg, progress=False), out


def test_training_writes_checkpoint_log_and_card(trained):
    ckpt, out = trained
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13)) and "val_loss" in lines[-1]
    model, meta = load_checkpoint(ckpt)
    assert meta["steps_done"] == 12 and meta["inputs"][0] == "DPC-Left" and meta["outputs"] == ["nuclei", "membrane"]
    card = (out / "card.md").read_text()
    assert "| **this model** | nuclei |" in card and "linear regression" in card
    assert set(meta["metrics"]["baselines"]) == {"linear regression"}


def test_training_is_seeded(tiny_dataset, tmp_path):
    vs_dir, _, _ = tiny_dataset
    cfg = TrainConfig(task="virtual-staining", depth=2, width=4, steps=3, batch=2, crop=32, seed=5)
    losses = []
    for i in range(2):
        train(vs_dir, tmp_path / str(i), cfg, progress=False)
        losses.append([json.loads(x)["loss"] for x in (tmp_path / str(i) / "log.jsonl").read_text().splitlines()])
    assert losses[0] == losses[1]


def test_export_package_round_trip_through_the_engine(trained, tmp_path):
    ckpt, _ = trained
    res = export_package(ckpt, tmp_path / "pkg", name="vs-tiny", tile=64, halo=8, fp16=True,
                         triton_repository=tmp_path / "triton")
    assert res.reports["fp32"]["max_abs_error"] <= 1e-4 and res.reports["fp32"]["passed"]
    assert res.reports["fp32"]["inputs_shape"][1:] == [6, 64, 64]  # a real validation field
    assert "fp16" in res.reports
    files = {p.name for p in (tmp_path / "pkg").iterdir()}
    assert {"model.onnx", "model_fp16.onnx", "manifest.json", "rdf.yaml", "test_input.npy", "test_output.npy",
            "card.md", "parity.json"} <= files
    pkg = load_package(tmp_path / "pkg")
    m = pkg.manifest
    assert m.inputs[:2] == ["DPC-Left", "DPC-Right"] and m.multiple == 4 and m.output_scaling is not None
    # bioimage.io tensors: raw counts in, physical output out; its test ran in the export and passed
    x, y = np.load(tmp_path / "pkg" / "test_input.npy"), np.load(tmp_path / "pkg" / "test_output.npy")
    assert x.dtype == np.uint16 and res.reports["bioimageio"]["status"] == "passed"
    assert res.reports["bioimageio"]["max_abs_diff"] <= 0.5
    np.testing.assert_allclose(_physical(pkg, x), y, rtol=1e-5, atol=1e-3)
    assert {"sample_input.tif", "sample_output.tif", "cover.png"} <= files
    assert "## Validation" in (tmp_path / "pkg" / "card.md").read_text()
    import onnx
    import yaml

    proto = onnx.load(str(tmp_path / "pkg" / "model.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 6, "H", "W"] and proto.opset_import[0].version >= 18
    rdf = yaml.safe_load((tmp_path / "pkg" / "rdf.yaml").read_text())
    assert rdf["format_version"].startswith("0.5") and rdf["weights"]["onnx"]["sha256"] == m.sha256
    # the network's PyTorch weights ship too (bioimage.io pytorch_state_dict, model.onnx's parent), and
    # bioimage.io's PyTorch adapter reproduced the test output as its ONNX adapter did
    sd = m.provenance["pytorch_state_dict"]
    assert sd["sha256"] == sha256_file(tmp_path / "pkg" / "weights.pt") == rdf["weights"]["pytorch_state_dict"]["sha256"]
    assert rdf["weights"]["onnx"]["parent"] == "pytorch_state_dict"
    assert rdf["weights"]["pytorch_state_dict"]["architecture"] == {  # in the package: no scopecast needed
        "source": "architectures.py", "sha256": sha256_file(tmp_path / "pkg" / "architectures.py"), "callable": "UNet",
        "kwargs": m.provenance["config"]}
    assert set(res.reports["bioimageio"]["by_format"]) == {"onnx", "pytorch_state_dict"}
    # training defaults to calibrated normalization: fixed constants, declared as scale_linear
    assert m.normalization.kind == "calibrated" and m.input_stats is not None and m.output_range is not None
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]] == ["ensure_dtype", "scale_linear", "ensure_dtype"]
    assert rdf["outputs"][0]["postprocessing"][0]["kwargs"]["gain"] == m.output_scaling.scale
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == m.inputs
    cfg = (tmp_path / "triton" / "vs-tiny" / "config.pbtxt").read_text()
    assert "dynamic_batching" in cfg and "instance_group" in cfg and (tmp_path / "triton" / "vs-tiny" / "1" / "model.onnx").exists()
    if not res.manifest.plan_file:
        assert res.notes == [] or all("TensorRT" in n for n in res.notes)


def test_attach_state_dict_adds_the_weights_a_package_was_exported_from(trained, tmp_path):
    """A package exported before packages carried weights.pt gets them from its own checkpoint, never another."""
    import shutil

    import yaml

    from scopecast.export.bioimageio import write_rdf
    from scopecast.export.repackage import attach_state_dict

    ckpt, _ = trained
    export_package(ckpt, tmp_path / "pkg", name="vs-tiny", tile=64, halo=8)
    pkg = tmp_path / "pkg"
    raw = json.loads((pkg / "manifest.json").read_text())  # as an older export wrote it
    del raw["provenance"]["pytorch_state_dict"]
    (pkg / "manifest.json").write_text(json.dumps(raw, indent=2))
    (pkg / "weights.pt").unlink()
    write_rdf(pkg, load_package(pkg).manifest)
    assert set(yaml.safe_load((pkg / "rdf.yaml").read_text())["weights"]) == {"onnx"}
    model_sha = sha256_file(pkg / "model.onnx")
    other = tmp_path / "other.pt"
    shutil.copy(ckpt, other)
    with other.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="does not match the checkpoint vs-tiny was exported from"):
        attach_state_dict(pkg, other)
    assert not (pkg / "weights.pt").exists()
    report = attach_state_dict(pkg, ckpt)
    assert report.passed and set(report.max_abs_diff_by_format) == {"onnx", "pytorch_state_dict"}
    m = load_package(pkg).manifest
    assert sha256_file(pkg / "model.onnx") == model_sha == m.sha256
    assert m.provenance["pytorch_state_dict"]["parity"]["passed"]
    assert "PyTorch adapter" in (pkg / "card.md").read_text()


def test_overwrite_replaces_a_package_and_refuses_any_other_folder(trained, tmp_path):
    """--overwrite deletes what it replaces: a folder of packages with notes, or a dataset, given as --out by
    mistake is refused before anything is deleted, naming why (it was deleted and replaced by the package,
    exit 0); a package is still replaced."""
    import shutil

    from scopecast.models import packages_root

    models = tmp_path / "models"
    shutil.copytree(packages_root() / "virtual-staining-live", models / "virtual-staining-live")
    (models / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"is not a model package \(it holds folders \(virtual-staining-live"):
        export_package(trained[0], models, name="vs-v2", tile=64, halo=8, overwrite=True)
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    with pytest.raises(FileExistsError, match="it has no manifest.json"):
        export_package(trained[0], data, name="vs-v2", tile=64, halo=8, overwrite=True)
    assert (models / "notes.txt").read_text() == "keep me" and (data / "dataset.json").is_file()
    assert (models / "virtual-staining-live" / "model.onnx").is_file()
    with pytest.raises(ExportError, match="package name 'VS v2' is not allowed"):  # before any work
        export_package(tmp_path / "no-such-checkpoint.pt", tmp_path / "pkg", name="VS v2")
    res = export_package(trained[0], models / "virtual-staining-live", name="vs-v2", tile=64, halo=8, overwrite=True)
    assert load_package(models / "virtual-staining-live").manifest.name == res.manifest.name == "vs-v2"


def test_tensorrt_without_gpu_is_a_clear_note(trained, tmp_path):
    from scopecast.daemon.inference.runtimes import gpu_name

    if gpu_name() is not None and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a GPU and TensorRT are present: the engine is built instead")
    res = export_package(trained[0], tmp_path / "pkg", tile=64, halo=8, tensorrt=True)
    assert res.manifest.plan_file is None
    assert any("TensorRT engine not built" in n and ("not installed" in n or "no NVIDIA GPU" in n) for n in res.notes)


def test_unknown_architecture_and_mismatched_checkpoint(trained, tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'resnet'.*unet, sr-unet"):
        architectures.build("resnet", {})
    ckpt = torch.load(trained[0], weights_only=False)
    ckpt["config"] = {**ckpt["config"], "width": 8}
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="does not match architecture 'unet'"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="does not match"):
        export_package(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()


class _Unexportable(torch.nn.Module):
    def forward(self, x):
        return torch.fft.fft2(x).abs()


class _Random(torch.nn.Module):  # eager and ONNX draw different random numbers
    def __init__(self, in_channels=1, out_channels=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 1)
        self.multiple = 1

    def forward(self, x):
        return self.conv(x) + torch.rand_like(x[:, :1])


def test_unexportable_operator_is_named(tmp_path):
    with pytest.raises(ExportError, match="fft"):
        export_onnx(_Unexportable(), np.zeros((1, 1, 8, 8), np.float32), tmp_path / "m.onnx")


def test_parity_failure_leaves_no_package(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(architectures.ARCHITECTURES, "random", _Random)
    ckpt = torch.load(trained[0], weights_only=False)
    ckpt.update(arch="random", config={"in_channels": 6, "out_channels": 2},
                state_dict=_Random(6, 2).state_dict(), multiple=1)
    bad = tmp_path / "random.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ParityError, match="exceeds the tolerance"):
        export_package(bad, tmp_path / "pkg", tile=64, halo=8)
    assert list(tmp_path.glob("pkg*")) == [] and list(tmp_path.glob(".pkg*")) == []


def test_parity_check_reports_the_error(trained, tmp_path):
    model, _ = load_checkpoint(trained[0])
    x = np.random.default_rng(0).random((1, 6, 32, 32), dtype=np.float32)
    path = export_onnx(model, x, tmp_path / "m.onnx")
    report = parity(path, model, x, atol=1e-4)
    assert report["passed"] and 0 <= report["max_abs_error"] <= 1e-4
    with pytest.raises(ParityError, match="exceeds the tolerance 1e-12"):
        parity(path, model, x, atol=1e-12)


@pytest.mark.parametrize("name", ["virtual-staining", "super-resolution", "virtual-staining-live",
                                  "super-resolution-live"])
def test_shipped_packages_pass_their_own_parity_and_beat_baselines(name):
    path = PACKAGES / name
    if not path.exists():
        pytest.skip(f"package {name} has not been trained and shipped yet")
    pkg = load_package(path)
    x, y = np.load(path / "test_input.npy"), np.load(path / "test_output.npy")
    np.testing.assert_allclose(_physical(pkg, x), y, rtol=1e-5, atol=1e-3)
    assert pkg.manifest.provenance["metrics"]["beats_baselines"] is True
    assert (path / "model.onnx").stat().st_size < 8 * 2**20
    assert "beats every baseline" in (path / "card.md").read_text()


@pytest.fixture(scope="module")
def odd_dataset(tmp_path_factory):
    from helpers import gather_small

    return gather_small(tmp_path_factory.mktemp("odd") / "vs", "virtual-staining", 100, n_train=3, n_val=2, seed=1)


def test_training_validates_on_fields_that_are_not_a_multiple_of_the_network(odd_dataset, tmp_path):
    """100² fields, a network of multiple 8: the validation pass (and evaluation, distillation) pads the whole
    field as the engine pads a frame and crops the output back; it raised a size mismatch after training."""
    cfg = TrainConfig(task="virtual-staining", depth=3, width=4, steps=3, batch=2, crop=32, seed=0)  # multiple 8
    ckpt = train(odd_dataset, tmp_path / "run", cfg, progress=False)
    _, meta = load_checkpoint(ckpt)
    assert meta["multiple"] == 8 and np.isfinite(meta["metrics"]["model"]["nuclei"]["psnr"])


def test_int8_quantization_runs_on_fields_that_are_not_a_multiple_of_the_network(odd_dataset, tmp_path):
    """Calibration, fidelity and speed run on padded fields (ONNX Runtime failed in a Concat node)."""
    import shutil

    from scopecast.export.quantize import QuantizationRefused, quantize_package
    from scopecast.models import packages_root

    pkg = tmp_path / "vs"
    shutil.copytree(packages_root() / "virtual-staining", pkg)  # a U-Net of size multiple 8; fields are 100²
    try:
        report = quantize_package(pkg, odd_dataset, calibration_fields=2, method="minmax", speed_size=60,
                                  speed_repeats=1)
    except QuantizationRefused as e:  # a verdict is fine; a crash is not
        report = e.report
    assert report["fields"] == 2 and all(np.isfinite(v) for v in report["loss_db"].values())
    assert report["speed"]["size"] % 8 == 0


@pytest.fixture(scope="module")
def small_sr_dataset(tmp_path_factory):
    from helpers import gather_small

    return gather_small(tmp_path_factory.mktemp("sr") / "ds", "super-resolution", 64, n_train=2, n_val=1, seed=3)


def test_train_names_the_task_a_dataset_was_gathered_for(cli, tmp_path, small_sr_dataset):
    rc, _, err = cli("train", "--data", small_sr_dataset, "--out", tmp_path / "run", "--steps", "2", "--crop", "32",
                     "--depth", "2", "--width", "4", "--threads", "1")  # --task left at its default
    assert rc == 2 and "Traceback" not in err, err
    assert "gathered for 'super-resolution'" in err and "--task super-resolution" in err, err


def test_train_names_a_crop_larger_than_the_fields(cli, tmp_path, small_sr_dataset):
    rc, _, err = cli("train", "--task", "super-resolution", "--data", small_sr_dataset, "--out", tmp_path / "run",
                     "--steps", "2", "--depth", "2", "--width", "4", "--threads", "1")  # default --crop 96 > 64
    assert rc == 2 and "Traceback" not in err, err
    assert "--crop 96 does not fit the dataset's 64x64-pixel fields" in err and "--crop 64" in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_export_int8_prints_only_its_own_lines_on_stdout(cli, trained, tiny_dataset):
    """ONNX Runtime's calibration progress ("Collecting tensor data ...") went to stdout, the command's output."""
    pytest.importorskip("onnxruntime.quantization")
    ckpt, out = trained
    rc, stdout, err = cli("export", "--checkpoint", ckpt, "--out", out / "int8-pkg", "--tile", "64", "--halo", "8",
                          "--int8", tiny_dataset[0])
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("scopecast export: ") and any("INT8 variant" in x for x in lines), stdout
    assert "Collecting tensor data" not in stdout and "histogram" not in stdout, stdout
    assert all(x.startswith(("scopecast export: ", "  ")) for x in lines), stdout


def test_export_int8_with_a_wrong_dataset_path_changes_nothing(cli, trained):
    """The path was found wrong only after the export: with --overwrite the package (and its INT8 variant) was
    already replaced."""
    ckpt, out = trained
    rc, _, err = cli("export", "--checkpoint", ckpt, "--out", out / "kept-pkg", "--tile", "64", "--halo", "8")
    assert rc == 0, err
    before = {f.name: f.read_bytes() for f in (out / "kept-pkg").iterdir() if f.is_file()}
    rc, stdout, err = cli("export", "--checkpoint", ckpt, "--out", out / "kept-pkg", "--tile", "64", "--halo", "8",
                          "--overwrite", "--int8", out / "no-such-dataset")
    assert rc == 2 and "--int8" in err and "not a gathered dataset" in err and "nothing was exported" in err, err
    assert {f.name: f.read_bytes() for f in (out / "kept-pkg").iterdir() if f.is_file()} == before

