"""The viewer's "record" box restarts the live job the daemon runs *when it is clicked*, not the one of its last
status poll (up to a second old): a cycle another client (or a trigger's ``switch_live``) started in that second was
replaced by the old one, and a live another client stopped in that second was started again."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def _stale(app, window) -> None:
    """Hold the viewer's status where it is (as in the second between two polls): no poll after this one."""
    window._status_timer.stop()
    assert spin(app, lambda: all(f.done() for f in window._polls.values()), 60)


def _click_record(window) -> list:
    """Click "record"; the futures of the requests the click sent. Taken as ``window.request`` returns them, not
    from ``window._in_flight``: a request answered before ``request`` returns (a loaded machine preempts the GUI
    thread after the submit, and an idle daemon's ``status`` is the whole restart) has its done callback run at
    once in the GUI thread, whose reply handler forgets it before ``click()`` returns."""
    sent, request = [], window.request

    def spy(cmd, *args, **kwargs):
        fut = request(cmd, *args, **kwargs)
        if not kwargs.get("poll"):
            sent.append(fut)
        return fut

    window.request = spy
    try:
        window.record_box.click()
    finally:
        del window.request
    return sent


@pytest.fixture
def stale_window(app, daemon, client):
    """A viewer of a live job (BF, 5 ms, every 20 ms) whose status is held after it saw the job."""
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()
    try:
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}], interval_ms=20)
        assert spin(app, lambda: (window.daemon_status.get("job") or {}).get("plan"), 60)
        _stale(app, window)
        yield window
    finally:
        client.request("stop")
        window.close()
        app.processEvents()


def test_record_toggle_restarts_the_live_running_now(app, client, stale_window):
    window = stale_window
    client.request("stop")  # another client changes the cycle within the second
    client.request("start_live", channels=[{"name": "DF", "exposure_ms": 7}], interval_ms=30)
    sent = _click_record(window)  # record: the cycle running now, recording
    assert sent
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("path") and all(f.done() for f in sent),
                60)
    plan = client.request("status")["job"]["plan"]
    assert [(c["name"], c["exposure_ms"]) for c in plan["channels"]] == [("DF", 7.0)], plan
    assert plan["interval_ms"] == 30 and plan["record"] is True


def test_record_toggle_does_not_restart_a_live_stopped_meanwhile(app, client, stale_window):
    window = stale_window
    client.request("stop")  # another client (the microscopist at the stand) stops live within the second
    sent = _click_record(window)
    assert sent and spin(app, lambda: all(f.done() for f in sent), 60), sent
    assert [f.exception() for f in sent] == [None] * len(sent)  # the click's requests were answered
    assert client.request("status")["state"] == "idle", "the viewer started a live that was stopped"


def test_two_quick_record_clicks_leave_live_running_unrecorded(app, client, stale_window):
    """Two clicks before any status poll: each restart reads the job the one before it started."""
    window = stale_window
    window.record_box.click()
    window.record_box.click()

    def lives() -> list[dict]:
        return [j for j in client.request("jobs") if j["kind"] == "live"]

    assert spin(app, lambda: len(lives()) == 3 and lives()[-1]["status"] == "running", 60), lives()
    assert [bool(j["path"]) for j in lives()] == [False, True, False]  # recorded, then not any more
