"""A scan's grid without a field of view tiles by the camera's field, as pymmcore-plus's MDA engine does (ROI
times pixel size): useq's default spaced a rows × columns grid's tiles 1 µm apart (every tile the same field)
and a grid by edges or by size was refused. Real daemon on the simulated scope."""

from __future__ import annotations

import pytest

from scopecast.daemon.recording import open_recording


def _field_width_um(client) -> float:
    d = client.request("describe")
    return d["image_shape"][1] * d["pixel_size_um"]


def _tile_xs(client, grid: dict) -> list[float]:
    """The stage x of each frame of a one-channel scan of ``grid``, in acquisition order."""
    job = client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 1.0}], "grid_plan": grid})
    done = client.wait(job["id"], timeout_s=120)
    assert done["status"] == "done", done
    return [f.stage_x_um for f in sorted(open_recording(done["path"]).frames, key=lambda f: f.seq)]


def test_grid_tiles_are_one_camera_field_apart(client):
    client.request("move_stage", x=0.0, y=0.0)
    xs = _tile_xs(client, {"rows": 1, "columns": 2})
    assert xs[1] - xs[0] == pytest.approx(_field_width_um(client))  # was 1 µm: two copies of one field


@pytest.mark.filterwarnings("error::UserWarning")  # useq warns of (and is to refuse) a position x, y it ignores
def test_grid_by_edges_is_laid_out_with_the_camera_field(client):
    fov = _field_width_um(client)
    xs = _tile_xs(client, {"top": 0.0, "left": 0.0, "bottom": 0.0, "right": 2 * fov})  # was refused
    assert sorted(set(xs)) == pytest.approx([fov / 2, 3 * fov / 2])  # two fields side by side cover it


def test_a_grid_field_of_view_the_plan_gives_is_kept(client):
    client.request("move_stage", x=0.0, y=0.0)
    xs = _tile_xs(client, {"rows": 1, "columns": 2, "fov_width": 50.0, "fov_height": 50.0})
    assert xs[1] - xs[0] == pytest.approx(50.0)
