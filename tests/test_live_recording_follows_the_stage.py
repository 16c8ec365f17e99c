"""A stage move during a recorded live (a client's move_stage, the viewer's jog, a trigger's centring) starts a
new series where the frames were taken, at the next cycle (a cycle stays in one series: one model input): an NGFF
series has one translation, and every frame after the move was placed by napari / ome-zarr-py at the field the
live began on (x and z off by the whole move), as if nothing had moved. Real daemon on the simulated scope."""

from __future__ import annotations

import pytest
from helpers import wait_until

from scopecast.daemon.recording import open_recording


def _place(series) -> tuple[float, float, float]:
    """The field's centre (x, y) and z where the series' NGFF translation puts it."""
    tr = series.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][1]["translation"]
    px, (ny, nx) = series.attrs["scopecast"]["pixel_size_um"], series.data.shape[3:]
    return tr[4] + (nx - 1) / 2 * px, tr[3] + (ny - 1) / 2 * px, tr[2]


def test_frames_taken_after_a_stage_move_are_recorded_where_they_were_taken(client):
    client.request("move_stage", x=0, y=0, z=0)
    job = client.request("start_live", channels=["BF", "DF"], exposure_ms=1, interval_ms=20, record=True)
    try:
        wait_until(lambda: client.request("job", job=job["id"])["frames"] >= 4, 120, "two cycles at the start")
        client.request("move_stage", x=400, y=-300, z=6)
        at = client.request("job", job=job["id"])["frames"]
        wait_until(lambda: client.request("job", job=job["id"])["frames"] >= at + 4, 120, "two cycles moved")
    finally:
        client.request("stop")
    done = client.wait(job["id"], timeout_s=120)
    assert done["status"] == "stopped", done["error"]
    rec = open_recording(done["path"])
    places = {(h.stage_x_um, h.stage_y_um, h.stage_z_um) for h in rec.frames}
    assert places == {(0.0, 0.0, 0.0), (400.0, -300.0, 6.0)}
    whole = 0
    for s in rec.series:
        cycles: dict[int, set] = {}
        for h in s.frames:
            cycles.setdefault(h.bundle_id, set()).add((h.stage_x_um, h.stage_y_um, h.stage_z_um))
        for where in cycles.values():  # a cycle the move landed in stays whole, where it began
            if len(where) == 1:  # was: every cycle at (0, 0, 0), the series' translation
                assert _place(s) == pytest.approx(next(iter(where)), abs=1e-6), s.name
                whole += next(iter(where)) == (400.0, -300.0, 6.0)
    assert whole >= 1 and rec.series[-1].name.startswith("pos000 Camera from cycle ")
