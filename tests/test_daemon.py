"""The acquisition daemon through its real control socket, as a scripted client drives it."""

import json

import numpy as np
import pytest
import zmq

from scopecast.daemon.control import DaemonError
from scopecast.daemon.illumination import PATTERN_NAMES
from scopecast.daemon.recorder import open_recording


def test_snap_every_channel_and_pattern(client):
    info = client.request("describe")
    assert {"BF", "DF", "DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "Nuclei", "Membrane"} <= set(info["channels"])
    assert info["channels"]["DPC-Left"] == {"name": "DPC-Left", "modality": "label-free", "pattern": "DPC Left",
                                            "exposure_ms": None}  # the preset sets no exposure
    assert info["channels"]["Nuclei"]["modality"] == "fluorescence"
    for name in info["channels"]:
        header, img = client.snap(channel=name)
        assert img.shape == tuple(header["shape"]) == (256, 256) and img.dtype == np.uint16
        assert header["channel"] == name and header["pixel_size_um"] == pytest.approx(0.65)
    client.request("set_channel", channel="BF")
    means = {}
    for pattern in PATTERN_NAMES:
        if pattern == "Manual LED Indicies":
            continue
        client.request("set_pattern", pattern=pattern)
        _, img = client.snap()
        means[pattern] = img.mean()
    assert means["Brightfield"] > means["DPC Left"] > means["Center LED"] > means["Clear"]
    assert means["Clear"] < 101  # all LEDs off: camera offset only
    assert means["Darkfield"] < 0.1 * means["Brightfield"]


def test_dual_modality_pairs_over_3x3_grid_read_back(client):
    client.request("move_stage", x=1000.0, y=-500.0)
    job = client.request("capture_pairs", grid={"rows": 3, "columns": 3},
                         label_free=["DPC-Left", "DPC-Right", "BF", "DF"],
                         fluorescence=[{"name": "Nuclei", "exposure_ms": 80}, "Membrane"])
    assert job["total"] == 9 * 6
    done = client.wait(job["id"], timeout_s=300)
    assert done["status"] == "done" and done["frames"] == 54
    rec = open_recording(done["path"])
    assert rec.attrs["scopecast"]["complete"] is True
    assert len(rec.series) == 9
    positions = set()
    for s in rec.series:
        assert s.data.shape == (1, 6, 1, 256, 256)
        assert s.channels == ["DPC-Left", "DPC-Right", "BF", "DF", "Nuclei", "Membrane"]
        assert len(s.frames) == 6
        # one pair: one bundle, one position, shared metadata
        assert len({f.bundle_id for f in s.frames}) == 1
        assert len({(f.stage_x_um, f.stage_y_um) for f in s.frames}) == 1
        f = {h.channel: h for h in s.frames}
        assert f["Nuclei"].exposure_ms == 80 and f["BF"].pattern == "Brightfield" and f["Nuclei"].modality == "fluorescence"
        for h in s.frames:
            img = s.image(h.channel)
            assert img.dtype == np.uint16 and img.std() > 0
            assert h.index["c"] == s.channels.index(h.channel)
            assert h.t_acquired_ns >= h.t_exposure_start_ns > 0
        positions.add((round(s.frames[0].stage_x_um, 3), round(s.frames[0].stage_y_um, 3)))
        tr = s.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert tr[0]["scale"][-1] == pytest.approx(0.65)
    xs = sorted({p[0] for p in positions})
    ys = sorted({p[1] for p in positions})
    assert len(positions) == 9 and len(xs) == 3 and len(ys) == 3
    assert np.allclose(np.diff(xs), 256 * 0.65) and xs[1] == pytest.approx(1000.0)
    assert ys[1] == pytest.approx(-500.0)
    # headers carry increasing sequence numbers
    seqs = [h.seq for h in sorted(rec.frames, key=lambda h: h.seq)]
    assert seqs == sorted(set(seqs))


def test_recording_is_readable_by_ome_zarr_py(client):
    job = client.request("capture_pairs", label_free=["BF"], fluorescence=["Nuclei"])
    done = client.wait(job["id"], timeout_s=120)
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(done["path"] + "/0"))())
    image = nodes[0]
    assert image.data[0].shape == (1, 2, 1, 256, 256)
    assert [a["name"] for a in image.metadata["axes"]] == ["t", "c", "z", "y", "x"]
    assert image.metadata["name"] == ["BF", "Nuclei"] or image.metadata.get("channel_names") == ["BF", "Nuclei"]


