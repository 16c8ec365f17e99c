"""A trigger's ``switch_live`` to another cycle keeps the exposure each channel had in the running cycle: the new
cycle was sent by name alone, so every channel took the camera's exposure of the moment (10 ms on the simulator): a
bright-field the user ran at 2 ms (at 4x, 10 ms saturates) came back at 10 ms after the switch."""

from __future__ import annotations

from helpers import live_under_triggers, log_lines, wait_until


def test_switch_live_keeps_the_running_channels_exposures(daemon, client):
    config = {"triggers": [{
        "name": "to-fluorescence", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5}, "cooldown_s": 1000,
        "actions": [{"kind": "switch_live", "live_channels": ["BF", "Nuclei"]}]}]}
    cycle = [{"name": "BF", "exposure_ms": 2}, {"name": "DF", "exposure_ms": 80}]
    with live_under_triggers(daemon, client, config, cycle, value=1.0) as log:
        outcome = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 60,
                             "the switch_live outcome")
        assert outcome["actions"][0]["ok"], outcome
        plan = client.request("job", job=outcome["actions"][0]["live_job"])["plan"]
    exposures = {c["name"]: c["exposure_ms"] for c in plan["channels"]}
    assert list(exposures) == ["BF", "Nuclei"] and exposures["BF"] == 2.0, plan["channels"]
