"""A live job with ``max_cycles`` ends after its last cycle, not one ``interval_ms`` later.

``start_live`` with ``max_cycles: 1, interval_ms: 60000`` took its frame and then stayed ``running`` for a
minute, holding the microscope: ``capture_pairs``, ``run_scan``, ``move_stage`` of another job were refused
as busy and ``wait`` did not return."""

from __future__ import annotations

def test_a_bounded_live_ends_at_its_last_cycle(client):
    job = client.request("start_live", channels=["BF"], max_cycles=2, interval_ms=100)
    assert client.wait(job["id"], timeout_s=60)["frames"] == 2
    job = client.request("start_live", channels=["BF"], max_cycles=1, interval_ms=3_600_000)  # an hour
    done = client.wait(job["id"], timeout_s=60)
    assert done["status"] == "done" and done["frames"] == 1, done
    assert client.request("status")["state"] == "idle"
    pairs = client.request("capture_pairs", label_free=["BF"], fluorescence=[])  # the microscope is free again
    assert client.wait(pairs["id"], timeout_s=60)["status"] == "done"
