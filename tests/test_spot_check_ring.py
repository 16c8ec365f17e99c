"""A spot check whose result's label-free frames left the ring says what the ring held and how late the result
came: the ring is bounded by 256 MiB as well as 10 s, half a second of a fast free-running live at 512², so
"the result came too late" sent users looking for a starved machine instead of pacing live."""

from __future__ import annotations

import pytest

from tests.test_spot_checks import VS, _vs_live


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_frames_gone_names_what_the_ring_held_and_how_late_the_result_came(daemon, client):
    with _vs_live(daemon, client) as (_, early):  # the first result: its frames predate the spot checks' ring
        client.request("start_spot_checks", model="virtual-staining", results="tcp://127.0.0.1:9", period_s=3600)
        checker = daemon.spot_checkers["virtual-staining"]
        checker._check(early[1], early[2])
        st = client.request("spot_checks")["models"]["virtual-staining"]
    assert st["skipped"] == {"label-free frames gone": 1} and st["dose_session"] == 0, st
    why = st["last_skip"]
    assert "which holds the last " in why and "(at most 10 s and 256 MiB)" in why, why
    assert "after its bundle began" in why and "interval_ms or pace_from" in why, why
