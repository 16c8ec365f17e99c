"""``scopecast ctl`` takes negative coordinates as a user types them: stage positions are µm on both sides of
the origin, so ``--positions -100,0 2000,-50`` and ``--x -1e3`` are ordinary values, not options."""

from __future__ import annotations

import json

from scopecast.daemon.recorder import open_recording


def test_ctl_takes_negative_pairs_and_exponents(daemon, cli):
    ctl = ("ctl", "--control", daemon.control_address)
    rc, out, err = cli(*ctl, "move_stage", "--x", "-1e3", "--y", "-.5")
    assert rc == 0 and json.loads(out)["position_um"] == {"x": -1000.0, "y": -0.5, "z": 0.0}, err
    rc, out, err = cli(*ctl, "capture_pairs", "--positions", "-100,0", "2000,-50", "--label-free", "BF",
                       "--fluorescence", "Nuclei", "--exposure", "2")
    assert rc == 0, err
    job = json.loads(out)
    assert job["total"] == 2 * 2  # two positions x (BF, Nuclei)
    rc, out, err = cli(*ctl, "wait", job["id"])
    done = json.loads(out)
    assert rc == 0 and done["status"] == "done", err
    stage = sorted((s.frames[0].stage_x_um, s.frames[0].stage_y_um) for s in open_recording(done["path"]).series)
    assert stage == [(-100.0, 0.0), (2000.0, -50.0)]
