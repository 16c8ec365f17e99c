"""The viewer closes at once, even while one of its requests waits for a long answer (a snap at a long exposure,
a model load, a stop); the request's reply is then dropped."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin, wait_until  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_closing_during_a_long_snap_does_not_wait_for_it(app, daemon, client):
    """Snap at 8 s exposure, then close: the window froze until the snap answered (Requester.close waited for the
    running request; a model load waits up to 120 s)."""
    from scopecast.gui.window import ScopeWindow

    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")  # a snap lasts its exposure
    client.request("set_exposure", exposure_ms=8000)
    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"] and w.daemon_status.get("exposure_ms") == 8000, 60)
        w.snap_button.click()
        snap = next(f for f, (what, _) in w._in_flight.items() if what == "daemon:snap")
        assert spin(app, lambda: "waiting for snap" in w.status_line.text(), 30), w.status_line.text()
    finally:
        w.close()
    assert not snap.done(), "closing the window waited for the snap's reply"
    wait_until(snap.done, 120, "the snap's reply")  # answered later, in its own thread, which closes its client
    wait_until(lambda: not w.requester._clients, 30, "the snap's client closed")
    app.processEvents()
    assert "snap" not in w.error_view.toPlainText()
