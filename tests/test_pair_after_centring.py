"""A confirmation pair is of one field. ``[center_object, confirm_fluorescence]`` (centre the object, then confirm
it) recorded the deciding label-free bundle, taken before the centring, with the fluorescence snapped after it: two
fields a centring apart, written as one aligned pair. Now the label-free channels are taken again where the
fluorescence is, and the outcome says so. Real daemon on the simulator, results from a stand-in engine."""

from __future__ import annotations

import numpy as np

from scopecast.daemon.recorder import open_recording

from helpers import live_under_triggers, log_lines, wait_until

BLOB = np.zeros((256, 256), np.float32)  # one object in the top-left corner of a 256² result, 0.65 µm pixels
BLOB[:40, :40] = 1.0
CENTRED = (20 - 128) * 0.65  # the stage position that centres it, from (0, 0)


def test_a_pair_after_a_centring_is_taken_where_the_stage_went(daemon, client):
    config = {"triggers": [{
        "name": "colony", "model": "m", "measurement": {"kind": "area_fraction", "channel": "c", "threshold": 0.5},
        "condition": {"above": 0.01, "rearm_below": -1}, "cooldown_s": 0,
        "actions": [{"kind": "center_object"}, {"kind": "confirm_fluorescence", "channels": ["Nuclei"],
                                                "exposure_ms": 5}]}]}
    with live_under_triggers(daemon, client, config, value=BLOB, full_frame=True) as log:
        out = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 120, "the outcome")
    centre, pair = out["actions"]
    assert centre["moved"] is True, centre
    assert pair["ok"] and pair["channels"] == ["BF", "Nuclei"], pair
    frames = open_recording(pair["recording"]).series[0].frames
    where = {h.channel: (round(h.stage_x_um, 2), round(h.stage_y_um, 2)) for h in frames}
    assert where == {"BF": (round(CENTRED, 2),) * 2, "Nuclei": (round(CENTRED, 2),) * 2}, where
    assert "the stage moved from 0, 0" in pair.get("label_free", ""), pair
