"""A trigger's ``z_stack`` (or ``tile_scan``) whose scan the daemon refuses once live has been stopped for it (no
pixel size for the objective in use: a scan records, and a recording needs one) took no light, yet the light
charged for it stayed charged: the budget refused later firings for light the sample never got. It is given back
now, and the action says it was skipped. Real daemon on the simulator, real sockets, a stand-in engine."""

from __future__ import annotations

import pytest

from conftest import small_cfg
from helpers import live_under_triggers, log_lines, wait_until
from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.control import ControlClient
from scopecast.daemon.service import Daemon


@pytest.fixture
def no_40x(tmp_path):
    """A daemon on the simulator whose config calibrates no pixel size for 40x, and its client."""
    cfg = small_cfg(tmp_path, 64)
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(keepends=True) if "Res40x" not in line))
    d = Daemon(lambda: load_mmcore_backend(cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as c:
            yield d, c
    finally:
        d.close()


STACK = {"triggers": [{
    "name": "stack", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
    "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 600,
    "actions": [{"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 5, "z_range_um": 4, "z_step_um": 2}]}],
    "safety": {"dose_per_position": 1000}}


def test_a_z_stack_the_daemon_refuses_after_stopping_live_gives_its_light_back(no_40x):
    daemon, client = no_40x
    client.request("set_objective", objective="40x")  # no pixel size: a scan cannot be recorded here
    with live_under_triggers(daemon, client, STACK, value=0.9) as log:
        out = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 120, "the outcome")
        dose = client.request("triggers")["dose_session"]
    stack = out["actions"][0]
    assert not stack["ok"] and "no pixel size is calibrated" in str(stack), stack
    assert dose == 0, (dose, stack)  # no light reached the sample: none stays charged
