"""Triton scale-out against a real ``tritonserver`` (the one inside the nvidia-pytriton wheel).

The server runs the exported repository (python backend, onnxruntime inside);
the engine sends its tiles to it over gRPC with shared memory. Results must
equal the ONNX Runtime path: same onnxruntime, same weights, so they agree to
float32 rounding (tolerance rtol 1e-5, atol 1e-3 physical counts; bit-identical
on the dev box). Skipped, with the reason, where the server cannot run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.triton_runtime import parse_triton_url
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.export.triton import write_triton_repository
from scopecast.models.manifest import Normalization, OutputScaling, normalize
from scopecast.models.synthetic import write_package

from helpers import wait_subscribed

CYCLE = ["DPC-Left", "DPC-Right", "BF"]
RTOL, ATOL = 1e-5, 1e-3


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-pkgs")
    calibrated = write_package(
        root / "tiny", CYCLE, ["nuclei", "membrane"], name="tiny", width=8, layers=3, tile=128,
        normalization=Normalization(kind="calibrated", offset=[100.0] * 3, scale=[3000.0, 3100.0, 5000.0]),
        output_scaling=OutputScaling(scale=[2000.0, 800.0], offset=[100.0, 99.0]))
    # per-image percentiles, x2 upsampling, size multiple 8 (the physical model pads and crops)
    percentile = write_package(root / "tiny-sr", ["Membrane"], ["membrane-sr"], name="tiny-sr", width=8, layers=3,
                               scale=2, tile=128, multiple=8,
                               output_scaling=OutputScaling(scale=[1500.0], offset=[100.0]))
    return load_package(calibrated), load_package(percentile)


@pytest.fixture(scope="module")
def server(packages, tmp_path_factory):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (the 'dev' extra)")
    from scopecast.export.triton_server import TritonServer, TritonServerUnavailable

    repo = tmp_path_factory.mktemp("triton-repo")
    for p in packages:
        write_triton_repository(p.path, p.manifest, repo, max_batch=8, threads=1)
    # the percentile model's physical stage calls its network in the server (business logic
    # scripting), as it does in front of an onnxruntime or TensorRT network model
    spec = repo / "tiny-sr" / "1" / "scopecast.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "weights": None}))
    (repo / "tiny-sr" / "1" / "model.onnx").unlink()
    srv = TritonServer(repo)
    try:
        srv.start(timeout=90)
    except TritonServerUnavailable as e:
        pytest.skip(f"tritonserver cannot run here: {e}")
    yield srv
    srv.close()


def _expected_physical(pkg, raw: np.ndarray) -> np.ndarray:
    """What the physical model must return: scopecast's normalize, padding, ONNX Runtime, output scaling."""
    m = pkg.manifest
    rt = open_runtime(pkg, "ort-cpu", threads=1)
    out = []
    for img in raw:
        x = normalize(list(img), m.normalization)
        h, w = x.shape[1:]
        ph, pw = -h % m.multiple, -w % m.multiple
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        y = rt.run(x[None])[0][:, : h * m.scale_factor, : w * m.scale_factor]
        out.append(y * np.float32(m.output_scaling.scale)[:, None, None]
                   + np.float32(m.output_scaling.offset)[:, None, None])
    return np.stack(out)


def test_physical_model_gives_physical_units_from_raw_counts(server, packages):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.url)
    rng = np.random.default_rng(3)
    for pkg in packages:
        m = pkg.manifest
        raw = (100 + rng.gamma(2.0, 600.0, (2, len(m.inputs), 45, 70))).astype(np.uint16).astype(np.float32)
        inp = grpcclient.InferInput("raw", list(raw.shape), "FP32")
        inp.set_data_from_numpy(raw)
        y = client.infer(m.name, [inp], client_timeout=60).as_numpy(m.output_name)
        expected = _expected_physical(pkg, raw)
        assert y.shape == (2, len(m.outputs), 45 * m.scale_factor, 70 * m.scale_factor)
        np.testing.assert_allclose(y, expected, rtol=RTOL, atol=ATOL, err_msg=m.name)
        assert np.abs(expected).max() > 50  # physical counts, not normalized units
    client.close()


def test_runtime_matches_onnxruntime_and_refuses_another_package(server, packages):
    tiny, sr = packages
    x = np.random.default_rng(0).normal(size=(11, 3, 32, 48)).astype(np.float32)  # > max_batch: split
    ref = open_runtime(tiny, "ort-cpu", threads=1).run(x)
    for url in (f"triton://{server.url}/tiny", f"triton://{server.url}/tiny-net?shm=off"):
        rt = open_runtime(tiny, url)
        assert rt.describe()["model"] == "tiny-net"
        assert rt.describe()["shared_memory"] is (not url.endswith("off"))
        np.testing.assert_allclose(rt.run(x), ref, rtol=RTOL, atol=ATOL)
        rt.close()
    with pytest.raises(RuntimeError, match="not package 'tiny-sr'"):
        open_runtime(sr, f"triton://{server.url}/tiny")
    from scopecast.daemon.inference.runtimes import RuntimeUnavailable
    from scopecast.export.triton_server import free_port

    with pytest.raises(RuntimeUnavailable, match="no ready model 'nope'"):
        open_runtime(tiny, f"triton://{server.url}/nope")
    with pytest.raises(RuntimeUnavailable, match="not reachable"):
        open_runtime(tiny, f"triton://127.0.0.1:{free_port()}/tiny")


