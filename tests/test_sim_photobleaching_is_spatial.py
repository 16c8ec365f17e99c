"""Photobleaching stays where the excitation fell on the slide.

Before, the dose was a scalar per 10 µm cell of the *stage position*: moving the stage by 6 µm (a few % of the
field) showed a fully fresh field, moving back a fully bleached one, and a field that overlapped a bleached one
by half was either all bleached or all fresh. Now each cell of the slide under the lit field keeps its dose.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_cfg


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 128)))  # 83 µm fields at 10x
    c.setProperty("Camera", "Noise", "Off")
    c.setProperty("Scope", "Sample", "epithelium")  # confluent: nuclei all over every field
    c.setConfig("Channel", "Nuclei")
    c.setExposure(500.0)
    yield c
    c.unloadAllDevices()


def _signal(core, bleaching: bool) -> np.ndarray:
    """A frame's counts above the offset; ``bleaching`` False: how the field looks unbleached (no dose given)."""
    core.setProperty("Scope", "Photobleaching", "On" if bleaching else "Off")
    core.snapImage()
    return core.getImage().astype(np.float64) - float(core.getProperty("Camera", "Offset"))


def test_a_small_move_keeps_the_field_bleached_and_a_half_field_move_bleaches_half(plain_core):
    fresh = _signal(plain_core, bleaching=False).mean()
    for _ in range(60):  # bleach the field at the origin to below a tenth
        if _signal(plain_core, bleaching=True).mean() < 0.1 * fresh:
            break
    assert _signal(plain_core, bleaching=True).mean() < 0.1 * fresh

    plain_core.setXYPosition(6.0, 0.0)  # 7 % of the field
    moved = _signal(plain_core, bleaching=True).mean() / _signal(plain_core, bleaching=False).mean()
    assert moved < 0.25, f"a 6 µm move left {moved:.0%} of the signal"

    plain_core.setXYPosition(45.0, 0.0)  # about half a field: its left part was lit, its right part never
    ratio = _signal(plain_core, bleaching=True) / np.maximum(_signal(plain_core, bleaching=False), 1.0)
    left, right = ratio[:, :32].mean(), ratio[:, -32:].mean()
    assert left < 0.25 and right > 0.95, (left, right)
