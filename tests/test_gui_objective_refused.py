"""The objective box shows the objective in use: one the daemon refused to switch to is not left in the box."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_a_refused_objective_is_not_left_in_the_box(app, daemon, client):
    """20x chosen while a scan runs: the daemon refused it (BusyError, still 10x), and the box said '20x' for good
    (next to 'pixel size: 0.65 µm', 10x's) since nothing but describe and set_objective replies set it."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        box = w.objective.box
        assert spin(app, lambda: w.connected["daemon"] and box.isEnabled() and box.currentText() == "10x", 60)
        job = client.request("run_scan", sequence={"channels": [{"config": "BF", "exposure": 5}],
                                                   "time_plan": {"interval": 0.2, "loops": 2000}})
        assert spin(app, lambda: (w.daemon_status.get("job") or {}).get("id") == job["id"], 60)
        box.setCurrentText("20x")
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: "set_objective: DaemonError: BusyError" in w.error_view.toPlainText(), 60)
        assert spin(app, lambda: box.currentText() == "10x", 30), box.currentText()
        assert client.request("describe")["objective"] == "10x" and w.objective.pixel.text() == "pixel size: 0.65 µm"
        client.request("stop")
        box.setCurrentText("20x")  # once the scan is over, the switch goes through as before
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: client.request("describe")["objective"] == "20x", 60)
        assert spin(app, lambda: box.currentText() == "20x" and w.objective.pixel.text() == "pixel size: 0.325 µm")
        client.request("set_objective", objective="10x")
    finally:
        w.close()
        app.processEvents()
