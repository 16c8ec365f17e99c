"""The viewer says what it no longer knows and what the daemon tells it: a stopped engine's or an unreachable
daemon's last image is not shown as the current field, a restarted daemon is described again, the raw pane's
contrast follows the objective and exposure, a long snap is waited for, and the daemon's notices (a recording
cap, spot checks stopped by the light budget, a trigger's notify) appear in the messages area."""

import contextlib

import numpy as np
import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.inference.engine import InferenceEngine  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import StandInEngine, spin  # noqa: E402
from tests.test_gui import CYCLE, app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


@contextlib.contextmanager
def _realistic_window(app, daemon):
    """A window on ``daemon`` whose camera takes as long as its exposure; yields it and the replies it gets."""
    from scopecast.gui.window import ScopeWindow

    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")  # a snap lasts its exposure
    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    replies: list[str] = []
    w.sig.reply.connect(lambda what, _result: replies.append(what))
    try:
        w.show()
        yield w, replies
    finally:
        w.close()
        app.processEvents()


@contextlib.contextmanager
def _live_with_an_engine(app, sim_cfg, tmp_path):
    """A daemon of its own (the test may close it), a tiny virtual-staining engine and a window on both, live
    until the engine's pane shows a current result: yields ``(daemon, engine, window, pane, closed)``; the test
    adds "daemon" / "engine" to ``closed`` for what it closed itself, the rest is closed after."""
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
    closed: set[str] = set()
    try:
        w.show()
        pane = w.panes[e.results_address]
        assert spin(app, lambda: d.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        with ControlClient(d.control_address, timeout_s=120) as c:
            c.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: pane.values is not None and w.raw.values is not None
                    and not w.latency.tables[e.results_address].stale, 120)
        assert spin(app, lambda: pane.message_text == "", 60)
        yield d, e, w, pane, closed
    finally:
        w.close()
        app.processEvents()
        if "engine" not in closed:
            e.close()
        if "daemon" not in closed:
            d.close()


def test_a_stopped_engines_last_result_is_not_shown_as_current(app, sim_cfg, tmp_path):
    """An engine that dies during live: its pane said nothing, its badge still read 'trusted' at full opacity
    and the frames/s line kept its rate; the daemon gone, the raw pane showed its last frame as the field."""
    from scopecast.daemon.control import ControlClient

    with _live_with_an_engine(app, sim_cfg, tmp_path) as (d, e, w, pane, closed):
        e.close()  # the engine stops; live goes on
        closed.add("engine")
        assert spin(app, lambda: "showing the last result of vs, not the current field" in pane.message_text, 60)
        assert pane.message_text.startswith(f"no word from the engine at {e.results_address}")
        assert pane.image.opacity() < 1
        assert spin(app, lambda: "inferred 0.0 /s" in w.fps_label.text(), 60)
        with ControlClient(d.control_address, timeout_s=120) as c:
            c.request("stop")
        d.close()
        closed.add("daemon")
        assert spin(app, lambda: w.raw.message_text == f"no answer from the daemon at {d.control_address} "
                    "(retrying):\nshowing the last frame received", 60)
        assert spin(app, lambda: "acquired 0.0 /s" in w.fps_label.text()
                    and " · " not in w.status_line.text(), 60)  # no stale state, position or rate


def test_an_unreachable_daemons_last_result_is_not_shown_as_current(app, sim_cfg, tmp_path):
    """The daemon killed during live, the engine still running: the raw pane said 'no answer from the daemon ...
    showing the last frame received', while the stain pane beside it showed its last result at full opacity,
    'trusted', with no word."""
    with _live_with_an_engine(app, sim_cfg, tmp_path) as (d, e, w, pane, closed):
        d.close()  # the daemon goes away; the engine stays
        closed.add("daemon")
        assert spin(app, lambda: w.raw.message_text.startswith("no answer from the daemon"), 60)
        assert spin(app, lambda: pane.message_text == f"no answer from the daemon at {d.control_address}:\n"
                    "showing the last result of vs, not the current field", 60), pane.message_text
        assert pane.image.opacity() < 1
        assert "no stats" not in w.latency.tables[e.results_address].why  # the engine itself is still heard from

def test_snap_of_a_long_exposure_is_not_reported_as_unanswered(app, daemon, client):
    """Exposure 6 s (a dim fluorescence sample), Snap: the window said 'TimeoutError: no reply to 'snap' ...
    (connected, but the server did not answer)' after 5 s, while the daemon took, recorded and streamed the frame."""
    with _realistic_window(app, daemon) as (w, replies):
        assert spin(app, lambda: w.connected["daemon"] and w.cycle.table.rowCount() > 0
                    and daemon.publisher.subscriptions.of("frame") >= 1, 60)
        w.exposure.setValue(6000.0)
        w.exposure.editingFinished.emit()
        assert spin(app, lambda: client.request("status")["exposure_ms"] == 6000.0, 60)
        n = w.frames_shown
        w.snap_button.click()
        assert spin(app, lambda: "daemon:snap" in replies or "snap:" in w.error_view.toPlainText(), 120)
        assert "snap:" not in w.error_view.toPlainText(), w.error_view.toPlainText()
        assert spin(app, lambda: w.frames_shown > n and "6000 ms" in w.raw.plot.titleLabel.text, 60)