def test_live_cycle_records_every_frame(client):
    job = client.request("start_live", channels=["DPC-Left", "DPC-Right", "BF"], max_cycles=5, record=True)
    done = client.wait(job["id"], timeout_s=60)
    assert done["frames"] == 15
    rec = open_recording(done["path"])
    s = rec.series[0]
    assert s.data.shape[:2] == (5, 3)
    assert [f.bundle_index for f in s.frames[:3]] == [0, 1, 2]
    assert len({f.bundle_id for f in s.frames}) == 5


def test_live_runs_until_stopped_and_allows_stage_moves(client):
    job = client.request("start_live", channels=["BF"])
    _wait_for_frames(client, 1)
    client.request("move_stage", x=50.0, relative=True)
    with pytest.raises(DaemonError, match="live job .* is running"):
        client.request("capture_pairs")
    stopped = client.request("stop")["stopped"]
    assert stopped["id"] == job["id"] and stopped["status"] == "stopped" and stopped["frames"] > 0
    assert client.request("status")["state"] == "idle"


def test_stage_move_out_of_range_is_refused_without_moving(client):
    client.request("move_stage", x=10.0, y=20.0, z=1.0)
    with pytest.raises(DaemonError, match="outside the stage travel"):
        client.request("move_stage", x=1e6)
    with pytest.raises(DaemonError, match="outside the focus travel"):
        client.request("move_stage", z=5000.0)
    pos = client.request("status")["position_um"]
    assert (pos["x"], pos["y"], pos["z"]) == (10.0, 20.0, 1.0)


def test_unknown_pattern_and_channel_list_valid_ones(client):
    with pytest.raises(DaemonError) as e:
        client.request("set_pattern", pattern="rainbow")
    assert "DPC Left" in str(e.value) and "Brightfield" in str(e.value)
    with pytest.raises(DaemonError, match="unknown channel 'Phase'.*DPC-Left"):
        client.request("set_channel", channel="Phase")
    with pytest.raises(DaemonError, match="unknown channel"):
        client.request("start_live", channels=["BF", "Nope"])


def test_failed_scan_keeps_what_was_recorded(daemon, client, monkeypatch):
    # an XY stage that declares no travel (most real adapters): the move beyond it fails the job when reached
    monkeypatch.setattr(daemon.backend, "travel_um", lambda: {})
    seq = {"stage_positions": [{"x": 0.0, "y": 0.0, "z": 0.0}, {"x": 9e5, "y": 0.0, "z": 0.0}],
           "channels": [{"config": "BF", "exposure": 5.0}, {"config": "DPC-Left", "exposure": 5.0}],
           "axis_order": "pc"}
    job = client.request("run_scan", sequence=seq)
    with pytest.raises(DaemonError, match="failed.*outside the stage travel"):
        client.wait(job["id"], timeout_s=60)
    info = client.request("job", job=job["id"])
    assert info["status"] == "failed" and info["frames"] == 2
    rec = open_recording(info["path"])
    assert [f.channel for f in rec.frames] == ["BF", "DPC-Left"]
    assert rec.series[0].image("BF").mean() > 1000
    assert client.request("status")["last_error"].startswith("scan")


def test_scan_with_z_stack(client):
    seq = {"channels": [{"config": "Nuclei", "exposure": 20.0}],
           "z_plan": {"range": 4.0, "step": 2.0}, "axis_order": "pcz"}
    done = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=60)
    rec = open_recording(done["path"])
    s = rec.series[0]
    assert s.data.shape == (1, 1, 3, 256, 256)
    assert [f.stage_z_um for f in s.frames] == [-2.0, 0.0, 2.0]
    assert s.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][2] == 2.0


def test_a_detector_snap_reports_the_detector_exposure(client):
    """A frame's header carries the exposure its own detector ran (not the main camera's)."""
    client.request("set_exposure", exposure_ms=10)
    means = {}
    for e in (20.0, 40.0):
        header, img = client.snap(channel="Membrane", detector="STED", exposure_ms=e)
        assert header["detector"] == "STED" and header["exposure_ms"] == pytest.approx(e)
        means[e] = img.astype(float).mean() - 100  # the camera offset
    assert means[40.0] / means[20.0] == pytest.approx(2.0, rel=0.1)  # it did run that long
    header, _ = client.snap(channel="Membrane")
    assert header["detector"] == "Camera" and header["exposure_ms"] == pytest.approx(10.0)


def test_super_resolution_pairs_record_both_detectors(client):
    job = client.request("capture_pairs", label_free=[],
                         fluorescence=["Nuclei", {"name": "Nuclei", "detector": "STED"}])
    rec = open_recording(client.wait(job["id"], timeout_s=60)["path"])
    shapes = {s.attrs["scopecast"]["detector"]: s.data.shape for s in rec.series}
    assert shapes == {"Camera": (1, 1, 1, 256, 256), "STED": (1, 1, 1, 512, 512)}
    sr = [f for f in rec.frames if f.detector == "STED"][0]
    assert sr.modality == "super-resolution" and sr.pixel_size_um == pytest.approx(0.325)
    assert len({f.bundle_id for f in rec.frames}) == 1


