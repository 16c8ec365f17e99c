"""A job that fails (its recording on a full disk, a camera error) is said in the viewer: the daemon reports it in
``status`` (``last_error``) and nowhere else, and the viewer showed nothing."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_recorded_live_that_fails_says_why_in_the_messages(app, daemon, client, disk_fills_at_close):
    """Recorded live whose disk fills: the job failed ('No space left on device', the recording incomplete), the
    button went back to 'Start live' and the messages area stayed empty."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"] and w.cycle.table.rowCount() > 0, 60)
        job = client.request("start_live", channels=["BF"], interval_ms=20, record=True, max_cycles=3)
        assert spin(app, lambda: client.request("job", job=job["id"])["status"] == "failed", 120)
        error = client.request("status")["last_error"]
        assert "No space left on device" in error
        assert spin(app, lambda: error in w.error_view.toPlainText(), 60), w.error_view.toPlainText()
        n = w.error_view.toPlainText().count(error)
        polls = client.request("status")["control"]["requests"]
        assert spin(app, lambda: w.daemon_status["control"]["requests"] > polls + 2, 60)  # polled again since
        assert w.error_view.toPlainText().count(error) == n == 1  # said once, not at every poll
    finally:
        w.close()
        app.processEvents()
