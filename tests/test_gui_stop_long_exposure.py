"""Stop live during a long exposure: the daemon replies once the frame is taken and the job has ended (up to 30 s
after, docs/protocol.md), and the viewer waits for that reply instead of calling the daemon unresponsive."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_stop_during_a_long_exposure_is_not_reported_as_unanswered(app, daemon, client):
    """Live BF at 9 s (a dim sample), Stop live during the frame: the window said "stop: TimeoutError: no reply to
    'stop' ... the server did not answer" after 5 s, while live stopped as asked once the frame was taken."""
    from scopecast.gui.window import ScopeWindow

    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")  # a frame lasts its exposure
    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    replies: list[str] = []
    w.sig.reply.connect(lambda what, _result: replies.append(what))
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"], 60)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 9000.0}])
        assert spin(app, lambda: w.live_button.text() == "Stop live", 60)  # the viewer knows live runs
        w.live_button.click()
        assert spin(app, lambda: "daemon:stop" in replies or "stop:" in w.error_view.toPlainText(), 120)
        assert "stop:" not in w.error_view.toPlainText(), w.error_view.toPlainText()
        assert client.request("status")["state"] == "idle"
    finally:
        w.close()
        app.processEvents()
