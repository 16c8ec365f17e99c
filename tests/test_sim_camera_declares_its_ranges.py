"""The simulated camera declares its binnings and exposure range, as DemoCamera does: a client's binning list
(pymmcore-widgets, Micro-Manager's GUI) was empty, and the exposure had no limits to show or check against."""

from __future__ import annotations

import pytest
from conftest import small_cfg


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(str(small_cfg(tmp_path, 64)))
    yield c
    c.unloadAllDevices()


def test_binning_lists_its_values_and_exposure_has_limits(plain_core):
    assert sorted(plain_core.getAllowedPropertyValues("Camera", "Binning"), key=int) == ["1", "2", "4"]
    assert plain_core.hasPropertyLimits("Camera", "Exposure")
    assert (plain_core.getPropertyLowerLimit("Camera", "Exposure"),
            plain_core.getPropertyUpperLimit("Camera", "Exposure")) == (0.01, 60000.0)
    plain_core.setProperty("Camera", "Binning", "2")  # an allowed value applies
    assert str(plain_core.getProperty("Camera", "Binning")) == "2"  # UniMMCore gives Python values as such
    with pytest.raises((RuntimeError, ValueError), match="Binning.*Allowed values"):
        plain_core.setProperty("Camera", "Binning", "3")
