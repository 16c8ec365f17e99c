"""A trigger whose one firing plans more light than a ``safety`` budget allows can never fire: every result above
its threshold was suppressed ('light budget at this position: 0 + 200 > 150'), yet load_triggers accepted it (it
refuses a trigger with more actions than max_actions_per_minute the same way). Now it is refused at load, naming the
trigger, the light it plans and the limit; the triggers already loaded stay."""

from __future__ import annotations

import pytest

from scopecast.daemon.control import DaemonError

NOWHERE = "tcp://127.0.0.1:6222"  # a result stream nobody publishes on: loading only subscribes to it


def _config(actions: list[dict], **safety) -> dict:
    return {"triggers": [{"name": "colony", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
                          "condition": {"above": 0.5}, "actions": actions}], "safety": safety}


CONFIRM = {"kind": "confirm_fluorescence", "channels": ["Nuclei", "Membrane"], "exposure_ms": 100}
STACK = {"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 10, "z_range_um": 4, "z_step_um": 2}  # 3 planes
TILES = {"kind": "tile_scan", "channels": ["Nuclei"], "exposure_ms": 100, "rows": 3, "columns": 3}


@pytest.mark.parametrize(("config", "named"), [
    (_config([CONFIRM], dose_per_position=150), ["'colony'", "200 ms of light at one position",
                                                  "safety.dose_per_position = 150"]),
    (_config([CONFIRM, STACK], dose_per_position=220), ["230 ms of light at one position"]),  # both land here
    (_config([TILES], dose_per_position=150, dose_per_session=800), ["900 ms of light in all",
                                                                     "safety.dose_per_session = 800"]),
], ids=["confirmation", "confirmation-and-stack", "tiles-in-all"])
def test_a_firing_no_budget_can_take_is_refused_at_load(client, config, named):
    client.request("load_triggers", config=_config([{"kind": "notify"}]), sources={"m": NOWHERE})
    with pytest.raises(DaemonError) as e:
        client.request("load_triggers", config=config, sources={"m": NOWHERE})
    assert all(n in str(e.value) for n in named), e.value
    assert "could never fire" in str(e.value), e.value
    assert client.request("triggers")["loaded"] is True  # the triggers loaded before stay
    client.request("unload_triggers")


def test_a_firing_that_fits_loads(client):
    for config in (_config([CONFIRM], dose_per_position=200), _config([TILES], dose_per_position=100)):
        client.request("load_triggers", config=config, sources={"m": NOWHERE})  # each tile lands in its own cell
        client.request("unload_triggers")
