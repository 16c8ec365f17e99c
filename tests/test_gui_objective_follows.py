"""The viewer's objective box follows an objective switched by another client (ctl, a script, Micro-Manager's own
window): it described the daemon once and kept saying 10x and 0.65 µm while the frames came at 20x, 0.325 µm."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_objective_box_follows_a_switch_by_another_client(app, daemon, client):
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()
    try:
        assert spin(app, lambda: window.objective.box.currentText() == "10x", 60)
        assert client.request("set_objective", objective="20x")["pixel_size_um"] == pytest.approx(0.325)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
        assert spin(app, lambda: window.raw.px_um == pytest.approx(0.325), 60)  # the frames are at 20x
        assert spin(app, lambda: window.objective.box.currentText() == "20x"
                    and window.objective.pixel.text() == "pixel size: 0.325 µm", 60), \
            (window.objective.box.currentText(), window.objective.pixel.text())
        client.request("stop")
    finally:
        window.close()
        app.processEvents()
