"""The real-time tier (LiveNet, distilled from an accurate teacher) and INT8 variants (tiny data: the pipeline)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the 'train' extra (torch) is not installed")

from scopecast.daemon.inference.package import PackageError, load_package  # noqa: E402
from scopecast.daemon.inference.runtimes import open_runtime  # noqa: E402
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame  # noqa: E402
from scopecast.export.package import export_package  # noqa: E402
from scopecast.export.quantize import CALIBRATIONS, INT8_FILE, QuantizationRefused, quantize_package  # noqa: E402
from scopecast.models.architectures import LiveNet  # noqa: E402
from scopecast.models.dataset import gather, load_pairs  # noqa: E402
from scopecast.models.training import TrainConfig, load_checkpoint, teacher_outputs, train  # noqa: E402
from tests.conftest import small_cfg  # noqa: E402


@pytest.fixture(scope="module")
def vs_data(tmp_path_factory):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    tmp = tmp_path_factory.mktemp("live")
    d = Daemon(load_mmcore_backend(small_cfg(tmp, 64)), tmp / "rec", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        gather(d.control_address, "virtual-staining", tmp / "vs", n_train=3, n_val=2, seed=4)
    finally:
        d.close()
    teacher = train(tmp / "vs", tmp / "teacher", TrainConfig(task="virtual-staining", depth=2, width=4, steps=6,
                                                             batch=2, crop=32, seed=1), progress=False)
    return tmp / "vs", teacher


def test_livenet_shapes_and_multiple():
    for scale in (1, 2):
        for unshuffle in (2, 4):
            m = LiveNet(3, 2, scale=scale, width=8, blocks=3, unshuffle=unshuffle).eval()
            y = m(torch.zeros(1, 3, 32, 48))
            assert tuple(y.shape) == (1, 2, 32 * scale, 48 * scale) and m.multiple == unshuffle
    with pytest.raises(ValueError, match="width, blocks, unshuffle and scale"):
        LiveNet(3, 2, width=0)


def test_livenet_runs_its_stem_folded_the_same_sums_without_a_transpose(tmp_path):
    """forward() = pixel unshuffle + 3x3 conv (the parameters as stored) run as one strided conv; no ONNX Transpose."""
    import onnx

    from scopecast.export.onnx_export import export_onnx

    torch.manual_seed(0)
    for unshuffle in (2, 4):
        m = LiveNet(3, 2, scale=2, width=8, blocks=3, unshuffle=unshuffle).eval()
        x = torch.rand(2, 3, 32, 48)
        with torch.no_grad():
            reference = m.head(m.body(m.stem(x)))  # the unfolded stem, as the parameters are stored
            assert torch.allclose(m(x), reference, atol=1e-5)
        path = export_onnx(m, x[:1].numpy(), tmp_path / f"live{unshuffle}.onnx")
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "Transpose" not in ops and "Conv" in ops, ops


def test_distilled_live_tier_trains_exports_and_runs_int8(vs_data, tmp_path):
    data, teacher = vs_data
    cfg = TrainConfig(task="virtual-staining", tier="live", width=8, blocks=2, steps=8, batch=2, crop=32, seed=2,
                      teacher=str(teacher), distill_weight=0.5)
    ckpt = train(data, tmp_path / "run", cfg, progress=False)
    model, meta = load_checkpoint(ckpt)
    assert meta["arch"] == "live" and meta["config"]["blocks"] == 2 and meta["train_config"]["teacher"] == str(teacher)
    assert meta["outputs"] == ["nuclei", "membrane"] and "metrics" in meta  # held-out figures on 2 channels only
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and all(np.isfinite(losses))

    res = export_package(ckpt, tmp_path / "pkg", name="vs-live-tiny", tile=64, halo=8)
    assert res.reports["fp32"]["passed"]
    pkg = load_package(tmp_path / "pkg")
    with pytest.raises(PackageError, match="no int8 variant: it was never quantized"):
        load_package(tmp_path / "pkg", "int8")

    # a loss budget nothing can meet: refused, reported, nothing registered
    with pytest.raises(QuantizationRefused, match="loses") as refused:
        quantize_package(tmp_path / "pkg", data, max_loss_db=-1.0, calibration_fields=2, speed_size=64,
                         speed_repeats=1)
    assert refused.value.report["accepted"] is False and not (tmp_path / "pkg" / "model_int8.onnx").exists()
    assert "## INT8 variant" in (tmp_path / "pkg" / "card.md").read_text() and "**Not kept**" in \
        (tmp_path / "pkg" / "card.md").read_text()
    with pytest.raises(PackageError, match="quantization was refused"):
        load_package(tmp_path / "pkg", "int8")

    # a speed the tiny model cannot reach: refused by name, like a fidelity loss (1e9x, not 100x: one preempted
    # FP32 timing with speed_repeats=1 can make the measured speedup exceed 100x on a loaded machine)
    with pytest.raises(QuantizationRefused, match=r"x the FP32 model's speed at 64² \(needs more than 1e\+09x\)"):
        quantize_package(tmp_path / "pkg", data, max_loss_db=100.0, calibration_fields=2, speed_size=64,
                         speed_repeats=1, min_speedup=1e9)
    assert "no faster than the FP32 model" in (tmp_path / "pkg" / "card.md").read_text()

    # min_speedup=0: the tiny test model's speed says nothing (INT8 overheads dominate at 64²)
    report = quantize_package(tmp_path / "pkg", data, max_loss_db=100.0, calibration_fields=2, speed_size=64,
                              speed_repeats=1, min_speedup=0.0)
    assert report["accepted"] and set(report["loss_db"]) == {"nuclei", "membrane"}
    assert report["fields"] == len(load_pairs(data, "val").inputs) and report["speed"]["int8_p50_ms"] > 0
    # "auto" tried every calibration on training fields and kept the one whose worst output lost least
    cal = report["calibration"]
    losses = cal["selection"]["worst_loss_db"]
    assert set(losses) == set(CALIBRATIONS) and cal["selection"]["fields"] >= 1
    assert cal["method"] == min(losses, key=losses.get)
    written = (tmp_path / "pkg" / INT8_FILE).read_bytes()
    again = quantize_package(tmp_path / "pkg", data, max_loss_db=100.0, calibration_fields=2, method=cal["method"],
                             speed_size=64, speed_repeats=1, min_speedup=0.0)
    assert "selection" not in again["calibration"] and again["loss_db"] == report["loss_db"]
    assert (tmp_path / "pkg" / INT8_FILE).read_bytes() == written  # the chosen calibration is the one written
    card = (tmp_path / "pkg" / "card.md").read_text()  # the card's INT8 section replaced, not appended
    assert card.count("## INT8 variant") == 1 and "**Kept**" in card and "Not kept" not in card
    assert f"`{cal['method']}` calibrator" in card
    q = load_package(tmp_path / "pkg", "int8")
    assert q.model_path.name == "model_int8.onnx" and q.manifest.variants["int8"].loss_db == report["loss_db"]
    assert load_package(tmp_path / "pkg").model_path.name == "model.onnx"  # fp32 stays the default

    # the INT8 variant runs in the engine's worker; its output stays near the FP32 output
    frames = [StreamFrame({"channel": c, "seq": i, "bundle_id": 1, "pixel_size_um": 0.65},
                          np.full((64, 64), 2000 + 100 * i, np.uint16)) for i, c in enumerate(pkg.manifest.inputs)]
    y32 = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu")).process(frames).data
    y8 = InferenceWorker(q, open_runtime(q, "ort-cpu")).process(frames).data
    assert y8.shape == y32.shape and np.isfinite(y8).all()
    span = float(np.ptp(y32)) or 1.0
    assert float(np.abs(y8 - y32).max()) <= 0.25 * span + 1.0

    # tampering with the variant is caught like tampering with the model
    (tmp_path / "pkg" / "model_int8.onnx").write_bytes(b"garbage")
    with pytest.raises(PackageError, match="does not match its sha256"):
        load_package(tmp_path / "pkg", "int8")

    # a refusal after a kept variant removes it: file, manifest entry and all
    with pytest.raises(QuantizationRefused, match=r"loses .* dB PSNR on \S+ / (nuclei|membrane)"):
        quantize_package(tmp_path / "pkg", data, max_loss_db=-1.0, calibration_fields=2, method="minmax",
                         speed_size=64, speed_repeats=1)
    assert "int8" not in load_package(tmp_path / "pkg").manifest.variants
    assert not (tmp_path / "pkg" / INT8_FILE).exists()
    with pytest.raises(PackageError, match="quantization was refused"):
        load_package(tmp_path / "pkg", "int8")


def test_reexport_replaces_an_unfolded_model_onnx_with_the_same_outputs(vs_data, tmp_path, capsys):
    """A package exported before the folded stem (6-D Transpose in its graph) is re-exported from its weights:
    same outputs, no Transpose, manifest sha256 and bioimage.io files follow; a model.onnx that is not the
    weights' network is refused and left in place."""
    import hashlib

    import onnx

    from scopecast.daemon.cli import main
    from scopecast.export.onnx_export import export_onnx

    data, teacher = vs_data
    cfg = TrainConfig(task="virtual-staining", tier="live", width=8, blocks=2, steps=4, batch=2, crop=32, seed=3,
                      teacher=str(teacher))
    ckpt = train(data, tmp_path / "run", cfg, progress=False)
    pkg_dir = tmp_path / "pkg"
    export_package(ckpt, pkg_dir, name="vs-live-old", tile=64, halo=8)
    model, _ = load_checkpoint(ckpt)

    class Unfolded(torch.nn.Module):  # the graph the exporter wrote before the stem was folded
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.head(self.m.body(self.m.stem(x)))

    x = np.random.default_rng(0).random((1, 6, 64, 64), dtype=np.float32)
    export_onnx(Unfolded(model), x, pkg_dir / "model.onnx")
    manifest = json.loads((pkg_dir / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((pkg_dir / "model.onnx").read_bytes()).hexdigest()
    (pkg_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    frames = [StreamFrame({"channel": c, "seq": i, "bundle_id": 1, "pixel_size_um": 0.65},
                          np.full((64, 64), 2000 + 150 * i, np.uint16)) for i, c in enumerate(manifest["inputs"])]
    old = load_package(pkg_dir)
    with (pkg_dir / "card.md").open("a") as card:  # as 'scopecast evaluate --card' cites the file it measured
        card.write(f"\n## Validated domain\n\n### vs-live-old (virtual-staining, sha256 {old.manifest.sha256[:12]}): "
                   "8 fields\n")
    y_old = InferenceWorker(old, open_runtime(old, "ort-cpu")).process(frames).data
    assert "Transpose" in {n.op_type for n in onnx.load(str(pkg_dir / "model.onnx")).graph.node}

    assert main(["reexport", "--package", str(pkg_dir)]) == 0
    assert "max |new - old|" in capsys.readouterr().out
    new = load_package(pkg_dir)  # the manifest's sha256 follows the new file
    assert new.manifest.sha256 != old.manifest.sha256
    assert "Transpose" not in {n.op_type for n in onnx.load(str(pkg_dir / "model.onnx")).graph.node}
    y_new = InferenceWorker(new, open_runtime(new, "ort-cpu")).process(frames).data
    np.testing.assert_allclose(y_new, y_old, atol=1e-3)
    assert new.manifest.sha256 in (pkg_dir / "rdf.yaml").read_text()  # bioimage.io files rewritten
    assert f"(virtual-staining, sha256 {new.manifest.sha256[:12]}, re-exported from {old.manifest.sha256[:12]} " \
        "with outputs within" in (pkg_dir / "card.md").read_text()  # figures cited by the old file's hash

    # a model.onnx that is not the network of weights.pt: refused by name, nothing replaced
    other = LiveNet(6, 2, width=8, blocks=2).eval()
    export_onnx(other, x, pkg_dir / "model.onnx")
    manifest = json.loads((pkg_dir / "manifest.json").read_text())
    manifest["sha256"] = hashlib.sha256((pkg_dir / "model.onnx").read_bytes()).hexdigest()
    (pkg_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    before = (pkg_dir / "model.onnx").read_bytes()
    assert main(["reexport", "--package", str(pkg_dir)]) == 2
    assert "differs from the shipped model.onnx" in capsys.readouterr().err
    assert (pkg_dir / "model.onnx").read_bytes() == before


def test_teacher_of_another_task_is_refused(vs_data, tmp_path):
    data, teacher = vs_data
    ckpt = torch.load(teacher, map_location="cpu", weights_only=False)
    ckpt["task"] = "super-resolution"
    torch.save(ckpt, tmp_path / "wrong.pt")
    cfg = TrainConfig(task="virtual-staining", tier="live", width=8, blocks=2, steps=2, batch=2, crop=32,
                      teacher=str(tmp_path / "wrong.pt"))
    with pytest.raises(ValueError, match="teacher .* is for task 'super-resolution'"):
        train(data, tmp_path / "run", cfg, progress=False)


def test_a_shipped_package_teaches_like_its_checkpoint(vs_data, tmp_path):
    """``--teacher`` takes a package directory (a fresh clone has no checkpoints): the network rebuilt from
    the manifest and weights.pt gives the checkpoint's outputs; other weights or none are refused by name."""
    data, teacher = vs_data
    export_package(teacher, tmp_path / "pkg", name="vs-teacher-tiny", tile=64, halo=8)
    pairs = load_pairs(data, "train")
    meta = load_checkpoint(teacher)[1]
    from scopecast.models.manifest import Normalization

    norm = Normalization.model_validate(meta["normalization"])
    scale = (np.full(2, 2.0, np.float32), np.full(2, 10.0, np.float32))  # any student units: both see the same
    want = teacher_outputs(teacher, pairs, norm, scale, "virtual-staining")
    got = teacher_outputs(tmp_path / "pkg", pairs, norm, scale, "virtual-staining")
    assert want.shape == got.shape and float(np.ptp(want)) > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    with pytest.raises(ValueError, match="teacher .* is for task 'virtual-staining'"):
        teacher_outputs(tmp_path / "pkg", pairs, norm, scale, "super-resolution")
    weights = tmp_path / "pkg" / "weights.pt"
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(ValueError, match="weights.pt does not match the sha256"):
        teacher_outputs(tmp_path / "pkg", pairs, norm, scale, "virtual-staining")
    weights.unlink()
    with pytest.raises(ValueError, match="carries no PyTorch weights"):
        teacher_outputs(tmp_path / "pkg", pairs, norm, scale, "virtual-staining")
    with pytest.raises(ValueError, match="without manifest.json"):
        teacher_outputs(tmp_path, pairs, norm, scale, "virtual-staining")


def test_live_tier_stem_factor_reaches_the_checkpoint_and_the_package(vs_data, tmp_path):
    data, _ = vs_data
    cfg = TrainConfig(task="virtual-staining", tier="live", width=8, blocks=2, unshuffle=2, steps=2, batch=2, crop=32,
                      seed=3)
    model, meta = load_checkpoint(train(data, tmp_path / "run", cfg, progress=False))
    assert meta["config"]["unshuffle"] == 2 and meta["multiple"] == 2 and model.unshuffle == 2
    export_package(tmp_path / "run" / "checkpoint.pt", tmp_path / "pkg", name="vs-live-u2", tile=64, halo=8)
    assert load_package(tmp_path / "pkg").manifest.multiple == 2  # the engine tiles to the stem's multiple


def test_unknown_tier_and_precision_are_named(vs_data, tmp_path):
    data, _ = vs_data
    with pytest.raises(ValueError, match="unknown tier 'fast'"):
        train(data, tmp_path / "r", TrainConfig(task="virtual-staining", tier="fast", steps=1), progress=False)
    with pytest.raises(PackageError, match="unknown precision 'int4'"):
        load_package(tmp_path, "int4")
    with pytest.raises(ValueError, match="unknown calibration method 'kl'; methods: auto, entropy"):
        quantize_package(tmp_path, data, method="kl")


def test_bench_live_tier_refuses_to_compare_fidelity_across_tasks():
    """Fidelity rows are per task: a mix is refused by name before any work, not a KeyError at the table."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_live_tier.py"),
                        "--package", str(root / "models/packages/virtual-staining-live"),
                        "--package", str(root / "models/packages/super-resolution-live")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "fidelity compares packages of one task" in r.stderr and "super-resolution-live (super-resolution)" \
        in r.stderr
