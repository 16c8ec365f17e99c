"""The viewer's control groups: live cycle, stage and focus, objective, the camera's exposure and pattern boxes.

Each group only builds control requests (docs/protocol.md, "Commands") and
hands them to a ``send(cmd, **args)`` callable; the window sends them off the
GUI thread (and returns the reply's future). Nothing here talks to hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from pyqtgraph.Qt import QtCore, QtWidgets

__all__ = ["ExposureBox", "LiveCycleBox", "ObjectiveBox", "PatternBox", "StageBox", "paced_by", "shipped_packages",
           "stop_timeout_s"]

Send = Callable[..., Any]

#: Default exposure per modality when a channel is ticked (ms): label-free frames are bright.
DEFAULT_EXPOSURE_MS = {"label-free": 10.0, "fluorescence": 100.0}
#: ``stop`` replies once the job has ended, at most this many seconds after (docs/protocol.md); the frame being
#: exposed when it arrives is taken first. The margin: the reply's way back on a loaded machine.
STOP_WAIT_S, STOP_MARGIN_S = 30.0, 5.0


def stop_timeout_s(status: dict[str, Any]) -> float:
    """Seconds to wait for ``stop``'s reply, from the daemon's last ``status``: its 30 s, the frame being exposed
    (the longest exposure of the running job's channels, or the camera's) and a margin. Never an ordinary
    command's 5 s, which a long exposure in the cycle outlasts while live stops as asked."""
    plan = (status.get("job") or {}).get("plan") or {}
    channels = plan.get("channels") if isinstance(plan, dict) else None
    exposures = [float(c.get("exposure_ms") or 0.0) for c in channels or [] if isinstance(c, dict)]
    frame_ms = max([*exposures, float(status.get("exposure_ms") or 0.0)])
    return STOP_WAIT_S + frame_ms / 1000.0 + STOP_MARGIN_S


