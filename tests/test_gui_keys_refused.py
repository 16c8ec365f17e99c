"""A viewer whose CurveZMQ handshake the daemon refuses (started without --keys, or with a key it does not admit)
says why, as `scopecast ctl` and the engine do: it said only 'disconnected (retrying)' for ever."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon import security  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_a_viewer_without_keys_on_a_secured_daemon_says_why(app, sim_cfg, tmp_path):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon
    from scopecast.gui.window import ScopeWindow

    security.use_keys(security.create_keys(tmp_path / "keys"))
    try:  # the daemon with --keys: its sockets are Curve servers
        d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*",
                   "tcp://127.0.0.1:*").start()
    finally:
        security.use_keys(None)
    w = ScopeWindow(d.control_address, d.stream_address, [])  # scopecast gui without --keys
    try:
        w.show()
        assert spin(app, lambda: "disconnected (retrying)" in w.status_line.text(), 60)
        assert spin(app, lambda: "--keys" in w.error_view.toPlainText(), 60), w.error_view.toPlainText()
        text = w.error_view.toPlainText()
        assert d.stream_address in text and "CurveZMQ" in text
    finally:
        w.close()
        app.processEvents()
        d.close()
