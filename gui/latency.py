"""Per-engine latency tables: one table per engine, every row updated from its own stats.

Each engine publishes ``stats`` (docs/protocol.md, "Engine stats") with its
per-stage latency percentiles; the viewer adds the display stage it measures
itself. A table whose engine has published no new result for ``STALE_S``
seconds (or sent no stats at all) is marked stale: its rows turn grey and its
title says since when, so an idle engine's old figures are never read as live.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

__all__ = ["STAGES", "STALE_S", "LatencyPanel", "LatencyTable", "percentiles"]

STAGES = ("acquire", "publish", "transport", "queue", "guards", "preprocess", "infer", "postprocess", "result_publish",
          "display", "end_to_end")

#: A table is stale when its engine produced no new result (or sent no stats) for this long (s).
STALE_S = 3.0


def percentiles(values: collections.deque) -> dict[str, float] | None:
    """``{p50, p99}`` of ``values`` (ms; the viewer's own display stage), or None when there are none."""
    if not values:
        return None
    a = np.fromiter(values, float)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


class LatencyTable(QtWidgets.QGroupBox):
    """Stage → p50 / p99 (ms) of one engine."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key
        self.model = ""
        self.table = QtWidgets.QTableWidget(len(STAGES), 2)
        self.table.setHorizontalHeaderLabels(["p50 ms", "p99 ms"])
        self.table.setVerticalHeaderLabels(list(STAGES))
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setDefaultSectionSize(18)
        self.table.setMinimumWidth(190)
        self.table.setFixedHeight(self.table.horizontalHeader().sizeHint().height() + 18 * len(STAGES) + 4)
        for r in range(len(STAGES)):
            for c in range(2):
                self.table.setItem(r, c, QtWidgets.QTableWidgetItem("–"))
        self.state = QtWidgets.QLabel(key)
        self.state.setWordWrap(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.state)
        layout.addWidget(self.table)
        layout.addStretch(1)
        self._results = -1
        self._t_changed = 0.0
        self._t_stats = 0.0
        self.stale, self.why = True, "no stats yet"

    def cell(self, stage: str, column: int = 0) -> str:
        """The text shown for ``stage`` (column 0: p50, 1: p99)."""
        return self.table.item(STAGES.index(stage), column).text()

    def update_from(self, stats: dict[str, Any] | None, display: dict[str, float] | None,
                    now: float | None = None) -> None:
        """Fill the rows from an engine ``stats`` object and the display percentiles."""
        now = time.monotonic() if now is None else now
        if stats is not None:
            self._t_stats = now
            model = stats.get("model") or {}
            self.model = str(model.get("name", ""))
            n = int(stats.get("results_published", 0))
            if n != self._results:
                self._results, self._t_changed = n, now
            lat = dict(stats.get("latency_ms") or {})
            if display:
                lat["display"] = display
            for r, stage in enumerate(STAGES):
                fig = lat.get(stage)
                for c, q in enumerate(("p50", "p99")):
                    self.table.item(r, c).setText("–" if not fig else f"{fig[q]:.2f}")
        self.mark(now)

    def silent_s(self, now: float) -> float | None:
        """Seconds since the engine was last heard from (stats or a status reply) once that is over ``STALE_S``:
        it may have stopped or died. None while it is heard from, and before it ever was."""
        if not self._t_stats or now - self._t_stats <= STALE_S:
            return None
        return now - self._t_stats

    def mark(self, now: float) -> None:
        """Grey the rows and say so in the title when the figures are not current."""
        if not self._t_stats or now - self._t_stats > STALE_S:
            why = "no stats yet" if not self._t_stats else f"no stats for {now - self._t_stats:.0f} s"
        elif self._results <= 0:
            why = "no results yet"
        elif now - self._t_changed > STALE_S:
            why = f"stale: no new result for {now - self._t_changed:.0f} s"
        else:
            why = ""
        self.stale, self.why = bool(why), why
        self.setTitle(f"latency · {self.model or 'engine'}")
        self.state.setText(f"{self.key}" + (f"<br><span style='color:#c60'>{why}</span>" if why else ""))
        color = QtGui.QColor("gray") if self.stale else self.palette().color(QtGui.QPalette.ColorRole.Text)
        for r in range(len(STAGES)):
            for c in range(2):
                item = self.table.item(r, c)
                item.setForeground(color)
                font = item.font()
                font.setItalic(self.stale)
                item.setFont(font)


class LatencyPanel(QtWidgets.QWidget):
    """Side-by-side :class:`LatencyTable` s, one per engine, created as engines appear."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, LatencyTable] = {}
        self._layout = QtWidgets.QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._empty = QtWidgets.QLabel("latency: no engine connected (pass --engine RESULTS,CONTROL)")
        self._empty.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self._layout.addWidget(self._empty)

    def table(self, key: str) -> LatencyTable:
        if key not in self.tables:
            self._empty.hide()
            self.tables[key] = LatencyTable(key)
            self._layout.addWidget(self.tables[key])
        return self.tables[key]