def test_engine_serves_through_triton_and_matches_onnxruntime(server, packages, daemon, client):
    from scopecast.daemon.inference.engine import InferenceEngine
    from scopecast.daemon.stream import StreamSubscriber

    tiny = packages[0]
    joined = daemon.publisher.subscriptions.of("frame")
    engine = InferenceEngine(tiny, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             runtime=f"triton://{server.url}/tiny",
                             policy="all", warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame", joined + 1)
        frames_sub = StreamSubscriber(daemon.stream_address, topics=("frame",))
        results_sub = StreamSubscriber(engine.results_address, topics=("result",))
        wait_subscribed(daemon.publisher, "frame", joined + 2)
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, max_cycles=3, record=False)
        frames, results, t_end = {}, [], time.monotonic() + 120
        while len(results) < 3 and time.monotonic() < t_end:
            for sub in (frames_sub, results_sub):
                msg = sub.recv(0.2)
                if msg is None:
                    continue
                topic, head, data = msg
                if topic == "frame":
                    frames[head["seq"]] = StreamFrame(head, np.array(data))
                else:
                    results.append((head, np.array(data)))
        while (msg := frames_sub.recv(0.2)) is not None:
            frames[msg[1]["seq"]] = StreamFrame(msg[1], np.array(msg[2]))
        frames_sub.close()
        results_sub.close()
        assert len(results) == 3, f"{len(results)} results from the Triton engine: {engine.status()['errors']}"
        desc = engine.describe_model()["runtime"]
        assert desc["runtime"] == "triton" and desc["shared_memory"] and desc["model"] == "tiny-net"
        worker = InferenceWorker(tiny, open_runtime(tiny, "ort-cpu", threads=1))
        for head, data in results:
            assert head["runtime"] == "triton" and head["model_sha256"] == tiny.manifest.sha256
            ref = worker.process([frames[s] for s in head["source_seqs"]])
            assert data.shape == ref.data.shape == (2, 256, 256)
            np.testing.assert_allclose(data, ref.data, rtol=RTOL, atol=ATOL)
            assert head["trust"]["ok"] == ref.header["trust"]["ok"]
            assert head["trust"]["reasons"] == ref.header["trust"]["reasons"]
    finally:
        engine.close()


def test_repository_options_and_addresses(packages, tmp_path):
    tiny = packages[0]
    # paths as strings, as docs/triton.md writes them (the repository was joined with '/' and failed)
    write_triton_repository(str(tiny.path), tiny.manifest, str(tmp_path / "from-str"), backend="python")
    assert (tmp_path / "from-str" / "tiny-net" / "config.pbtxt").is_file()
    phys = write_triton_repository(tiny.path, tiny.manifest, tmp_path, instances=2, gpu=True, backend="onnxruntime")
    net = (tmp_path / "tiny-net" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in net and "count: 2" in net and "kind: KIND_GPU" in net
    assert (tmp_path / "tiny-net" / "1" / "model.onnx").is_file()
    cfg = (phys / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg
    assert 'key: "scopecast_network" value: { string_value: "tiny-net" }' in cfg
    assert not (phys / "1" / "model.onnx").exists()  # the physical stage calls tiny-net in the server
    with pytest.raises(ValueError, match="no TensorRT plan"):
        write_triton_repository(tiny.path, tiny.manifest, tmp_path, gpu=True, backend="tensorrt")
    with pytest.raises(ValueError, match="unknown Triton backend"):
        write_triton_repository(tiny.path, tiny.manifest, tmp_path, backend="tensorflow")  # type: ignore[arg-type]
    assert parse_triton_url("triton://127.0.0.1:8001/tiny?shm=off") == ("127.0.0.1:8001", "tiny", {"shm": "off"})
    # a repository serves the FP32 model_file only: a variant is refused, not run as FP32 under its name and its
    # validated thresholds (before any connection: no server here)
    from scopecast.daemon.inference.triton_runtime import TritonRuntime
    from scopecast.models import packages_root

    with pytest.raises(RuntimeError, match="--precision int8: a Triton repository serves the package's FP32 model"):
        TritonRuntime(load_package(packages_root() / "virtual-staining", "int8"), "triton://127.0.0.1:1/vs")
    for bad in ("triton://127.0.0.1/tiny", "triton://127.0.0.1:8001/", "triton://h:1/a/b", "triton://h:1/a?shm=yes"):
        with pytest.raises(ValueError, match="bad Triton address"):
            parse_triton_url(bad)
    assert Path(phys).name == "tiny"
