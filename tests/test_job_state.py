"""What a snap or a job leaves behind, and which plans are refused at the request (a real daemon on the simulator)."""

import pytest

from scopecast.daemon.control import DaemonError

from helpers import wait_until


def _state(client):
    s = client.request("status")
    return s["exposure_ms"], s["channel"], s["position_um"]


def test_a_snap_exposure_applies_to_that_frame_only(client):
    client.request("set_exposure", exposure_ms=10)
    head, _ = client.snap(channel="DF", exposure_ms=50)
    assert head["exposure_ms"] == 50
    assert _state(client)[0] == 10  # the next live or pairs still defaults to 10 ms, not 50


def test_a_job_leaves_the_exposure_and_channel_it_found(client):
    client.request("set_channel", channel="BF")
    client.request("set_exposure", exposure_ms=10)
    job = client.request("capture_pairs", label_free=["DF"], fluorescence=[{"name": "Nuclei", "exposure_ms": 20}])
    assert client.wait(job["id"])["status"] == "done"
    exposure, channel, _ = _state(client)
    assert (exposure, channel) == (10, "BF")  # not Nuclei at 20 ms, its last frame's
    # so the next pairs' label-free default is the user's 10 ms again
    job = client.request("capture_pairs", label_free=["BF"], fluorescence=[])
    assert client.wait(job["id"])["status"] == "done"
    assert client.request("job", job=job["id"])["total"] == 1


def test_an_exposure_set_during_live_is_what_live_leaves(client):
    client.request("set_exposure", exposure_ms=10)
    client.request("start_live", channels=[{"name": "DF", "exposure_ms": 30}])
    wait_until(lambda: client.request("status")["frames_acquired"] >= 2, what="live frames")
    client.request("stop")
    assert _state(client)[0] == 10  # put back: not the live channel's 30 ms
    client.request("start_live", channels=[{"name": "DF", "exposure_ms": 30}])
    client.request("set_exposure", exposure_ms=12)  # the user's choice during live
    client.request("stop")
    assert _state(client)[0] == 12


def test_a_z_stack_around_the_plane_returns_the_focus(client):
    client.request("move_stage", z=1.5)
    job = client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 5}],
                                               "z_plan": {"range": 4, "step": 2}})
    assert client.wait(job["id"])["status"] == "done"
    assert _state(client)[2]["z"] == pytest.approx(1.5)  # not the stack's top plane (3.5)


def test_stop_names_an_unknown_job_and_a_stopped_scan_says_stopped(client):
    with pytest.raises(DaemonError, match="no job 'no-such-job'"):
        client.request("stop", job="no-such-job")
    job = client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 5}],
                                               "time_plan": {"interval": 1, "loops": 600}})
    wait_until(lambda: client.request("job", job=job["id"])["frames"] >= 1, what="the scan's first frame")
    client.request("stop", job=job["id"])
    stopped = client.wait(job["id"])
    assert stopped["status"] == "stopped" and stopped["frames"] < stopped["total"] == 600, stopped


@pytest.mark.parametrize(("request_", "message"), [
    (("capture_pairs", {"grid": {"rows": 1000, "columns": 1000}}), "8000000 frames"),
    (("run_scan", {"sequence": {"channels": ["BF"], "time_plan": {"interval": 0, "loops": 10 ** 12}}}),
     "more than the 1000000"),
    (("run_scan", {"sequence": {"channels": ["BF"], "time_plan": {"interval": 1e9, "loops": 2}}}), "365 days"),
    (("run_scan", {"sequence": {"channels": ["BF"], "time_plan": {"interval": 0, "duration": 10}}}),
     "an interval of 0 needs loops"),
    (("run_scan", {"sequence": {"channels": ["BF"], "stage_positions": [
        {"x": 0, "y": 0, "sequence": {"channels": ["DF", "BF", "Nuclei"]}}]}}), "sequence of its own"),
    # useq's autofocus events were snapped as extra frames (bundle_index past bundle_size, recorded slots overwritten)
    (("run_scan", {"sequence": {"channels": ["BF", "DF"], "stage_positions": [{"x": 0, "y": 0}, {"x": 500, "y": 0}],
                                "autofocus_plan": {"autofocus_device_name": "Z", "axes": ["p"]}}}),
     "has an autofocus_plan; hardware autofocus is not supported"),
    (("run_scan", {"sequence": {"channels": [{"config": "BF", "camera": "Nope"}]}}), "unknown detector 'Nope'"),
    (("capture_pairs", {"label_free": [{"name": "BF", "detector": "Nope"}], "fluorescence": []}),
     "unknown detector 'Nope'"),
    # live failed at its first frame instead
    (("start_live", {"channels": [{"name": "BF", "detector": "Nope"}]}), "unknown detector 'Nope' for channel 'BF'"),
    (("start_live", {"channels": []}), "channels: List should have at least 1 item"),  # it ended, done, no frame
])
def test_plans_that_cannot_run_are_refused_at_the_request(client, request_, message):
    cmd, args = request_
    with pytest.raises(DaemonError, match=message):
        client.request(cmd, timeout_s=60, **args)  # at once: no event list is built
    assert client.request("status")["state"] == "idle"
