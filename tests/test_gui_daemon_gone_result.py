"""The daemon gone during live: the inferred panes, like the raw pane, say their last image is not the current
field (the engine is still up, so nothing else marked them)."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.inference.engine import InferenceEngine  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_an_unreachable_daemons_last_result_is_not_shown_as_current(app, sim_cfg, tmp_path):
    """The daemon killed during live, the engine still running: the raw pane said 'no answer from the daemon ...
    showing the last frame received', while the stain pane beside it showed its last result at full opacity,
    'trusted', with no word."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.service import Daemon
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*",
               "tcp://127.0.0.1:*").start()
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    e = InferenceEngine(vs, d.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                        warmup_shape=(256, 256)).start()
    w = ScopeWindow(d.control_address, d.stream_address, [EngineEndpoint(e.results_address, e.control.address)])
    daemon_closed = False
    try:
        w.show()
        pane = w.panes[e.results_address]
        assert spin(app, lambda: d.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        with ControlClient(d.control_address, timeout_s=120) as c:
            c.request("start_live", channels=CYCLE, interval_ms=50)
            assert spin(app, lambda: pane.values is not None and pane.message_text == "", 120)
        d.close()  # the daemon goes away; the engine stays
        daemon_closed = True
        assert spin(app, lambda: w.raw.message_text.startswith("no answer from the daemon"), 60)
        assert spin(app, lambda: pane.message_text == f"no answer from the daemon at {d.control_address}:\n"
                    "showing the last result of vs, not the current field", 60), pane.message_text
        assert pane.image.opacity() < 1
        assert "no stats" not in w.latency.tables[e.results_address].why  # the engine itself is still heard from
    finally:
        w.close()
        app.processEvents()
        e.close()
        if not daemon_closed:
            d.close()
