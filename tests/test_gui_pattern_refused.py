"""The pattern box shows the LED pattern in use: one the daemon refused to set is not left in the box."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_a_refused_pattern_is_not_left_in_the_box(app, daemon, client):
    """'Clear' chosen while a scan runs: the daemon refused it (BusyError, still Brightfield), and the box said
    'Clear' for good, since nothing but describe set it."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        box = w.pattern_box
        assert spin(app, lambda: w.connected["daemon"] and box.currentText() == "Brightfield", 60)
        job = client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 5}],
                                                   "time_plan": {"interval": 0.2, "loops": 2000}})
        assert spin(app, lambda: (w.daemon_status.get("job") or {}).get("id") == job["id"], 60)
        box.setCurrentText("Clear")
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: "set_pattern: DaemonError: BusyError" in w.error_view.toPlainText(), 60)
        assert spin(app, lambda: box.currentText() == "Brightfield", 30), box.currentText()
        client.request("stop")
        assert client.request("describe")["pattern"] == "Brightfield"
        box.setCurrentText("Clear")  # once the scan is over, the pattern is set and the box keeps it
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: client.request("describe")["pattern"] == "Clear", 60)
        assert spin(app, lambda: box.currentText() == "Clear", 30)
    finally:
        w.close()
        app.processEvents()
