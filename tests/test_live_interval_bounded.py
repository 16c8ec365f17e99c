"""A live interval too long to be timed is refused at the request (and in a trigger's switch_live).

``start_live`` with ``interval_ms`` 1e16 was accepted; after its first cycle the job failed with
``OverflowError: timestamp out of range for platform time_t``, and a ``switch_live`` action with such an
interval replaced a running live with one that died the same way."""

from __future__ import annotations

import pytest

from scopecast.daemon.control import DaemonError

from helpers import wait_until


def test_a_live_interval_beyond_a_day_is_refused_at_the_request(client):
    with pytest.raises(DaemonError, match="interval_ms: Input should be less than or equal to 86400000"):
        client.request("start_live", channels=["BF"], max_cycles=2, interval_ms=1e16)
    assert client.request("jobs") == [] and client.request("status")["state"] == "idle"
    job = client.request("start_live", channels=["BF"], interval_ms=86_400_000)  # a day, the longest
    wait_until(lambda: client.request("job", job=job["id"])["frames"] >= 1, what="the first cycle")
    assert client.request("stop")["stopped"]["status"] == "stopped"  # waiting for its next cycle, not failed


def test_a_switch_live_interval_beyond_a_day_is_refused_at_load(client):
    config = {"triggers": [{"name": "slow", "model": "m", "measurement": {"kind": "max", "channel": "nuclei"},
                            "condition": {"above": 1}, "actions": [{"kind": "switch_live", "interval_ms": 1e16}]}]}
    with pytest.raises(DaemonError, match=r"actions\[0\]\.interval_ms = 1e\+16: Input should be less than or equal"):
        client.request("load_triggers", config=config, sources={"m": "tcp://127.0.0.1:1"})
    assert client.request("triggers") == {"loaded": False}
