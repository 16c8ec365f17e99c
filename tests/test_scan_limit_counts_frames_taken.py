"""The 1,000,000-frame limit of a scan (docs/protocol.md, run_scan) counts the frames the scan takes: a channel
without ``do_stack`` takes only the middle plane, one with ``acquire_every`` only the time points it divides. It
counted the product of the axes, so a plan of 3,200 frames was refused as "1040000 frames". Real daemon on the
simulated scope."""

from __future__ import annotations

import pytest
from scopecast.daemon.control import DaemonError
from scopecast.daemon.scan_bundles import MAX_SEQUENCE_EVENTS

# a 200-plane stack of BF every 1000th time point, DF every time point at the stack's middle only
PLAN = {"channels": [{"config": "BF", "exposure": 1.0, "acquire_every": 1000},
                     {"config": "DF", "exposure": 1.0, "do_stack": False}],
        "z_plan": {"range": 199.0, "step": 1.0}, "time_plan": {"interval": 0, "loops": 2600}}
FRAMES = 3 * 200 + 2600


def test_a_scan_of_few_frames_over_many_skipped_points_runs(client):
    assert 2 * 200 * 2600 > MAX_SEQUENCE_EVENTS >= FRAMES  # the axes' product is beyond the limit, the frames not
    job = client.request("run_scan", sequence=PLAN)  # was refused: "the plan has 1040000 frames (...)"
    try:
        assert job["total"] == FRAMES
    finally:
        client.request("stop")
    assert client.wait(job["id"], timeout_s=120)["status"] in ("done", "stopped")


def test_the_refusal_names_the_frames_the_scan_takes(client):
    over = {**PLAN, "z_plan": {"range": 1.0, "step": 1.0},  # DF alone takes 1,000,000 frames
            "time_plan": {"interval": 0, "loops": MAX_SEQUENCE_EVENTS}}
    frames = MAX_SEQUENCE_EVENTS + 2 * (MAX_SEQUENCE_EVENTS // 1000)
    with pytest.raises(DaemonError, match=rf"the plan has {frames} frames \(.*channels skip\), more than the "
                                          rf"{MAX_SEQUENCE_EVENTS}"):
        client.request("run_scan", sequence=over)
    assert client.request("jobs") == []
