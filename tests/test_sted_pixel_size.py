"""The simulator's STED detector as a plain pymmcore-plus client sees it: the pixel size the core reports (what
pymmcore-plus's frame metadata and its OME writers record) is the detector's own sampling, not the widefield
camera's. It used to read 0.65 µm for frames sampled at 0.325 µm (2x too large) at 10x."""

from __future__ import annotations

import pytest
from conftest import small_cfg

SIZE = 64


@pytest.fixture
def core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, SIZE)))
    yield c
    c.unloadAllDevices()


def test_each_detector_reports_its_own_pixel_size(core):
    core.setConfig("Objective", "10x")
    assert core.getPixelSizeUm() == pytest.approx(0.65) == core.getPixelSizeUm(True)
    core.setCameraDevice("STED")
    oversampling = int(core.getProperty("STED", "Oversampling"))
    core.snapImage()
    assert core.getImage().shape == (SIZE * oversampling, SIZE * oversampling)  # the same field, finer sampled
    assert core.getPixelSizeUm() == pytest.approx(0.65 / oversampling)
    assert core.getPixelSizeUm(True) == pytest.approx(0.65 / oversampling)  # what frame metadata reads
    core.setProperty("STED", "Binning", 2)
    assert core.getPixelSizeUm() == pytest.approx(0.65 * 2 / oversampling)
    core.setProperty("STED", "Binning", 1)
    core.setConfig("Objective", "20x")
    assert core.getPixelSizeUm() == pytest.approx(0.325 / oversampling)
    core.setCameraDevice("Camera")
    assert core.getPixelSizeUm() == pytest.approx(0.325)


def test_mda_frames_of_the_sted_detector_carry_its_pixel_size(core):
    import useq

    core.setCameraDevice("STED")
    sizes = []
    core.mda.events.frameReady.connect(lambda img, event, meta: sizes.append((img.shape, meta.get("pixel_size_um"))))
    core.mda.run(useq.MDASequence(channels=[{"config": "Membrane", "exposure": 5}]))
    oversampling = int(core.getProperty("STED", "Oversampling"))
    assert sizes == [((SIZE * oversampling, SIZE * oversampling), pytest.approx(0.65 / oversampling))]
