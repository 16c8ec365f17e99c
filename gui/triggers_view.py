"""The viewer's triggers panel: which triggers are loaded, what they decided and why they refused.

It follows the daemon's ``triggers`` reply (docs/protocol.md), which the window polls every second: per-trigger
states (armed, disabled and why, refusing untrusted results, suppressions), the light-dose use and budgets, and
``recent``, the newest lines of the decision log (docs/smart-acquisition.md, "The decision log"): fires, re-arms,
suppressions (cooldown, rate limit, light budget), untrusted refusals with their trust reasons, disablements.
:func:`trigger_states` and :func:`decision_line` are pure (no Qt); :class:`TriggersView` draws them.

The viewer is a client of daemons of possibly other versions: a field it cannot read leaves its part out.
"""

from __future__ import annotations

import html
import time
from typing import Any

from pyqtgraph.Qt import QtGui, QtWidgets

__all__ = ["EVENT_COLORS", "TriggersView", "decision_line", "dose_line", "measured", "trigger_states"]

#: The colour of each decision event in the log list (and of a trigger's state).
EVENT_COLORS = {"fire": "#2a2", "rearm": "#888", "suppressed": "#c60", "untrusted": "#d00", "disabled": "#d00"}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) and not isinstance(v, bool) else "?"


def _clock(t_ns: Any) -> str:
    """``HH:MM:SS`` of a wall-clock nanosecond time (the daemon's acquisition time), or ''."""
    if isinstance(t_ns, bool) or not isinstance(t_ns, int) or t_ns <= 0:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(t_ns / 1e9))


def decision_line(d: dict[str, Any]) -> tuple[str, str]:
    """One decision-log line as the panel lists it, and its colour: ``12:03:04 dense-colony fire: 0.31 >= 0.25
    (actions confirm_fluorescence, notify)``, an untrusted refusal with its trust reasons, a suppression with its
    reason and the count of a stretch (``×12``)."""
    event = str(d.get("event", "?"))
    text = f"{_clock(d.get('t_ns'))} {d.get('trigger', '?')} {event}: {d.get('reason', '')}".strip()
    if event == "fire" and d.get("actions"):
        text += f" (actions {', '.join(str(a) for a in d['actions'])})"
    if isinstance(d.get("repeats"), int) and d["repeats"] > 0:
        text += f" ×{d['repeats']}"
    return text, EVENT_COLORS.get(event, "#888")


def measured(st: dict[str, Any]) -> str:
    """What a trigger measures, from its settings in a ``triggers`` reply: ``area_fraction of nuclei (pixels >
    2000) in virtual-staining``, ``python mod:Class on m``; '' from a daemon that does not say."""
    m, model = st.get("measurement"), st.get("model")
    if isinstance(m, dict) and m.get("kind"):
        what = f"{m['kind']} of {m.get('channel', '?')}"
        if m["kind"] in ("area_fraction", "count"):
            what += f" (pixels > {_num(m.get('threshold'))})"
    elif st.get("python"):
        what = f"python {st['python']}"
    else:
        return ""
    return f"{what} in {model}" if model else what


