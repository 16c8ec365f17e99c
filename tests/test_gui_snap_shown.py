"""Snap shows the frame it took: the raw pane, left at its default (the bright-field channel), follows the
snapped channel; a channel the user picked is kept."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def _title(w) -> str:
    return w.raw.plot.titleLabel.text


def test_a_snap_is_shown_in_the_raw_pane(app, daemon, client):
    """Pattern DPC Left, Snap: the pane stayed on BF, "no frames of channel BF yet", and the snap was nowhere to be
    seen (a pattern no preset has, e.g. Annulus, could not even be picked in the raw pane's box)."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"] and w.channel_box.currentText() == "BF", 60)
        for pattern, shown in (("DPC Left", "raw · DPC-Left"), ("Annulus", "raw · Annulus")):
            client.request("set_pattern", pattern=pattern)
            n = w.frames_shown
            w.snap_button.click()
            assert spin(app, lambda: w.frames_shown > n and _title(w).startswith(shown) and not w.raw.message_text,
                        60), (_title(w), w.raw.message_text)
        job = client.request("start_live", channels=["DF", "BF"], max_cycles=100000)  # a steady view again
        assert spin(app, lambda: w.channel_box.currentText() == "DF" and _title(w).startswith("raw · DF"), 60)
        client.request("stop", job=job["id"])
        w.channel_box.setCurrentText("BF")  # the user's pick is kept
        client.request("set_pattern", pattern="DPC Left")
        w.snap_button.click()
        snap = next(f for f, (what, _) in w._in_flight.items() if what == "daemon:snap")
        assert spin(app, snap.done, 60)
        app.processEvents()  # the reply's signal
        assert w.channel_box.currentText() == "BF"
    finally:
        w.close()
        app.processEvents()
