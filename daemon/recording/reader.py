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

__all__ = ["MAX_PLANE_PIXELS", "RecordedSeries", "Recording", "open_recording"]

log = logging.getLogger(__name__)

#: The most pixels a recorded plane may have (a 16384² frame, larger than any camera's).
MAX_PLANE_PIXELS = 1 << 28


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

    def image(self, channel: str | int, t: int = 0, z: int = 0) -> np.ndarray:
        """The frame of ``channel`` (a name, or a column index) at time point ``t`` and plane ``z``;
        ``ValueError`` (:func:`check_planes`), before anything is read, when the array's metadata declares planes
        no camera takes, and for a name several columns share (a scan taking one preset twice, e.g. BF at 1 and
        8 ms, records each in a column of its own): :meth:`plane` reads the column a frame's header names."""
        check_planes(self.path, tuple(self.data.shape), self.data.dtype)
        return np.asarray(self.data[t, self.column(channel), z])

    def column(self, channel: str | int) -> int:
        """The column (``c`` index) of ``channel``; ``ValueError`` for a name no column or several have."""
        if isinstance(channel, int):
            return channel
        cols = [c for c, name in enumerate(self.channels) if name == channel]
        if len(cols) != 1:
            raise ValueError(f"{self.path}: channel {channel!r} " + (
                f"is in columns {cols} (a preset taken more than once): name the column" if cols
                else f"is not among {self.channels}"))
        return cols[0]

    def plane(self, header: FrameHeader) -> np.ndarray:
        """The pixels of the frame ``header`` (a journal line of this series) describes: its ``index``'s time
        point, column and plane, so two frames of one preset (two exposures) each read their own."""
        index = header.index or {}
        c = int(index["c"]) if "c" in index else self.column(header.channel)
        return self.image(c, int(index.get("t", 0)), int(index.get("z", 0)))


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


def check_planes(series_path: Path, shape: tuple[int, ...], dtype: Any) -> None:
    """``ValueError`` naming the series unless its array ``shape`` is ``(t, c, z, y, x)`` with planes of at most
    :data:`MAX_PLANE_PIXELS` pixels of a real number of at most 8 bytes (``dtype``): from the metadata alone,
    before a plane is read (a crafted or corrupt array that declares enormous planes or pixels would otherwise
    be allocated, gigabytes per plane, until memory runs out)."""
    dt = np.dtype(dtype)
    if dt.kind not in "biuf" or dt.itemsize > 8:
        raise ValueError(f"{series_path}: its array's pixels are {dt} ({dt.itemsize} bytes each); a recording's "
                         "are integers or floats of at most 8 bytes: its metadata is corrupt; nothing was read")
    if len(shape) != 5:
        raise ValueError(f"{series_path}: its array has shape {shape}; a recording's series is (t, c, z, y, x): "
                         "not a scopecast recording, or its metadata is corrupt; nothing was read")
    ny, nx = int(shape[3]), int(shape[4])
    if ny * nx > MAX_PLANE_PIXELS:
        raise ValueError(f"{series_path}: its array declares {ny}x{nx}-pixel planes ({ny * nx} pixels), more than "
                         f"any camera frame (at most {MAX_PLANE_PIXELS} pixels, 16384x16384): its metadata is "
                         "corrupt; nothing was read")


def open_recording(path: str | Path) -> Recording:
    """Read a recording written by :class:`~scopecast.daemon.recording.Recorder` (also an interrupted one);
    ``ValueError`` naming the store for an OME-Zarr that is not one (it has no frame journals to read)."""
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
        what = "does not exist" if not path.exists() else "is not an OME-Zarr store (a directory with zarr groups)"
        raise ValueError(f"{path} {what}: offline inference and replay read the OME-Zarr recordings scopecast "
                         f"writes ({type(e).__name__})") from e
    if not isinstance(dict(root.attrs).get("scopecast"), dict):
        raise ValueError(f"{path} is not a scopecast recording (its attributes have no 'scopecast' section): offline "
                         "inference and replay read the OME-Zarr recordings scopecast writes, with their frame "
                         "journals")
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
