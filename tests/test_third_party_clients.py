"""The simulator is hardware to every Micro-Manager client, not only to scopecast.

These tests use the core exactly as a third-party script would: a plain
pymmcore-plus ``UniMMCore()`` that loads the shipped simulator config (at a
small sensor) and calls the standard API -- ``snapImage`` with auto-shutter on
(the Micro-Manager default), ``getPixelSizeUm``, sequence acquisition and the
``core.mda`` runner. No scopecast code is imported besides the config path; the
physics expectations are those of tests/test_physics.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import small_cfg

GRATING_PERIOD_UM = 5.0  # the phase-grating sample's period, µm (scopecast.daemon.sim.slide)


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    return str(small_cfg(tmp_path_factory.mktemp("third-party"), 128))


@pytest.fixture
def core(cfg_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(cfg_path)
    yield c
    c.unloadAllDevices()


def snap(core, channel: str, exposure_ms: float) -> np.ndarray:
    core.setConfig("Channel", channel)
    core.setExposure(exposure_ms)
    core.snapImage()
    return core.getImage().astype(np.float64)


def offset(core) -> float:
    return float(core.getProperty("Camera", "Offset"))


def test_grating_period_matches_the_simulator():
    from scopecast.daemon.sim.slide import GRATING_PERIOD_UM as period

    assert period == GRATING_PERIOD_UM


def test_plain_snap_with_auto_shutter_sees_light_linear_in_exposure(core):
    assert core.getAutoShutter() and core.getShutterDevice() == "Shutter"
    exposures = np.array([1.0, 2.0, 4.0, 8.0])
    means = np.array([(snap(core, "BF", e) - offset(core)).mean() for e in exposures])
    assert means[0] > 100  # far above the read noise: the LEDs were lit
    slope, intercept = np.polyfit(exposures, means, 1)
    resid = means - (slope * exposures + intercept)
    assert np.max(np.abs(resid)) < 0.005 * means.max()
    assert abs(intercept) < 0.01 * means.max()
    assert not core.getShutterOpen()  # closed again after each exposure


def test_auto_shutter_off_leaves_the_shutter_to_the_client(core):
    core.setAutoShutter(False)
    dark = snap(core, "BF", 10) - offset(core)
    assert abs(dark.mean()) < 2.0  # shutter closed: camera offset and read noise only
    core.setShutterOpen(True)
    lit = snap(core, "BF", 10) - offset(core)
    assert lit.mean() > 1000
    assert core.getShutterOpen()  # a shutter the client opened stays open


def test_darkfield_is_dark_on_blank_and_bright_on_cells(core):
    core.setProperty("Scope", "Sample", "blank")
    bf = snap(core, "BF", 10) - offset(core)
    df = snap(core, "DF", 10) - offset(core)
    assert bf.mean() > 1000
    assert abs(df.mean()) < 2.0
    core.setProperty("Scope", "Sample", "cells")
    df = snap(core, "DF", 50)
    assert np.percentile(df, 99.5) - offset(core) > 20 * max(np.median(df) - offset(core), 1)


def test_dpc_of_the_phase_grating_is_antisymmetric(core):
    core.setProperty("Scope", "Sample", "phase-grating")
    lft, rgt = snap(core, "DPC-Left", 10), snap(core, "DPC-Right", 10)
    assert lft.mean() - offset(core) > 500
    assert np.corrcoef((lft - lft.mean()).ravel(), (rgt - rgt.mean()).ravel())[0, 1] < -0.9
    prof = ((lft - rgt) / (lft + rgt)).mean(axis=0)
    x0 = core.getXPosition()
    x_um = x0 + (np.arange(lft.shape[1]) - lft.shape[1] / 2 + 0.5) * core.getPixelSizeUm()
    assert abs(np.corrcoef(prof, np.cos(2 * np.pi * x_um / GRATING_PERIOD_UM))[0, 1]) > 0.95


def test_pixel_size_follows_objective_and_binning(core):
    assert core.getCurrentPixelSizeConfig() == "Res10x"
    assert core.getPixelSizeUm() == pytest.approx(0.65)
    core.setConfig("Objective", "40x")
    assert core.getPixelSizeUm() == pytest.approx(0.1625)
    core.setProperty("Camera", "Binning", "2")
    assert core.getPixelSizeUm() == pytest.approx(0.325)
    assert core.getPixelSizeAffine()[0] == pytest.approx(2.0 / core.getMagnificationFactor())


def test_roi_follows_binning(core):
    """Binning changes the sensor's pixel grid: the ROI stays on the same region (DemoCamera does so), and
    snaps and sequences keep working (before, every frame failed with a numpy broadcast error)."""
    core.setProperty("Camera", "Noise", "Off")
    core.setConfig("Channel", "BF")
    core.setROI(16, 8, 64, 32)
    core.setProperty("Camera", "Binning", "2")
    assert list(core.getROI()) == [8, 4, 32, 16]
    core.snapImage()
    assert core.getImage().shape == (16, 32)
    core.startSequenceAcquisition(2, 0, True)
    deadline = time.monotonic() + 60
    while core.isSequenceRunning() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.getRemainingImageCount() == 2 and core.popNextImage().shape == (16, 32)
    core.setProperty("Camera", "Binning", "1")
    assert list(core.getROI()) == [16, 8, 64, 32]
    core.clearROI()
    assert (core.getImageHeight(), core.getImageWidth()) == (128, 128)


def test_sequence_acquisition_is_lit_and_closes_the_shutter(core):
    core.setConfig("Channel", "BF")
    core.setExposure(5)
    core.startContinuousSequenceAcquisition(0)
    frames = []
    deadline = time.monotonic() + 60
    try:
        while len(frames) < 3 and time.monotonic() < deadline:  # poll for the condition
            if core.getRemainingImageCount():
                frames.append(core.popNextImage().astype(np.float64))
            else:
                time.sleep(0.002)
    finally:
        core.stopSequenceAcquisition()
    assert len(frames) == 3
    assert all(f.mean() - offset(core) > 500 for f in frames)
    assert not core.getShutterOpen()


def test_mda_runner_delivers_the_snapped_physics(core):
    import useq

    core.setProperty("Camera", "Noise", "Off")  # expected counts: frames compare exactly
    plan = [("BF", 5.0), ("DF", 20.0), ("DPC-Left", 5.0), ("DPC-Right", 5.0), ("Nuclei", 20.0)]
    expected = {ch: snap(core, ch, e) for ch, e in plan}
    frames: dict[str, np.ndarray] = {}
    meta_px: list[float] = []

    def on_frame(img, event, meta):
        frames[event.channel.config] = np.array(img, dtype=np.float64)
        meta_px.append(float(meta.get("pixel_size_um", 0)))

    core.mda.events.frameReady.connect(on_frame)
    finished = []
    core.mda.events.sequenceFinished.connect(lambda seq: finished.append(seq))
    seq = useq.MDASequence(channels=[{"config": ch, "exposure": e} for ch, e in plan])
    core.mda.run(seq)  # blocks until the runner is done
    assert finished and set(frames) == {ch for ch, _ in plan}
    for ch, _ in plan:
        assert frames[ch].mean() - offset(core) > 10, ch  # not dark
        np.testing.assert_array_equal(frames[ch], expected[ch], err_msg=ch)
    assert meta_px and all(p == pytest.approx(0.65) for p in meta_px)
    assert not core.getShutterOpen()


def test_a_saved_simulator_configuration_loads_again(core, tmp_path):
    """saveSystemConfiguration writes FocusDirection for every stage (as MMCore does): the simulated focus drive
    refused that line, so a saved config, or a Micro-Manager rig config with the simulator's Z, did not load."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    saved = tmp_path / "saved.cfg"
    core.saveSystemConfiguration(str(saved))
    assert "FocusDirection,Z," in saved.read_text()  # what pymmcore-plus (like MMCore) writes for every stage
    again = UniMMCore()
    try:
        again.loadSystemConfiguration(str(saved))  # RuntimeError at the FocusDirection line before the fix
        assert again.getFocusDirection("Z") == core.getFocusDirection("Z")
        again.setProperty("Camera", "Noise", "Off")
        again.setConfig("Channel", "BF")  # a saved config keeps presets, not the current state
        again.snapImage()
        assert again.getImage().mean() > 1000  # a working scope: bright-field through the patched core
    finally:
        again.unloadAllDevices()