def shown_fraction(pane) -> float:
    """The share of the raw pane's pixels that fall inside its LUT (neither black nor white)."""
    lo, hi = pane.hist.getLevels()
    v = pane.values[0]
    return float(np.mean((v > lo) & (v < hi)))


def test_raw_lut_follows_the_objective_and_the_exposure(app, daemon, client):
    """BF live at 10x, then 20x from the objective box: the LUT stretched for 10x stayed, every 20x pixel
    (a third of the light) fell below its black level and the field was black; the same at 1 ms after 10 ms."""
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    try:
        w.show()
        assert spin(app, lambda: w.connected["daemon"] and w.objective.box.isEnabled()
                    and daemon.publisher.subscriptions.of("frame") >= 1, 60)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 10.0}], interval_ms=50)
        assert spin(app, lambda: w.raw.values is not None, 60)
        assert shown_fraction(w.raw) > 0.5
        box = w.objective.box
        box.setCurrentText("20x")
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: w.raw.px_um == pytest.approx(0.325) and w.frames_shown > 0, 60)
        n = w.frames_shown
        assert spin(app, lambda: w.frames_shown > n + 1, 60)
        assert shown_fraction(w.raw) > 0.5, (w.raw.hist.getLevels(), np.percentile(w.raw.values, [1, 99]))
        client.request("stop")
        client.request("set_objective", objective="10x")
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 1.0}], interval_ms=50)
        assert spin(app, lambda: " · 1 ms" in w.raw.plot.titleLabel.text and w.raw.px_um == pytest.approx(0.65), 60)
        assert shown_fraction(w.raw) > 0.5, (w.raw.hist.getLevels(), np.percentile(w.raw.values, [1, 99]))
        client.request("stop")
    finally:
        w.close()
        app.processEvents()


