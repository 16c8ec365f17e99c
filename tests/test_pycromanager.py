"""pycromanager, both directions, on the compiled DemoCamera adapters (mm-test-adapters).

1. The ``pycromanager`` backend: the daemon (real sockets) drives pycromanager's
   Python backend -- its own in-process pymmcore core, not pymmcore-plus -- and
   snaps, runs live cycles and pairs with the right headers. Its Java bridge needs
   a running Micro-Manager application and skips here with the reason.
2. The reverse: the documented example ``docs/examples/pycromanager_to_engine.py``
   runs a pycro-manager ``Acquisition`` whose image-processing hook streams every
   frame to a real scopecast ``InferenceEngine``; results come back for each bundle.

Every test leaves no pycromanager core running (checked), so pymmcore-plus cores in
other tests never meet one. Tests wait for conditions, never for fixed times.
"""

from __future__ import annotations

import gc
import importlib.util
import socket

import numpy as np
import pytest
from conftest import ROOT, small_demo_cfg
from helpers import wait_subscribed, wait_until

pycromanager = pytest.importorskip("pycromanager", reason="pycromanager not installed (the dev extra)")

from scopecast.daemon.backend import BackendError  # noqa: E402
from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.daemon.pycromanager_backend import (  # noqa: E402
    DEFAULT_BRIDGE_PORT, load_pycromanager_backend, start_python_backend,
)
from scopecast.daemon.recorder import open_recording  # noqa: E402
from scopecast.daemon.stream import FramePublisher, StreamSubscriber  # noqa: E402

DEMO_CFG = ROOT / "hardware_configs" / "demo-camera.cfg"
EXAMPLE = ROOT / "docs" / "examples" / "pycromanager_to_engine.py"
SIZE = 96
PIXEL_UM = 0.65  # Res10x in demo-camera.cfg


def _adapters_missing() -> str:
    from pymmcore_plus import find_micromanager

    path = find_micromanager()
    if not path or not list(__import__("pathlib").Path(path).glob("*mmgr_dal_DemoCamera*")):
        return f"no DemoCamera adapter (found {path or 'no adapter folder'}): pip install mm-test-adapters (dev extra)"
    return ""


_MISSING = _adapters_missing()
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=_MISSING)


@pytest.fixture(autouse=True)
def no_leaked_core():
    """Every test stops what it started: no pycromanager core outlives it."""
    import mmpycorex

    yield
    leaked = mmpycorex.is_pymmcore_active()
    if leaked:
        pycromanager.stop_headless()
    gc.collect()
    assert not leaked, "a pycromanager Python-backend core was left running"


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    """The shipped DemoCamera config with a small sensor (keeps the suite fast)."""
    return small_demo_cfg(tmp_path_factory.mktemp("pm"), SIZE)


@pytest.fixture
def pm_daemon(demo_cfg, tmp_path):
    from scopecast.daemon.service import Daemon

    d = Daemon(lambda: load_pycromanager_backend(demo_cfg), tmp_path / "data", "tcp://127.0.0.1:*",
               "tcp://127.0.0.1:*", trigger_dirs=[tmp_path / "data"]).start()
    try:
        yield d
    finally:
        d.close()
        del d
        gc.collect()


