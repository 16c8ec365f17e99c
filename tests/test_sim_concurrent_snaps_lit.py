"""Two threads snapping on one core with auto-shutter (the Micro-Manager default) both get lit frames.

The C++ core opens the shutter, snaps and closes it under the camera's module lock, so concurrent snaps (a
viewer's snap button while a script or an MDA runner snaps) are taken one after the other, each lit. The
simulator's auto-shutter patch (``unicore_workarounds``) opened the shutter outside the camera's lock: a second
snap found it open (the first one's), did not open it itself, and was exposed after the first closed it: dark.
"""

from __future__ import annotations

import threading

import pytest
from conftest import small_cfg


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 64)))
    c.setProperty("Camera", "Noise", "Off")
    c.setConfig("Channel", "BF")
    c.setExposure(2.0)
    c.snapImage()  # the field rendered once
    c.setProperty("Camera", "TimingModel", "Realistic")  # a snap takes time, as a real camera's does
    yield c
    c.unloadAllDevices()


def test_concurrent_snaps_with_auto_shutter_are_all_lit(plain_core):
    dark_level = float(plain_core.getProperty("Camera", "Offset")) + 50  # bright-field is thousands above it
    means: list[float] = []
    errors: list[BaseException] = []

    def snap_many() -> None:
        try:
            for _ in range(20):
                plain_core.snapImage()
                means.append(float(plain_core.getImage().mean()))  # either thread's frame: both are bright-field
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=snap_many) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(means) == 40
    dark = [m for m in means if m < dark_level]
    assert not dark, f"{len(dark)} of {len(means)} frames dark (shutter closed during the exposure)"
    assert not plain_core.getShutterOpen()
