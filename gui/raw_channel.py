"""The raw pane's channel box: the user's pick, kept; until the user picks one, the viewer's default, which follows
what the microscope is doing (no Qt signals of its own; the window reads :meth:`RawChannelBox.currentText`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pyqtgraph.Qt import QtWidgets

__all__ = ["NEWEST", "RawChannelBox"]

NEWEST = "(newest frame)"


class RawChannelBox(QtWidgets.QComboBox):
    """Which channel the raw pane shows. Until the user picks one (then kept, and the pane says why it is empty),
    the viewer's default: the first label-free channel (a steady view, not every channel of the cycle in turn);
    the running live cycle's first channel when the default is not in the cycle; the channel of the frame the
    user just snapped (:meth:`follow_snap`), so a Snap is seen."""

    def __init__(self) -> None:
        super().__init__()
        self.addItem(NEWEST)
        self.setToolTip("channel shown in the raw pane")
        self.by_user = False  # the channel is the user's pick, not the viewer's default
        self._setting = False  # the viewer itself is setting it (not the user)
        self._snapped = False  # the default is NEWEST for a snap of no channel preset (after set_pattern)
        self.currentTextChanged.connect(self._picked)

    @contextlib.contextmanager
    def _viewer_sets(self) -> Iterator[None]:
        self._setting = True
        try:
            yield
        finally:
            self._setting = False

    def _picked(self, _text: str) -> None:
        if not self._setting:
            self.by_user = True

    def _set_default(self, text: str) -> None:
        with self._viewer_sets():
            self.setCurrentText(text)

    def from_describe(self, channels: dict[str, dict[str, Any]]) -> None:
        """The daemon's channels (``describe``); the user's pick is kept."""
        chosen = self.currentText()
        with self._viewer_sets():
            self.clear()
            self.addItems([NEWEST, *channels])
            if chosen in ("", NEWEST):
                label_free = [n for n, c in channels.items() if c.get("modality") == "label-free"]
                chosen = (label_free or [NEWEST])[0]
            self.setCurrentText(chosen)

    def follow_cycle(self, cycle: list[str] | None) -> str:
        """The channel shown, once a default absent from the running live ``cycle`` (e.g. BF while live runs the
        Membrane channel alone, or the newest frame of any channel after a snap) follows its first channel."""
        chan = self.currentText()
        if not self.by_user and cycle and chan not in cycle and (chan not in ("", NEWEST) or self._snapped):
            self._snapped = False
            self._set_default(cycle[0])
        return self.currentText()

    def follow_snap(self, channel: str) -> None:
        """The viewer's snap answered with a frame of ``channel`` ("": the hardware as set, no preset): a default
        shows it (the newest frame when no item names it)."""
        if self.by_user:
            return
        known = bool(channel) and self.findText(channel) >= 0
        self._snapped = not known
        self._set_default(channel if known else NEWEST)
