"""The View options apply to the result on show with live stopped: a microscopist stops live to look at the last
virtual stain and ticks "uncertainty map" or "stains over label-free"; the pane used to stay as it was (only a new
result was drawn with the options), so the options did nothing until live ran again, on another field."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.inference.engine import InferenceEngine  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_view_options_redraw_the_last_result_with_live_stopped(app, daemon, client, tmp_path):
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    vs = write_package(tmp_path / "vsu", CYCLE, ["nuclei", "membrane"], name="vsu", task="virtual-staining",
                       width=4, layers=2, tile=256)
    e = InferenceEngine(vs, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                        warmup_shape=(256, 256), uncertainty=2).start()
    w = ScopeWindow(daemon.control_address, daemon.stream_address,
                    [EngineEndpoint(e.results_address, e.control.address)])
    try:
        w.show()
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1)
        pane = w.panes[e.results_address]
        client.request("start_live", channels=CYCLE, max_cycles=2)
        assert spin(app, lambda: client.request("status")["state"] == "idle"
                    and w.results_shown.get(e.results_address, {}).get("bundle_id") == 1
                    and pane.channel_names == ["nuclei", "membrane"], 120)
        shown, displayed = w._last_serial[e.results_address], w.displayed
        w.uncertainty_box.setChecked(True)  # live stopped: the last result's uncertainty map
        assert spin(app, lambda: pane.channel_names == ["uncertainty (std, output units)"], 10), pane.channel_names
        w.uncertainty_box.setChecked(False)
        assert spin(app, lambda: pane.channel_names == ["nuclei", "membrane"], 10), pane.channel_names
        w.overlay_box.setChecked(True)  # the stains over their own bundle's bright-field
        assert spin(app, lambda: "over the label-free image" in pane.legend_text(), 10), pane.legend_text()
        assert (w._last_serial[e.results_address], w.displayed) == (shown, displayed)  # none counted again
    finally:
        w.close()
        app.processEvents()
        e.close()
