"""Tiled inference agrees with whole-frame inference at the frame's edge: a frame larger than the model's tile had
its outer halo reflect-padded, while a whole frame (and the exported bioimage.io package) gets the network's own
zero padding there, so the outer pixels depended on the frame's size (the shipped virtual stain: up to 70 % of its
range apart at 600×600). Border tiles now lie inside the frame; the network pads at the frame's edge as for a whole
frame. Real ONNX Runtime sessions."""

from __future__ import annotations

import numpy as np
import pytest

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.tiling import plan_tiles, run_tiled
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.models.synthetic import write_package
from scopecast.models import packages_root


@pytest.mark.parametrize("scale", [1, 2])
@pytest.mark.parametrize("shape", [(300, 420), (129, 700), (1000, 130), (120, 300)])
def test_tiled_output_equals_whole_image_output_up_to_the_edge(tmp_path, shape, scale):
    pkg = load_package(write_package(tmp_path, ["A", "B"], ["x"], scale=scale, tile=128, halo=16))
    rt = open_runtime(pkg, "ort-cpu")
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    plan = plan_tiles(shape, 128, 16, 1)
    assert not plan.whole and plan.n_tiles > 1
    tiled = run_tiled(x, plan, rt.run, scale=scale, batch=3)
    whole = rt.run(x[None])[0]
    assert tiled.shape == whole.shape
    assert np.abs(tiled - whole).max() < 1e-4 * np.abs(whole).max()  # every pixel, the outer ones included


def test_the_shipped_model_answers_a_large_frame_as_a_whole_one_at_its_edge():
    pkg = load_package(packages_root() / "virtual-staining")
    m = pkg.manifest
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1), uncertainty_budget=0)
    sample = np.load(pkg.path / "test_input.npy")[0]  # raw counts of a real field (6, 128, 128)
    raw = np.pad(sample, ((0, 0), (0, 472), (0, 472)), mode="symmetric")  # 600×600: larger than the 512 tile
    frames = [StreamFrame({"channel": c}, np.ascontiguousarray(raw[i])) for i, c in enumerate(m.inputs)]
    x = worker.preprocess(worker.order(frames)).copy()
    tiled = worker.infer(x)  # what the engine and offline inference run
    whole = worker.runtime.run(x[None])[0]
    span = np.ptp(whole, axis=(1, 2))[:, None, None]
    assert (np.abs(tiled - whole) / span).max() < 1e-3
