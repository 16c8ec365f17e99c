"""``unload_triggers`` stops the triggers (docs/protocol.md): the firings still queued behind an action under way
ran anyway once it ended, after the reply, lighting and moving the sample for triggers that no longer existed (and
while the operator, who unloaded them to take over, is at the microscope). Now an action that exposes or moves the
sample does not run once its triggers were unloaded; its outcome says so. Real daemon on the simulator, results from
a stand-in engine."""

from __future__ import annotations

import json
from pathlib import Path

from scopecast.daemon.dose import shared_budget

from helpers import StandInEngine, wait_subscribed, wait_until


def _fires_once(name: str, action: dict) -> dict:
    return {"name": name, "model": "m", "measurement": {"kind": "mean", "channel": "c"},
            "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0, "actions": [action]}


def test_actions_queued_when_the_triggers_are_unloaded_do_not_run(daemon, client):
    config = {"triggers": [_fires_once("window", {"kind": "save_window", "before_s": 0.5, "after_s": 8}),
                           _fires_once("confirm", {"kind": "confirm_fluorescence", "channels": ["Nuclei"],
                                                   "exposure_ms": 50})]}
    with StandInEngine(daemon.stream_address, value=1.0) as engine:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=config, sources={"m": engine.address})["log"])
        engine.wait_subscriber()
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
        # both fired on one result: the window's action holds the action thread (8 s of frames after the event), the
        # confirmation waits behind it
        wait_until(lambda: (s := client.request("triggers"))["fired"] == 2 and s["actions_pending"] == 2, 120,
                   "both firings pending")
        client.request("unload_triggers")

        def outcome(trigger: str) -> dict | None:
            lines = [json.loads(t) for t in log.read_text().splitlines()]
            return next((t for t in lines if t.get("outcome_of", {}).get("trigger") == trigger), None)

        confirm = wait_until(lambda: outcome("confirm"), 120, "the queued confirmation's outcome")
        client.request("stop")
    assert confirm["actions"] == [{"action": "confirm_fluorescence", "ok": False,
                                   "skipped": "the triggers were unloaded before this action ran"}], confirm
    assert not any("-pair-" in p.name for p in Path(daemon.engine.data_dir).iterdir())  # no light, no pair
    # and its light, charged with the firing, is given back: the field is not refused later for light it never got
    assert shared_budget(daemon.engine).by_position(source="triggers") == {}
