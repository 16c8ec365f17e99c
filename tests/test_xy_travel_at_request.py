"""Pairs and scans that would leave the XY stage's travel are refused at the request, before anything moves.

The simulated stage declares its travel (``TravelLimitUm``: ±50 mm) and refuses moves beyond it; a
``capture_pairs`` or ``run_scan`` reaching such a position was accepted and failed when it got there, after
the positions before it had been acquired."""

from __future__ import annotations

import pytest

from scopecast.daemon.control import DaemonError

TRAVEL = r"outside its travel \[-50000, 50000\] µm; nothing was moved or acquired"


def test_the_simulated_xy_stage_declares_its_travel(backend):
    travel = backend.travel_um()
    assert travel["x"] == travel["y"] == (-50000.0, 50000.0)
    assert travel["z"] == (-2000.0, 2000.0)


def test_describe_names_the_travel_requests_are_checked_against(client):
    assert client.request("describe")["travel_um"] == {"x": [-50000.0, 50000.0], "y": [-50000.0, 50000.0],
                                                       "z": [-2000.0, 2000.0]}


@pytest.mark.parametrize(("cmd", "args", "span"), [
    ("capture_pairs", {"positions": [[100, 0], [60000, 0]], "label_free": ["BF"], "fluorescence": ["Nuclei"]},
     r"stage x over \[100, 60000\] µm"),
    ("capture_pairs", {"positions": [[0, -49950]], "grid": {"rows": 3, "columns": 1}, "label_free": ["BF"],
                       "fluorescence": []}, r"stage y over \[-50\d+(\.\d+)?, -49\d+(\.\d+)?\] µm"),
    ("run_scan", {"sequence": {"channels": ["BF"], "stage_positions": [{"x": 0, "y": 0}, {"x": 90000, "y": 0}]}},
     r"stage x over \[0, 90000\] µm"),
])
def test_plans_beyond_the_xy_travel_are_refused_before_anything_moves(client, cmd, args, span):
    client.request("move_stage", x=10.0, y=20.0)
    with pytest.raises(DaemonError, match=f"{span}, {TRAVEL}"):
        client.request(cmd, **args)
    status = client.request("status")
    assert status["state"] == "idle" and client.request("jobs") == []  # no job, so no partial recording
    assert (status["position_um"]["x"], status["position_um"]["y"]) == (10.0, 20.0)
    assert status["frames_acquired"] == 0


def test_pairs_inside_the_travel_still_run(client):
    job = client.request("capture_pairs", positions=[[100, 0], [49000, 0]], label_free=["BF"], fluorescence=[])
    assert client.wait(job["id"], timeout_s=120)["frames"] == 2
