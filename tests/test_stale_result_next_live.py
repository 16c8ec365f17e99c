"""A late result of a live job the user stopped, decided while the user's next live runs (maybe at another field),
is not acted on in that live: its z_stack is skipped with the reason (the user's live is neither stopped nor
replaced), and its save_window holds the frames of the live it was decided on only. Both used to act on the new
live: the Z stack stopped the user's live and ran at the new field, and the window recorded the new live's frames."""

from __future__ import annotations

from pathlib import Path

from helpers import StandInEngine, log_lines, wait_until

from scopecast.daemon.recording import open_recording


def test_a_late_result_of_a_stopped_live_is_not_acted_on_in_the_next_live(daemon, client):
    config = {"triggers": [{
        "name": "late", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 600,
        "actions": [{"kind": "save_window", "before_s": 1, "after_s": 30},
                    {"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 5, "z_range_um": 2, "z_step_um": 1}]}],
        "ring_buffer_s": 60}
    with StandInEngine(daemon.stream_address, model_s=3.0, value=0.9) as engine:
        log = client.request("load_triggers", config=config, sources={"m": engine.address})["log"]
        try:
            engine.wait_subscriber()
            first = client.request("start_live", channels=["BF"], interval_ms=100)
            wait_until(lambda: engine.frames, 60, "a live frame on the stream")
            client.request("stop")  # before the model has answered
            client.request("move_stage", x=500)  # the user pans on, and goes live there
            second = client.request("start_live", channels=["BF"], interval_ms=100)
            st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"]
                            and s, 120, "the late result's firing and its actions")
            status = client.request("status")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    assert st["fired"] == 1
    assert status["state"] == "live" and status["job"]["id"] == second["id"], status["job"]  # the user's own live
    assert [j["kind"] for j in client.request("jobs")] == ["live", "live"]  # no scan ran
    outcome = next(x for x in log_lines(Path(log)) if "outcome_of" in x)
    window, z_stack = outcome["actions"]
    assert z_stack == {"action": "z_stack", "ok": False, "skipped": (
        f"live acquisition {first['acquisition_id']} ended before this action ran, and live "
        f"{second['acquisition_id']} runs now: the result is not of the live running")}
    assert window["ok"] and window["frames"] >= 1, window
    rec = open_recording(window["recording"])
    assert {f.acquisition_id for s in rec.series for f in s.frames} == {first["acquisition_id"]}
