"""The live viewer window (pyqtgraph on PySide6): raw and inferred images, latency, controls.

Everything it shows comes from the sockets (docs/protocol.md); every button
sends a control request. It never imports acquisition code, so it can run on
another machine than the microscope.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtWidgets

from scopecast.daemon.snapshot import composite

from .streams import LatestStreams, Requester

__all__ = ["EngineEndpoint", "ScopeWindow"]


def _shipped_packages() -> list:
    """Model packages that ship with scopecast (offered in the model selector)."""
    from importlib.resources import files

    root = files("scopecast.models").joinpath("packages")
    return sorted(p for p in (root.iterdir() if root.is_dir() else []) if p.joinpath("manifest.json").is_file())

STAGES = ("acquire", "publish", "transport", "queue", "preprocess", "infer", "postprocess", "result_publish",
          "display", "end_to_end")


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
        self.requester = Requester()
        self.sig = _Signals()
        self.sig.reply.connect(self._on_reply)
        self.sig.error.connect(self._on_error)
        self.daemon_status: dict[str, Any] = {}
        self.engine_status: dict[str, dict[str, Any]] = {}
        self.connected = {"daemon": False, **{e.results: False for e in engines}}
        self.displayed = 0
        self._display_times: collections.deque[float] = collections.deque(maxlen=200)
        self._display_lat: collections.deque[float] = collections.deque(maxlen=500)
        self._e2e: dict[str, collections.deque[float]] = {e.results: collections.deque(maxlen=300) for e in engines}
        self._last_serial: dict[str, int] = {}
        self._acq_hist: collections.deque[tuple[float, int]] = collections.deque(maxlen=10)
        self._seen_errors: set[str] = set()
        self.drop_counts: dict[str, int] = {}
        self.frames_shown = 0
        self._raw_channel: str | None = None
        self._build()
        self._timer = QtCore.QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._timer.start(int(1000 / refresh_hz))
        self._status_timer = QtCore.QTimer(self)
        self._status_timer.timeout.connect(self.poll_status)
        self._status_timer.start(1000)
        self.poll_status()
        self.request("describe")

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        central = QtWidgets.QWidget()
        self.setCentralWidget(central)
        outer = QtWidgets.QVBoxLayout(central)
        views = QtWidgets.QHBoxLayout()
        outer.addLayout(views, stretch=4)

        self.raw_view = pg.GraphicsLayoutWidget()
        self.raw_plot = self.raw_view.addPlot(title="raw")
        self.raw_plot.setLabel("bottom", "x", units="µm")
        self.raw_item = pg.ImageItem(axisOrder="row-major")
        self.raw_plot.addItem(self.raw_item)
        self.raw_plot.setAspectLocked(True)
        self.raw_plot.invertY(True)
        self.raw_hist = pg.HistogramLUTItem(image=self.raw_item)
        self.raw_view.addItem(self.raw_hist)
        views.addWidget(self.raw_view, stretch=1)

        self.result_views: dict[str, tuple[Any, Any, Any]] = {}
        self.trust_badges: dict[str, Any] = {}
        self.trust_shown: dict[str, dict[str, Any]] = {}  # engine results address -> last trust verdict shown
        for e in self.engines:
            w = pg.GraphicsLayoutWidget()
            plot = w.addPlot(title="model output")
            item = pg.ImageItem(axisOrder="row-major")
            plot.addItem(item)
            plot.setAspectLocked(True)
            plot.invertY(True)
            plot.setXLink(self.raw_plot)
            plot.setYLink(self.raw_plot)
            hist = pg.HistogramLUTItem(image=item)
            w.addItem(hist)
            views.addWidget(w, stretch=1)
            self.result_views[e.results] = (plot, item, hist)
            badge = pg.TextItem("no result yet", anchor=(0, 0), color="w", fill=pg.mkBrush(60, 60, 60, 200))
            badge.setZValue(10)
            plot.addItem(badge, ignoreBounds=True)
            self.trust_badges[e.results] = badge

        controls = QtWidgets.QHBoxLayout()
        outer.addLayout(controls)
        self.live_button = QtWidgets.QPushButton("Start live")
        self.live_button.clicked.connect(self.toggle_live)
        self.record_box = QtWidgets.QCheckBox("record")
        self.record_box.setToolTip("record the live cycle to OME-Zarr (toggling it during live restarts live)")
        self.record_box.clicked.connect(self.toggle_record)
        self.channel_box = QtWidgets.QComboBox()
        self.channel_box.setToolTip("channel shown in the raw view")
        self.pattern_box = QtWidgets.QComboBox()
        self.pattern_box.setToolTip("LED array pattern (sets the hardware directly)")
        self.pattern_box.activated.connect(lambda _: self.request("set_pattern", pattern=self.pattern_box.currentText()))
        self.exposure = QtWidgets.QDoubleSpinBox()
        self.exposure.setRange(0.01, 10000.0)
        self.exposure.setSuffix(" ms")
        self.exposure.setValue(10.0)
        self.exposure.editingFinished.connect(lambda: self.request("set_exposure", exposure_ms=self.exposure.value()))
        self.snap_button = QtWidgets.QPushButton("Snap")
        self.snap_button.clicked.connect(lambda: self.request("snap", record=True))
        self.pairs_button = QtWidgets.QPushButton("Capture pair")
        self.pairs_button.clicked.connect(lambda: self.request("capture_pairs"))
        self.model_box = QtWidgets.QComboBox()
        self.model_box.setEditable(True)
        self.model_box.addItems([str(p) for p in _shipped_packages()])
        self.model_box.setCurrentText("")
        self.model_box.lineEdit().setPlaceholderText("model package (shipped, or a path)")
        self.model_box.setMinimumWidth(280)
        self.model_button = QtWidgets.QPushButton("Load model")
        self.model_button.clicked.connect(self.load_model)
        self.overlay_box = QtWidgets.QCheckBox("overlay on label-free")
        for w in (self.live_button, self.record_box, QtWidgets.QLabel("view"), self.channel_box,
                  QtWidgets.QLabel("pattern"), self.pattern_box, QtWidgets.QLabel("exposure"), self.exposure,
                  self.snap_button, self.pairs_button, self.overlay_box, self.model_box, self.model_button):
            controls.addWidget(w)

        stats = QtWidgets.QHBoxLayout()
        outer.addLayout(stats, stretch=2)
        grid = QtWidgets.QGridLayout()
        grid.addWidget(QtWidgets.QLabel("<b>stage</b>"), 0, 0)
        grid.addWidget(QtWidgets.QLabel("<b>p50 ms</b>"), 0, 1)
        grid.addWidget(QtWidgets.QLabel("<b>p99 ms</b>"), 0, 2)
        self.latency_labels: dict[str, tuple[QtWidgets.QLabel, QtWidgets.QLabel]] = {}
        for i, s in enumerate(STAGES, start=1):
            grid.addWidget(QtWidgets.QLabel(s), i, 0)
            p50, p99 = QtWidgets.QLabel("–"), QtWidgets.QLabel("–")
            grid.addWidget(p50, i, 1)
            grid.addWidget(p99, i, 2)
            self.latency_labels[s] = (p50, p99)
        box = QtWidgets.QGroupBox("latency")
        box.setLayout(grid)
        stats.addWidget(box)
        self.latency_plot = pg.PlotWidget(title="exposure → display latency (ms), last results")
        self.latency_curves = {e.results: self.latency_plot.plot(pen=pg.mkPen(pg.intColor(i), width=2))
                               for i, e in enumerate(self.engines)}
        stats.addWidget(self.latency_plot, stretch=2)
        fidelity = QtWidgets.QVBoxLayout()
        self.fidelity_plot = pg.PlotWidget(title="spot-check fidelity (PSNR, dB)")
        self.fidelity_plot.setLabel("bottom", "check")
        self.fidelity_plot.addLegend(offset=(5, 5))
        self.fidelity_curves: dict[str, Any] = {}  # "model · channel" -> curve
        self.fidelity_alarm = False
        self.fidelity_label = QtWidgets.QLabel("spot checks: none yet (start_spot_checks on the daemon)")
        self.fidelity_label.setWordWrap(True)
        fidelity.addWidget(self.fidelity_plot)
        fidelity.addWidget(self.fidelity_label)
        stats.addLayout(fidelity, stretch=2)
        right = QtWidgets.QVBoxLayout()
        self.fps_label = QtWidgets.QLabel("acquired – /s   inferred – /s   displayed – /s")
        self.drops_label = QtWidgets.QLabel("dropped: –")
        self.drops_label.setWordWrap(True)
        self.error_view = QtWidgets.QPlainTextEdit()
        self.error_view.setReadOnly(True)
        self.error_view.setMaximumBlockCount(200)
        self.error_view.setPlaceholderText("errors from the daemon and engines appear here")
        right.addWidget(self.fps_label)
        right.addWidget(self.drops_label)
        right.addWidget(self.error_view)
        stats.addLayout(right, stretch=2)
        self.status_line = QtWidgets.QLabel("connecting…")
        self.statusBar().addWidget(self.status_line)

    # ---------------------------------------------------------------- requests
    def request(self, cmd: str, address: str | None = None, **args: Any) -> None:
        """Send ``cmd`` off the GUI thread; the reply or error comes back as a signal."""
        fut = self.requester.submit(address or self.control_address, cmd, **args)
        what = f"{address or 'daemon'}:{cmd}"

        def done(f) -> None:
            try:
                self.sig.reply.emit(what, f.result())
            except Exception as e:  # noqa: BLE001 - shown in the window
                self.sig.error.emit(what, f"{type(e).__name__}: {e}")

        fut.add_done_callback(done)

    def toggle_live(self) -> None:
        if self.daemon_status.get("state") == "live":
            self.request("stop")
        else:
            self.request("start_live", record=self.record_box.isChecked())

    def toggle_record(self) -> None:
        """Start or stop recording: during live, restart the same cycle with recording on/off."""
        job = self.daemon_status.get("job") or {}
        if self.daemon_status.get("state") != "live" or not job.get("plan"):
            return  # applies when live starts
        plan = dict(job["plan"])
        plan["record"] = self.record_box.isChecked()
        self.request("stop")
        self.request("start_live", **{k: plan[k] for k in ("channels", "exposure_ms", "interval_ms", "record")})

    def load_model(self) -> None:
        path = self.model_box.currentText().strip()
        engine = next((e for e in self.engines if e.control), None)
        if not path or engine is None:
            self._on_error("load_model", "give a package path; the first engine with a control socket loads it")
            return
        self.request("load_model", address=engine.control, path=path, timeout_s=120.0)

    def poll_status(self) -> None:
        self.request("status", timeout_s=1.0)
        for e in self.engines:
            if e.control:
                self.request("status", address=e.control, timeout_s=1.0)

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
                n = result.get("frames_acquired", 0)
                self._acq_hist.append((time.monotonic(), n))
            else:
                self.engine_status[source] = result
                for e in self.engines:
                    if e.control == source:
                        self.connected[e.results] = True
        elif cmd == "describe":
            self.channel_box.clear()
            self.channel_box.addItems(list(result.get("channels", {})))
            self.pattern_box.clear()
            self.pattern_box.addItems(result.get("patterns", []))
            self.exposure.setValue(float(result.get("exposure_ms", 10.0)))
        elif cmd == "load_model":
            self.error_view.appendPlainText(f"engine now runs {result.get('name')} ({result.get('sha256', '')[:12]})")
        self._update_status_line()

    @QtCore.Slot(str, str)
    def _on_error(self, what: str, message: str) -> None:
        source, _, cmd = what.rpartition(":")
        if cmd == "status":
            key = "daemon" if source == "daemon" else next((e.results for e in self.engines if e.control == source), source)
            self.connected[key] = False
            self._update_status_line()
            return
        self.error_view.appendPlainText(f"{cmd}: {message}")

    def _update_status_line(self) -> None:
        parts = [f"daemon {'connected' if self.connected['daemon'] else 'disconnected (retrying)'}"]
        for e in self.engines:
            if e.control:
                parts.append(f"engine {e.results}: {'connected' if self.connected[e.results] else 'disconnected (retrying)'}")
        st = self.daemon_status
        if st:
            pos = st.get("position_um") or {}  # None while the hardware is busy and nothing is known yet
            parts.append(f"{st.get('state', '?')} · {st.get('channel') or '-'} · {st.get('exposure_ms') or 0:.1f} ms · "
                         f"x {pos.get('x', 0):.1f} y {pos.get('y', 0):.1f} z {pos.get('z', 0):.1f} µm")
        self.status_line.setText("   |   ".join(parts))

    # ----------------------------------------------------------------- refresh
    def refresh(self) -> None:
        """Show the newest frame and results (never waits for the camera or the engine)."""
        chan = self.channel_box.currentText() or None
        frame = self.streams.frame(chan) or self.streams.frame(None)
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
            self._display_lat.append((shown_ns - res.header["t_published_ns"]) / 1e6)
            self._e2e[e.results].append((shown_ns - res.header["t_acquired_ns"]) / 1e6)
            self.latency_curves[e.results].setData(np.fromiter(self._e2e[e.results], float))
            self.displayed += 1
            self._display_times.append(time.monotonic())
        self._update_stats()

    def _show_raw(self, frame) -> None:
        h = frame.header
        px = float(h.get("pixel_size_um") or 1.0)
        self.raw_item.setImage(frame.data, autoLevels=False)
        self._place(self.raw_plot, self.raw_item, frame.data.shape[1] * px, frame.data.shape[0] * px)
        channel = h.get("channel") or h.get("pattern")
        if channel != self._raw_channel:  # auto-contrast on a new channel; the user's LUT otherwise
            self._raw_channel = channel
            lo, hi = np.percentile(frame.data[::4, ::4], [0.5, 99.8])
            self.raw_hist.setLevels(float(lo), float(max(hi, lo + 1)))
        self.raw_plot.setTitle(f"raw · {h.get('channel') or h.get('pattern')} · seq {h.get('seq')}")
        self.frames_shown += 1

    def _show_result(self, address: str, res) -> None:
        plot, item, hist = self.result_views[address]
        h, y = res.header, res.data
        px = float(h.get("pixel_size_um") or 1.0)
        if h.get("task") == "virtual-staining" or (y.shape[0] > 1 and h.get("scale_factor", 1) == 1):
            base = None
            if self.overlay_box.isChecked():
                f = self.streams.frame("BF") or self.streams.frame(None)
                base = None if f is None else f.data.astype(np.float32)
            item.setImage(composite(y, base), levels=(0, 1))
            hist.setVisible(False)
        else:
            img = y[0]
            item.setImage(img, autoLevels=False)
            lo, hi = np.percentile(img[::2, ::2], [0.5, 99.8])
            hist.setVisible(True)
            hist.setLevels(float(lo), float(max(hi, lo + 1e-6)))
        self._place(plot, item, y.shape[2] * px, y.shape[1] * px)
        plot.setTitle(f"{h.get('model')} · {', '.join(h.get('channels', []))} · ×{h.get('scale_factor', 1)} · bundle {h.get('bundle_id')}")
        self._show_trust(address, h.get("trust"))

    def _show_trust(self, address: str, trust: dict[str, Any] | None) -> None:
        """The trust verdict on the inferred view: a badge with the reasons; an untrusted
        (or unjudged) output is dimmed so it never looks like a confident image."""
        _, item, _ = self.result_views[address]
        badge = self.trust_badges[address]
        trust = trust or {"ok": False, "score": 0.0, "reasons": ["no trust verdict in the result"]}
        self.trust_shown[address] = trust
        if trust.get("ok"):
            badge.setText(f"trusted · score {float(trust.get('score') or 0):.2f}")
            badge.fill = pg.mkBrush(20, 120, 40, 210)
            item.setOpacity(1.0)
        else:
            reasons = "\n".join(str(r) for r in (trust.get("reasons") or ["untrusted"])[:4])
            badge.setText(f"NOT TRUSTED\n{reasons}")
            badge.fill = pg.mkBrush(170, 20, 20, 220)
            item.setOpacity(0.35)
        badge.setPos(0, 0)
        badge.update()

    def _place(self, plot, item, width_um: float, height_um: float) -> None:
        """Put an image at its physical size (µm) so linked views show the same region."""
        rect = QtCore.QRectF(0, 0, width_um, height_um)
        if item.property("rect_um") != (width_um, height_um):
            item.setProperty("rect_um", (width_um, height_um))
            item.setRect(rect)
            plot.autoRange()
        else:
            item.setRect(rect)

    def _update_stats(self) -> None:
        snap = self.streams.snapshot()
        lat: dict[str, dict[str, float]] = {}
        sources = list(self.engine_status.values()) or [s for s in snap.stats.values() if s.get("source") == "engine"]
        for st in sources:
            for k, v in st.get("latency_ms", {}).items():
                lat.setdefault(k, v)
        if self._display_lat:
            a = np.fromiter(self._display_lat, float)
            lat["display"] = {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}
        for s, (l50, l99) in self.latency_labels.items():
            if s in lat:
                l50.setText(f"{lat[s]['p50']:.2f}")
                l99.setText(f"{lat[s]['p99']:.2f}")
        acq = 0.0
        if len(self._acq_hist) > 1:
            (t0, n0), (t1, n1) = self._acq_hist[0], self._acq_hist[-1]
            acq = (n1 - n0) / max(t1 - t0, 1e-6)
        inferred = sum(st.get("results_per_s", 0.0) for st in self.engine_status.values())
        t = [x for x in self._display_times if x > time.monotonic() - 3.0]
        shown = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        self.fps_label.setText(f"acquired {acq:.1f} /s   inferred {inferred:.1f} /s   displayed {shown:.1f} /s")
        drops: dict[str, int] = collections.Counter()
        for st in snap.stats.values():
            drops.update(st.get("dropped", {}))
        drops["display:superseded"] = snap.superseded
        self.drops_label.setText("dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        self.drop_counts = dict(drops)
        self._update_fidelity(snap.spot_checks)
        while snap.errors:
            msg = snap.errors.popleft()
            if msg not in self._seen_errors:
                self._seen_errors.add(msg)
                self.error_view.appendPlainText(msg)

    def _update_fidelity(self, events) -> None:
        """Plot each model's spot-check PSNR per output channel; an alarm shows its reasons in red."""
        if not events:
            return
        series: dict[str, list[float]] = collections.defaultdict(list)
        last: dict[str, dict] = {}
        for ev in events:
            model = ev.get("model", "?")
            last[model] = ev
            for ch, fig in (ev.get("check", {}).get("channels") or {}).items():
                if fig.get("psnr_db") is not None:
                    series[f"{model} · {ch}"].append(float(fig["psnr_db"]))
        for i, (name, values) in enumerate(sorted(series.items())):
            if name not in self.fidelity_curves:
                self.fidelity_curves[name] = self.fidelity_plot.plot(
                    pen=pg.mkPen(pg.intColor(i), width=2), symbol="o", symbolSize=5, name=name)
            self.fidelity_curves[name].setData(np.asarray(values))
        parts = []
        for model, ev in sorted(last.items()):
            if ev.get("alarm"):
                parts.append(f"<span style='color:#d00'><b>{model}: ALARM</b> {'; '.join(ev.get('alarm_reasons', []))}</span>")
            else:
                fid = ev.get("fidelity") or {}
                parts.append(f"{model}: " + ", ".join(
                    f"{ch} {f.get('psnr_db') or float('nan'):.1f} dB (n={f.get('n', 0)})" for ch, f in fid.items()))
        self.fidelity_label.setText("<br>".join(parts))
        self.fidelity_alarm = any(ev.get("alarm") for ev in last.values())

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self._timer.stop()
        self._status_timer.stop()
        self.streams.close()
        self.requester.close()
        super().closeEvent(event)
