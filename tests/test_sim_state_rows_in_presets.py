"""Presets that set the simulator's state devices by ``State`` (a number, as text in the .cfg) are applied.

Rig configurations often set a filter wheel or turret by position (``ConfigGroup,Channel,DAPI,Cubes,State,1``)
and the C++ core takes that for its own devices; UniMMCore checked the text "1" against the Python state
device's integer positions and refused every such preset when applied, with "Value '1' is not allowed for
property 'State'. Allowed values: [0, 1, 2, 3, 4]." (the daemon's start-up check passed it).
"""

from __future__ import annotations

import pytest
from conftest import small_cfg


@pytest.fixture
def plain_core(tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    text = small_cfg(tmp_path, 64).read_text().replace(
        "#py ConfigGroup,Channel,Nuclei,Emission,Label,460/50", "#py ConfigGroup,Channel,Nuclei,Emission,State,1"
    ).replace(
        "#py ConfigGroup,Objective,20x,Objective,Label,20x/0.40", "#py ConfigGroup,Objective,20x,Objective,State,2"
    )
    assert text.count(",State,") == 2
    cfg = tmp_path / "state-rows.cfg"
    cfg.write_text(text)
    c = UniMMCore()
    c.loadSystemConfiguration(str(cfg))
    yield c
    c.unloadAllDevices()


def test_state_rows_apply_and_are_recognised(plain_core):
    plain_core.setConfig("Channel", "Nuclei")
    assert plain_core.getProperty("Emission", "Label") == "460/50"
    assert plain_core.getCurrentConfig("Channel") == "Nuclei"
    plain_core.setConfig("Objective", "20x")
    assert plain_core.getProperty("Objective", "Label") == "20x/0.40"
    assert plain_core.getPixelSizeUm() == pytest.approx(0.325)
    plain_core.setProperty("Objective", "State", "3")  # as a property browser sends it
    assert plain_core.getProperty("Objective", "Label") == "40x/0.65"
    with pytest.raises(Exception, match="9"):
        plain_core.setProperty("Objective", "State", "9")
