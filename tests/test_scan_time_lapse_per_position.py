"""A time-lapse inside each position (``axis_order="ptc"``) keeps its interval at every position, as
pymmcore-plus's MDA runner times it (the event clock restarts where useq sets ``reset_event_timer``): timed from
the job's start, the second position's time points were all due at once and taken back to back. Real daemon on
the simulated scope."""

from __future__ import annotations

from scopecast.daemon.recording import open_recording

INTERVAL_S = 1.0


def test_each_position_keeps_the_time_plan_interval(client):
    seq = {"channels": [{"config": "BF", "exposure": 1.0}], "axis_order": "ptc",
           "stage_positions": [{"x": 0.0, "y": 0.0, "z": 0.0}, {"x": 10.0, "y": 10.0, "z": 0.0}],
           "time_plan": {"interval": INTERVAL_S, "loops": 2}}
    done = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=120)
    assert done["status"] == "done" and done["frames"] == 4, done
    start = {(f.position_index, f.index["t"]): f.t_exposure_start_ns / 1e9
             for f in open_recording(done["path"]).frames}
    for p in (0, 1):  # a lower bound only: a slow machine can make the gap longer, never shorter
        gap = start[p, 1] - start[p, 0]
        assert gap >= 0.95 * INTERVAL_S, f"position {p}: time points {gap:.3f} s apart, planned {INTERVAL_S} s"
