"""Lossless recording to OME-Zarr (NGFF 0.4, zarr format 2).

One store per acquisition, in the ``bioformats2raw`` multi-series layout that
ome-zarr-py and napari read: series ``0``, ``1``, … (one per stage position and
detector), each a ``(t, c, z, y, x)`` image with ``multiscales`` and ``omero``
metadata (µm scale and stage translation, channel names). Every frame's full
:class:`~scopecast.daemon.frames.FrameHeader` is appended to the series'
``scopecast_frames.jsonl`` as the frame is written, so a crash loses nothing
already acquired; :func:`open_recording` reads both back.

Writes are synchronous in the acquiring thread: recording never drops.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .frames import Frame, FrameHeader

__all__ = ["Recorder", "Recording", "RecordedSeries", "SeriesSpec", "open_recording"]

log = logging.getLogger(__name__)

_JOURNAL = "scopecast_frames.jsonl"
_GROW_T = 16  # time axis grows in steps of this many points; trimmed at close
_COLORS = {"label-free": "FFFFFF", "fluorescence": "00FF00", "super-resolution": "FF00FF"}


@dataclass(frozen=True)
class SeriesSpec:
    """Shape and meaning of one recorded series."""

    name: str  # human name, e.g. "pos003 Camera"
    channels: tuple[str, ...]
    modalities: tuple[str, ...]
    shape_yx: tuple[int, int]
    dtype: str
    pixel_size_um: float
    position_um: tuple[float, float, float]
    n_z: int = 1
    z_step_um: float = 1.0
    detector: str = ""
    position_index: int = 0


@dataclass
class _OpenSeries:
    spec: SeriesSpec
    array: Any
    journal: Any
    t_capacity: int
    t_max: int = -1


class Recorder:
    """Write one acquisition to ``path`` (an ``.ome.zarr`` directory)."""

    def __init__(self, path: str | Path, acquisition_id: str, info: dict[str, Any]) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"recording {self.path} already exists; refusing to overwrite")
        self.acquisition_id = acquisition_id
        self._lock = threading.Lock()
        self._root = zarr.open_group(str(self.path), mode="w-", zarr_format=2)
        self._root.attrs.update({
            "bioformats2raw.layout": 3,
            "scopecast": {"acquisition_id": acquisition_id, **info},
        })
        self._ome = self._root.create_group("OME")
        self._ome.attrs["series"] = []
        self._series: list[_OpenSeries] = []
        self.frames_written = 0
        self.closed = False

    # ------------------------------------------------------------------ series
    def add_series(self, spec: SeriesSpec) -> int:
        """Create a series; returns its index (its group name is ``str(index)``)."""
        with self._lock:
            idx = len(self._series)
            g = self._root.create_group(str(idx))
            ny, nx = spec.shape_yx
            arr = g.create_array(
                "0", shape=(_GROW_T, len(spec.channels), spec.n_z, ny, nx),
                chunks=(1, 1, 1, ny, nx), dtype=spec.dtype, fill_value=0,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            px, (x, y, z) = spec.pixel_size_um, spec.position_um
            g.attrs.update({
                "multiscales": [{
                    "version": "0.4",
                    "name": spec.name,
                    "axes": [
                        {"name": "t", "type": "time", "unit": "second"},
                        {"name": "c", "type": "channel"},
                        {"name": "z", "type": "space", "unit": "micrometer"},
                        {"name": "y", "type": "space", "unit": "micrometer"},
                        {"name": "x", "type": "space", "unit": "micrometer"},
                    ],
                    "datasets": [{
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [1.0, 1.0, spec.z_step_um, px, px]},
                            {"type": "translation", "translation": [
                                0.0, 0.0, z, y - ny / 2 * px, x - nx / 2 * px]},
                        ],
                    }],
                }],
                "omero": {
                    "name": spec.name,
                    "channels": [
                        {"label": c, "color": _COLORS.get(m, "FFFFFF"), "active": True,
                         "window": {"start": 0, "end": 65535, "min": 0, "max": 65535}}
                        for c, m in zip(spec.channels, spec.modalities, strict=True)
                    ],
                    "rdefs": {"model": "color"},
                },
                "scopecast": {
                    "channels": list(spec.channels), "modalities": list(spec.modalities),
                    "detector": spec.detector, "position_index": spec.position_index,
                    "position_um": list(spec.position_um), "pixel_size_um": px,
                },
            })
            journal = open(self.path / str(idx) / _JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
            self._series.append(_OpenSeries(spec, arr, journal, _GROW_T))
            self._ome.attrs["series"] = [str(i) for i in range(len(self._series))]
            return idx

    # ------------------------------------------------------------------ frames
    def write(self, frame: Frame, series: int, t: int, c: int, z: int = 0) -> None:
        """Write ``frame`` at ``(t, c, z)`` of ``series`` and journal its header."""
        with self._lock:
            if self.closed:
                raise RuntimeError(f"recording {self.path} is closed")
            s = self._series[series]
            ny, nx = s.spec.shape_yx
            if frame.data.shape != (ny, nx):
                raise ValueError(
                    f"frame shape {frame.data.shape} does not match series {series} "
                    f"shape {(ny, nx)}"
                )
            if t >= s.t_capacity:
                s.t_capacity = (t // _GROW_T + 1) * _GROW_T
                s.array.resize((s.t_capacity, *s.array.shape[1:]))
            s.array[t, c, z] = frame.data
            s.t_max = max(s.t_max, t)
            frame.header.series = str(series)
            frame.header.index = {"t": t, "c": c, "z": z}
            s.journal.write(json.dumps(frame.header.to_dict(), separators=(",", ":")) + "\n")
            s.journal.flush()
            self.frames_written += 1

    def close(self, error: str | None = None) -> None:
        """Trim the time axes to what was written and close the journals.

        ``error`` (the acquisition failed, e.g. the disk filled up) marks the
        recording ``complete: false`` with that reason. Closing never raises:
        what could not be finalised is logged, and the journal keeps every
        frame header that was written.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for s in self._series:
                try:
                    s.array.resize((max(s.t_max + 1, 1), *s.array.shape[1:]))
                except Exception as e:  # noqa: BLE001 - keep closing the others
                    error = error or f"could not trim series: {type(e).__name__}: {e}"
                try:
                    s.journal.close()
                except OSError as e:
                    error = error or f"could not close a journal: {e}"
            info = {**self._root.attrs["scopecast"], "frames_written": self.frames_written,
                    "complete": error is None}
            if error is not None:
                info["error"] = error
            try:
                self._root.attrs["scopecast"] = info
            except Exception:  # noqa: BLE001 - e.g. a full disk
                log.exception("recording %s: could not write its final metadata", self.path)


# ---------------------------------------------------------------------- reading
@dataclass
class RecordedSeries:
    name: str
    path: Path
    data: Any  # zarr array (t, c, z, y, x)
    attrs: dict[str, Any]
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


def open_recording(path: str | Path) -> Recording:
    """Read a recording written by :class:`Recorder` (also an interrupted one)."""
    path = Path(path)
    root = zarr.open_group(str(path), mode="r")
    # a recording killed in its first instant may lack the OME group: it holds no series
    names = list(root["OME"].attrs.get("series", [])) if "OME" in root else []
    series = []
    for name in names:
        g = root[name]
        frames = []
        journal = path / name / _JOURNAL
        if journal.exists():
            lines = journal.read_text(encoding="utf-8").splitlines()
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    frames.append(FrameHeader.from_dict(json.loads(line)))
                except json.JSONDecodeError:
                    if i != len(lines) - 1:  # only the last line can be cut short by a crash
                        raise
                    log.warning("%s: last journal line is incomplete (interrupted recording)", journal)
        ms = g.attrs["multiscales"][0]
        series.append(RecordedSeries(ms.get("name", name), path / name, g["0"], dict(g.attrs), frames))
    return Recording(path, dict(root.attrs), series)
