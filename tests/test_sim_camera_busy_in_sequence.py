"""While a sequence acquisition runs, the simulated camera refuses what would not reach its frames.

Its frames keep the geometry the sequence started with: before, a Binning, ROI or BitDepth change during live was
accepted and reported by the core (getROI, getImageWidth, getPixelSizeUm) while the frames kept their old shape,
now showing a binned field twice as wide in the same pixels under the old ``Binning`` tag; and a ``snapImage``
during the sequence reset its pacing. Micro-Manager's DemoCamera refuses Binning and BitDepth changes then, and
the C++ core refuses a snap ("This operation can not be executed while sequence acquisition is running").
"""

from __future__ import annotations

import pytest
from conftest import small_cfg
from helpers import wait_until


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 64)))
    c.setProperty("Camera", "Noise", "Off")
    yield c
    if c.isSequenceRunning():
        c.stopSequenceAcquisition()
    c.unloadAllDevices()


def _live(core) -> None:
    core.startContinuousSequenceAcquisition(0)
    wait_until(core.getRemainingImageCount, what="a first live frame")


def _pop_new(core, n: int) -> list:
    """The next ``n`` frames (with metadata) the sequence delivers after the ones already buffered."""
    while core.getRemainingImageCount():
        core.popNextImage()
    out: list = []

    def more() -> bool:
        while core.getRemainingImageCount():
            out.append(core.popNextImageAndMD())
        return len(out) >= n

    wait_until(more, what=f"{n} more live frames")
    return out


@pytest.mark.parametrize("change", [
    lambda c: c.setProperty("Camera", "Binning", "2"),
    lambda c: c.setProperty("Camera", "BitDepth", "12"),
    lambda c: c.setROI(8, 8, 32, 32),
    lambda c: c.snapImage(),
], ids=["binning", "bit-depth", "roi", "snap"])
def test_a_change_the_frames_would_not_show_is_refused_during_live(plain_core, change):
    _live(plain_core)
    with pytest.raises(RuntimeError, match="sequence acquisition is running"):
        change(plain_core)
    # nothing changed, and the sequence goes on with frames that match what the core reports
    assert plain_core.getProperty("Camera", "Binning") in ("1", 1)
    assert str(plain_core.getProperty("Camera", "BitDepth")) == "16"
    assert list(plain_core.getROI()) == [0, 0, 64, 64]
    for img, md in _pop_new(plain_core, 3):
        assert img.shape == (plain_core.getImageHeight(), plain_core.getImageWidth()) == (64, 64)
        assert str(md.get("Binning")) == "1"
    assert plain_core.isSequenceRunning()
    plain_core.stopSequenceAcquisition()
    # stopped: every change is taken again
    plain_core.setProperty("Camera", "Binning", "2")
    plain_core.setROI(4, 4, 16, 16)
    plain_core.snapImage()
    assert plain_core.getImage().shape == (16, 16)


def test_a_finished_sequence_leaves_the_camera_free(plain_core):
    plain_core.startSequenceAcquisition(3, 0, True)
    wait_until(lambda: not plain_core.isSequenceRunning(), what="the 3-frame sequence to end")
    plain_core.setProperty("Camera", "Binning", "2")
    plain_core.snapImage()
    assert plain_core.getImage().shape == (32, 32)
