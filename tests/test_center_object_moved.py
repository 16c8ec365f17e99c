"""``center_object`` moves by the offset of the object in the deciding result's field. It applied that offset to
wherever the stage was when the action ran: two triggers centring on the same result moved the stage twice (the object
ended up off-centre by the offset), and a centring queued behind a user's ``move_stage`` moved from the new place by
an offset measured elsewhere. Now it moves only while the stage is still in the deciding field. Real daemon on the
simulator, results from a stand-in engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from helpers import StandInEngine, wait_subscribed, wait_until

BLOB = np.zeros((256, 256), np.float32)  # one object in the top-left corner of a 256² result, 0.65 µm pixels
BLOB[:40, :40] = 1.0
CENTRED = (20 - 128) * 0.65  # the stage position that centres it, from (0, 0)


def _centre(name: str, kind: str) -> dict:
    return {"name": name, "model": "m", "measurement": {"kind": kind, "channel": "c", "threshold": 0.5},
            "condition": {"above": 0.01, "rearm_below": -1}, "cooldown_s": 0, "actions": [{"kind": "center_object"}]}


def test_two_triggers_centring_one_object_move_the_stage_once(daemon, client):
    config = {"triggers": [_centre("colony", "area_fraction"), _centre("bright", "max")],
              "safety": {"max_actions_per_minute": 100}}
    with StandInEngine(daemon.stream_address, value=BLOB, full_frame=True) as engine:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=config, sources={"m": engine.address})["log"])
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])

            def outcomes() -> list[dict]:
                lines = [json.loads(t) for t in log.read_text().splitlines()] if log.exists() else []
                return len(got := [t for t in lines if "outcome_of" in t]) == 2 and got

            first, second = wait_until(outcomes, 120, "both firings' outcomes")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    fires = [json.loads(t) for t in log.read_text().splitlines() if '"event": "fire"' in t]
    assert [f["bundle_id"] for f in fires] == [first["outcome_of"]["bundle_id"]] * 2  # both on one result
    assert first["actions"][0]["moved"] is True, first
    assert second["actions"][0]["moved"] is False, second
    assert "since the decision" in second["actions"][0]["reason"]
    pos = client.request("status")["position_um"]
    assert abs(pos["x"] - CENTRED) < 0.01 and abs(pos["y"] - CENTRED) < 0.01, pos  # was 2 × CENTRED
