"""A weights change under a model's spot checks clears the viewer's alarm at once (the daemon clears its own and says
so with a ``weights_changed`` event) and breaks the model's fidelity curves."""

import math

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import StandInEngine, spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_a_weights_change_clears_the_alarm_shown(app, daemon, client):
    """Spot checks in alarm, then the engine serves other weights of the model: the daemon cleared the alarm and
    published weights_changed, but the red ALARM line stayed until the next check (for good if none came)."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    with StandInEngine(daemon.stream_address, value=1000.0, channel="c") as engine:
        engine.extra = {"model_sha256": "a" * 64, "precision": "fp32"}
        try:
            w.show()
            assert spin(app, lambda: w.connected["daemon"] and daemon.publisher.subscriptions.of("event") >= 1, 60)
            # one check at once, the next a long while later: the alarm the viewer shows is the first check's
            client.request("start_spot_checks", model="m", results=engine.address, period_s=600, record=False,
                           channels={"c": "Nuclei"}, exposure_ms=1.0, min_psnr_db=99.0)
            engine.wait_subscriber()
            client.request("start_live", channels=["BF"], interval_ms=20)
            assert spin(app, lambda: w.fidelity_alarm and "m: ALARM" in w.fidelity_label.text(), 120), \
                w.fidelity_label.text()
            engine.extra = {**engine.extra, "model_sha256": "b" * 64}  # the same model, other weights
            assert spin(app, lambda: client.request("spot_checks")["models"]["m"]["weights"]["model_sha256"]
                        == "b" * 64, 60)
            assert not client.request("spot_checks")["models"]["m"]["alarm"]
            assert spin(app, lambda: not w.fidelity_alarm and "ALARM" not in w.fidelity_label.text(), 30), \
                w.fidelity_label.text()
            assert "m: other weights (sha256 bbbbbbbbbbbb, fp32)" in w.fidelity_label.text()
            values = w.fidelity_curves["m · c"].yData
            assert len(values) == 2 and math.isnan(values[-1])  # the curve breaks where the weights changed
        finally:
            client.request("stop")
            client.request("stop_spot_checks")
            w.close()
            app.processEvents()
