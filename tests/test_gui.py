"""The live viewer, a real Qt application (offscreen) against a real daemon and engines."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pg = pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.daemon.inference.engine import InferenceEngine  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402

CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]


@pytest.fixture(scope="module")
def app():
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return pg.mkQApp("scopecast-tests")


@pytest.fixture
def engines(daemon, tmp_path):
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    sr = write_package(tmp_path / "sr", ["Membrane"], ["membrane-sr"], name="sr", task="super-resolution",
                       scale=2, width=4, layers=2, tile=256)
    es = [InferenceEngine(p, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                          warmup_shape=(256, 256)).start() for p in (vs, sr)]
    yield es
    for e in es:
        e.close()


@pytest.fixture
def window(app, daemon, engines):
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    w = ScopeWindow(daemon.control_address, daemon.stream_address,
                    [EngineEndpoint(e.results_address, e.control.address) for e in engines])
    w.resize(1400, 900)
    w.show()
    # the window's and the engines' subscriptions have arrived (no frame or result is missed)
    assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 3
                and all(e.subscriptions.of("result", "shm") >= 1 for e in engines))
    yield w
    w.close()
    app.processEvents()


@contextlib.contextmanager
def window_on_engine(app, daemon, package):
    """A shown window on ``daemon`` and one engine serving ``package`` (started here): yields ``(engine, window)``;
    both are closed after."""
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    e = InferenceEngine(package, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                        warmup_shape=(256, 256)).start()
    w = ScopeWindow(daemon.control_address, daemon.stream_address,
                    [EngineEndpoint(e.results_address, e.control.address)])
    try:
        w.show()
        yield e, w
    finally:
        w.close()
        app.processEvents()
        e.close()


def scene_point(pane, x_um, y_um):
    return pane.plot.vb.mapViewToScene(pg.QtCore.QPointF(x_um, y_um))


def test_window_shows_raw_stains_sr_and_latency(app, window, daemon, engines, client):
    vs, sr = (e.results_address for e in engines)
    # the live cycle follows the engines' inputs, so both panes fill on Start live
    assert spin(app, lambda: {c["name"] for c in window.cycle.channels()} == {*CYCLE, "Membrane"})
    assert [window.pattern_box.itemText(i) for i in range(window.pattern_box.count())] == \
        client.request("describe")["patterns"]
    window.live_button.click()
    stages = ("acquire", "transport", "infer", "display", "end_to_end")  # display: once a result was shown
    assert spin(app, lambda: all(window.latency.tables[a].cell(s) != "–" for a in (vs, sr) for s in stages)
                and window.panes[sr].values is not None and window.panes[vs].values is not None
                and window.raw.values is not None, 90)
    job = client.request("status")["job"]
    assert {c["name"]: c["exposure_ms"] for c in job["plan"]["channels"]}["Membrane"] == 100.0
    raw, vs_pane, sr_pane = window.raw, window.panes[vs], window.panes[sr]
    assert raw.image.image.shape == (256, 256)
    assert vs_pane.image.image.shape == (256, 256, 3)  # false-colour composite
    assert sr_pane.image.image.shape == (512, 512)  # super-resolved at its own sampling
    # both views span the same field in µm (linked pan/zoom)
    assert sr_pane.image.mapRectToParent(sr_pane.image.boundingRect()).width() == pytest.approx(
        raw.image.mapRectToParent(raw.image.boundingRect()).width(), rel=1e-6)
    # pixel readout under the cursor: the value at that pixel of the output, and the position in µm
    px = sr_pane.px_um
    text = sr_pane.show_value_at(scene_point(sr_pane, 100.5 * px, 40.5 * px))
    assert f"pixel 100, 40): membrane-sr {sr_pane.values[0, 40, 100]:.1f} counts" in text
    assert f"x {100.5 * px:.2f} µm" in text
    text = raw.show_value_at(scene_point(raw, 3.5 * 0.65, 7.5 * 0.65))
    assert text.endswith(f"(pixel 3, 7): {raw.channel_names[0]} {int(raw.values[0, 7, 3])} counts (ADU)")
    text = vs_pane.show_value_at(scene_point(vs_pane, 10.5 * 0.65, 20.5 * 0.65))
    assert "nuclei" in text and "membrane" in text and "(pixel 10, 20)" in text
    # scale bar (a 1-2-5 length in µm, about a fifth of the visible width) and colour legends with units
    (x0, x1), _ = raw.plot.vb.viewRange()
    assert 0.08 * (x1 - x0) <= raw.scalebar.size <= 0.2 * (x1 - x0)
    assert raw.scalebar.text.toPlainText() in {f"{m * 10 ** k:g} µm" for m in (1, 2, 5) for k in range(-1, 4)}
    assert raw.legend_text().endswith("counts (ADU)") and sr_pane.legend_text().startswith("membrane-sr:")
    assert "nuclei: black" in vs_pane.legend_text() and "membrane: black" in vs_pane.legend_text()
    # one latency table per engine, named by its model, every row of each updated from that engine
    assert {t.model for t in window.latency.tables.values()} == {"vs", "sr"}
    for a in (vs, sr):
        table = window.latency.tables[a]
        assert all(table.cell(s) != "–" for s in stages)
        # waited for, not checked once: on a loaded machine a gap between results can exceed STALE_S (3 s)
        assert spin(app, lambda: not table.stale, 120), table.why
    first = window.latency.tables[sr].cell("end_to_end")
    assert spin(app, lambda: window.latency.tables[sr].cell("end_to_end") != first, 120)
    assert "acquired" in window.fps_label.text() and float(window.fps_label.text().split()[1]) >= 0
    assert "display:superseded" in window.drops_label.text()
    # every inferred view shows its trust verdict
    for address, pane in window.panes.items():
        trust = window.trust_shown[address]
        assert {"ok", "score", "reasons"} <= set(trust)
        assert pane.badge.textItem.toPlainText().startswith("trusted" if trust["ok"] else "NOT TRUSTED")
    window.overlay_box.setChecked(True)
    n = window.displayed
    assert spin(app, lambda: window.displayed > n + 1)
    assert vs_pane.image.image.shape == (256, 256, 3)
    client.request("stop")


def test_chosen_cycle_without_an_input_says_why_and_marks_latency_stale(app, window, engines, client):
    vs, sr = (e.results_address for e in engines)
    assert spin(app, lambda: window.cycle.table.rowCount() > 0 and window.engine_status.get(sr))
    window.cycle.check(CYCLE)  # the user leaves Membrane out: the super-resolution model gets nothing
    window.cycle.interval.setValue(50)
    window.live_button.click()
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("kind") == "live", 60)
    plan = client.request("status")["job"]["plan"]
    assert sorted(c["name"] for c in plan["channels"]) == sorted(CYCLE) and plan["interval_ms"] == 50
    assert spin(app, lambda: window.panes[sr].message_text.startswith(
        "no frames of channel Membrane in the live cycle"), 60)
    assert spin(app, lambda: window.panes[vs].values is not None and not window.panes[vs].message_text, 60)
    # sr never produced a result: its table says so, while vs's stays current
    assert spin(app, lambda: window.latency.tables[sr].why == "no results yet"
                and not window.latency.tables[vs].stale, 60)
    window.channel_box.setCurrentText("Membrane")
    assert spin(app, lambda: window.raw.message_text.startswith("no frames of channel Membrane in the live cycle"))
    assert window.raw.values is None  # no other channel's frame under Membrane's name
    client.request("stop")
    # a model whose results stop is marked stale, not shown as current
    client.request("start_live", channels=[*CYCLE, "Membrane"], interval_ms=50)
    assert spin(app, lambda: not window.latency.tables[sr].stale, 90)
    client.request("stop")
    client.request("start_live", channels=CYCLE, interval_ms=50)
    assert spin(app, lambda: window.latency.tables[sr].why.startswith("stale: no new result"), 60)
    assert window.latency.tables[sr].cell("infer") != "–"  # the last figures stay, greyed
    client.request("stop")


def test_the_raw_pane_left_at_its_default_follows_the_live_cycle(app, window, engines, client):
    """Live on the Membrane channel alone (a super-resolution session): the raw pane, left at the viewer's default
    (a label-free channel), shows Membrane; a channel the user picked is kept, and the pane says why it is empty."""
    assert spin(app, lambda: window.channel_box.currentText() not in ("", "(newest frame)", "Membrane")
                and window.channel_box.count() > 2)
    default = window.channel_box.currentText()
    membrane = [{"name": "Membrane", "exposure_ms": 10.0}]
    client.request("start_live", channels=membrane, interval_ms=50)
    assert spin(app, lambda: window.channel_box.currentText() == "Membrane" and window.raw.values is not None
                and "Membrane" in window.raw.plot.titleLabel.text, 60)
    client.request("stop")
    assert spin(app, lambda: client.request("status")["state"] != "live", 60)
    window.channel_box.setCurrentText(default)  # the user's pick
    n = window.frames_shown
    client.request("start_live", channels=membrane, interval_ms=50)
    assert spin(app, lambda: window.raw.message_text.startswith(f"no frames of channel {default} in the live cycle"),
                60)
    assert window.channel_box.currentText() == default and window.frames_shown == n
    client.request("stop")


def test_stage_focus_and_objective_controls(app, window, client):
    assert spin(app, lambda: window.cycle.table.rowCount() > 0)
    x0, y0, z0 = (client.request("status")["position_um"][k] for k in "xyz")
    window.stage.xy_step.setValue(25.0)
    window.stage.buttons["right"].click()
    assert spin(app, lambda: client.request("status")["position_um"]["x"] == pytest.approx(x0 + 25.0), 60)
    window.stage.z_step.setValue(2.0)
    window.stage.buttons["z_up"].click()
    assert spin(app, lambda: client.request("status")["position_um"]["z"] == pytest.approx(z0 + 2.0), 60)
    for axis, value in (("x", 100.0), ("y", -50.0), ("z", 5.0)):
        window.stage.target[axis].setValue(value)
    window.stage.go.click()
    assert spin(app, lambda: client.request("status")["position_um"] == pytest.approx(
        {"x": 100.0, "y": -50.0, "z": 5.0}), 60)
    assert spin(app, lambda: "x 100.00" in window.stage.position.text())
    # the objective: the daemon's presets; choosing one switches it and the pixel size follows
    box = window.objective.box
    assert box.isEnabled() and box.currentText() == "10x" and window.objective.pixel.text() == "pixel size: 0.65 µm"
    box.setCurrentText("20x")
    box.activated.emit(box.currentIndex())
    assert spin(app, lambda: client.request("describe")["objective"] == "20x", 60)
    assert spin(app, lambda: window.objective.pixel.text() == "pixel size: 0.325 µm")
    client.request("set_objective", objective="10x")


def test_go_to_moves_only_the_axes_the_user_set(app, window, client):
    """Focus found with Z+, then x typed and Go to: only x moves, the focus stays. The targets were filled once,
    when the window opened, and Go to sent all three: the focus went back to where it was then (on a rig, the
    objective towards the sample). Targets left alone follow the stage."""
    assert spin(app, lambda: window.cycle.table.rowCount() > 0)
    z0 = client.request("status")["position_um"]["z"]
    window.stage.z_step.setValue(1.0)
    for _ in range(3):
        window.stage.buttons["z_up"].click()
    assert spin(app, lambda: client.request("status")["position_um"]["z"] == pytest.approx(z0 + 3.0), 60)
    window.stage.target["x"].setValue(100.0)
    window.stage.go.click()
    assert spin(app, lambda: client.request("status")["position_um"]["x"] == pytest.approx(100.0), 60)
    assert client.request("status")["position_um"]["z"] == pytest.approx(z0 + 3.0)  # the focus stayed
    assert spin(app, lambda: window.stage.target["z"].value() == pytest.approx(z0 + 3.0), 60)


def test_panes_grow_with_the_window(app, window):
    app.processEvents()
    before = window.raw.plot.vb.size()
    window.resize(2000, 1300)
    assert spin(app, lambda: window.raw.plot.vb.size().width() > before.width() + 100
                and window.raw.plot.vb.size().height() > before.height() + 100)
    assert window.raw.plot.vb.size().width() > 350 and window.raw.plot.vb.size().height() > 350


def test_untrusted_output_is_marked_and_dimmed(app, window, daemon, client):
    daemon.backend.core.setProperty("Scope", "Sample", "blank")  # an empty slide
    job = client.request("start_live", channels=CYCLE, interval_ms=50)
    vs = next(iter(window.panes))  # the virtual-staining engine
    assert spin(app, lambda: (window.streams.result(vs) or None) is not None
                and window.streams.result(vs).header["acquisition_id"] == job["acquisition_id"]
                and window.trust_shown.get(vs, {}).get("ok") is False)
    client.request("stop")
    text = window.panes[vs].badge.textItem.toPlainText()
    assert text.startswith("NOT TRUSTED") and len(text.splitlines()) >= 2  # with its reasons
    assert window.panes[vs].image.opacity() < 1


def test_spot_check_fidelity_is_plotted_and_alarms_shown(app, window, engines, client):
    client.request("start_spot_checks", model="vs", results=engines[0].results_address, period_s=0.2,
                   min_psnr_db=99.0, record=False, channels={"nuclei": "Nuclei"})
    try:
        assert spin(app, lambda: engines[0].subscriptions.of("result", "shm") >= 2)  # the spot checker joined
        client.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: "vs · nuclei" in window.fidelity_curves and window.fidelity_alarm, 120)
        client.request("stop")
        assert "ALARM" in window.fidelity_label.text() and "< threshold 99.0 dB" in window.fidelity_label.text()
        assert len(window.fidelity_curves["vs · nuclei"].getData()[1]) >= 1
    finally:
        client.request("stop_spot_checks")


def test_control_click_changes_daemon_state(app, window, client):
    assert spin(app, lambda: window.connected["daemon"])
    window.live_button.click()
    assert spin(app, lambda: client.request("status")["state"] == "live", 60)
    assert spin(app, lambda: window.live_button.text() == "Stop live", 60)
    window.live_button.click()
    assert spin(app, lambda: client.request("status")["state"] == "idle", 60)
    window.exposure.setValue(23.5)
    window.exposure.editingFinished.emit()
    assert spin(app, lambda: client.request("status")["exposure_ms"] == 23.5, 60)


def test_live_paced_by_the_engines_from_the_viewer(app, window, engines, client):
    """'pace by the engines': live starts with every connected engine's results as its pace, and is paced by
    them."""
    assert spin(app, lambda: window.connected["daemon"])
    window.cycle.pace.setChecked(True)
    window.live_button.click()
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("plan", {}).get("pace_from"), 60)
    assert client.request("status")["job"]["plan"]["pace_from"] == [e.results_address for e in engines]
    assert spin(app, lambda: ((client.request("status")["job"] or {}).get("pacing") or {}).get("results", 0) >= 2, 60)
    assert spin(app, lambda: window.live_button.text() == "Stop live", 60)  # the window has seen live
    window.live_button.click()
    assert spin(app, lambda: client.request("status")["state"] == "idle", 60)
    # a cycle without the super-resolution model's input: paced by the virtual-staining engine alone (the other
    # would never answer)
    assert spin(app, lambda: all((window.engine_status.get(e.results_address, {}).get("model") or {}).get("inputs")
                                 for e in engines), 60)
    window.cycle.check(CYCLE)
    assert spin(app, lambda: window.live_button.text() == "Start live", 60)  # the window has seen live stop
    window.live_button.click()
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("plan", {}).get("pace_from"), 60)
    assert client.request("status")["job"]["plan"]["pace_from"] == [engines[0].results_address]
    assert spin(app, lambda: window.live_button.text() == "Stop live", 60)
    window.live_button.click()
    assert spin(app, lambda: client.request("status")["state"] == "idle", 60)
    window.cycle.pace.setChecked(False)


def test_recording_toggles_during_live(app, window, client):
    """Live restarts as it was, recording: a hardware-sequenced live stays one and a bounded live keeps the
    cycles it has left (the restart used to keep only the cycle, exposure, interval and pacing)."""
    client.request("start_live", channels=["BF", "DF"], interval_ms=50, hardware_sequence=True, max_cycles=100_000)
    assert spin(app, lambda: window.daemon_status.get("state") == "live" and window.daemon_status.get("job", {}).get("plan"), 60)
    assert not window.record_box.isChecked()
    window.record_box.click()  # start recording: live restarts with the same cycle, recording
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("path"), 60)
    job = client.request("status")["job"]
    assert [c["name"] for c in job["plan"]["channels"]] == ["BF", "DF"] and job["plan"]["interval_ms"] == 50
    assert job["plan"]["hardware_sequence"] is True and 90_000 < job["plan"]["max_cycles"] <= 100_000
    assert spin(app, lambda: window.record_box.isChecked(), 60)
    window.record_box.click()  # stop recording, keep live
    assert spin(app, lambda: (client.request("status")["job"] or {}).get("path", "x") is None, 60)
    client.request("stop")


def test_daemon_errors_appear_in_the_window(app, window):
    window.request("set_pattern", pattern="rainbow")
    assert spin(app, lambda: "set_pattern:" in window.error_view.toPlainText()
                and "'rainbow'" in window.error_view.toPlainText(), 60)
    assert window.model_box.count() >= 2  # the shipped packages are offered
    window.model_box.setCurrentText("/nowhere/package")
    window.load_model()
    assert spin(app, lambda: "outside the allowed directories" in window.error_view.toPlainText(), 60)


def test_status_line_reconnects_when_the_daemon_starts(app, sim_cfg, tmp_path):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon
    from scopecast.gui.window import ScopeWindow

    from scopecast.daemon.supervisor import free_port

    ctl, stream = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    w = ScopeWindow(ctl, stream, [])
    try:
        assert spin(app, lambda: "disconnected (retrying)" in w.status_line.text(), 60)
        assert spin(app, lambda: w.raw.message_text.startswith(f"no answer from the daemon at {ctl}"))
        d = Daemon(load_mmcore_backend(sim_cfg), tmp_path / "d", ctl, stream).start()
        try:
            assert spin(app, lambda: w.status_line.text().startswith("daemon connected"))
            # the channel list is asked for until the daemon answers (no empty menus)
            assert spin(app, lambda: w.cycle.table.rowCount() > 0 and w.channel_box.count() > 1)
            assert spin(app, lambda: d.publisher.subscriptions.of("frame") >= 1)  # the stream reconnected too
            with ControlClient(ctl, timeout_s=120) as c:  # live until the window has shown two frames
                c.request("start_live", channels=["BF"], interval_ms=20)
                assert spin(app, lambda: w.frames_shown >= 2)
                c.request("stop")
        finally:
            d.close()
    finally:
        w.close()
        app.processEvents()


def test_gui_never_imports_acquisition_code():
    code = ("import sys, scopecast.gui.window, scopecast.gui.app; "
            "bad = [m for m in sys.modules if m.startswith(('scopecast.daemon.acquisition', "
            "'scopecast.daemon.backend', 'scopecast.daemon.sim', 'scopecast.daemon.service', 'pymmcore'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_headless_screenshot_command(daemon, engines, client, tmp_path):
    client.request("start_live", channels=[*CYCLE, "Membrane"], interval_ms=50)
    out = tmp_path / "shot.png"
    args = [sys.executable, "-m", "scopecast.daemon.cli", "gui", "--control", daemon.control_address,
            "--stream", daemon.stream_address, "--screenshot", str(out), "--frames", "6", "--timeout", "400"]
    for e in engines:
        args += ["--engine", f"{e.results_address},{e.control.address}"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run(args, capture_output=True, text=True, timeout=500, env=env)  # above the gui's --timeout
    client.request("stop")
    assert r.returncode == 0, r.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from pyqtgraph.Qt import QtGui

    img = QtGui.QImage(str(out))
    assert img.width() >= 1000 and img.height() >= 600
    arr = np.array([img.pixelColor(x, y).value() for x in range(100, 1000, 50) for y in range(50, 300, 50)])
    assert arr.std() > 5  # not a blank window


def test_no_display_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "gui"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0]
    assert "QT_QPA_PLATFORM=offscreen" in lines[0] and "scopecast demo" in lines[0]


def test_uncertainty_channels_are_a_map_of_their_own_never_a_stain(app, daemon, client, tmp_path):
    """An engine with --uncertainty publishes '<output>:std' channels: the composite shows only the
    outputs; the 'uncertainty map' box shows the spread instead; the badge gives its p99."""
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    vs = write_package(tmp_path / "vsu", CYCLE, ["nuclei", "membrane"], name="vsu", task="virtual-staining",
                       width=4, layers=2, tile=256)
    e = InferenceEngine(vs, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                        warmup_shape=(256, 256), uncertainty=2).start()
    w = ScopeWindow(daemon.control_address, daemon.stream_address, [EngineEndpoint(e.results_address, e.control.address)])
    try:
        w.show()
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2 and e.subscriptions.of("result", "shm") >= 1)
        pane = w.panes[e.results_address]
        client.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: (r := w.streams.result(e.results_address)) is not None
                    and r.header["channels"] == ["nuclei", "membrane", "nuclei:std", "membrane:std"]
                    and pane.channel_names == ["nuclei", "membrane"], 120)
        assert pane.values.shape[0] == 2 and ":std" not in pane.legend_text()
        w.uncertainty_box.setChecked(True)
        assert spin(app, lambda: pane.channel_names == ["uncertainty (std, output units)"], 60)
        assert pane.legend_text().startswith("uncertainty (std, output units):")
        client.request("stop")
        badge = pane.badge.textItem.toPlainText()
        assert "uncertainty p99" in badge.splitlines()[0], badge
    finally:
        w.close()
        app.processEvents()
        e.close()


def test_a_pane_without_a_message_draws_no_message_box(app):
    """A new pane's empty message must be hidden: visible, its dark background showed as an object in the field."""
    from scopecast.gui.panes import ImagePane

    pane = ImagePane("raw")
    assert not pane.message.isVisible()
    pane.set_message("no frames yet")
    assert pane.message.isVisible()
    pane.set_message(None)
    assert not pane.message.isVisible()


