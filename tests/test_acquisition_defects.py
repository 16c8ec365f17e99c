"""Confirmed acquisition and recording-metadata defects, fixed: a second STED channel's modality, hardware-sequenced
frames counted twice, a camera ROI's pixel size and placement, the half-pixel translation. Real daemon, real
simulated devices, real recordings (found by reproducing them with the ecosystem's readers)."""

from __future__ import annotations

import numpy as np
import pytest
import useq

from scopecast.daemon.acquisition import AcquisitionEngine
from scopecast.daemon.control import DaemonError
from scopecast.daemon.plans import ChannelSpec
from scopecast.daemon.recording import open_recording
from scopecast.daemon.recording.ngff import ChannelWindow, SeriesMeta, image_attrs
from scopecast.daemon.scan_checks import planned_ranges


def test_every_channel_on_the_sted_detector_is_super_resolution(client):
    """Both STED channels of a live cycle are ground truth, as their frames say; the second used to be
    labelled with its preset's modality (fluorescence). Each shows in its stain's colour (they were both
    magenta, so the two could not be told apart)."""
    job = client.request("start_live", channels=["BF", {"name": "Membrane", "detector": "STED"},
                                                 {"name": "Nuclei", "detector": "STED"}], max_cycles=1, record=True)
    done = client.wait(job["id"], timeout_s=120)
    sted = next(s for s in open_recording(done["path"]).series if s.attrs["scopecast"]["detector"] == "STED")
    assert sted.channels == ["Membrane", "Nuclei"]
    assert {f.modality for f in sted.frames} == {"super-resolution"}
    assert sted.attrs["scopecast"]["modalities"] == ["super-resolution", "super-resolution"]
    assert [c["color"] for c in sted.attrs["omero"]["channels"]] == ["FF0000", "0000FF"]


def test_hardware_sequenced_frames_are_counted_once(client):
    """``frames_acquired`` rose by 36 for 20 frames of a hardware-sequenced live: a burst frame was counted where
    it was built and again by the live loop."""
    before = client.request("status")["frames_acquired"]
    job = client.request("start_live", channels=["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF"],
                         hardware_sequence=True, max_cycles=3, record=True)
    done = client.wait(job["id"], timeout_s=120)
    assert len(done["sequenced"]["hardware"]) == 4, done["sequenced"]  # the burst was used
    recorded = len(open_recording(done["path"]).frames)
    assert client.request("status")["frames_acquired"] - before == done["frames"] == recorded == 15


def _translation_yx(frame, channels=("c",)) -> np.ndarray:
    spec = AcquisitionEngine.series_spec(frame, list(channels), ["label-free"])
    meta = SeriesMeta(windows=[ChannelWindow(np.dtype(frame.header.dtype)) for _ in channels])
    ms = image_attrs("0.4", spec, meta)["multiscales"][0]
    return np.array(ms["datasets"][0]["coordinateTransformations"][1]["translation"][3:])


def _snap(engine, name: str, detector: str | None = None):
    return engine.acquire(ChannelSpec(name=name, detector=detector), acquisition_id="t", bundle_id=0,
                          bundle_index=0, bundle_size=1)


def test_a_camera_roi_keeps_the_sted_pixel_size_and_its_place_on_the_sample(daemon):
    """With an ROI on the camera the STED detector's pixel size was scaled by the ROI's width (0.1625 µm instead
    of 0.325 at 10x), and a recording placed the ROI's centre at the stage position, where it is off the axis
    by the ROI's offset on the sensor. Checked against the image: the ROI frame is the full frame's region."""
    engine, core = daemon.engine, daemon.backend.core
    full = _snap(engine, "BF")
    sted_px = _snap(engine, "Membrane", "STED").header.pixel_size_um
    px = full.header.pixel_size_um
    assert sted_px == px / 2  # the STED detector samples twice as finely, same field
    x, y, w, h = 16, 40, 96, 64
    core.setROI(x, y, w, h)
    try:
        roi = _snap(engine, "BF")
        assert roi.data.shape == (h, w) and roi.header.pixel_size_um == px
        assert _snap(engine, "Membrane", "STED").header.pixel_size_um == sted_px
    finally:
        core.clearROI()
    region = full.data[y:y + h, x:x + w].astype(float)
    assert np.corrcoef(region.ravel(), roi.data.astype(float).ravel())[0, 1] > 0.9  # the same place on the sample
    assert np.allclose(_translation_yx(roi) - _translation_yx(full), [y * px, x * px])


