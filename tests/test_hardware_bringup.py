"""Bringing scopecast up on hardware that is not the simulator (the DemoCamera adapters of mm-test-adapters, and
configs written the way a facility writes them): a 12-bit camera's clipped frames are saturated, channel presets'
exposures are taken, a config without pixel sizes cannot record (refused at the request), and a typo in a preset
stops the daemon at start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from test_demo_adapters import demo_daemon_client, needs_demo, small_demo_cfg

from scopecast.daemon.backend import BackendError, load_mmcore_backend
from scopecast.daemon.control import DaemonError
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.daemon.recorder import open_recording

pytestmark = needs_demo


@pytest.fixture
def clipping_demo(tmp_path):
    """The shipped DemoCamera rig (12-bit camera, 16-bit pixels) with 0.5 % of every frame's pixels clipped
    at the camera's ceiling (the adapter's SaturatePixels), and a channel named as the package's input."""
    cfg = small_demo_cfg(tmp_path, 128)
    cfg.write_text(cfg.read_text().replace("ConfigGroup,Channel,FITC,", "ConfigGroup,Channel,Membrane,") + (
        "Property,Camera,SaturatePixels,1\nProperty,Camera,FractionOfPixelsToDropOrSaturate,0.005\n"))
    with demo_daemon_client(cfg, tmp_path / "data") as c:
        yield c


def test_a_12_bit_cameras_clipped_frame_is_withheld_as_saturated(clipping_demo):
    header, img = clipping_demo.snap(channel="Membrane", exposure_ms=10.0)
    assert img.dtype == np.uint16 and np.mean(img == 4095) > 0.002  # clipped at 2^12 - 1, far below 65535
    assert header["extra"].get("bit_depth") == 12
    pkg = load_package(ROOT / "models" / "packages" / "super-resolution")
    assert pkg.manifest.camera.saturation_adu > 4095  # trained on another camera: its ceiling does not apply
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"))
    verdict = worker.check([StreamFrame(header, img)])
    assert verdict.withhold and any(r.startswith("saturated: Membrane") and "4095 ADU" in r
                                    for r in verdict.reasons), verdict.reasons


@pytest.fixture
def preset_client(tmp_path):
    """The DemoCamera rig with DAPI at 30 ms and TRITC at 60 ms in their presets (FITC sets none); 10 ms set."""
    cfg = small_demo_cfg(tmp_path, 64)
    cfg.write_text(cfg.read_text().replace(
        "ConfigGroup,Channel,TRITC,Emission,Label,TRITC-600/50",
        "ConfigGroup,Channel,TRITC,Emission,Label,TRITC-600/50\nConfigGroup,Channel,DAPI,Camera,Exposure,30\n"
        "ConfigGroup,Channel,TRITC,Camera,Exposure,60"))
    with demo_daemon_client(cfg, tmp_path / "data") as c:
        yield c


def _exposures(client, job) -> dict[str, float]:
    done = client.wait(job["id"], timeout_s=120)
    assert done["status"] == "done", done
    return {h.channel: h.exposure_ms for s in open_recording(done["path"]).series for h in s.frames}


def test_live_and_pairs_take_each_presets_exposure(preset_client):
    c = preset_client
    assert c.snap(channel="DAPI")[0]["exposure_ms"] == 30  # a snap of the preset: its exposure
    c.request("set_exposure", exposure_ms=10.0)
    live = c.request("start_live", channels=["DAPI", "FITC", "TRITC"], max_cycles=1, record=True)
    assert _exposures(c, live) == {"DAPI": 30, "FITC": 10, "TRITC": 60}
    pairs = c.request("capture_pairs", label_free=[], fluorescence=["DAPI", "FITC", "TRITC"])
    assert _exposures(c, pairs) == {"DAPI": 30, "FITC": 10, "TRITC": 60}
    scan = c.request("run_scan", sequence={"channels": [{"config": "TRITC"}]})
    assert _exposures(c, scan) == {"TRITC": 60}
    # the request's exposure still applies to every channel without its own
    live = c.request("start_live", channels=["DAPI", {"name": "TRITC", "exposure_ms": 5}], exposure_ms=20,
                     max_cycles=1, record=True)
    assert _exposures(c, live) == {"DAPI": 20, "TRITC": 5}
    assert c.request("describe")["channels"]["DAPI"]["exposure_ms"] == 30  # describe says what a preset sets


@pytest.fixture
def uncalibrated(tmp_path):
    """The DemoCamera rig without its ConfigPixelSize/PixelSize_um lines; yields the client and the data dir."""
    cfg = small_demo_cfg(tmp_path, 64)
    cfg.write_text(re.sub(r"(?m)^(ConfigPixelSize|PixelSize_um),.*\n", "", cfg.read_text()))
    with demo_daemon_client(cfg, tmp_path / "data") as c:
        yield c, tmp_path / "data"