def test_the_cycle_follows_the_engines_inputs_at_their_trained_exposure(app):
    """The viewer suggests each model input at an exposure the model was trained on (the engine's status
    carries it from the package), until the user chooses channels or exposures."""
    from scopecast.daemon.inference.package import load_package
    from scopecast.gui.controls import LiveCycleBox

    sr = load_package(Path(__file__).resolve().parents[1] / "models" / "packages" / "super-resolution").manifest
    lo, hi = sr.input_stats.exposure_ms
    assert lo <= sr.trained_exposure_ms <= hi  # 11.2 ms for 5-25 ms training fields, not the preset's 100
    channels = {"BF": {"modality": "label-free"}, "Nuclei": {"modality": "fluorescence"},
                "Membrane": {"modality": "fluorescence"}}
    box = LiveCycleBox()
    box.set_channels(channels)
    box.suggest(["Membrane"], {"Membrane": sr.trained_exposure_ms})
    assert box.channels() == [{"name": "Membrane", "exposure_ms": sr.trained_exposure_ms}]
    box.set_channels({**channels, "DF": {"modality": "label-free"}})  # the daemon describes itself again
    assert box.channels() == [{"name": "Membrane", "exposure_ms": sr.trained_exposure_ms}]
    row = next(r for r in range(box.table.rowCount()) if box.table.item(r, 0).text() == "Membrane")
    box.table.cellWidget(row, 1).setValue(50.0)  # the user's exposure is kept: suggestions stop
    box.suggest(["Membrane", "BF"], {"Membrane": sr.trained_exposure_ms, "BF": 8.7})
    assert box.channels() == [{"name": "Membrane", "exposure_ms": 50.0}]


def test_uncertainty_map_of_an_engine_without_one_says_how_to_get_it(app, window, engines, client):
    """The engines of the window run without --uncertainty: ticking "uncertainty map" showed the output as before
    with no word, as if the map were the output."""
    vs = engines[0].results_address
    pane = window.panes[vs]
    window.uncertainty_box.setChecked(True)
    client.request("start_live", channels=CYCLE, interval_ms=50)
    assert spin(app, lambda: pane.values is not None, 120)
    assert spin(app, lambda: "publishes no uncertainty map" in pane.message_text, 60), pane.message_text
    assert "--uncertainty N" in pane.message_text and pane.channel_names == ["nuclei", "membrane"]
    window.uncertainty_box.setChecked(False)  # unticked, the output needs no note
    assert spin(app, lambda: pane.message_text == "", 60), pane.message_text
    client.request("stop")