STRICTNESS_CASES = [
    (b"\xff\xfe not json", "not UTF-8"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"cmd": "status", "id": NaN}', "NaN is not JSON"),
    (b'{"cmd": "set_exposure", "args": {"exposure_ms": Infinity}}', "Infinity is not JSON"),
    (b"[" * 100_000, "nested deeper"),
    (b'{"cmd": "status", "args": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}", "nested deeper"),
    (json.dumps({"cmd": ["status"]}).encode(), "'cmd' must be a string"),
    (json.dumps({"cmd": "teleport"}).encode(), "unknown command 'teleport'"),
    (json.dumps({"cmd": "status", "args": []}).encode(), "'args' must be a JSON object"),
    (json.dumps({"cmd": "status", "args": [1]}).encode(), "'args' must be a JSON object"),
    (json.dumps({"cmd": "status", "id": {"a": 1}}).encode(), "'id' must be"),
    (json.dumps({"cmd": "status", "colour": 1}).encode(), "unknown request keys"),
    (json.dumps({"cmd": "move_stage", "args": {"x": "far"}}).encode(), "bad arguments for 'move_stage'"),
    (json.dumps({"cmd": "move_stage", "args": {"x": True}}).encode(), "x: Input should be a valid number"),
    (json.dumps({"cmd": "set_exposure", "args": {"exposure_ms": True}}).encode(), "valid number"),
    (json.dumps({"cmd": "set_exposure", "args": {"exposure_ms": "25"}}).encode(), "valid number"),
    (json.dumps({"cmd": "start_live", "args": {"record": 1}}).encode(), "valid boolean"),
    (json.dumps({"cmd": "snap", "args": {"colour": "red"}}).encode(), "colour"),
]


def test_garbage_on_the_control_socket_gets_strict_error_replies(daemon, client):
    before = client.request("status")
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.REQ)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(daemon.control_address)
    try:
        for payload, expect in STRICTNESS_CASES:
            raw.send(payload)
            assert raw.poll(60_000)
            reply = json.loads(raw.recv(), parse_constant=lambda c: pytest.fail(f"reply contains {c}"))
            assert reply["ok"] is False and reply["error"]["type"] == "BadRequest", (payload[:60], reply)
            assert expect in reply["error"]["message"], (payload[:60], reply)
        raw.send_multipart([b'{"cmd": "status"}', b"extra part"])
        assert raw.poll(60_000) and "one JSON part" in json.loads(raw.recv())["error"]["message"]
        raw.send(b'{"cmd": "status", "id": 7}')  # a valid id comes back
        assert raw.poll(60_000) and json.loads(raw.recv())["id"] == 7
    finally:
        raw.close()
    after = client.request("status")
    assert after["control"]["bad_requests"] - before["control"]["bad_requests"] == len(STRICTNESS_CASES) + 1
    # nothing was changed by the refused requests
    assert after["exposure_ms"] == before["exposure_ms"] and after["position_um"] == before["position_um"]


def _wait_for_frames(client, n, timeout=120.0):
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        job = client.request("status")["job"]
        if job and job["frames"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"live produced fewer than {n} frames in {timeout} s")


def test_malformed_request_does_not_lose_recording(client):
    client.request("start_live", channels=["BF"], record=True)
    _wait_for_frames(client, 3)
    with pytest.raises(DaemonError):
        client.request("move_stage", x="nowhere")
    with pytest.raises(DaemonError):
        client.request("set_pattern", pattern="sparkles")
    done = client.request("stop")["stopped"]
    done = client.wait(done["id"], timeout_s=300)  # stop's own wait is bounded; the recording may still be closing
    rec = open_recording(done["path"])
    assert len(rec.frames) == done["frames"] > 0


def test_objective_switches_with_its_pixel_size_and_unknown_ones_are_named(client):
    info = client.request("describe")
    assert "set_objective" in info["commands"] and {"4x", "10x", "20x", "40x"} <= set(info["objectives"])
    assert info["objective"] == "10x" and info["pixel_size_um"] == pytest.approx(0.65)
    reply = client.request("set_objective", objective="20x")
    assert reply == {"objective": "20x", "pixel_size_um": pytest.approx(0.325)}
    header, _ = client.snap(channel="BF")
    assert header["pixel_size_um"] == pytest.approx(0.325)
    with pytest.raises(DaemonError, match="unknown objective '63x'; objectives: .*10x"):
        client.request("set_objective", objective="63x")
    assert client.request("describe")["objective"] == "20x"  # a refused switch changes nothing
    client.request("set_objective", objective="10x")
