"""The pattern box follows the LED pattern the hardware has (``status``), changed by another client, a trigger or
a live cycle; not only the pattern of the viewer's first ``describe``."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_the_pattern_box_follows_the_hardware(app, daemon, client):
    """Another client's set_pattern and a live cycle change the LED pattern; the box showed Brightfield for good."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        box = w.pattern_box
        assert spin(app, lambda: w.connected["daemon"] and box.currentText() == "Brightfield", 60)
        client.request("set_pattern", pattern="DPC Left")  # a script, scopecast ctl, a trigger
        assert spin(app, lambda: box.currentText() == "DPC Left", 30), box.currentText()
        job = client.request("start_live", channels=["DF"], max_cycles=100000)
        assert spin(app, lambda: box.currentText() == "Darkfield", 30), box.currentText()
        client.request("stop", job=job["id"])  # the job puts back the pattern it found
        assert spin(app, lambda: box.currentText() == "DPC Left", 30), box.currentText()
    finally:
        w.close()
        app.processEvents()