def test_recording_without_a_pixel_size_is_refused_at_the_request(uncalibrated):
    c, data = uncalibrated
    assert c.request("describe")["pixel_size_um"] == 0
    requests = [("run_scan", {"sequence": {"channels": [{"config": "DAPI"}]}}),
                ("start_live", {"channels": ["DAPI"], "record": True, "max_cycles": 1}),
                ("capture_pairs", {"label_free": [], "fluorescence": ["DAPI"]}),
                ("snap", {"channel": "DAPI", "record": True})]
    for cmd, args in requests:
        with pytest.raises(DaemonError) as e:
            c.request(cmd, **args)
        assert e.value.type == "ValueError" and "PixelSize_um" in e.value.message, (cmd, e.value)
    assert c.request("jobs") == [] and not list(data.glob("*.ome.zarr"))
    header, _ = c.snap(channel="DAPI")  # frames that are not recorded still flow
    assert header["pixel_size_um"] == 0
    job = c.request("start_live", channels=["DAPI"], max_cycles=2)
    assert c.wait(job["id"], timeout_s=120)["status"] == "done"


TYPOS = {  # the shipped line -> the line with a typo, what the error must name
    "label": ("ConfigGroup,Channel,FITC,Emission,Label,FITC-525/50",
              "ConfigGroup,Channel,FITC,Emission,Label,FTIC-525/50", "'FTIC-525/50'"),
    "property": ("ConfigGroup,Channel,FITC,Emission,Label,FITC-525/50",
                 "ConfigGroup,Channel,FITC,Emission,Lable,FITC-525/50", "no property 'Lable'"),
    "device": ("ConfigGroup,Channel,FITC,Emission,Label,FITC-525/50",
               "ConfigGroup,Channel,FITC,Emision,Label,FITC-525/50", "no device 'Emision'"),
    "number": ("ConfigGroup,Channel,TRITC,Emission,Label,TRITC-600/50",
               "ConfigGroup,Channel,TRITC,Emission,Label,TRITC-600/50\nConfigGroup,Channel,TRITC,Camera,Exposure,1OO",
               "takes a number"),
    "objective": ("ConfigGroup,Objective,20x,Objective,Label,20x/0.50", "ConfigGroup,Objective,20x,Objective,Label,20x",
                  "preset '20x' of config group 'Objective'"),
}


def _with_typo(tmp_path, kind: str):
    line, typo, _ = TYPOS[kind]
    cfg = small_demo_cfg(tmp_path, 64)
    assert line in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(line, typo))
    return cfg


@pytest.mark.parametrize("kind", TYPOS)
def test_a_preset_typo_stops_the_load_naming_it(kind, tmp_path):
    with pytest.raises(BackendError) as e:
        load_mmcore_backend(_with_typo(tmp_path, kind)).close()
    assert TYPOS[kind][2] in str(e.value), e.value


def test_the_daemon_exits_2_at_start(tmp_path):
    cfg = _with_typo(tmp_path, "label")
    cmd = [sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(cfg), "--data-dir",
           str(tmp_path / "data"), "--control", f"ipc://{tmp_path}/control", "--stream", f"ipc://{tmp_path}/stream"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the daemon started on a config with a typo in a preset: {e.stderr}")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "cannot load hardware config" in p.stderr and "preset 'FITC'" in p.stderr and "FTIC" in p.stderr, p.stderr


def _significant_bits(recording: str) -> list[int | None]:
    import ome_types

    ome = ome_types.from_xml(Path(recording) / "OME" / "METADATA.ome.xml")
    return [img.pixels.significant_bits for img in ome.images]


@needs_demo
def test_a_12_bit_cameras_recording_declares_12_significant_bits(tmp_path):
    with demo_daemon_client(small_demo_cfg(tmp_path, 64), tmp_path / "data") as c:
        seq = {"channels": [{"config": "DAPI", "exposure": 5.0}], "z_plan": {"range": 2.0, "step": 1.0}}
        done = c.wait(c.request("run_scan", sequence=seq)["id"], timeout_s=60)
    assert done["status"] == "done"
    assert _significant_bits(done["path"]) == [12]


def test_a_full_width_cameras_recording_declares_its_dtypes_bits(client):
    done = client.wait(client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 5.0}]})["id"],
                       timeout_s=60)
    assert _significant_bits(done["path"]) == [16]


def test_a_scan_channel_after_a_preset_with_an_exposure_keeps_the_cameras(preset_client):
    """A channel without an exposure takes its preset's, else the camera's at the request, as live and pairs do:
    after a preset that sets the exposure, every later channel of the scan was taken at that exposure."""
    c = preset_client
    c.request("set_exposure", exposure_ms=10.0)
    scan = c.request("run_scan", sequence={"channels": [{"config": "TRITC"}, {"config": "FITC"}],
                                           "time_plan": {"interval": 0, "loops": 2}})
    done = c.wait(scan["id"], timeout_s=120)
    assert done["status"] == "done", done
    taken = [(h.channel, h.exposure_ms) for s in open_recording(done["path"]).series for h in s.frames]
    assert len(taken) == 4 and set(taken) == {("TRITC", 60.0), ("FITC", 10.0)}, taken  # FITC was at 60 ms
    assert c.request("status")["exposure_ms"] == 10.0  # the job leaves the camera as it found it
    # an exposure the request gives still wins; an unknown channel is still refused by name
    scan = c.request("run_scan", sequence={"channels": [{"config": "TRITC", "exposure": 5}, {"config": "DAPI"}]})
    assert _exposures(c, scan) == {"TRITC": 5, "DAPI": 30}
    with pytest.raises(DaemonError, match="unknown channel 'Cy5'"):
        c.request("run_scan", sequence={"channels": [{"config": "Cy5"}]})