@pytest.mark.parametrize("sign", [1, -1, 0])
def test_the_focus_direction_of_a_config_is_kept(cfg_path, tmp_path, sign):
    from pymmcore_plus.experimental.unicore import UniMMCore

    text = Path(cfg_path).read_text().replace("#py Property,Core,Focus,Z",
                                              f"#py Property,Core,Focus,Z\n#py FocusDirection,Z,{sign}")
    path = tmp_path / "wizard.cfg"
    path.write_text(text)
    c = UniMMCore()
    try:
        c.loadSystemConfiguration(str(path))
        assert int(c.getFocusDirection("Z")) == sign
        with pytest.raises(ValueError, match="focus direction 7 not understood"):
            c.setFocusDirection("Z", 7)
    finally:
        c.unloadAllDevices()


def _pop_frames(core, n: int, timeout_s: float) -> list[float]:
    """Arrival times (monotonic s) of the next ``n`` frames, or fewer if ``timeout_s`` passes first."""
    stamps: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(stamps) < n and time.monotonic() < deadline:
        if core.getRemainingImageCount():
            core.popNextImage()
            stamps.append(time.monotonic())
        else:
            time.sleep(0.001)
    return stamps


def _drain(core) -> None:
    while core.getRemainingImageCount():  # (clearCircularBuffer during a sequence upsets UniMMCore 0.18.1)
        core.popNextImage()


def test_changing_the_exposure_during_live_paces_the_next_frames(core):
    """Realistic timing: a frame ended at t0 + n x the current period, so raising the exposure after a second of
    live stalled the camera for n x the new period; each frame now ends one period after the previous."""
    core.setProperty("Camera", "Noise", "Off")
    core.setProperty("Camera", "TimingModel", "Realistic")
    core.setExposure(10)
    core.startContinuousSequenceAcquisition(0)
    try:
        assert len(_pop_frames(core, 100, timeout_s=30)) == 100  # a second of live at 10 ms
        core.setExposure(100)
        _drain(core)
        t0 = time.monotonic()
        stamps = _pop_frames(core, 6, timeout_s=8)
        # before the fix the camera waited for t0 + (frames so far) x 100 ms: ~9 s for the next frame
        assert len(stamps) == 6, f"{len(stamps)} frames in 8 s at 100 ms exposure"
        assert stamps[-1] - t0 < 4.0
        core.setExposure(5)
        _drain(core)
        assert len(_pop_frames(core, 20, timeout_s=8)) == 20
    finally:
        core.stopSequenceAcquisition()
        core.setProperty("Camera", "TimingModel", "Instant")
