"""The viewer shows the triggers: which are loaded, what they decided and why they refused (a spent light budget,
an untrusted result), from the daemon's ``triggers`` reply (its ``recent`` decision-log lines), on the simulator."""

from pathlib import Path

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import StandInEngine, log_lines, spin, wait_subscribed  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py

MEAN = {"kind": "mean", "channel": "c"}
CONFIG = {
    "triggers": [
        {"name": "bright", "model": "m", "measurement": MEAN, "condition": {"above": 0.5, "rearm_below": 0.2},
         "actions": [{"kind": "notify", "message": "bright field"}]},
        {"name": "first", "model": "m", "measurement": MEAN, "condition": {"above": 0.5},
         "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]},
        {"name": "confirm", "model": "m", "measurement": MEAN, "condition": {"above": 0.5},
         "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]},
    ],
    # one confirmation (100 ms) fits, a second does not: 'first' takes it, 'confirm' is refused from then on (a
    # firing that fits no budget at all is refused at load)
    "safety": {"dose_per_position": 150, "dose_per_session": 1000},
}
UNTRUSTED = {"ok": False, "score": 0.0, "reasons": ["saturated: BF 99.9 %"], "guards": {}}


def test_the_viewer_shows_loaded_triggers_their_decisions_and_refusals(app, daemon, client):
    from scopecast.gui.window import ScopeWindow

    window = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    window.show()
    view = window.triggers_view
    try:
        assert spin(app, lambda: "no triggers loaded" in view.text())
        with StandInEngine(daemon.stream_address, value=1.0) as engine:
            wait_subscribed(daemon.publisher, "frame", 2)  # the stand-in's and the viewer's
            log = client.request("load_triggers", config=CONFIG, sources={"m": engine.address})["log"]
            engine.wait_subscriber()
            try:
                client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
                # what it decided: 'bright' fired, 'confirm' was refused by the light budget, each with its reason
                assert spin(app, lambda: "bright fire: 1 >= 0.5 (actions notify)" in view.text()
                            and "confirm suppressed: light budget" in view.text(), 90), view.text()
                assert "fired, re-arms below 0.2; last measured 1" in view.text()
                assert "armed: fires at >= 0.5; last measured 1; suppressed (" in view.text()  # and why, below
                # an untrusted result is refused, and the panel says why
                engine.extra = {"trust": UNTRUSTED}
                assert spin(app, lambda: "refusing untrusted results" in view.text()
                            and "saturated: BF 99.9 %" in view.text(), 90), view.text()
                client.request("stop")
            finally:
                client.request("unload_triggers")
        # the panel shows the daemon's log lines, not lines of its own
        assert {d.get("event") for d in log_lines(Path(log))} >= {"fire", "suppressed", "untrusted"}
        assert spin(app, lambda: "no triggers loaded" in view.text())
    finally:
        window.close()
        app.processEvents()