def test_a_restarted_daemon_is_described_again(app, sim_cfg, tmp_path):
    """20x chosen in the viewer, the daemon restarted (it starts at 10x): the objective box kept '20x, pixel size
    0.325 µm' for good, since describe was asked once per window."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon
    from scopecast.daemon.supervisor import free_port
    from scopecast.gui.window import ScopeWindow

    ctl, stream = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))

    def start() -> Daemon:
        return Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "d", ctl, stream).start()

    w = ScopeWindow(ctl, stream, [])
    d = start()
    try:
        assert spin(app, lambda: w.objective.box.isEnabled() and w.objective.box.currentText() == "10x", 60)
        box = w.objective.box
        box.setCurrentText("20x")
        box.activated.emit(box.currentIndex())
        assert spin(app, lambda: w.objective.pixel.text() == "pixel size: 0.325 µm", 60)
        d.close()
        assert spin(app, lambda: not w.connected["daemon"], 60)
        d = start()  # a new daemon on the same sockets: the simulator's default objective again
        assert spin(app, lambda: w.connected["daemon"], 60)
        assert spin(app, lambda: box.currentText() == "10x" and w.objective.pixel.text() == "pixel size: 0.65 µm",
                    60), (box.currentText(), w.objective.pixel.text())
    finally:
        w.close()
        app.processEvents()
        d.close()


@pytest.fixture
def window(app, daemon):
    from scopecast.gui.window import ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address, [])
    w.show()
    assert spin(app, lambda: w.connected["daemon"] and daemon.publisher.subscriptions.of("event") >= 1, 60)
    yield w
    w.close()
    app.processEvents()


def test_live_stopped_by_its_recording_cap_says_why(app, window, client):
    """Recorded live stops at its frame cap: the window went from 'Stop live' to 'Start live' without a word (the
    daemon's cap_warning and cap_reached events were read and dropped; status has no job once live ended)."""
    client.request("start_live", channels=["BF"], interval_ms=20, record=True, record_max_frames=5)
    assert spin(app, lambda: "recording: recording frame cap reached: 5 frames of 5" in
                window.error_view.toPlainText(), 60), window.error_view.toPlainText()
    assert "% of its cap (" in window.error_view.toPlainText()  # the warning near it


def test_spot_checks_stopped_by_the_light_budget_say_so(app, window, daemon, client):
    """Spot checks whose session light budget cannot pay for one check stop at the first result: the fidelity line
    kept saying 'none yet (start_spot_checks on the daemon)'."""
    with StandInEngine(daemon.stream_address, channel="c") as engine:
        client.request("start_spot_checks", model="m", results=engine.address, period_s=0.1, record=False,
                       channels={"c": "Nuclei"}, exposure_ms=20.0, dose_per_session=1.0)
        try:
            client.request("start_live", channels=["BF"], interval_ms=20)
            assert spin(app, lambda: not client.request("spot_checks")["models"]["m"]["running"], 60)
            client.request("stop")
            reason = client.request("spot_checks")["models"]["m"]["stopped_reason"]
            assert spin(app, lambda: "m: spot checks stopped" in window.fidelity_label.text(), 60)
            assert reason in window.fidelity_label.text()
            assert f"spot checks of m stopped: {reason}" in window.error_view.toPlainText()
        finally:
            client.request("stop_spot_checks")


def test_status_polls_never_wait_behind_a_long_snap(app, daemon, client):
    """A 4 s snap: the status polls queued behind it on the viewer's one client per daemon, so the status line froze
    for the whole snap without a word (and a daemon that died during it read 'connected' until the snap timed out,
    30 s + the exposure). Polls go on their own client; the line says the snap is waited for."""
    with _realistic_window(app, daemon) as (w, replies):
        assert spin(app, lambda: w.connected["daemon"] and w.cycle.table.rowCount() > 0, 60)
        client.request("set_exposure", exposure_ms=4000.0)
        assert spin(app, lambda: w.daemon_status.get("exposure_ms") == 4000.0, 60)
        replies.clear()
        w.snap_button.click()
        seen_waiting = []

        def polled_during_snap() -> bool:
            if "waiting for snap" in w.status_line.text():
                seen_waiting.append(w.status_line.text())
            return "daemon:snap" in replies or replies.count("daemon:status") >= 2

        assert spin(app, polled_during_snap, 120)
        assert "daemon:snap" not in replies, f"no status reply during the snap: {replies}"
        assert spin(app, lambda: "daemon:snap" in replies or bool(seen_waiting), 120)
        assert seen_waiting, w.status_line.text()
        assert spin(app, lambda: "daemon:snap" in replies, 120)
        assert spin(app, lambda: "waiting for" not in w.status_line.text(), 60)


def test_exposure_box_follows_other_clients_and_sends_only_what_was_typed(app, window, client):
    """Another client sets 50 ms: the box kept the 10 ms of the window's first describe, and leaving the box without
    typing sent set_exposure 10 ms, undoing the other client's change."""
    sent: list[str] = []
    submit = window.requester.submit
    window.requester.submit = lambda address, cmd, **kw: (sent.append(cmd), submit(address, cmd, **kw))[1]
    client.request("set_exposure", exposure_ms=50.0)
    assert spin(app, lambda: window.exposure.value() == pytest.approx(50.0), 60), window.exposure.value()
    window.exposure.editingFinished.emit()  # the user clicks into the box and leaves it without typing
    n = client.request("status")["control"]["requests"]
    assert spin(app, lambda: window.daemon_status["control"]["requests"] > n, 60)  # a poll after leaving it
    assert "set_exposure" not in sent and client.request("status")["exposure_ms"] == 50.0
    window.exposure.setValue(23.5)  # what the user types is sent when the editing finishes
    assert spin(app, lambda: window.exposure.value() == 23.5)
    window.exposure.editingFinished.emit()
    assert spin(app, lambda: client.request("status")["exposure_ms"] == 23.5, 60)
    assert sent.count("set_exposure") == 1


SEVEN = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF", "Nuclei"]


def test_display_superseded_counts_only_the_shown_channel(app, window, client):
    """Live on a 7-channel cycle, the raw pane on BF: every frame of the 6 other channels was counted as a display
    drop (thousands a minute), though the viewer never meant to draw them."""
    assert spin(app, lambda: window.channel_box.count() > 2)
    window.channel_box.setCurrentText("BF")
    client.request("start_live", channels=SEVEN, interval_ms=100)
    assert spin(app, lambda: window.frames_shown >= 10, 120)
    client.request("stop")
    assert spin(app, lambda: client.request("status")["state"] == "idle", 60)
    n = client.request("status")["frames_acquired"]
    assert spin(app, lambda: window.streams.snapshot().frames >= n, 60)  # every frame received
    app.processEvents()
    snap = window.streams.snapshot()
    bf_received = -(-snap.frames // len(SEVEN))  # at most one BF frame per (started) cycle
    # each BF frame was drawn or superseded; frames of the other channels count neither way
    assert snap.superseded + window.frames_shown <= bf_received + 1, (snap.superseded, window.frames_shown, snap.frames)
    assert f"display:superseded {snap.superseded}" in window.drops_label.text() or spin(
        app, lambda: f"display:superseded {window.streams.snapshot().superseded}" in window.drops_label.text())


def test_stop_during_a_long_exposure_is_not_reported_as_unanswered(app, daemon, client):
    """Live BF at 9 s (a dim sample), Stop live during the frame: the window said "stop: TimeoutError: no reply to
    'stop' ... the server did not answer" after 5 s, while live stopped as asked once the frame was taken (the
    daemon replies once the job has ended, up to 30 s after: docs/protocol.md)."""
    with _realistic_window(app, daemon) as (w, replies):
        assert spin(app, lambda: w.connected["daemon"], 60)
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 9000.0}])
        assert spin(app, lambda: w.live_button.text() == "Stop live", 60)  # the viewer knows live runs
        w.live_button.click()
        assert spin(app, lambda: "daemon:stop" in replies or "stop:" in w.error_view.toPlainText(), 120)
        assert "stop:" not in w.error_view.toPlainText(), w.error_view.toPlainText()
        assert client.request("status")["state"] == "idle"
