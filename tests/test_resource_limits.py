"""A client cannot make the daemon exhaust its resources: spot checks of at most 8 models run at once (about a
thousand used up the ZeroMQ context's sockets: snaps went unanswered, live took no frame); a scan that cannot fit
on the data disk (less the reserve every recording leaves) is refused at the request (it wrote until the disk was
full). Real daemon on the simulator, real sockets."""

from __future__ import annotations

import re
import shutil

import pytest

from scopecast.daemon.control import DaemonError

TRIES = 40  # far more than any rig has engines


def _start(client, model: str) -> dict:
    return client.request("start_spot_checks", model=model, results="tcp://127.0.0.1:1",
                          channels={"nuclei": "Nuclei"}, record=False)


def test_spot_checks_of_too_many_models_are_refused_at_the_request(daemon, client):
    """Each costs a thread, a socket of the daemon's one ZeroMQ context (1023 in all) and a frame sink."""
    started, refusal = [], None
    try:
        for i in range(TRIES):
            try:
                _start(client, f"m{i}")
            except DaemonError as e:
                refusal = e
                break
            started.append(f"m{i}")
        assert refusal is not None, f"spot checks of {len(started)} models all started: no limit"
        assert refusal.type == "ValueError"
        assert re.search(rf"spot checks already run for {len(started)} models .*the most this daemon runs at once",
                         refusal.message), refusal.message
        assert sorted(client.request("spot_checks")["models"]) == sorted(started)  # the refused one never started
        _start(client, started[0])  # replacing a running model's spot checks is still allowed
        client.request("stop_spot_checks", model=started[-1])
        _start(client, "another")  # and a stopped one makes room
        with pytest.raises(DaemonError, match="the most this daemon runs at once"):
            _start(client, "one-more")
    finally:
        client.request("stop_spot_checks")
    assert client.request("spot_checks") == {"models": {}}


FRAMES = 1_000_000  # the most one scan may plan


def test_a_scan_larger_than_the_free_disk_is_refused_at_the_request(daemon, client, monkeypatch):
    h, w = client.request("describe")["image_shape"]
    data = daemon.engine.data_dir
    # the disk has room for half such a scan at most (a disk that has room for it all, 131 GB at 256², is no test)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: (u := real(path))._replace(free=min(u.free, FRAMES * h * w)))
    before = set(data.iterdir())
    huge = {"channels": [{"config": "BF"}], "time_plan": {"interval": 0, "loops": FRAMES}}
    try:
        with pytest.raises(DaemonError, match=rf"cannot record: the data disk has \d+ MiB free and a recording "
                                              rf"always leaves 1024 MiB free, less than {FRAMES} {h}x{w} uint16 "
                                              rf"frames \({FRAMES * h * w * 2} bytes\)") as e:
            client.request("run_scan", sequence=huge)
        assert e.value.type == "ValueError"
    finally:
        client.request("stop")  # the old code started it
    assert client.request("jobs") == [] and set(data.iterdir()) == before  # nothing started, nothing written
    job = client.request("run_scan", sequence={"channels": [{"config": "BF"}], "time_plan": {"interval": 0,
                                                                                               "loops": 2}})
    assert client.wait(job["id"], timeout_s=300)["frames"] == 2  # a scan that fits still runs
