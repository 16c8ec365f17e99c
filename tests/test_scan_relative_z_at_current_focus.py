"""A relative z plan at a stage position that gives x and y but no z stacks around the current focus, as the
same plan without positions does and as Micro-Manager's relative Z stacks and pymmcore-widgets' MDA take it;
it stacked around z = 0 µm (useq adds 0 for a missing z), far out of focus. Likewise a relative grid at a
position without x/y tiles around the current XY. Real daemon on the simulated scope."""

from __future__ import annotations

import pytest
import useq

from scopecast.daemon.recording import open_recording


def _stage(client, sequence: dict) -> list[tuple[float, float, float]]:
    """Where each frame of ``sequence`` was taken (x, y, z µm), in acquisition order."""
    done = client.wait(client.request("run_scan", sequence=sequence)["id"], timeout_s=120)
    assert done["status"] == "done", done
    frames = sorted(open_recording(done["path"]).frames, key=lambda f: f.seq)
    return [(f.stage_x_um, f.stage_y_um, f.stage_z_um) for f in frames]


@pytest.mark.parametrize("z_plan", [{"above": 1.0, "below": 1.0, "step": 1.0}, {"range": 2.0, "step": 1.0},
                                    {"relative": [-1.0, 0.0, 1.0]}])
def test_relative_stack_at_a_position_without_z_is_around_the_focus(client, z_plan):
    client.request("move_stage", x=100.0, y=50.0, z=30.0)  # the user focused here
    channels = [{"config": "BF", "exposure": 1.0}]
    xyz = _stage(client, {"channels": channels, "stage_positions": [{"x": 120.0, "y": 60.0}], "z_plan": z_plan})
    assert [z for _, _, z in xyz] == [29.0, 30.0, 31.0]  # was -1, 0, 1
    assert {(x, y) for x, y, _ in xyz} == {(120.0, 60.0)}
    # an absolute z plan is not shifted
    assert [z for *_, z in _stage(client, {"channels": channels, "stage_positions": [{"x": 120.0, "y": 60.0}],
                                           "z_plan": {"top": 2.0, "bottom": 0.0, "step": 2.0}})] == [0.0, 2.0]


def test_only_missing_coordinates_of_relative_plans_are_taken_from_the_stage():
    from scopecast.daemon.plans import at_current_position

    seq = at_current_position(useq.MDASequence(
        channels=["BF"], z_plan={"range": 2, "step": 1},
        grid_plan={"rows": 1, "columns": 2, "fov_width": 10, "fov_height": 10},
        stage_positions=[{"x": 5.0}, {"x": 1.0, "y": 2.0, "z": 3.0}, {"name": "here"}]), (7.0, 8.0, 9.0))
    assert [(p.x, p.y, p.z, p.name) for p in seq.stage_positions] == [
        (5.0, 8.0, 9.0, None), (1.0, 2.0, 3.0, None), (7.0, 8.0, 9.0, "here")]
    no_plans = at_current_position(useq.MDASequence(channels=["BF"], stage_positions=[{"x": 5.0}]), (7.0, 8.0, 9.0))
    assert [(p.x, p.y, p.z) for p in no_plans.stage_positions] == [(5.0, None, None)]  # nothing relative: kept
