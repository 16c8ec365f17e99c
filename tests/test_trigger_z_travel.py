"""A ``z_stack`` action against the focus travel the backend declares. One wider than the whole travel (a 150 µm
stack on a 100 µm piezo) could never run, yet load_triggers accepted it: it is refused at load now, naming the
trigger, the field and the travel. One that fits the travel but not around where the focus is when it fires was
refused only after live had been stopped for it (live restarted as a new job, a new recording) and the light
charged for it stayed charged: now it is skipped before live is touched, its light given back."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.service import Daemon
from scopecast.daemon.sim.stages import SimZStage

from conftest import small_cfg
from helpers import live_under_triggers, log_lines, wait_until


class Piezo(SimZStage):
    """A 100 µm piezo focus: the simulator's focus drive with a piezo's travel (a user's pyDevice)."""

    _LIMITS = (0.0, 100.0)


# its own Position property with the piezo's limits: set_property_limits would change the controller it shares
# with SimZStage (pymmcore-plus keeps one per class hierarchy), and so every simulated focus in this process
_position = copy.copy(SimZStage._cls_prop_controllers["Position"])
_position.property = dataclasses.replace(_position.property, limits=Piezo._LIMITS)
Piezo._cls_prop_controllers = {**SimZStage._cls_prop_controllers, "Position": _position}


def _z_stack(z_range_um: float, z_step_um: float) -> dict:
    return {"triggers": [{
        "name": "stack", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 600,
        "actions": [{"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 5, "z_range_um": z_range_um,
                     "z_step_um": z_step_um}]}], "safety": {"dose_per_position": 100}}


def test_a_z_stack_wider_than_the_focus_travel_is_refused_at_load(tmp_path):
    cfg = small_cfg(tmp_path)
    cfg.write_text(cfg.read_text().replace("#py pyDevice,Z,scopecast.daemon.sim.devices,SimZStage",
                                           f"#py pyDevice,Z,{__name__},Piezo"))
    d = Daemon(lambda: load_mmcore_backend(cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as client:
            sources = {"m": "tcp://127.0.0.1:6222"}  # nobody publishes there: loading only subscribes
            with pytest.raises(DaemonError) as e:
                client.request("load_triggers", config=_z_stack(150, 50), sources=sources)
            for part in ("'stack'", "actions[0] (z_stack)", "z_range_um = 150", "focus travel [0, 100] µm"):
                assert part in str(e.value), e.value
            assert client.request("triggers") == {"loaded": False}
            client.request("load_triggers", config=_z_stack(100, 50), sources=sources)  # fits the travel
            client.request("unload_triggers")
    finally:
        d.close()


def test_a_z_stack_beyond_the_travel_here_is_skipped_before_live_is_stopped(daemon, client):
    client.request("move_stage", z=1500)  # the simulator's focus travel is [-2000, 2000] µm
    with live_under_triggers(daemon, client, _z_stack(2000, 500), value=0.9) as log:
        out = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 120, "the outcome")
        jobs = client.request("jobs")
        dose = client.request("triggers")["dose_session"]
    stack = out["actions"][0]
    assert not stack["ok"] and "outside its travel [-2000, 2000] µm" in stack["skipped"], stack
    assert "live was not stopped" in stack["skipped"], stack
    assert [(j["kind"], j["status"]) for j in jobs] == [("live", "running")], jobs  # the same live goes on
    assert dose == 0, dose  # no light reached the sample: none is charged
