"""Shutting the daemon down while a trigger's tile scan runs stops the scan at its current frame, as it stops a
scan a client started. Shutdown used to wait 5 s for the trigger actions first (unloading the triggers), while the
scan went on exposing the sample, and only then stopped it; and a trigger action that started its scan after
shutdown had stopped the running job left that scan running into the closing backend."""

from __future__ import annotations

from helpers import StandInEngine, wait_until


def test_shutdown_stops_a_trigger_scan_at_its_current_frame(daemon, client):
    config = {"triggers": [{
        "name": "scan", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 600,
        "actions": [{"kind": "tile_scan", "channels": ["BF"], "exposure_ms": 20, "rows": 10, "columns": 10}]}]}
    with StandInEngine(daemon.stream_address, value=0.9) as engine:
        client.request("load_triggers", config=config, sources={"m": engine.address})
        engine.wait_subscriber()
        client.request("start_live", channels=["BF"], interval_ms=100)
        scan = wait_until(lambda: (j := daemon.engine.current_job) is not None and j.kind == "scan" and j.frames >= 1
                          and j, 120, "the trigger's tile scan under way")
        at_shutdown = scan.frames
        daemon.close()
    assert scan.status == "stopped" and scan.frames <= at_shutdown + 1, (scan.status, at_shutdown, scan.frames)
    assert [j.kind for j in daemon.engine.jobs()] == ["live", "scan"]  # live was not resumed behind it
