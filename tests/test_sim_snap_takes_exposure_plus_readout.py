"""``TimingModel=Realistic``: a snap takes its exposure plus the sensor's readout (docs/hardware.md).

UniMMCore snaps a Python camera through ``start_sequence`` (a sequence of one frame), so the simulated camera
paced every snap, and every sequence's first frame, like a later frame of a sequence, at max(exposure, readout):
the readout was hidden (a 30 ms snap with a 25.6 ms readout took 30 ms, not 55.6). Only a lower bound is checked:
a loaded machine can only make a snap longer.
"""

from __future__ import annotations

import time

import pytest
from conftest import small_cfg
from helpers import wait_until


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 256)))
    c.setProperty("Camera", "Noise", "Off")
    c.setProperty("Camera", "LineTimeUs", 100.0)  # 256 rows: a 25.6 ms readout
    c.setExposure(30.0)
    c.snapImage()  # the field rendered once (Instant timing)
    c.setProperty("Camera", "TimingModel", "Realistic")
    yield c
    c.unloadAllDevices()


def test_a_realistic_snap_takes_exposure_plus_readout(plain_core):
    durations = []
    for _ in range(3):
        t0 = time.perf_counter()
        plain_core.snapImage()
        durations.append(1000 * (time.perf_counter() - t0))
    assert min(durations) >= 30.0 + 25.6 - 0.5, durations


def test_a_sequences_first_frame_takes_exposure_plus_readout(plain_core):
    t0 = time.perf_counter()
    plain_core.startSequenceAcquisition(1, 0, True)
    wait_until(plain_core.getRemainingImageCount, what="the sequence's frame")
    assert 1000 * (time.perf_counter() - t0) >= 30.0 + 25.6 - 0.5