def paced_by(args: dict[str, Any], engine_status: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``start_live`` ``args`` whose pacing leaves out the engines (by ``engine_status``: results address -> status)
    whose model needs a channel the chosen cycle lacks: they would never answer, and the first cycle would wait out
    a timeout for each."""
    if not args.get("pace_from") or not args.get("channels"):
        return args
    cycle = {c["name"] for c in args["channels"]}
    served = [a for a in args["pace_from"]
              if set((engine_status.get(a, {}).get("model") or {}).get("inputs") or []) <= cycle]
    return {**args, "pace_from": served} if served else {k: v for k, v in args.items() if k != "pace_from"}


class LiveCycleBox(QtWidgets.QGroupBox):
    """Which channels the live cycle takes, at which exposure, how often, recorded or not.

    Until the user ticks a channel or sets an exposure by hand, the cycle follows :meth:`suggest` (the
    connected engines' model inputs, each at an exposure its model was trained on), so every model's
    pane can fill on Start live with a result the model can be trusted on.
    """

    def __init__(self) -> None:
        super().__init__("Live cycle")
        self.table = QtWidgets.QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["channel", "exposure"])
        self.table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setToolTip("tick the channels of the live cycle (the frames each model needs)")
        self.table.itemChanged.connect(self._edited)
        self.interval = QtWidgets.QDoubleSpinBox()
        self.interval.setRange(0.0, 600000.0)
        self.interval.setSuffix(" ms")
        self.interval.setToolTip("pause between cycles")
        self.record = QtWidgets.QCheckBox("record")
        self.record.setToolTip("record the live cycle to OME-Zarr (toggling it during live restarts live)")
        self.pace = QtWidgets.QCheckBox("pace by the engines")
        self.pace.setToolTip("acquire each cycle just in time for the slowest connected engine's model instead of "
                             "as fast as the camera goes: no bundles dropped, less CPU; the raw view then updates "
                             "at the models' rate (start_live pace_from)")
        self.pace_from: list[str] = []  # the engines' results addresses pacing uses (set by the window)
        self.start = QtWidgets.QPushButton("Start live")
        self.suggest_button = QtWidgets.QPushButton("engines' inputs")
        self.suggest_button.setToolTip("tick exactly the channels the connected models need")
        self.suggest_button.clicked.connect(self._apply_suggestion)
        self.modality: dict[str, str] = {}
        self.user_chose = False
        self._suggested: list[str] = []
        self._suggested_exposure: dict[str, float] = {}
        self._filling = False
        form = QtWidgets.QGridLayout(self)
        form.addWidget(self.table, 0, 0, 1, 3)
        form.addWidget(self.suggest_button, 1, 0)
        form.addWidget(QtWidgets.QLabel("interval"), 1, 1)
        form.addWidget(self.interval, 1, 2)
        form.addWidget(self.start, 2, 0, 1, 2)
        form.addWidget(self.record, 2, 2)
        form.addWidget(self.pace, 3, 0, 1, 3)

    def set_channels(self, channels: dict[str, dict[str, Any]]) -> None:
        """The daemon's channels (``describe``); ticks and exposures of known names are kept."""
        keep = {c["name"]: c["exposure_ms"] for c in self.channels()}
        old = {self.table.item(r, 0).text(): self._spin(r).value() for r in range(self.table.rowCount())}
        self._filling = True
        self.table.setRowCount(0)
        self.modality = {name: str(info.get("modality", "")) for name, info in channels.items()}
        for name, modality in self.modality.items():
            r = self.table.rowCount()
            self.table.insertRow(r)
            item = QtWidgets.QTableWidgetItem(name)
            item.setFlags(QtCore.Qt.ItemFlag.ItemIsUserCheckable | QtCore.Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(QtCore.Qt.CheckState.Checked if name in keep else QtCore.Qt.CheckState.Unchecked)
            item.setToolTip(modality)
            self.table.setItem(r, 0, item)
            spin = QtWidgets.QDoubleSpinBox()
            spin.setRange(0.01, 10000.0)
            spin.setSuffix(" ms")
            spin.setValue(old.get(name, self._suggested_exposure.get(name, DEFAULT_EXPOSURE_MS.get(modality, 10.0))))
            spin.valueChanged.connect(self._exposure_edited)
            self.table.setCellWidget(r, 1, spin)
        self._filling = False
        rows = min(self.table.rowCount(), 12)  # every channel visible without scrolling (up to 12)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + 22 * max(rows, 3) + 4)
        if not self.user_chose and self._suggested:
            self._apply_suggestion()

    def _spin(self, row: int) -> QtWidgets.QDoubleSpinBox:
        return self.table.cellWidget(row, 1)

    def _edited(self, _item: QtWidgets.QTableWidgetItem) -> None:
        if not self._filling:
            self.user_chose = True

    def _exposure_edited(self, _value: float) -> None:
        if not self._filling:
            self.user_chose = True

    def suggest(self, names: Iterable[str], exposure_ms: dict[str, float] | None = None) -> None:
        """The cycle the engines need (and an exposure per channel, ms); applied unless the user has chosen."""
        names = [n for n in dict.fromkeys(names)]
        exposure = {n: float(v) for n, v in (exposure_ms or {}).items() if v}
        if names != self._suggested or exposure != self._suggested_exposure:
            self._suggested, self._suggested_exposure = names, exposure
            if not self.user_chose:
                self._apply_suggestion()

    def _apply_suggestion(self) -> None:
        """Tick the suggested channels and set their suggested exposures."""
        self._filling = True
        for r in range(self.table.rowCount()):
            ms = self._suggested_exposure.get(self.table.item(r, 0).text())
            if ms is not None:
                self._spin(r).setValue(ms)
        self._filling = False
        self.check(self._suggested, by_user=False)

    def check(self, names: Iterable[str], by_user: bool = True) -> None:
        """Tick exactly ``names`` (in the daemon's channel order)."""
        wanted = set(names)
        self._filling = not by_user
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            item.setCheckState(QtCore.Qt.CheckState.Checked if item.text() in wanted
                               else QtCore.Qt.CheckState.Unchecked)
        self._filling = False
        if by_user:
            self.user_chose = True

    def channels(self) -> list[dict[str, Any]]:
        """The ticked channels as ``start_live`` channel objects ``{name, exposure_ms}``."""
        return [{"name": self.table.item(r, 0).text(), "exposure_ms": self._spin(r).value()}
                for r in range(self.table.rowCount())
                if self.table.item(r, 0).checkState() == QtCore.Qt.CheckState.Checked]

    def start_live_args(self) -> dict[str, Any]:
        """Arguments of ``start_live`` for the chosen cycle (the daemon's default when none is ticked)."""
        args: dict[str, Any] = {"interval_ms": self.interval.value(), "record": self.record.isChecked()}
        if self.channels():
            args["channels"] = self.channels()
        if self.pace.isChecked() and self.pace_from:
            args["pace_from"] = self.pace_from
        return args


class StageBox(QtWidgets.QGroupBox):
    """Stage XY and focus Z: jog buttons by a step, or go to a position (``move_stage``)."""

    def __init__(self, send: Send) -> None:
        super().__init__("Stage and focus")
        self.send = send
        self.xy_step = QtWidgets.QDoubleSpinBox()
        self.xy_step.setRange(0.01, 10000.0)
        self.xy_step.setValue(50.0)
        self.xy_step.setSuffix(" µm")
        self.z_step = QtWidgets.QDoubleSpinBox()
        self.z_step.setRange(0.01, 1000.0)
        self.z_step.setValue(1.0)
        self.z_step.setSuffix(" µm")
        grid = QtWidgets.QGridLayout(self)
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        # screen directions: y grows downwards in the image panes
        for key, label, (r, c), axis, sign in (("up", "▲", (0, 1), "y", -1), ("down", "▼", (2, 1), "y", 1),
                                               ("left", "◀", (1, 0), "x", -1), ("right", "▶", (1, 2), "x", 1),
                                               ("z_up", "Z+", (0, 3), "z", 1), ("z_down", "Z−", (2, 3), "z", -1)):
            b = QtWidgets.QPushButton(label)
            b.setToolTip(f"move {axis} by {'+' if sign > 0 else '−'} one step")
            b.setMaximumWidth(44)
            b.clicked.connect(lambda _=False, a=axis, s=sign: self.jog(a, s))
            grid.addWidget(b, r, c)
            self.buttons[key] = b
        grid.addWidget(QtWidgets.QLabel("XY step"), 3, 0, 1, 2)
        grid.addWidget(self.xy_step, 3, 2, 1, 2)
        grid.addWidget(QtWidgets.QLabel("Z step"), 4, 0, 1, 2)
        grid.addWidget(self.z_step, 4, 2, 1, 2)
        self.target = {}
        self._edited: set[str] = set()  # go-to targets the user changed since the last Go to
        self._filling = False  # the viewer itself is setting the targets (not the user)
        for i, axis in enumerate("xyz"):
            s = QtWidgets.QDoubleSpinBox()
            s.setRange(-1e6, 1e6)
            s.setDecimals(2)
            s.setPrefix(f"{axis} ")
            s.setSuffix(" µm")
            s.valueChanged.connect(lambda _v, a=axis: self._target_edited(a))
            self.target[axis] = s
            grid.addWidget(s, 5 + i // 2, (i % 2) * 2, 1, 2)
        self.go = QtWidgets.QPushButton("Go to")
        self.go.clicked.connect(self.go_to)
        grid.addWidget(self.go, 6, 2, 1, 2)
        self.position = QtWidgets.QLabel("position: –")
        grid.addWidget(self.position, 7, 0, 1, 4)

    def jog(self, axis: str, sign: int) -> None:
        step = self.z_step.value() if axis == "z" else self.xy_step.value()
        self.send("move_stage", **{axis: sign * step}, relative=True)

    def _target_edited(self, axis: str) -> None:
        if not self._filling:
            self._edited.add(axis)

    def go_to(self) -> None:
        """Move the axes whose target the user set; the others stay where they are (a target left as shown must
        never send the focus or the stage back to where it was when the targets were last filled)."""
        axes = {a: s.value() for a, s in self.target.items() if a in self._edited}
        self._edited.clear()
        if axes:
            self.send("move_stage", **axes)

    def show_position(self, pos: dict[str, float] | None) -> None:
        """The current position; the go-to targets the user has not edited follow it."""
        if not pos:
            return
        self.position.setText(f"position: x {pos['x']:.2f}  y {pos['y']:.2f}  z {pos['z']:.2f} µm")
        self._filling = True
        try:
            for a, s in self.target.items():
                if a not in self._edited:
                    s.setValue(float(pos[a]))
        finally:
            self._filling = False


class ExposureBox(QtWidgets.QDoubleSpinBox):
    """The camera's exposure (ms): follows the daemon's (:meth:`show_exposure`) until the user types a value, which
    is sent (``set_exposure``) when editing finishes. Leaving it untouched sends nothing, so it never undoes the
    exposure another client set."""

    def __init__(self, send: Send) -> None:
        super().__init__()
        self.send = send
        self.setRange(0.01, 10000.0)
        self.setSuffix(" ms")
        self.setValue(10.0)
        self.setToolTip("the camera's exposure now (snaps; each live channel has its own)")
        self.edited = False  # the user changed the value since it was last sent
        self._filling = False  # the viewer itself is setting it (not the user)
        self.valueChanged.connect(self._changed)
        self.editingFinished.connect(self._finished)

    def _changed(self, _value: float) -> None:
        if not self._filling:
            self.edited = True

    def _finished(self) -> None:
        if self.edited:
            self.edited = False
            self.send("set_exposure", exposure_ms=self.value())

    def show_exposure(self, exposure_ms: float | None) -> None:
        """The daemon's exposure now; kept off the box while the user is changing it."""
        if exposure_ms and not self.edited:
            self._filling = True
            try:
                self.setValue(float(exposure_ms))
            finally:
                self._filling = False


class PatternBox(QtWidgets.QComboBox):
    """The LED array's pattern: the daemon's (``describe``, then every ``status``: a live cycle, a scan, another
    client or a trigger changes it); a pick is sent (``set_pattern``). Refused (a scan or pairs running, no LED
    array), the box goes back to the pattern in use: it never shows one the daemon did not set (the window shows
    the daemon's reason)."""

    _answered = QtCore.Signal(str)  # the pattern set, or "" when refused (emitted from the request's thread)

    def __init__(self, send: Send) -> None:
        super().__init__()
        self.send = send
        self.current = ""  # the pattern the daemon last said it set
        self._pending = 0  # picks sent and not answered yet: a status read before them is not the pattern now
        self.setToolTip("LED array pattern (sets the hardware directly; during a job, that of its last "
                        "label-free frame)")
        self.activated.connect(lambda _: self.switch(self.currentText()))
        self._answered.connect(self._on_answer)

    def _on_answer(self, pattern: str) -> None:
        self._pending = max(self._pending - 1, 0)
        self.show_pattern(pattern or self.current)

    def follow(self, pattern: str | None) -> None:
        """The pattern a ``status`` reply reports (None: it says none): shown unless a pick is on its way."""
        if pattern is not None and not self._pending:
            self.show_pattern(pattern)

    def from_describe(self, info: dict[str, Any]) -> None:
        """The daemon's patterns and the one in use (``describe``)."""
        self.clear()
        self.addItems(info.get("patterns", []))
        self.show_pattern(info.get("pattern", ""))

    def switch(self, pattern: str) -> None:
        """Ask the daemon for ``pattern``; the box shows it once set, or the pattern in use if refused."""
        sent = self.send("set_pattern", pattern=pattern)
        if isinstance(sent, Future):
            self._pending += 1
            sent.add_done_callback(
                lambda f: self._answered.emit("" if f.cancelled() or f.exception() is not None else pattern))

    def show_pattern(self, pattern: str) -> None:
        """The pattern now in use (from ``describe`` or a ``set_pattern`` reply)."""
        if pattern and self.findText(pattern) >= 0:
            self.current = pattern
        self.setCurrentText(self.current)


class ObjectiveBox(QtWidgets.QGroupBox):
    """The objective: switchable when the daemon offers ``set_objective`` and lists ``objectives``
    in ``describe``; otherwise it shows the pixel size and says the daemon cannot switch it."""

    _refused = QtCore.Signal()  # a set_objective was refused (emitted from the request's thread)

    def __init__(self, send: Send) -> None:
        super().__init__("Objective")
        self.send = send
        self.current = ""  # the objective the daemon last said it uses
        self.box = QtWidgets.QComboBox()
        self.box.activated.connect(lambda _: self.switch(self.box.currentText()))
        self._refused.connect(lambda: self.show_objective(self.current, None))
        self.pixel = QtWidgets.QLabel("pixel size: –")
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.box)
        layout.addWidget(self.pixel)
        self.from_describe({})

    def from_describe(self, info: dict[str, Any]) -> None:
        objectives = list(info.get("objectives") or [])
        can = "set_objective" in (info.get("commands") or []) and bool(objectives)
        self.box.clear()
        self.box.addItems(objectives or ["(not switchable from here)"])
        if info.get("objective") in objectives:
            self.box.setCurrentText(info["objective"])
        self.box.setEnabled(can)
        self.box.setToolTip("" if can else "the daemon offers no objective command (set_objective): change the "
                            "objective at the microscope or in its configuration; the pixel size follows")
        self.show_objective(info.get("objective", ""), info.get("pixel_size_um"))

    def switch(self, objective: str) -> None:
        """Ask the daemon for ``objective``; refused (a scan or pairs running, no pixel size while recording), the
        box goes back to the objective in use: it never shows one the daemon did not switch to (the window shows
        the daemon's reason)."""
        sent = self.send("set_objective", objective=objective)
        if isinstance(sent, Future):
            sent.add_done_callback(lambda f: f.cancelled() or f.exception() is None or self._refused.emit())

    def show_objective(self, objective: str, pixel_size_um: float | None) -> None:
        """The objective now in use (from ``describe`` or a ``set_objective`` reply) and its pixel size."""
        if objective and self.box.findText(objective) >= 0:
            self.current = objective
            self.box.setCurrentText(objective)
        if pixel_size_um:
            self.pixel.setText(f"pixel size: {float(pixel_size_um):.4g} µm")


def shipped_packages() -> list:
    """Model packages that ship with scopecast (offered in the model selector)."""
    from importlib.resources import files

    root = files("scopecast.models").joinpath("packages")
    return sorted(p for p in (root.iterdir() if root.is_dir() else []) if p.joinpath("manifest.json").is_file())
