"""The viewer's "record" box, toggled during live, restarts live as the daemon runs it, recording cap included: a
live recording capped by another client (``ctl live --record --record-max-frames N``) switched off and on again in
the viewer used to record with no cap at all (the plan holds no cap; the restart sent the plan alone)."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_record_toggled_off_and_on_keeps_the_recording_cap(app, daemon, client):
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()

    def recording() -> dict:
        return (client.request("status")["job"] or {}).get("recording") or {}

    try:
        assert spin(app, lambda: window.connected["daemon"], 60)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}], interval_ms=20, record=True,
                       record_max_frames=100_000)
        assert spin(app, lambda: recording().get("max_frames") == 100_000, 60)
        assert spin(app, lambda: window.record_box.isChecked(), 60)
        window.record_box.click()  # recording off: live goes on
        assert spin(app, lambda: (client.request("status")["job"] or {}).get("path", "x") is None, 60)
        assert spin(app, lambda: (window.daemon_status.get("job") or {}).get("path", "x") is None
                    and not window.record_box.isChecked(), 60)
        window.record_box.click()  # recording on again: the cap it had
        assert spin(app, lambda: recording().get("frames"), 60)
        assert recording()["max_frames"] == 100_000, recording()
        job = client.request("status")["job"]
        assert job["plan"]["interval_ms"] == 20 and [c["name"] for c in job["plan"]["channels"]] == ["BF"]
        client.request("stop")
    finally:
        window.close()
        app.processEvents()


def test_restarted_live_keeps_a_byte_cap_and_the_cycles_left():
    from scopecast.gui.live_restart import recording_cap, restarted_live

    job = {"plan": {"channels": [{"name": "BF"}, {"name": "DF"}], "max_cycles": 10, "record": True,
                    "pace_from": ["tcp://127.0.0.1:1"], "interval_ms": 5.0}, "frames": 8,
           "recording": {"frames": 8, "bytes": 8, "max_bytes": 1000, "max_frames": None, "bytes_limited_by": "cap"}}
    cap = recording_cap(job)
    assert cap == {"record_max_bytes": 1000}
    off = restarted_live(job, False, cap)
    assert off["max_cycles"] == 6 and not off["record"] and "record_max_bytes" not in off
    assert off["pace_from"] == ["tcp://127.0.0.1:1"] and off["interval_ms"] == 5.0
    assert restarted_live({**job, "frames": 0}, True, cap)["record_max_bytes"] == 1000
    disk = {**job["recording"], "bytes_limited_by": "free disk space"}
    assert recording_cap({"recording": disk}) == {} and recording_cap({"recording": None}) is None
