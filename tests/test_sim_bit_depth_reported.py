"""The simulated camera's ``BitDepth`` is what every Micro-Manager client reads as the image bit depth.

A C++ camera (DemoCamera) at ``BitDepth`` 12 reports ``getImageBitDepth() == 12``; UniMMCore reports a Python
camera's dtype width (16), so a 12-bit simulated camera, clipping at 4095 ADU, told clients (``getTaggedImage``
tags, pymmcore-plus's pixel format) and the daemon (each frame's ``extra.bit_depth``: the engine's saturation
ceiling, the recording's OME ``SignificantBits``) that it clipped at 65535.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_cfg


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 64)))
    yield c
    c.unloadAllDevices()


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_a_plain_client_reads_the_cameras_bit_depth(plain_core, bits):
    plain_core.setProperty("Camera", "BitDepth", str(bits))
    assert plain_core.getImageBitDepth() == bits
    assert plain_core.getBytesPerPixel() == 2  # the pixels stay uint16
    plain_core.setExposure(30)  # bright-field well past 2^bits - 1 (but not 2^16 - 1) at 10x
    plain_core.snapImage()
    tagged = plain_core.getTaggedImage()
    assert int(tagged.tags["BitDepth"]) == bits
    assert int(np.asarray(tagged.pix).max()) <= (1 << bits) - 1


def test_the_daemons_frames_name_a_12_bit_ceiling(backend):
    backend.core.setProperty("Camera", "BitDepth", "12")
    shot = backend.snap(exposure_ms=30)
    assert shot.extra.get("bit_depth") == 12
    assert int(shot.data.max()) == 4095  # clipped there: the engine's saturation check needs that ceiling
    backend.core.setProperty("Camera", "BitDepth", "16")
    assert "bit_depth" not in backend.snap().extra
