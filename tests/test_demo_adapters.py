"""Compiled Micro-Manager adapters in the suite: the daemon drives a DemoCamera rig.

``hardware_configs/demo-camera.cfg`` loads real C++ adapters (DemoCamera from the
``mm-test-adapters`` package, in the dev extra) into the same ``UniMMCore`` and
``MMCoreBackend`` the simulator runs through; the daemon serves it on its real
control socket. Tests wait for conditions, never for fixed times.
"""

from __future__ import annotations

import contextlib
import gc
import time

import numpy as np
import pytest
from conftest import ROOT, small_demo_cfg

from scopecast.daemon.backend import BackendError, load_mmcore_backend
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.recorder import open_recording

DEMO_CFG = ROOT / "hardware_configs" / "demo-camera.cfg"
SIZE = 128
PIXEL_UM = 0.65  # Res10x in demo-camera.cfg


def _demo_adapters_found() -> str:
    from pymmcore_plus import find_micromanager

    path = find_micromanager()
    if not path:
        return "no Micro-Manager adapters found: pip install mm-test-adapters (the dev extra)"
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus(path)
    try:
        if "DemoCamera" not in core.getDeviceAdapterNames():
            return f"no DemoCamera adapter in {path}: pip install mm-test-adapters (the dev extra)"
    finally:
        del core
        gc.collect()
    return ""


_MISSING = _demo_adapters_found()
needs_demo = pytest.mark.skipif(bool(_MISSING), reason=_MISSING)


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory):
    """The shipped DemoCamera config with a small sensor (keeps the suite fast)."""
    return small_demo_cfg(tmp_path_factory.mktemp("demo"), SIZE)


@contextlib.contextmanager
def demo_daemon_client(cfg, data_dir):
    """A daemon on the compiled adapters of ``cfg`` recording to ``data_dir``; yields a client of it."""
    from scopecast.daemon.service import Daemon

    d = Daemon(lambda: load_mmcore_backend(cfg), data_dir, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
               trigger_dirs=[data_dir]).start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as c:
            yield c
    finally:
        d.close()
        # destroy the core (and its C++ notification thread) now, not at interpreter exit
        del d
        gc.collect()


@pytest.fixture
def demo_client(demo_cfg, tmp_path):
    with demo_daemon_client(demo_cfg, tmp_path / "data") as c:
        yield c


def _wait_for_frames(client, n, timeout=60.0):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        job = client.request("status")["job"]
        if job and job["frames"] >= n:
            return
        time.sleep(0.05)  # poll interval, not a wait for the result
    raise AssertionError(f"live produced fewer than {n} frames in {timeout} s")


@needs_demo
def test_describe_and_snap_every_channel(demo_client):
    info = demo_client.request("describe")
    assert set(info["channels"]) == {"DAPI", "FITC", "TRITC"}
    assert all(ch["modality"] == "fluorescence" for ch in info["channels"].values())
    assert info["patterns"] == [] and info["camera"] == "Camera"
    assert info["pixel_size_um"] == pytest.approx(PIXEL_UM)
    for name in info["channels"]:
        header, img = demo_client.snap(channel=name, exposure_ms=5.0)
        assert img.shape == tuple(header["shape"]) == (SIZE, SIZE) and img.dtype == np.uint16
        assert header["channel"] == name and header["pixel_size_um"] == pytest.approx(PIXEL_UM)
        assert header["exposure_ms"] == pytest.approx(5.0)
        assert img.std() > 0


@needs_demo
def test_live_runs_until_stopped(demo_client):
    job = demo_client.request("start_live", channels=["DAPI", "FITC"])
    _wait_for_frames(demo_client, 4)
    demo_client.request("move_stage", x=20.0, relative=True)
    stopped = demo_client.request("stop")["stopped"]
    assert stopped["id"] == job["id"] and stopped["status"] == "stopped" and stopped["frames"] >= 4
    assert demo_client.request("status")["state"] == "idle"


@needs_demo
def test_live_cycles_are_recorded_and_read_back(demo_client):
    job = demo_client.request("start_live", channels=["DAPI", "TRITC"], max_cycles=3, record=True)
    done = demo_client.wait(job["id"], timeout_s=120)
    assert done["frames"] == 6
    rec = open_recording(done["path"])
    s = rec.series[0]
    assert s.data.shape == (3, 2, 1, SIZE, SIZE)
    assert s.channels == ["DAPI", "TRITC"] and len({f.bundle_id for f in s.frames}) == 3
    assert s.image("DAPI").std() > 0


@needs_demo
def test_pairs_over_a_grid_read_back(demo_client):
    demo_client.request("move_stage", x=100.0, y=50.0)
    job = demo_client.request("capture_pairs", grid={"rows": 2, "columns": 2}, label_free=[],
                              fluorescence=["DAPI", {"name": "FITC", "exposure_ms": 20}])
    done = demo_client.wait(job["id"], timeout_s=120)
    assert done["status"] == "done" and done["frames"] == 8
    rec = open_recording(done["path"])
    assert rec.attrs["scopecast"]["complete"] is True and len(rec.series) == 4
    xs = set()
    for s in rec.series:
        assert s.data.shape == (1, 2, 1, SIZE, SIZE) and s.channels == ["DAPI", "FITC"]
        f = {h.channel: h for h in s.frames}
        assert f["FITC"].exposure_ms == 20 and f["DAPI"].pixel_size_um == pytest.approx(PIXEL_UM)
        assert len({f.bundle_id for f in s.frames}) == 1
        xs.add(round(s.frames[0].stage_x_um, 1))
    assert len(xs) == 2 and np.diff(sorted(xs))[0] == pytest.approx(SIZE * PIXEL_UM, abs=0.1)


@needs_demo
def test_scan_with_z_stack(demo_client):
    seq = {"channels": [{"config": "DAPI", "exposure": 5.0}, {"config": "FITC", "exposure": 5.0}],
           "z_plan": {"range": 4.0, "step": 2.0}, "axis_order": "pzc"}
    done = demo_client.wait(demo_client.request("run_scan", sequence=seq)["id"], timeout_s=120)
    rec = open_recording(done["path"])
    s = rec.series[0]
    assert s.data.shape == (1, 2, 3, SIZE, SIZE)
    assert sorted({f.stage_z_um for f in s.frames}) == [-2.0, 0.0, 2.0]


@needs_demo
def test_focus_move_outside_the_demo_stage_travel_is_refused(demo_client):
    # DStage travels [-300, 300] µm and refuses moves beyond (DEVICE_UNKNOWN_POSITION)
    demo_client.request("move_stage", x=10.0, y=20.0, z=1.0)
    with pytest.raises(DaemonError, match="out of range"):
        demo_client.request("move_stage", z=5000.0)
    pos = demo_client.request("status")["position_um"]
    assert pos["z"] == pytest.approx(1.0) and pos["x"] == pytest.approx(10.0, abs=0.01)


def test_missing_adapters_error_names_the_search_path_and_the_fix(tmp_path, monkeypatch):
    empty = tmp_path / "no-adapters"
    empty.mkdir()
    monkeypatch.setenv("MICROMANAGER_PATH", str(empty))  # pymmcore-plus looks here first
    with pytest.raises(BackendError) as e:
        load_mmcore_backend(DEMO_CFG)
    msg = str(e.value)
    assert "device adapter library not found: DemoCamera" in msg
    assert f"searched: {empty}" in msg
    assert "pip install mm-test-adapters" in msg and "mmcore install" in msg and "MICROMANAGER_PATH" in msg
