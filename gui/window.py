"""The live viewer window (pyqtgraph on PySide6): raw and inferred images, latency, controls.

Everything it shows comes from the sockets (docs/protocol.md); every button
sends a control request. It never imports acquisition code, so it can run on
another machine than the microscope.

Layout: the image panes (raw, then one per engine) fill the central area and
grow with the window; the controls sit in a scrollable dock on the left (live
cycle, stage and focus, objective and camera, view, model) and the figures in
a dock at the bottom (one latency table per engine, exposure → display plot,
spot-check fidelity, throughput, drops and errors). Docks can be resized,
moved or closed to give the images the whole window.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from scopecast.daemon.stain_colors import output_rgb

from .controls import (ExposureBox, LiveCycleBox, ObjectiveBox, PatternBox, StageBox, paced_by, shipped_packages,
                       stop_timeout_s)
from .latency import LatencyPanel, percentiles
from .live_restart import recording_cap, restart_recording
from .panes import ImagePane
from .raw_channel import NEWEST, RawChannelBox
from .served import same_model, served_elsewhere
from .spot_check_panel import SpotCheckPanel
from .streams import LatestStreams, NewMessages, Requester
from .triggers_view import TriggersView
from .trust_badge import badge_text

__all__ = ["EngineEndpoint", "ScopeWindow"]

#: Seconds a snap's reply may take beyond its exposure (readout, a snap of another client ahead of it).
SNAP_MARGIN_S = 30.0
#: Seconds a command may be waited for before the status line says so.
WAITING_SHOWN_S = 1.0


@dataclass
class EngineEndpoint:
    results: str
    control: str = ""


class _Signals(QtCore.QObject):
    reply = QtCore.Signal(str, object)  # (what, result)
    error = QtCore.Signal(str, str)  # (what, message)


class ScopeWindow(QtWidgets.QMainWindow):
    """Live viewer of one daemon and any number of engines."""

    def __init__(self, control: str, stream: str, engines: list[EngineEndpoint], refresh_hz: float = 20.0) -> None:
        super().__init__()
        self.setWindowTitle("scopecast")
        self.control_address = control
        self.engines = engines
        self.streams = LatestStreams(stream, [e.results for e in engines])
        self.requester = Requester()  # the user's commands, in order
        self.poller = Requester()  # status and describe on clients of their own: never behind a long command
        self._polls: dict[str, Future] = {}  # address -> its poll in flight (one at a time: none pile up)
        self._in_flight: dict[Future, tuple[str, float]] = {}  # the user's commands not answered yet
        self.sig = _Signals()
        self.sig.reply.connect(self._on_reply)
        self.sig.error.connect(self._on_error)
        self.daemon_status: dict[str, Any] = {}
        self.daemon_info: dict[str, Any] = {}  # the last describe reply
        self.daemon_error: str | None = None  # the daemon's last_error (a failed job) the messages area shows
        self.engine_status: dict[str, dict[str, Any]] = {}  # results address -> newest stats/status
        self.connected = {"daemon": False, **{e.results: False for e in engines}}
        self.displayed = 0
        self._described = False
        self._describing = False
        self._display_times: collections.deque[float] = collections.deque(maxlen=200)
        self._display_lat = {e.results: collections.deque(maxlen=500) for e in engines}
        self._e2e: dict[str, collections.deque[float]] = {e.results: collections.deque(maxlen=300) for e in engines}
        self._last_serial: dict[str, int] = {}
        self._acq_hist: collections.deque[tuple[float, int]] = collections.deque(maxlen=10)
        self.messages = NewMessages()  # which errors and notices the messages area shows
        self._next_stats = 0.0
        self.drop_counts: dict[str, int] = {}
        self.frames_shown = 0
        self._raw_key: tuple[str, Any, Any] | None = None  # what the raw pane's LUT was stretched for
        self._redescribed_px: float | None = None  # the frames' pixel size that made the viewer describe again
        self.record_cap: dict[str, int] = {}  # start_live cap arguments of the live recording seen last
        self._build()
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._timer.start(int(1000 / refresh_hz))
        self._status_timer = QtCore.QTimer(self)
        self._status_timer.timeout.connect(self.poll_status)
        self._status_timer.start(1000)
        self.poll_status()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.setDockOptions(QtWidgets.QMainWindow.DockOption.AnimatedDocks)
        views = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.setCentralWidget(views)
        self.raw = ImagePane("raw", units="counts (ADU)")
        views.addWidget(self.raw)
        self.panes: dict[str, ImagePane] = {}
        for e in self.engines:
            pane = ImagePane("model output", units="counts")
            pane.plot.setXLink(self.raw.plot)
            pane.plot.setYLink(self.raw.plot)
            pane.set_message("waiting for the engine's status")
            views.addWidget(pane)
            self.panes[e.results] = pane
        if not self.engines:
            pane = ImagePane("model output")
            pane.set_message("no engine produces model output:\nstart one (scopecast engine --model PACKAGE)\n"
                             "and open the viewer with --engine RESULTS,CONTROL")
            views.addWidget(pane)
            self.no_engine_pane = pane
        self.trust_shown: dict[str, dict[str, Any]] = {}  # engine results address -> last trust verdict shown
        self.results_shown: dict[str, dict[str, Any]] = {}  # engine results address -> header of the result shown
        self.without_std: set[str] = set()  # engines whose last result had no uncertainty map ('<output>:std')
        for i in range(views.count()):
            views.setStretchFactor(i, 1)  # the panes share the width equally and grow with the window
        self.controls_dock = self._dock("controls", self._controls())
        self.figures_dock = self._dock("figures", self._figures())
        self.triggers_view = TriggersView()  # the loaded triggers and their newest decisions (``triggers`` polls)
        self.triggers_dock = self._dock("triggers", self.triggers_view)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.LeftDockWidgetArea, self.controls_dock)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, self.figures_dock)
        self.splitDockWidget(self.figures_dock, self.triggers_dock, QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([self.figures_dock], [280], QtCore.Qt.Orientation.Vertical)  # the images get the rest
        self.status_line = QtWidgets.QLabel("connecting…")
        self.statusBar().addWidget(self.status_line, 1)

    def _dock(self, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable)
        return dock

    def _controls(self) -> QtWidgets.QWidget:
        inner = QtWidgets.QWidget()
        col = QtWidgets.QVBoxLayout(inner)
        col.setContentsMargins(4, 4, 4, 4)
        self.cycle = LiveCycleBox()
        self.cycle.start.clicked.connect(self.toggle_live)
        self.cycle.record.clicked.connect(self.toggle_record)
        self.live_button, self.record_box = self.cycle.start, self.cycle.record
        self.cycle.pace_from = [e.results for e in self.engines]
        self.cycle.pace.setEnabled(bool(self.engines))
        self.stage = StageBox(self.request)
        self.objective = ObjectiveBox(self.request)

        camera = QtWidgets.QGroupBox("Camera and illumination")
        form = QtWidgets.QFormLayout(camera)
        self.pattern_box = PatternBox(self.request)
        self.exposure = ExposureBox(self.request)
        self.snap_button = QtWidgets.QPushButton("Snap")
        self.snap_button.clicked.connect(self.snap)
        self.pairs_button = QtWidgets.QPushButton("Capture pair")
        self.pairs_button.clicked.connect(lambda: self.request("capture_pairs"))
        form.addRow("pattern", self.pattern_box)
        form.addRow("exposure", self.exposure)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.snap_button)
        buttons.addWidget(self.pairs_button)
        form.addRow(buttons)

        view = QtWidgets.QGroupBox("View")
        vform = QtWidgets.QFormLayout(view)
        self.channel_box = RawChannelBox()
        self.overlay_box = QtWidgets.QCheckBox("stains over label-free")
        self.uncertainty_box = QtWidgets.QCheckBox("uncertainty map")
        self.uncertainty_box.setToolTip("show the per-pixel uncertainty (engine --uncertainty N: the spread of the "
                                        "model over flipped/rotated copies) instead of the output")
        vform.addRow("raw pane", self.channel_box)
        vform.addRow(self.overlay_box)
        vform.addRow(self.uncertainty_box)
        for box in (self.overlay_box, self.uncertainty_box):
            box.toggled.connect(self._redraw_results)

        model = QtWidgets.QGroupBox("Model")
        mform = QtWidgets.QVBoxLayout(model)
        self.model_box = QtWidgets.QComboBox()
        self.model_box.setEditable(True)
        self.model_box.addItems([str(p) for p in shipped_packages()])
        self.model_box.setCurrentText("")
        self.model_box.lineEdit().setPlaceholderText("package (shipped, or a path)")
        self.engine_box = QtWidgets.QComboBox()
        self.engine_box.addItems([e.control for e in self.engines if e.control])
        self.engine_box.setToolTip("the engine that loads it")
        self.model_button = QtWidgets.QPushButton("Load model")
        self.model_button.clicked.connect(self.load_model)
        for w in (self.model_box, self.engine_box, self.model_button):
            mform.addWidget(w)

        for w in (self.cycle, self.stage, self.objective, camera, view, model):
            col.addWidget(w)
        col.addStretch(1)
        scroll = QtWidgets.QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(min(inner.sizeHint().width() + 20, 320))
        scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    def _figures(self) -> QtWidgets.QWidget:
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.latency = LatencyPanel()
        for e in self.engines:
            self.latency.table(e.results)
        split.addWidget(self.latency)
        self.latency_plot = pg.PlotWidget(title="exposure → display (ms), last results")
        self.latency_plot.addLegend(offset=(5, 5))
        self.latency_curves = {e.results: self.latency_plot.plot(pen=pg.mkPen(pg.intColor(i), width=2), name=e.results)
                               for i, e in enumerate(self.engines)}
        split.addWidget(self.latency_plot)
        self.spot_panel = SpotCheckPanel()  # curves from the stream's events, lines from ``spot_checks`` polls
        self.fidelity_plot, self.fidelity_label = self.spot_panel.plot, self.spot_panel.label
        self.fidelity_curves = self.spot_panel.curves  # "model · channel" -> curve
        split.addWidget(self.spot_panel)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.fps_label = QtWidgets.QLabel("acquired – /s   inferred – /s   displayed – /s")
        self.drops_label = QtWidgets.QLabel("dropped: –")
        self.drops_label.setWordWrap(True)
        self.drops_label.setToolTip("display:superseded: frames of the raw pane's channel and results replaced by "
                                    "newer ones before the viewer drew them (other channels' frames are not drops)")
        self.error_view = QtWidgets.QPlainTextEdit()
        self.error_view.setReadOnly(True)
        self.error_view.setMaximumBlockCount(200)
        self.error_view.setPlaceholderText("errors and notices from the daemon and engines appear here")
        for w in (self.fps_label, self.drops_label, self.error_view):
            rl.addWidget(w)
        split.addWidget(right)
        split.setSizes([220 * max(1, len(self.engines)), 300, 300, 300])
        split.setMinimumHeight(250)
        return split

    # ---------------------------------------------------------------- requests
    def request(self, cmd: str, address: str | None = None, timeout_s: float = 5.0, poll: bool = False,
                calls: Callable[[Callable[..., Any]], Any] | None = None, **args: Any) -> Future:
        """Send ``cmd`` off the GUI thread; the reply or error comes back as a signal. ``poll`` requests (status,
        describe) have clients of their own: a long snap or model load, waited for in order, never holds them up.
        ``calls``: requests made in one go instead (:meth:`Requester.submit_calls`), ``cmd`` naming them."""
        requester, to = self.poller if poll else self.requester, address or self.control_address
        fut = (requester.submit_calls(to, calls, timeout_s, cmd) if calls is not None
               else requester.submit(to, cmd, timeout_s=timeout_s, **args))
        what = f"{address or 'daemon'}:{cmd}"
        if not poll:
            self._in_flight[fut] = (what, time.monotonic())

        def done(f) -> None:
            if f.cancelled() or self.requester.closed:  # answered after the viewer closed: dropped
                return
            try:
                self.sig.reply.emit(what, f.result())
            except Exception as e:  # noqa: BLE001 - shown in the window
                self.sig.error.emit(what, f"{type(e).__name__}: {e}")

        fut.add_done_callback(done)
        return fut

    def toggle_live(self) -> None:
        if self.daemon_status.get("state") == "live":
            self.request("stop", timeout_s=stop_timeout_s(self.daemon_status))
        else:
            self.request("start_live", **self._paced_by_engines_served(self.cycle.start_live_args()))

    def _paced_by_engines_served(self, args: dict[str, Any]) -> dict[str, Any]:
        """``start_live`` arguments paced by the engines whose model the chosen cycle serves (:func:`paced_by`)."""
        return paced_by(args, self.engine_status)

    def toggle_record(self) -> None:
        """Start or stop recording: during live, restart the cycle running now (a fresh status, not the last poll)
        with recording on/off and its cap (:func:`.live_restart.restart_recording`); else it applies when live
        starts."""
        record, cap = self.record_box.isChecked(), dict(self.record_cap)
        self.request("record", calls=lambda request: restart_recording(request, record, cap, stop_timeout_s))

    def _note_recording(self, job: dict[str, Any] | None) -> None:
        """Remember the cap of the live recording seen last (:func:`.live_restart.recording_cap`): switching
        recording off and on again keeps the cap the user or another client gave it."""
        cap = recording_cap(job)
        if cap is not None:
            self.record_cap = cap

    def snap(self) -> None:
        """Snap and record one frame at the camera's exposure. The daemon replies once the frame is taken, so the
        request waits the exposure (as the viewer knows it: its box or the daemon's last status) plus a margin."""
        exposure_ms = max(self.exposure.value(), float(self.daemon_status.get("exposure_ms") or 0.0))
        self.request("snap", record=True, timeout_s=SNAP_MARGIN_S + exposure_ms / 1000.0)

    def load_model(self) -> None:
        path = self.model_box.currentText().strip()
        engine = self.engine_box.currentText()
        if not path or not engine:
            self._on_error("load_model", "give a package path and an engine with a control socket")
            return
        self.request("load_model", address=engine, path=path, timeout_s=120.0)

    def poll_status(self) -> None:
        """Every second: daemon and engine status, triggers, spot checks; ``describe`` until it has answered once,
        and again once the daemon answers after it did not (a timeout or a daemon that is not up yet leaves no empty
        menus behind; a restarted one no stale objective, pixel size or channels)."""
        self._poll(self.control_address)
        self._poll("daemon:triggers", None, "triggers")
        self._poll("daemon:spot_checks", None, "spot_checks")
        if not self._described and not self._describing:
            self._describing = True
            self.request("describe", timeout_s=3.0, poll=True)
        for e in self.engines:
            if e.control:
                self._poll(e.control, e.control)

    def _poll(self, key: str, address: str | None = None, cmd: str = "status") -> None:
        """Ask ``address`` (the daemon when None) for ``cmd`` unless the last poll of it is still unanswered."""
        fut = self._polls.get(key)
        if fut is None or fut.done():
            self._polls[key] = self.request(cmd, address=address, timeout_s=1.0, poll=True)

    @QtCore.Slot(str, object)
    def _on_reply(self, what: str, result: Any) -> None:
        source, _, cmd = what.rpartition(":")
        if cmd == "status":
            if source == "daemon":
                self.daemon_status = result
                self.connected["daemon"] = True
                live = result.get("state") == "live"
                self.live_button.setText("Stop live" if live else "Start live")
                if live and result.get("job"):
                    self.record_box.setChecked(bool(result["job"].get("path")))
                    self._note_recording(result["job"])
                self.stage.show_position(result.get("position_um"))
                self.pattern_box.follow(result.get("pattern"))
                if result.get("state") == "idle" and not result.get("hardware_busy"):  # a job's are per channel
                    self.exposure.show_exposure(result.get("exposure_ms"))
                n = result.get("frames_acquired", 0)
                self._acq_hist.append((time.monotonic(), n))
                self._note_failure(result.get("last_error"))
            else:
                for e in self.engines:
                    if e.control == source:
                        self.connected[e.results] = True
                        self._note_engine(e.results, result)
        elif cmd == "triggers":
            self.triggers_view.show_status(result)
        elif cmd == "spot_checks":
            self.spot_panel.show_status(result)
        elif cmd == "describe":
            self._described, self._describing = True, False
            self._on_describe(result)
        elif cmd == "snap":  # a default raw pane shows the frame snapped
            self.channel_box.follow_snap(str((result.get("frame") or {}).get("channel") or ""))
        elif cmd == "move_stage":
            self.stage.show_position(result.get("position_um"))
        elif cmd == "set_objective":
            self.objective.show_objective(result.get("objective", ""), result.get("pixel_size_um"))
        elif cmd == "load_model":
            self.error_view.appendPlainText(f"engine now runs {result.get('name')} ({result.get('sha256', '')[:12]})")
        self._update_status_line()

    def _note_failure(self, error: Any) -> None:
        """Say a failed job (status ``last_error``: a full disk under a recording, a camera error) once."""
        if isinstance(error, str) and error and error != self.daemon_error:
            self.daemon_error = error
            self.error_view.appendPlainText(f"{time.strftime('%H:%M:%S')} daemon: job failed: {error}")

    def _on_describe(self, info: dict[str, Any]) -> None:
        self.daemon_info = info
        self.channel_box.from_describe(info.get("channels", {}))
        self.pattern_box.from_describe(info)
        self.exposure.show_exposure(info.get("exposure_ms"))
        self.cycle.set_channels(info.get("channels", {}))
        self.stage.show_position(info.get("position_um"))
        self.objective.from_describe(info)

    def _note_engine(self, address: str, status: dict[str, Any]) -> None:
        """Keep the newest status of an engine (from its control socket or its stats message). Another model served
        (``load_model``) starts the viewer's display latency and exposure → display plot of that engine afresh."""
        old = self.engine_status.get(address)
        if old is None or status.get("t_ns", 0) >= old.get("t_ns", 0):
            if old is not None and not same_model(old.get("model"), status.get("model")):
                self._display_lat[address].clear()
                self._e2e[address].clear()
                self.latency_curves[address].setData([])
            self.engine_status[address] = status
            inputs: list[str] = []
            exposure: dict[str, float] = {}  # the first engine's, where two models share an input
            for st in self.engine_status.values():
                model = st.get("model") or {}
                inputs += model.get("inputs", [])
                for name in model.get("inputs", []):
                    if model.get("exposure_ms"):
                        exposure.setdefault(name, model["exposure_ms"])
            self.cycle.suggest(inputs, exposure)

    @QtCore.Slot(str, str)
    def _on_error(self, what: str, message: str) -> None:
        source, _, cmd = what.rpartition(":")
        if cmd == "status":
            key = "daemon" if source == "daemon" else next((e.results for e in self.engines if e.control == source), source)
            self.connected[key] = False
            if key == "daemon":
                self._acq_hist.clear()  # no rate from a daemon that does not answer (its count restarts with it)
                self._described = False  # the daemon that answers next may be another: described again
            self._update_status_line()
            return
        if cmd == "describe":
            self._describing = False  # asked again on the next status poll
            return
        if cmd in ("triggers", "spot_checks"):  # polled every second: said in their panel, not in the messages
            (self.triggers_view if cmd == "triggers" else self.spot_panel).show_error(message)
            return
        self.error_view.appendPlainText(f"{cmd}: {message}")

    def _update_status_line(self) -> None:
        parts = [f"daemon {'connected' if self.connected['daemon'] else 'disconnected (retrying)'}"]
        for e in self.engines:
            if e.control:
                parts.append(f"engine {e.results}: {'connected' if self.connected[e.results] else 'disconnected (retrying)'}")
        st = self.daemon_status
        if st and self.connected["daemon"]:  # what the daemon last said is not what it does now
            pos = st.get("position_um") or {}  # None while the hardware is busy and nothing is known yet
            parts.append(f"{st.get('state', '?')} · {st.get('channel') or '-'} · {st.get('exposure_ms') or 0:.1f} ms · "
                         f"x {pos.get('x', 0):.1f} y {pos.get('y', 0):.1f} z {pos.get('z', 0):.1f} µm")
        parts += self._waiting_for()
        self.status_line.setText("   |   ".join(parts))

    def _waiting_for(self) -> list[str]:
        """'waiting for <command> (N s)' for each of the user's commands unanswered for over WAITING_SHOWN_S."""
        now = time.monotonic()
        self._in_flight = {f: w for f, w in self._in_flight.items() if not f.done()}
        waits = [(what.rpartition(":"), now - t0) for what, t0 in self._in_flight.values()]
        return [f"waiting for {cmd}{'' if source == 'daemon' else f' ({source})'} ({s:.0f} s)"
                for (source, _, cmd), s in waits if s >= WAITING_SHOWN_S]

    # ----------------------------------------------------------------- refresh
    def refresh(self) -> None:
        """Show the newest frame and results (never waits for the camera or the engine)."""
        chan = self.channel_box.currentText()
        frame = self.streams.frame(None if chan in ("", NEWEST) else chan)
        if frame is not None and self._last_serial.get("raw") != frame.serial:
            self._last_serial["raw"] = frame.serial
            self._show_raw(frame)
        for e in self.engines:
            res = self.streams.result(e.results)
            if res is None or self._last_serial.get(e.results) == res.serial:
                continue
            self._last_serial[e.results] = res.serial
            self._show_result(e.results, res)
            shown_ns = time.time_ns()
            if served_elsewhere(res.header, self.engine_status.get(e.results)) is None:  # not the model served before
                self._display_lat[e.results].append((shown_ns - res.header["t_published_ns"]) / 1e6)
                self._e2e[e.results].append((shown_ns - res.header["t_acquired_ns"]) / 1e6)
                self.latency_curves[e.results].setData(np.fromiter(self._e2e[e.results], float))
            self.displayed += 1
            self._display_times.append(time.monotonic())
        if time.monotonic() >= self._next_stats:  # figures and messages at 4 Hz, images at the refresh rate
            self._next_stats = time.monotonic() + 0.25
            self._update_stats()
            self._update_messages(frame)

    def _show_raw(self, frame) -> None:
        """The newest frame in the raw pane. Its LUT is stretched to the frame whenever the channel, the exposure
        or the pixel size (objective, binning) changes, which change the counts many-fold; otherwise it stays
        as it is (the user's)."""
        h = frame.header
        channel = h.get("channel") or h.get("pattern") or "(hardware as set)"
        key = (channel, h.get("exposure_ms"), h.get("pixel_size_um"))
        self.raw.show_grey(frame.data, float(h.get("pixel_size_um") or 1.0), channel, auto_levels=key != self._raw_key)
        self._raw_key = key
        self.raw.plot.setTitle(f"raw · {channel} · {h.get('exposure_ms', 0):g} ms", size="10pt")
        self.frames_shown += 1
        self._follow_pixel_size(h)

    def _follow_pixel_size(self, h: dict[str, Any]) -> None:
        """A frame of the daemon's camera at another pixel size than ``describe`` said (another client switched the
        objective: ctl, a script, Micro-Manager's own window): describe again, once per pixel size seen, so the
        objective box and its pixel size are never stale."""
        px, info = h.get("pixel_size_um"), self.daemon_info
        if (self._described and px and h.get("detector") == info.get("camera") and px != info.get("pixel_size_um")
                and px != self._redescribed_px):
            self._redescribed_px, self._described = px, False  # asked on the next status poll

    def _redraw_results(self) -> None:
        """Draw each engine's result shown again as the View options now say: with live stopped no new result
        comes, and a ticked "uncertainty map" or "stains over label-free" would change nothing."""
        for address, serial in list(self._last_serial.items()):
            res = self.streams.result(address) if address in self.panes else None
            if res is not None and res.serial == serial:
                self._show_result(address, res)

    def _show_result(self, address: str, res) -> None:
        pane = self.panes[address]
        h, y = res.header, res.data
        self.results_shown[address] = h
        px = float(h.get("pixel_size_um") or 1.0)
        names = list(h.get("channels") or [])
        # '<output>:std' channels (engine --uncertainty) follow the outputs: a map of their own, never a stain
        std = [i for i, n in enumerate(names) if n.endswith(":std")]
        keep = [i for i in range(len(names)) if i not in std]
        (self.without_std.discard if std else self.without_std.add)(address)
        if std and self.uncertainty_box.isChecked():
            pane.show_grey(y[std].mean(axis=0), px, "uncertainty (std, output units)", auto_levels=True)
            pane.plot.setTitle(f"{h.get('model')} · uncertainty · {px:.3g} µm/px", size="10pt")
            self._show_trust(address, h.get("trust"))
            return
        if std:
            y, names = y[keep], [names[i] for i in keep]
        if h.get("task") == "virtual-staining" or (y.shape[0] > 1 and h.get("scale_factor", 1) == 1):
            base = None
            if self.overlay_box.isChecked():  # the frame of the result's own bundle, never a newer field
                f = self.streams.base_of(h.get("source_seqs"))
                base = None if f is None else f.data.astype(np.float32)
            pane.show_composite(y, names, px, base, overlay=self.overlay_box.isChecked())
        else:
            name = names[0] if names else "output"
            pane.show_grey(y[0], px, name, auto_levels=True, color=output_rgb([name])[0])  # the stain's colour
        pane.plot.setTitle(f"{h.get('model')} · ×{h.get('scale_factor', 1)} · {px:.3g} µm/px", size="10pt")
        self._show_trust(address, h.get("trust"))

    def _show_trust(self, address: str, trust: dict[str, Any] | None) -> None:
        """The trust verdict on the inferred view: a badge with the uncertainty check's state and the reasons
        (:mod:`.trust_badge`); an untrusted (or unjudged) output is dimmed so it never looks like a confident image."""
        pane = self.panes[address]
        if not isinstance(trust, dict) or not trust:
            trust = {"ok": False, "score": 0.0, "reasons": ["no trust verdict in the result"]}
        self.trust_shown[address] = trust
        text, trusted = badge_text(trust)  # the verdict, the uncertainty check's state, the reasons
        pane.set_badge(text, (20, 120, 40, 210) if trusted else (170, 20, 20, 220))
        pane.image.setOpacity(1.0 if trusted else 0.35)

    # ------------------------------------------------------------ messages
    def live_cycle(self) -> list[str] | None:
        """Channel names of the running live cycle (None when live is not running)."""
        job = self.daemon_status.get("job") or {}
        if self.daemon_status.get("state") != "live" or not job.get("plan"):
            return None
        return [c["name"] if isinstance(c, dict) else str(c) for c in job["plan"].get("channels", [])]

    def _update_messages(self, frame) -> None:
        """Say why a pane is empty: nothing acquired, a channel missing from the cycle, no engine."""
        cycle = self.live_cycle()
        chan = self.channel_box.follow_cycle(cycle)
        if not self.connected["daemon"]:  # a frame kept from before is not the current field
            self.raw.set_message(f"no answer from the daemon at {self.control_address} (retrying)"
                                 + ("" if frame is None else ":\nshowing the last frame received"))
        elif chan not in ("", NEWEST) and cycle is not None and chan not in cycle:
            self.raw.set_message(f"no frames of channel {chan} in the live cycle\n(tick it under Live cycle)")
        elif frame is None:
            self.raw.set_message("no frames yet: Start live or Snap" if chan in ("", NEWEST)
                                 else f"no frames of channel {chan} yet")
        else:
            self.raw.set_message(None)
        if frame is None and self.raw.values is not None:
            self.raw.clear_image()  # never show another channel under this one's name
            self._last_serial.pop("raw", None)
        for e in self.engines:
            pane, st = self.panes[e.results], self.engine_status.get(e.results)
            pane.set_message(self.pane_message(e.results, cycle))
            outdated = self._stale_why(e.results) or served_elsewhere(self.results_shown.get(e.results), st)
            if e.results in self._last_serial and outdated:
                pane.image.setOpacity(0.35)  # dimmed like an untrusted output until a new result comes
            if e.results not in self._last_serial and st:  # name the model before its first result
                pane.plot.setTitle(f"{(st.get('model') or {}).get('name', 'model')} · no result yet", size="10pt")

    def pane_message(self, address: str, cycle: list[str] | None) -> str | None:
        """Why an engine's pane has no (current) result, or None. A result of the model the engine served before a
        ``load_model`` is named as such (:func:`.served.served_elsewhere`), never passed off as the new model's."""
        st = self.engine_status.get(address)
        has_result = address in self._last_serial
        if st is None:
            return None if has_result else f"no status from the engine at {address} yet (is it running?)"
        model = st.get("model") or {}
        name, inputs = model.get("name", "the model"), list(model.get("inputs") or [])
        shown = (self.results_shown.get(address) or {}).get("model") or name  # whose result the pane shows
        stale = self._stale_why(address)
        if has_result and stale:
            return f"{stale}:\nshowing the last result of {shown}, not the current field"
        switched = served_elsewhere(self.results_shown.get(address), st) if has_result else None
        missing = [c for c in inputs if c not in cycle] if cycle is not None else []
        if missing:
            ticked = {c["name"] for c in self.cycle.channels()}
            hint = ("ticked under Live cycle: Stop and Start live to apply" if set(missing) <= ticked
                    else f"tick {'them' if len(missing) > 1 else 'it'} under Live cycle")
            last = (f"\n(showing the last result of {shown}, which the engine no longer serves)" if switched
                    else "\n(showing its last result)" if has_result else "")
            return (f"no frames of channel{'s' if len(missing) > 1 else ''} {', '.join(missing)} in the live cycle:\n"
                    f"{name} needs {', '.join(inputs)};\n{hint}" + last)
        if switched:
            return f"{switched}, no result of it yet:\nshowing the last result of {shown}, not the current field"
        if not has_result:
            return (f"waiting for the first result of {name}" if cycle is not None
                    else f"no result yet: {name} needs {', '.join(inputs)}; Start live")
        return self._no_uncertainty_note(address)

    def _no_uncertainty_note(self, address: str) -> str | None:
        """With "uncertainty map" ticked, why an engine's pane shows its output instead (None otherwise)."""
        if not self.uncertainty_box.isChecked() or address not in self.without_std:
            return None
        return ("this engine publishes no uncertainty map (showing its output):\n"
                "start it with scopecast engine --uncertainty N")

    def _stale_why(self, address: str) -> str | None:
        """Why the engine's last result is not the current field (the engine or the daemon gone silent), or None."""
        silent = self._engine_silent_s(address)
        if silent is not None:
            return f"no word from the engine at {address} for {silent:.0f} s (stopped?)"
        return None if self.connected["daemon"] else f"no answer from the daemon at {self.control_address}"

    def _engine_silent_s(self, address: str) -> float | None:
        """Seconds the engine at ``address`` has not been heard from (neither stats nor status), once its latency
        table calls it stale for that; None while it is heard from."""
        return self.latency.table(address).silent_s(time.monotonic())

    # --------------------------------------------------------------- figures
    def _update_stats(self) -> None:
        snap = self.streams.snapshot()
        now = time.monotonic()
        for address, stats in snap.stats.items():
            if stats.get("source") == "engine" and address in self.panes:
                self._note_engine(address, stats)
        for e in self.engines:
            table = self.latency.table(e.results)
            st = self.engine_status.get(e.results)
            fresh = st is not None and st.get("t_ns") != table.property("t_ns")
            if fresh:
                table.setProperty("t_ns", st.get("t_ns"))
            table.update_from(st if fresh else None, percentiles(self._display_lat[e.results]), now)
            if st:  # the legend names the model the engine serves now
                label = self.latency_plot.plotItem.legend.getLabel(self.latency_curves[e.results])
                name = (st.get("model") or {}).get("name", e.results)
                if label is not None and label.text != name:
                    label.setText(name)
        acq = 0.0
        if len(self._acq_hist) > 1:
            (t0, n0), (t1, n1) = self._acq_hist[0], self._acq_hist[-1]
            acq = (n1 - n0) / max(t1 - t0, 1e-6)
        inferred = sum(st.get("results_per_s", 0.0) for a, st in self.engine_status.items()
                       if self._engine_silent_s(a) is None)  # a stopped engine's last rate is not a rate
        t = [x for x in self._display_times if x > time.monotonic() - 3.0]
        shown = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        self.fps_label.setText(f"acquired {acq:.1f} /s   inferred {inferred:.1f} /s   displayed {shown:.1f} /s")
        drops: dict[str, int] = collections.Counter()
        for st in snap.stats.values():
            drops.update(st.get("dropped", {}))
        drops["display:superseded"] = snap.superseded
        self.drops_label.setText("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        self.drop_counts = dict(drops)
        self.spot_panel.show_events(snap.spot_checks)
        for msg in self.messages.new(snap, now):
            self.error_view.appendPlainText(msg)

    @property
    def fidelity_alarm(self) -> bool:
        """A spot-check alarm is shown (:class:`.spot_check_panel.SpotCheckPanel`)."""
        return self.spot_panel.alarm

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._timer.stop()
        self._status_timer.stop()
        self.streams.close()
        self.requester.close()
        self.poller.close()
        super().closeEvent(event)
