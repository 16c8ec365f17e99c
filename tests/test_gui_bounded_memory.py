"""The viewer runs for days: what it remembers of the frames it drew and of the messages it showed stays bounded,
and an engine error that comes back is said again."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def test_a_viewer_without_engines_keeps_no_mark_per_frame_drawn(app, daemon, client):
    """No engine connected, live BF: the set of frames already drawn grew by one entry per frame (pruned only when
    an engine's result was read), some 150-200 MB a day."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"] and daemon.publisher.subscriptions.of("frame") >= 1, 60)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 1.0}], interval_ms=10)
        assert spin(app, lambda: w.frames_shown >= 40, 120), w.frames_shown
        client.request("stop")
        held = len(w.streams.channels())
        assert len(w.streams._taken) <= held, (len(w.streams._taken), held, w.frames_shown)
    finally:
        w.close()
        app.processEvents()


def test_an_engine_error_that_comes_back_is_said_again(app, daemon, tmp_path, monkeypatch):
    """load_model of a package that is not there, twice: the second identical engine error was never shown (every
    message shown was kept for the session, and each was shown once per session)."""
    from scopecast.gui import streams
    monkeypatch.setattr(streams, "REPEAT_QUIET_S", 0.0, raising=False)  # a repeat is quieted for a minute: not here
    vs = write_package(tmp_path / "vs", ["BF"], ["nuclei"], name="vs", task="virtual-staining", width=4, layers=2,
                       tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        assert spin(app, lambda: w.connected[e.results_address] and e.subscriptions.of("error") >= 1, 60)
        said = "engine: load_model /nowhere/pkg"

        def lines() -> int:
            return sum(line.startswith(said) for line in w.error_view.toPlainText().splitlines())

        with ControlClient(e.control.address, timeout_s=60) as c:
            for n in (1, 2):
                with pytest.raises(Exception):
                    c.request("load_model", path="/nowhere/pkg")
                assert spin(app, lambda: lines() >= n, 30), (n, w.error_view.toPlainText())
        assert len(w.messages._shown) <= w.messages.kept
