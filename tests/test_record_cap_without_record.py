"""A live request that caps a recording it does not make is refused, not run unrecorded.

``scopecast ctl live --record-max-frames 100`` (``record`` left out) was accepted: live ran and nothing was
recorded, the cap silently ignored."""

from __future__ import annotations

import pytest

from scopecast.daemon.control import DaemonError


@pytest.mark.parametrize("cap", [{"record_max_frames": 100}, {"record_max_bytes": 10_000_000}])
def test_a_recording_cap_without_record_is_refused(client, cap):
    (name, value), = cap.items()
    with pytest.raises(DaemonError, match=f"{name} = {value} caps a recording, but this live records nothing"):
        client.request("start_live", channels=["BF"], max_cycles=1, **cap)
    assert client.request("jobs") == []


def test_a_recording_cap_with_record_still_records(client):
    job = client.request("start_live", channels=["BF"], record=True, record_max_frames=2)
    done = client.wait(job["id"], timeout_s=60)
    assert done["recording"]["frames"] == 2 and done["stop_reason"].startswith("recording frame cap reached")
