"""A trigger that centres the object and saves the window around the event (``center_object`` then
``save_window``): the window holds frames from before the move and after it. Each is recorded where it was taken
(a series per place, as a live recording does): the whole window was one series at the first frame's place, so
napari / ome-zarr-py drew the frames taken after the centring ~70 µm from where they were. Real daemon on the
simulator, results from a stand-in engine."""

from __future__ import annotations


import numpy as np
import pytest
from helpers import live_under_triggers, log_lines, wait_until

from scopecast.daemon.recording import open_recording

BLOB = np.zeros((256, 256), np.float32)  # one object in the top-left corner of a 256² result, 0.65 µm pixels
BLOB[:40, :40] = 1.0


def _place(series) -> tuple[float, float, float]:
    """The field's centre (x, y) and z where the series' NGFF translation puts it."""
    tr = series.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][1]["translation"]
    px, (ny, nx) = series.attrs["scopecast"]["pixel_size_um"], series.data.shape[3:]
    return tr[4] + (nx - 1) / 2 * px, tr[3] + (ny - 1) / 2 * px, tr[2]


def test_a_window_around_a_centring_records_each_frame_where_it_was_taken(daemon, client):
    client.request("move_stage", x=0, y=0, z=0)
    config = {"triggers": [{"name": "centre", "model": "m",
                            "measurement": {"kind": "area_fraction", "channel": "c", "threshold": 0.5},
                            "condition": {"above": 0.01, "rearm_below": -1}, "cooldown_s": 0,
                            "actions": [{"kind": "center_object"}, {"kind": "save_window", "before_s": 1.0,
                                                                   "after_s": 1.0}]}],
              "safety": {"max_actions_per_minute": 100}}
    with live_under_triggers(daemon, client, config, value=BLOB, full_frame=True) as log:
        outcome = wait_until(lambda: next((t for t in log_lines(log) if "outcome_of" in t), None),
                             120, "the firing's outcome")
    assert outcome["actions"][0]["moved"] is True, outcome
    rec = open_recording(outcome["actions"][1]["recording"])
    assert len({(h.stage_x_um, h.stage_y_um) for h in rec.frames}) == 2  # the window spans the move
    for s in rec.series:
        for h in s.frames:  # was: every frame at the place of the window's first
            assert _place(s) == pytest.approx((h.stage_x_um, h.stage_y_um, h.stage_z_um), abs=1e-6), s.name
