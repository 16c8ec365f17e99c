"""The triggers panel says what each trigger waits for and how close the field is, from the daemon's ``triggers``
reply: its threshold before it has decided anything, and the value measured on the newest result (the reply
carried no configuration, so the panel read "armed" until a first decision, and after a firing kept showing the
firing's measurement as "last measured" while the field measured something else)."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import StandInEngine, live_under_triggers, spin, wait_subscribed  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py

CONFIG = {"triggers": [{"name": "bright", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
                        "condition": {"above": 0.5, "rearm_below": 0.2}, "cooldown_s": 0,
                        "actions": [{"kind": "notify", "message": "bright field"}]}]}


def test_the_panel_shows_thresholds_and_the_newest_measurement(app, daemon, client):
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()
    view = window.triggers_view
    try:
        with live_under_triggers(daemon, client, CONFIG, value=0.1) as log:
            # below its threshold it decides nothing, and still says what it waits for and what it measures
            assert spin(app, lambda: "bright: armed: fires at >= 0.5; last measured 0.1 (mean of c in m)"
                        in view.text(), 90), view.text()
            assert not log.exists() or "bright" not in log.read_text()
            st = client.request("triggers")["triggers"]["bright"]
            assert (st["above"], st["rearm_below"], st["last_measurement"]) == (0.5, 0.2, pytest.approx(0.1))
            assert st["measurement"]["kind"] == "mean" and st["actions"] == ["notify"]
    finally:
        window.close()
        app.processEvents()


def test_after_a_firing_the_panel_shows_the_newest_measurement_not_the_firings(app, daemon, client):
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()
    view = window.triggers_view
    try:
        with StandInEngine(daemon.stream_address, value=1.0) as engine:
            wait_subscribed(daemon.publisher, "frame", 2)  # the stand-in's and the viewer's
            client.request("load_triggers", config=CONFIG, sources={"m": engine.address})
            engine.wait_subscriber()
            try:
                client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
                assert spin(app, lambda: "bright: fired, re-arms below 0.2; last measured 1 " in view.text(), 90)
                engine.value = 0.3  # not low enough to re-arm: no decision line, a new measurement
                assert spin(app, lambda: "bright: fired, re-arms below 0.2; last measured 0.3 " in view.text(),
                            90), view.text()
                client.request("stop")
            finally:
                client.request("unload_triggers")
    finally:
        window.close()
        app.processEvents()
