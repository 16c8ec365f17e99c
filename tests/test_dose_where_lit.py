"""A trigger action's light is charged to the field it actually exposes. A firing is charged where it is decided;
its actions run later, in turn: ``center_object`` then ``confirm_fluorescence`` (centre a colony, then confirm it)
took the confirmation's light at the centred field but charged the deciding field, so the centred field could get
more than ``dose_per_position``. Real daemon on the simulator, results from a stand-in engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scopecast.daemon.dose import DoseBudget, shared_budget
from scopecast.daemon.recorder import open_recording

from helpers import live_under_triggers, log_lines, wait_until

PX = 0.65  # the simulator's 10x pixel size; the test sensor is 256²
# one object in the top-left corner of the result: centring it moves the stage by (20 - 128) px, -70.2 µm in x and y,
# from the cell (0, 0) of a 100 µm grid into the cell (-1, -1)
BLOB = np.zeros((256, 256), np.float32)
BLOB[:40, :40] = 1.0
CENTRED = (20 - 128) * PX
CONFIG = {
    "triggers": [{"name": "colony", "model": "m", "measurement": {"kind": "max", "channel": "c", "threshold": 0.5},
                  "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0,  # fires once
                  "actions": [{"kind": "center_object"},
                              {"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]}],
    "safety": {"dose_per_position": 150, "dose_per_session": 10_000, "max_actions_per_minute": 100,
               "position_grid_um": 100},
}


def _fire_once(daemon, client) -> tuple[dict, dict]:
    """Live until the trigger fired and its actions ran: (the triggers' status, the firing's outcome line)."""
    with live_under_triggers(daemon, client, CONFIG, value=BLOB, full_frame=True) as log:

        def done() -> tuple[dict, dict] | None:
            outcome = next((t for t in log_lines(log) if "outcome_of" in t), None)
            return outcome and (client.request("triggers"), outcome)

        st, outcome = wait_until(done, 120, "the firing's outcome")
    assert outcome["actions"][0] == {"action": "center_object", "ok": True, "moved": True,
                                     "offset_um": [round(CENTRED, 3), round(CENTRED, 3)]}, outcome
    return st, outcome


def test_a_confirmation_after_centring_is_charged_where_it_was_taken(daemon, client):
    st, outcome = _fire_once(daemon, client)
    confirm = outcome["actions"][1]
    assert confirm["ok"], outcome
    lit = [(f.stage_x_um, f.stage_y_um) for s in open_recording(confirm["recording"]).series for f in s.frames
           if f.channel == "Nuclei"]
    assert [(round(x / 100), round(y / 100)) for x, y in lit] == [(-1, -1)], lit
    assert st["dose_by_position"] == {"-1,-1": 100.0}, st  # was {"0,0": 100}: the deciding field, never lit
    assert confirm["light_charged_at_um"] == [round(CENTRED, 3)] * 2 and "stage moved" in confirm["field_changed"]


def test_a_confirmation_whose_centred_field_is_spent_does_not_run(daemon, client):
    """The centred field took 100 of its 150 already (a spot check): the confirmation (100) is refused there, before
    any light, naming the move; the deciding field gets its charge back."""
    shared_budget(daemon.engine).charge(100, CENTRED, CENTRED, "spot_checks")
    st, outcome = _fire_once(daemon, client)
    confirm = outcome["actions"][1]
    assert not confirm["ok"] and "recording" not in confirm, outcome
    assert confirm["skipped"] == (f"the stage moved from 0, 0 to {CENTRED:g}, {CENTRED:g} µm since the decision: "
                                  "light budget at this position: 100 + 100 > 150 (its light was not charged)")
    assert st["dose_by_position"] == {"-1,-1": 100.0}, st  # the spot check's only
    assert not any("-pair-" in p.name for p in Path(daemon.engine.data_dir).iterdir())


def test_budget_move_takes_the_charge_back_and_charges_the_new_field_if_it_fits():
    b = DoseBudget(150, 1000, 100)
    assert b.request_all([(0, 0, 100)], "triggers") is None
    assert b.move([(0, 0, 100)], [(300, 0, 100)], "triggers") is None
    assert b.by_position() == {(3, 0): 100}
    b.charge(100, 0, 0, "spot_checks")
    r = b.move([(300, 0, 100)], [(0, 0, 100)], "triggers")
    assert r is not None and r.reason == "light budget at this position: 100 + 100 > 150"
    assert b.by_position() == {(0, 0): 100} and b.session == 100  # refused: the old charge is given back too