# ----------------------------------------------------------------- 1. the backend
def test_pycromanagers_python_backend_acquires_through_the_daemon(pm_daemon):
    """pycromanager's Python backend acquires from the compiled demo adapters through
    the scopecast backend: snap every channel with its headers; exposure reaches the camera."""
    import mmpycorex

    backend = pm_daemon.backend
    # the daemon drives pycromanager's own core (what pycromanager.Core() hands a user), not pymmcore-plus
    assert mmpycorex.is_pymmcore_active() and pycromanager.Core() is backend.pycro_core
    assert type(backend.pycro_core).__module__.startswith("mmpycorex")
    assert not hasattr(backend.pycro_core, "mda") and not hasattr(backend.pycro_core, "events")
    with ControlClient(pm_daemon.control_address, timeout_s=120) as c:
        info = c.request("describe")
        assert backend.kind == "python" and info["camera"] == "Camera"
        assert set(info["channels"]) == {"DAPI", "FITC", "TRITC"}
        assert info["pixel_size_um"] == pytest.approx(PIXEL_UM) and info["image_shape"] == [SIZE, SIZE]
        means = {}
        for name, exposure in (("DAPI", 5.0), ("FITC", 10.0), ("TRITC", 20.0)):
            header, img = c.snap(channel=name, exposure_ms=exposure)
            assert img.shape == tuple(header["shape"]) == (SIZE, SIZE) and img.dtype == np.uint16
            assert header["channel"] == name and header["modality"] == "fluorescence"
            assert header["detector"] == "Camera" and header["exposure_ms"] == pytest.approx(exposure)
            assert header["pixel_size_um"] == pytest.approx(PIXEL_UM)
            assert header["t_exposure_start_ns"] <= header["t_acquired_ns"]
            assert img.std() > 0  # DemoCamera's artificial waves, not a constant frame
            means[exposure] = float(img.mean())
            assert backend.pycro_core.getCurrentConfig("Channel") == name  # set on pycromanager's core
        # DemoCamera's signal scales with exposure: the requested exposure reached the camera
        assert means[10.0] / means[5.0] == pytest.approx(2.0, rel=0.1)
        assert means[20.0] / means[5.0] == pytest.approx(4.0, rel=0.1)
        moved = c.request("move_stage", x=25.0, y=-10.0, z=2.0)
        assert backend.pycro_core.getPosition() == pytest.approx(2.0)
        assert moved["position_um"]["x"] == pytest.approx(25.0, abs=0.01)


def test_live_cycles_and_pairs_stream_and_record(pm_daemon):
    with StreamSubscriber(pm_daemon.stream_address, ("frame",)) as sub, \
            ControlClient(pm_daemon.control_address, timeout_s=120) as c:
        wait_subscribed(pm_daemon.publisher, "frame")
        job = c.request("start_live", channels=["DAPI", "FITC"], max_cycles=2, exposure_ms=5.0)
        frames = []
        wait_until(lambda: (m := sub.recv(0.2)) is not None and frames.append(m) is None and len(frames) == 4,
                   what="4 live frames on the stream")
        assert c.wait(job["id"], timeout_s=120)["frames"] == 4
        heads = [h for _, h, _ in frames]
        assert [h["channel"] for h in heads] == ["DAPI", "FITC", "DAPI", "FITC"]
        assert [h["bundle_index"] for h in heads] == [0, 1, 0, 1] and {h["bundle_size"] for h in heads} == {2}
        assert heads[0]["bundle_id"] == heads[1]["bundle_id"] != heads[2]["bundle_id"] == heads[3]["bundle_id"]
        assert all(h["acquisition_id"] == job["id"] and h["shape"] == [SIZE, SIZE] for h in heads)
        assert all(img.std() > 0 for _, _, img in frames)

        pairs = c.request("capture_pairs", grid={"rows": 1, "columns": 2}, label_free=[],
                          fluorescence=["DAPI", {"name": "TRITC", "exposure_ms": 20}])
        done = c.wait(pairs["id"], timeout_s=120)
    assert done["status"] == "done" and done["frames"] == 4
    rec = open_recording(done["path"])
    assert rec.attrs["scopecast"]["complete"] is True and len(rec.series) == 2
    xs = []
    for s in rec.series:
        assert s.data.shape == (1, 2, 1, SIZE, SIZE) and s.channels == ["DAPI", "TRITC"]
        f = {h.channel: h for h in s.frames}
        assert f["TRITC"].exposure_ms == 20 and f["DAPI"].pixel_size_um == pytest.approx(PIXEL_UM)
        assert s.image("TRITC").std() > 0
        xs.append(f["DAPI"].stage_x_um)
    assert abs(xs[1] - xs[0]) == pytest.approx(SIZE * PIXEL_UM, abs=0.1)  # one field of view apart


def test_python_backend_refuses_python_devices_and_stops_again(tmp_path):
    import mmpycorex

    with pytest.raises(BackendError, match=r"Python devices \('#py'\).*mmcore backend"):
        load_pycromanager_backend(ROOT / "hardware_configs" / "sim-ledarray.cfg")
    bad = tmp_path / "bad.cfg"
    bad.write_text(DEMO_CFG.read_text().replace("Device,Camera,DemoCamera,DCam", "Device,Camera,NoSuchLib,DCam"))
    with pytest.raises(BackendError) as e:
        load_pycromanager_backend(bad)
    assert "device adapter library not found: NoSuchLib" in str(e.value) and "mm-test-adapters" in str(e.value)
    assert not mmpycorex.is_pymmcore_active()  # the failed load stopped pycromanager's core again


