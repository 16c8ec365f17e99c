"""Reading recordings back (complete or interrupted), NGFF 0.4 or 0.5."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..frames import FrameHeader
from .writer import JOURNAL

__all__ = ["RecordedSeries", "Recording", "open_recording"]

log = logging.getLogger(__name__)


def ome_keys(attrs: dict[str, Any]) -> dict[str, Any]:
    """The OME keys of a group's attributes (NGFF 0.5 nests them under ``"ome"``)."""
    return {**attrs, **attrs["ome"]} if isinstance(attrs.get("ome"), dict) else attrs


@dataclass
class RecordedSeries:
    name: str
    path: Path
    data: Any  # zarr array (t, c, z, y, x)
    attrs: dict[str, Any]  # the group's attributes; NGFF 0.5's "ome" keys also at the top
    frames: list[FrameHeader] = field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return list(self.attrs["scopecast"]["channels"])

    def image(self, channel: str, t: int = 0, z: int = 0) -> np.ndarray:
        """The frame of ``channel`` at time point ``t`` and plane ``z``."""
        return np.asarray(self.data[t, self.channels.index(channel), z])


@dataclass
class Recording:
    path: Path
    attrs: dict[str, Any]
    series: list[RecordedSeries]

    @property
    def frames(self) -> list[FrameHeader]:
        return [f for s in self.series for f in s.frames]


def read_journal(path: Path) -> list[FrameHeader]:
    """The frame headers a series' journal lists (a last line cut short by a crash is left out, with a warning)."""
    frames: list[FrameHeader] = []
    if not path.exists():
        return frames
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            frames.append(FrameHeader.from_dict(json.loads(line)))
        except json.JSONDecodeError:
            if i != len(lines) - 1:  # only the last line can be cut short by a crash
                raise
            log.warning("%s: last journal line is incomplete (interrupted recording)", path)
    return frames


def open_recording(path: str | Path) -> Recording:
    """Read a recording written by :class:`~scopecast.daemon.recording.Recorder` (also an interrupted one)."""
    path = Path(path)
    root = zarr.open_group(str(path), mode="r")
    # a recording killed in its first instant may lack the OME group: it holds no series
    names = list(ome_keys(dict(root["OME"].attrs)).get("series", [])) if "OME" in root else []
    series = []
    for name in names:
        g = root[name]
        attrs = ome_keys(dict(g.attrs))
        ms = attrs["multiscales"][0]
        series.append(RecordedSeries(ms.get("name", name), path / name, g["0"], attrs,
                                     read_journal(path / name / JOURNAL)))
    return Recording(path, ome_keys(dict(root.attrs)), series)
