"""A scan whose channels skip time points (``acquire_every``) or planes (``do_stack: false``) is checked against
the free disk like any other and its job says how many frames it plans. Its frame count was left unknown (None),
and the request then checked the disk for one frame only: a scan of hundreds of thousands of frames started on a
disk with room for a fraction of them and failed when the disk filled. Real daemon on the simulated scope."""

from __future__ import annotations

import shutil

import pytest
import useq

from scopecast.daemon.control import DaemonError
from scopecast.daemon.scan_bundles import sequence_size

LOOPS = 400_000


def test_a_scan_that_skips_time_points_larger_than_the_free_disk_is_refused(daemon, client, monkeypatch):
    h, w = client.request("describe")["image_shape"]
    frames = LOOPS + LOOPS // 1000  # BF at every time point, DF at one in 1000
    real = shutil.disk_usage  # the disk has room for a tenth of it, beyond the 1 GiB reserve
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: (u := real(path))._replace(free=min(u.free, (1 << 30) + frames * h * w // 5)))
    data = daemon.engine.data_dir
    before = set(data.iterdir())
    huge = {"channels": [{"config": "BF", "exposure": 1.0}, {"config": "DF", "exposure": 1.0, "acquire_every": 1000}],
            "time_plan": {"interval": 0, "loops": LOOPS}}
    try:
        with pytest.raises(DaemonError, match=rf"less than {frames} {h}x{w} uint16 frames"):
            client.request("run_scan", sequence=huge)
    finally:
        client.request("stop")  # the old code started it
    assert client.request("jobs") == [] and set(data.iterdir()) == before  # nothing started, nothing written


def test_the_job_of_a_scan_whose_channels_skip_gives_its_planned_frames(client):
    seq = {"channels": [{"config": "BF", "exposure": 1.0}, {"config": "DF", "exposure": 1.0, "do_stack": False},
                        {"config": "DPC-Left", "exposure": 1.0, "acquire_every": 2}],
           "z_plan": {"range": 2.0, "step": 1.0}, "time_plan": {"interval": 0, "loops": 3}}
    job = client.request("run_scan", sequence=seq)
    done = client.wait(job["id"], timeout_s=120)
    assert done["status"] == "done"
    assert job["total"] == done["frames"] == done["total"] == 3 * (3 + 1) + 2 * 3


@pytest.mark.parametrize("plan", [
    {"channels": ["BF", {"config": "DF", "do_stack": False}, {"config": "Nuclei", "acquire_every": 3}],
     "z_plan": {"range": 4, "step": 1}, "time_plan": {"interval": 0, "loops": 7},
     "stage_positions": [{"x": 0, "y": 0}, {"x": 1, "y": 1}],
     "grid_plan": {"rows": 1, "columns": 2, "fov_width": 5, "fov_height": 5}},
    {"channels": ["BF", {"config": "DF", "acquire_every": 2}], "time_plan": {"interval": 1, "duration": 5}},
    {"channels": [{"config": "DF", "do_stack": False}]},
])
def test_the_count_is_the_events_useq_makes(plan):
    seq = useq.MDASequence(**plan)
    assert sequence_size(seq) == len(list(seq.iter_events()))