def test_python_backend_can_be_restarted_in_one_process(demo_cfg):
    """pycromanager 1.0.2's stale acquisition-engine singleton is worked around: a second
    start in one process acquires with the new core (without it: 'Camera byte depth cannot be zero')."""
    for _ in range(2):
        backend = load_pycromanager_backend(demo_cfg)
        try:
            got = []
            with pycromanager.Acquisition(image_process_fn=lambda img, md: got.append(img.shape)) as acq:
                acq.acquire(pycromanager.multi_d_acquisition_events(num_time_points=1))
            assert got == [(SIZE, SIZE)]
        finally:
            backend.close()


def _bridge_listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _bridge_listening(DEFAULT_BRIDGE_PORT), reason=(
    f"no Micro-Manager application with its ZMQ server on port {DEFAULT_BRIDGE_PORT} here (no Micro-Manager/"
    "Java install in this environment): the pycromanager Java bridge backend needs one running"))
def test_java_bridge_backend_drives_a_running_micromanager():  # pragma: no cover - needs Micro-Manager
    backend = load_pycromanager_backend(bridge=True)
    try:
        info = backend.describe()
        assert backend.kind == "bridge" and info["camera"] in info["detectors"]
        snap = backend.snap()
        assert snap.data.ndim == 2 and list(snap.data.shape) == info["image_shape"]
    finally:
        backend.close()


def test_java_bridge_error_names_the_fix():
    port = _free_port()
    with pytest.raises(BackendError, match=f"no Micro-Manager Java bridge on port {port}.*Run server on port"):
        load_pycromanager_backend(bridge=True, port=port)
    with pytest.raises(ValueError, match="pass no config"):
        load_pycromanager_backend(DEMO_CFG, bridge=True)


def _free_port() -> int:
    from scopecast.daemon.supervisor import free_port

    return free_port()


# ------------------------------------------------- 2. pycro-manager -> scopecast engine
def _example():
    spec = importlib.util.spec_from_file_location("pycromanager_to_engine", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pycromanager_acquisition_streams_to_the_engine(demo_cfg, tmp_path):
    from scopecast.daemon.inference.engine import InferenceEngine
    from scopecast.models.synthetic import write_package

    channels, time_points = ["DAPI", "FITC"], 3
    model = write_package(tmp_path / "m", channels, ["out"], name="pm", width=4, layers=2, tile=128)
    example = _example()
    core = start_python_backend()  # what the example's main() does with start_headless
    publisher = engine = None
    try:
        core.loadSystemConfiguration(str(demo_cfg))
        publisher = FramePublisher("tcp://127.0.0.1:*")
        engine = InferenceEngine(model, publisher.address, "tcp://127.0.0.1:*", None, warmup_shape=None,
                                 policy="all").start()
        with StreamSubscriber(engine.results_address, ("result",)) as results:
            wait_subscribed(engine, "result")
            wait_subscribed(publisher, "frame")
            stream = example.stream_acquisition(publisher, channels, time_points, exposure_ms=5.0)
            assert stream.published == len(channels) * time_points
            got = []
            wait_until(lambda: (m := results.recv(0.2)) is not None and got.append(m) is None
                       and len(got) == time_points, what=f"{time_points} results from the engine")
        assert publisher.stats.drops.total == 0 and engine.drops.total == 0
        for _, head, out in got:
            assert head["acquisition_id"] == stream.acquisition_id and head["model"] == "pm"
            assert len(head["source_seqs"]) == 2 and out.shape == (1, SIZE, SIZE)
            assert head["pixel_size_um"] == pytest.approx(PIXEL_UM) and "trust" in head
            assert head["t_exposure_start_ns"] <= head["t_acquired_ns"] <= head["t_frame_published_ns"]
        assert sorted(h["bundle_id"] for _, h, _ in got) == list(range(time_points))
        assert sorted(s for _, h, _ in got for s in h["source_seqs"]) == list(range(len(channels) * time_points))
    finally:
        if engine is not None:
            engine.close()
        if publisher is not None:
            publisher.close()
        _unload_and_stop(core)


def _unload_and_stop(core) -> None:
    core.unloadAllDevices()
    pycromanager.stop_headless()
