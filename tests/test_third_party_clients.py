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