def test_series_translations_put_each_pixel_centre_where_the_simulator_images_it(daemon):
    """The translation is pixel 0's centre (NGFF, napari, ome-zarr-py): a camera frame and the STED frame of
    the same field agree on where a pixel's centre lies. With the corner convention they were a quarter
    camera pixel apart (each series half its own pixel off)."""
    engine = daemon.engine
    cam, sted = _snap(engine, "Membrane"), _snap(engine, "Membrane", "STED")
    pc, ps = cam.header.pixel_size_um, sted.header.pixel_size_um
    # camera pixel 0 covers STED pixels 0 and 1: its centre is their common corner, half a STED pixel past 0's
    assert np.allclose(_translation_yx(cam), _translation_yx(sted) + ps / 2)
    # and the field's centre (the stage) lies (n - 1) / 2 pixels past pixel 0's centre
    n = cam.data.shape[0]
    assert np.isclose(_translation_yx(cam)[0] + (n - 1) / 2 * pc, cam.header.stage_y_um)


@pytest.mark.parametrize("detector", ["Camera", "STED"])
def test_a_snaps_exposure_applies_to_that_frame_only_whichever_detector_is_named(client, detector):
    """``snap --detector Camera --exposure-ms 77`` left 77 ms on the camera (the restore was skipped whenever a
    detector was named), so every later frame taken at the camera's exposure (snaps, live, pairs' label-free
    frames) came out at it; the STED detector kept it the same way."""
    before = client.snap(channel="Membrane", detector=detector)[0]["exposure_ms"]
    main_before = client.request("status")["exposure_ms"]
    header, _ = client.snap(channel="Membrane", detector=detector, exposure_ms=77)
    assert header["exposure_ms"] == 77 and before != 77
    assert client.snap(channel="Membrane", detector=detector)[0]["exposure_ms"] == before
    assert client.request("status")["exposure_ms"] == main_before
    assert client.snap(channel="BF")[0]["exposure_ms"] == main_before


def _z_scan(range_um: float, **extra) -> dict:
    return {"channels": [{"config": "BF", "exposure": 5.0}], "z_plan": {"range": range_um, "step": 2.0}, **extra}


def test_the_simulated_focus_declares_its_travel(core):
    """A client reads the focus travel as it does a real drive's: the ``Position`` property's limits."""
    focus = core.getFocusDevice()
    assert core.hasPropertyLimits(focus, "Position")
    assert (core.getPropertyLowerLimit(focus, "Position"), core.getPropertyUpperLimit(focus, "Position")) == (
        -2000.0, 2000.0)


def test_z_scan_past_the_focus_travel_is_refused_before_anything_moves(client):
    done = client.wait(client.request("run_scan", sequence=_z_scan(4.0))["id"], timeout_s=60)
    client.request("move_stage", z=1995.0)
    with pytest.raises(DaemonError, match=r"focus \(z\) over \[1985, 2005\] µm, outside its travel \[-2000, 2000\]"):
        client.request("run_scan", sequence=_z_scan(20.0))
    with pytest.raises(DaemonError, match=r"focus \(z\) over \[-2005, -1995\] µm"):
        client.request("run_scan", sequence=_z_scan(10.0, stage_positions=[{"x": 0.0, "y": 0.0, "z": -2000.0}]))
    assert [j["id"] for j in client.request("jobs")] == [done["id"]]  # no job started
    assert client.request("status")["position_um"]["z"] == 1995.0
    assert open_recording(done["path"]).series[0].data.shape[2] == 3  # what was acquired before is kept
    edge = client.wait(client.request("run_scan", sequence=_z_scan(8.0))["id"], timeout_s=60)
    assert edge["status"] == "done" and edge["frames"] == 5


def test_planned_ranges_follow_channel_offsets_and_relative_grids():
    seq = useq.MDASequence(channels=["BF", {"config": "DF", "z_offset": 3.0, "do_stack": False}],
                           z_plan={"range": 20.0, "step": 2.0}, stage_positions=[(100.0, 0.0, 10.0)],
                           grid_plan={"rows": 1, "columns": 3, "fov_width": 50.0, "fov_height": 50.0})
    truth = {}
    for ev in seq.iter_events():
        for k, v in (("x", ev.x_pos), ("y", ev.y_pos), ("z", ev.z_pos)):
            lo, hi = truth.get(k, (v, v))
            truth[k] = (min(lo, v), max(hi, v))
    assert planned_ranges(seq) == truth