def trigger_states(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Each loaded trigger's ``(name, state, colour)`` from a ``triggers`` reply: ``disabled: <error>``, ``refusing
    untrusted results (n): <reasons>``, ``fired, re-arms below 0.18``, ``armed: fires at >= 0.25``; with the last
    measurement and the suppressions counted, the reason of one going on. The thresholds and the last measurement
    are the trigger's settings and state in the reply (an older daemon's: those of its newest decision line)."""
    recent = [d for d in status.get("recent") or [] if isinstance(d, dict)]
    out = []
    for name, st in sorted((status.get("triggers") or {}).items()):
        st = st if isinstance(st, dict) else {}
        mine = [d for d in recent if d.get("trigger") == name]
        last = mine[-1] if mine else {}
        said = {k: st[k] for k in ("above", "rearm_below") if isinstance(st.get(k), int | float)}
        if "above" in said:  # the daemon says its settings: the last decision's figures are not the state now
            said["measurement"] = st.get("last_measurement")
        last = {**last, **said}
        if st.get("disabled"):
            out.append((name, f"disabled: {st['disabled']}", EVENT_COLORS["disabled"]))
            continue
        if st.get("untrusted"):
            why = next((d.get("trust_reasons") for d in reversed(mine) if d.get("event") == "untrusted"), None)
            reasons = "; ".join(str(r) for r in why) if isinstance(why, list) and why else "trust.ok is false"
            out.append((name, f"refusing untrusted results ({st.get('untrusted_refusals', 0)}): {reasons}",
                        EVENT_COLORS["untrusted"]))
            continue
        state = (f"armed: fires at >= {_num(last['above'])}" if st.get("armed") and "above" in last
                 else "armed" if st.get("armed")
                 else f"fired, re-arms below {_num(last['rearm_below'])}" if "rearm_below" in last else "fired")
        if last.get("measurement") is not None:
            state += f"; last measured {_num(last['measurement'])}"
        if last.get("event") == "suppressed":  # the firing it would make is refused now, and why
            state += f"; suppressed ({st.get('suppressed', 0)}): {last.get('reason', '')}"
        elif st.get("suppressed"):
            state += f"; {st['suppressed']} suppressed"
        color = EVENT_COLORS["suppressed"] if last.get("event") == "suppressed" else ""
        what = measured(st)
        out.append((name, f"{state} ({what})" if what else state, color))
    return out


def dose_line(status: dict[str, Any]) -> str:
    """The light-dose use against its budgets (exposure ms at full power), shared by triggers and spot checks."""
    if "dose_session" not in status:
        return ""
    per_pos = status.get("dose_by_position") or {}
    worst = max((v for v in per_pos.values() if isinstance(v, int | float)), default=0.0)
    return (f"light: session {_num(status.get('dose_session'))} of {_num(status.get('dose_session_budget'))} ms, "
            f"most at one position {_num(worst)} of {_num(status.get('dose_per_position_budget'))} ms")


class TriggersView(QtWidgets.QWidget):
    """The loaded triggers' states and the newest decisions (:meth:`show_status` with each ``triggers`` reply)."""

    def __init__(self) -> None:
        super().__init__()
        self.summary = QtWidgets.QLabel("triggers: no answer yet")
        self.summary.setWordWrap(True)
        self.states = QtWidgets.QLabel("")
        self.states.setWordWrap(True)
        self.log = QtWidgets.QTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("the triggers' newest decisions (fire, re-arm, suppressed, untrusted, disabled)")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        for w in (self.summary, self.states, self.log):
            layout.addWidget(w)
        self.status: dict[str, Any] = {}

    def show_status(self, status: dict[str, Any]) -> None:
        """A ``triggers`` reply: the summary, one line per trigger and the decision lines it carries."""
        self.status = status if isinstance(status, dict) else {}
        if not self.status.get("loaded"):
            self.summary.setText("no triggers loaded (scopecast ctl load_triggers CONFIG --sources MODEL=RESULTS)")
            self.states.setText("")
            self.log.clear()
            return
        counts = (f"{self.status.get('results', 0)} results decided on, {self.status.get('fired', 0)} fired, "
                  f"{self.status.get('untrusted_refusals', 0)} untrusted refused")
        self.summary.setText(f"{counts}<br>{dose_line(self.status)}<br>log: {html.escape(str(self.status.get('log')))}")
        self.states.setText("<br>".join(
            f"<b>{html.escape(name)}</b>: " + (f"<span style='color:{c}'>{html.escape(s)}</span>" if c
                                               else html.escape(s))
            for name, s, c in trigger_states(self.status)))
        lines = [decision_line(d) for d in reversed(self.status.get("recent") or []) if isinstance(d, dict)]
        html_lines = "<br>".join(f"<span style='color:{c}'>{html.escape(t)}</span>" for t, c in lines)
        if html_lines != self.log.property("shown"):  # redrawn only when a decision came (keeps the scroll)
            self.log.setProperty("shown", html_lines)
            self.log.setHtml(html_lines)

    def show_error(self, message: str) -> None:
        """The daemon did not answer ``triggers`` (or refused it: an older daemon)."""
        self.summary.setText(f"triggers: {html.escape(message)}")

    def text(self) -> str:
        """Everything the panel says, as plain text (what a user reads)."""
        labels = (QtGui.QTextDocumentFragment.fromHtml(w.text()).toPlainText() for w in (self.summary, self.states))
        return "\n".join((*labels, self.log.toPlainText()))
