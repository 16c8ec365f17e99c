"""A confirmation pair refused before any light because the data disk is down to its reserve gives its light back:
the firing's charge at that position used to stay, so with docs/triggers-colony.yaml's budget (150 ms a position,
100 ms a confirmation) that field could never be confirmed again in the daemon's session, for light never given."""

from __future__ import annotations

import shutil

from helpers import live_under_triggers, log_lines, wait_until

from scopecast.daemon.recording import cap as cap_module


def test_a_pair_refused_for_the_disk_reserve_gives_its_light_back(daemon, client, monkeypatch):
    config = {"triggers": [{"name": "pair", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
                            "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 600,
                            "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]}],
              "safety": {"dose_per_position": 150, "dose_per_session": 1000}}
    monkeypatch.setattr(cap_module, "DISK_RESERVE_BYTES", shutil.disk_usage(daemon.engine.data_dir).free + 2**30)
    with live_under_triggers(daemon, client, config, value=0.9) as log:
        st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"]
                        and s, 120, "the firing and its action")
    outcome = next(x for x in log_lines(log) if "outcome_of" in x)
    pair = outcome["actions"][0]
    assert not pair["ok"] and "cannot record: the data disk has" in pair["error"], pair
    assert st["dose_session"] == 0 and not st["dose_by_position"], (st["dose_session"], st["dose_by_position"])
