"""Triggers act on live only: the results an engine computes from a scan a client runs (here the label-free
channels at one position, no live) are counted, not decided on. They used to fire the trigger: its
confirm_fluorescence failed against the running scan (BusyError) with its light left charged, and actions queued
behind a scan ran after it, wherever the scan had left the stage."""

from __future__ import annotations

import pytest

from scopecast.daemon.inference.engine import InferenceEngine

from helpers import wait_subscribed, wait_until
from tests.test_spot_checks import CYCLE, VS


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_results_of_a_scan_are_not_decided_on(daemon, client):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None, warmup_shape=(256, 256)).start()
    config = {"triggers": [{
        "name": "any", "model": "virtual-staining", "act_on_untrusted": True, "cooldown_s": 0,
        "measurement": {"kind": "max", "channel": "nuclei"}, "condition": {"above": -1e9},
        "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 10}]}]}
    try:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"virtual-staining": engine.results_address})
        wait_subscribed(engine, "result")
        job = client.request("run_scan", sequence={"channels": [{"config": c, "exposure": 5} for c in CYCLE]})
        assert client.request("wait", job=job["id"], wait_s=120)["status"] == "done"
        st = wait_until(lambda: (s := client.request("triggers"))["results"] >= 1 and not s["actions_pending"] and s,
                        120, "the scan's result at the triggers")
    finally:
        client.request("unload_triggers")
        engine.close()
    assert (st["fired"], st["decisions"], st["dose_session"]) == (0, 0, 0), st
    assert (st["results"], st["results_not_live"]) == (1, 1), st
