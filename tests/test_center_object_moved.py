"""``center_object`` moves by the offset of the object in the deciding result's field. It applied that offset to
wherever the stage was when the action ran: two triggers centring on the same result moved the stage twice (the object
ended up off-centre by the offset), and a centring queued behind a user's ``move_stage`` moved from the new place by
an offset measured elsewhere. Now it moves only while the stage is still in the deciding field. Real daemon on the
simulator, results from a stand-in engine."""

from __future__ import annotations

import json

import numpy as np

from helpers import live_under_triggers, log_lines, wait_until

BLOB = np.zeros((256, 256), np.float32)  # one object in the top-left corner of a 256² result, 0.65 µm pixels
BLOB[:40, :40] = 1.0
CENTRED = (20 - 128) * 0.65  # the stage position that centres it, from (0, 0)


def _centre(name: str, kind: str) -> dict:
    return {"name": name, "model": "m", "measurement": {"kind": kind, "channel": "c", "threshold": 0.5},
            "condition": {"above": 0.01, "rearm_below": -1}, "cooldown_s": 0, "actions": [{"kind": "center_object"}]}


def test_two_triggers_centring_one_object_move_the_stage_once(daemon, client):
    config = {"triggers": [_centre("colony", "area_fraction"), _centre("bright", "max")],
              "safety": {"max_actions_per_minute": 100}}
    with live_under_triggers(daemon, client, config, value=BLOB, full_frame=True) as log:

        def outcomes() -> list[dict]:
            return len(got := [t for t in log_lines(log) if "outcome_of" in t]) == 2 and got

        first, second = wait_until(outcomes, 120, "both firings' outcomes")
    fires = [json.loads(t) for t in log.read_text().splitlines() if '"event": "fire"' in t]
    assert [f["bundle_id"] for f in fires] == [first["outcome_of"]["bundle_id"]] * 2  # both on one result
    assert first["actions"][0]["moved"] is True, first
    assert second["actions"][0]["moved"] is False, second
    assert "since the decision" in second["actions"][0]["reason"]
    pos = client.request("status")["position_um"]
    assert abs(pos["x"] - CENTRED) < 0.01 and abs(pos["y"] - CENTRED) < 0.01, pos  # was 2 × CENTRED
