"""The viewer's spot-check fidelity figure: each model's PSNR curve per output channel and its line of text.

The curves come from the spot-check events on the frame stream (:mod:`.fidelity`), which only a running daemon
sends; the lines say what the running daemon says. The window polls the daemon's ``spot_checks`` command every
second (docs/protocol.md) as it polls ``triggers``: a model the daemon lists gets the line of its status (stopped,
alarm, other weights, the running figures); a model the daemon no longer lists (it restarted, or died and came
back, without its spot checks) is said to be checked no more, never shown with the old daemon's figures or alarm
as if they were current; a daemon that does not answer is said not to. :func:`status_event` is pure (no Qt).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtWidgets

from .fidelity import fidelity_line, fidelity_series

__all__ = ["SpotCheckPanel", "status_event"]

#: The label before any spot-check event or ``spot_checks`` reply.
NONE_YET = "spot checks: none yet (start_spot_checks on the daemon)"


def status_event(st: dict[str, Any], last: dict[str, Any] | None) -> dict[str, Any]:
    """A model's state in a ``spot_checks`` reply as the event :func:`.fidelity.fidelity_line` reads: stopped (the
    light budget), other weights with no check of them yet, or the running figures and the alarm. A skipped check
    is said when none was compared yet, or when the model's newest event ``last`` is that skip."""
    if st.get("running") is False:
        return {"kind": "stopped", "reason": st.get("stopped_reason") or ""}
    changes = st.get("weights_changes") if isinstance(st.get("weights_changes"), list) else []
    if not st.get("fidelity") and changes and isinstance(changes[-1], dict):
        return {"kind": "weights_changed", "to": changes[-1].get("to")}
    skip = st.get("last_skip")
    skipped = bool(skip) and (not st.get("checks") or (last or {}).get("kind") == "skipped"
                              and (last or {}).get("reason") == skip)
    return {"kind": "skipped" if skipped else "fidelity", "reason": skip, "skipped": st.get("skipped") or {},
            "fidelity": st.get("fidelity") or {}, "alarm": bool(st.get("alarm")),
            "alarm_reasons": list(st.get("alarm_reasons") or [])}


def _gone_line(model: str) -> str:
    """The line of a model whose events the viewer holds but which the running daemon does not check."""
    return (f"<span style='color:#c60'><b>{html.escape(model)}: not checked by the daemon now</b> (it restarted, or "
            "its spot checks ended): the curve shows earlier checks</span>")


class SpotCheckPanel(QtWidgets.QWidget):
    """The fidelity plot and its label: :meth:`show_events` with the stream's spot-check events (oldest first),
    :meth:`show_status` with each ``spot_checks`` reply, :meth:`show_error` when the daemon did not answer it."""

    def __init__(self) -> None:
        super().__init__()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plot = pg.PlotWidget(title="spot-check fidelity (PSNR, dB)")
        self.plot.setLabel("bottom", "check")
        self.plot.addLegend(offset=(5, 5))
        self.curves: dict[str, Any] = {}  # "model · channel" -> curve
        self.alarm = False  # an alarm is shown (of a model the daemon checks, as far as the viewer knows)
        self.label = QtWidgets.QLabel(NONE_YET)
        self.label.setWordWrap(True)
        layout.addWidget(self.plot)
        layout.addWidget(self.label)
        self._last: dict[str, dict[str, Any]] = {}  # model -> its newest event
        self._events: list[dict[str, Any]] = []
        self._models: dict[str, Any] | None = None  # the last ``spot_checks`` reply's models (None: none yet)
        self._seen: dict[str, Any] | None = None  # the newest event when that reply came
        self._unanswered: str | None = None  # why the last ``spot_checks`` poll got no reply

    def show_events(self, events: Any) -> None:
        """The spot-check events received so far (oldest first): the curves, and the lines again."""
        events = list(events)
        if not events or (self._events and events[-1] is self._events[-1]):
            return
        self._events = events
        series, self._last = fidelity_series(events)
        for i, (name, values) in enumerate(sorted(series.items())):
            if name not in self.curves:
                self.curves[name] = self.plot.plot(pen=pg.mkPen(pg.intColor(i), width=2), symbol="o", symbolSize=5,
                                                   name=name)
            self.curves[name].setData(np.asarray(values), connect="finite")
        self._draw()

    def show_status(self, reply: dict[str, Any]) -> None:
        """A ``spot_checks`` reply: what the running daemon checks, and how."""
        models = reply.get("models") if isinstance(reply, dict) else None
        self._models = {m: st for m, st in models.items() if isinstance(st, dict)} if isinstance(models, dict) else {}
        self._seen, self._unanswered = (self._events[-1] if self._events else None), None
        self._draw()

    def show_error(self, message: str) -> None:
        """The daemon did not answer ``spot_checks`` (down, restarting, or an older daemon that refuses it)."""
        self._unanswered = message
        self._draw()

    def _since_reply(self) -> set[str]:
        """Models with an event received after the last ``spot_checks`` reply (started since: listed next poll)."""
        newer: set[str] = set()
        for ev in reversed(self._events):
            if ev is self._seen:
                break
            newer.add(ev.get("model", "?"))
        return newer

    def _lines(self) -> list[tuple[str, bool]]:
        """Each model's line and whether it shows an alarm: the daemon's status where it lists the model, else its
        newest event (no reply yet, a model started since the reply, or checks stopped on request), else gone."""
        if self._models is None:
            return [(fidelity_line(m, ev), bool(ev.get("alarm"))) for m, ev in sorted(self._last.items())]
        newer, out = self._since_reply(), []
        for m in sorted({*self._models, *self._last}):
            ev = self._last.get(m)
            if m in self._models:
                ev = status_event(self._models[m], ev)
            elif ev is None or not (m in newer or ev.get("kind") == "stopped"):
                out.append((_gone_line(m), False))
                continue
            out.append((fidelity_line(m, ev), bool(ev.get("alarm"))))
        return out

    def _draw(self) -> None:
        lines = self._lines()
        self.alarm = any(alarm for _, alarm in lines)
        text = [line for line, _ in lines] or [NONE_YET if self._models is None
                                               else "spot checks: none running (start_spot_checks on the daemon)"]
        if self._unanswered is not None:
            text.insert(0, f"<span style='color:#c60'>spot checks: no reply from the daemon "
                           f"({html.escape(self._unanswered)}): what follows is the last it said, not its state "
                           "now</span>")
        self.label.setText("<br>".join(text))
