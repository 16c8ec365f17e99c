"""Finalising a recording whose recorder never closed (the process was killed, the machine lost power).

An interrupted recording already keeps every durable frame (the journal names
exactly those, see :mod:`.writer`), but its metadata is the one written when
it began: the time axis is as long as the recorder had grown it (up to 15
extra time points of zeros), ``OME/METADATA.ome.xml`` says ``SizeT="1"`` with
no planes (contradicting the array, for every reader that goes by the OME-XML), the
time scale is 1 s and the display windows span the whole dtype range.
:func:`repair_recording` rebuilds what :meth:`Recorder.close` would have
written, from the journal and the data: the time axis trimmed to the last
journaled time point (chunks past it deleted), the measured time step, the
display windows, every plane in the OME-XML, and the root marked
``complete: false`` with ``error`` saying it was interrupted and ``repaired``
when. A journal's last line cut short by the crash is dropped. Nothing durable
is touched, and repairing twice changes nothing.

A recording still open in any process (its ``.scopecast-writing`` lock is
held) is refused, and so is a series whose array's metadata does not hold the
frames its journal lists (planes of another shape, or larger than any camera
frame): repair reads planes of the size the metadata declares, and a corrupt
declaration must not take the machine's memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import zarr

from .labels import write_trust_labels
from .ngff import ChannelWindow, SeriesMeta, image_attrs, root_attrs, series_list_attrs
from .reader import MAX_PLANE_PIXELS, ome_keys, read_journal
from .writer import JOURNAL, WRITING_LOCK, SeriesSpec, being_written, write_ome_xml

__all__ = ["RecordingInUse", "RepairReport", "interrupted_recordings", "repair_recording"]

log = logging.getLogger(__name__)

#: Display windows of a repaired series come from at most this many planes per channel, spread over the
#: recording (reading back hours of frames to set a display range is not worth the minutes).
WINDOW_SAMPLE_PLANES = 32


class RecordingInUse(RuntimeError):
    """The recording is still open in a running recorder (its lock is held)."""


@dataclass(frozen=True)
class RepairReport:
    path: Path
    repaired: bool  # False: it was already closed (complete or not), nothing was changed
    series: int = 0
    frames: int = 0  # durable frames, from the journals
    time_points: int = 0  # summed over series

    def __str__(self) -> str:
        if not self.repaired:
            return f"{self.path}: already closed; nothing to do"
        return (f"{self.path}: finalised from its journal: {self.frames} frames, {self.time_points} time points "
                f"in {self.series} series (it was interrupted: its recorder never closed)")


def _is_recording(root: Any) -> bool:
    return "scopecast" in dict(root.attrs) and "bioformats2raw.layout" in ome_keys(dict(root.attrs))


def interrupted_recordings(data_dir: str | Path) -> list[Path]:
    """The recordings directly in ``data_dir`` whose recorder died before closing (none still open)."""
    found = []
    for path in sorted(Path(data_dir).glob("*.zarr")):
        try:
            root = zarr.open_group(str(path), mode="r")
            closed = "complete" in dict(root.attrs).get("scopecast", {})
        except Exception:  # noqa: BLE001 - not a zarr group: not ours to judge
            continue
        if _is_recording(root) and not closed and not being_written(path):
            found.append(path)
    return found


def _spec(attrs: dict[str, Any], shape: tuple[int, ...], dtype: str) -> SeriesSpec:
    """The series' spec, from the attributes its recorder wrote when it created it."""
    ms, sc = attrs["multiscales"][0], attrs["scopecast"]
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    return SeriesSpec(name=ms.get("name", ""), channels=tuple(sc["channels"]), modalities=tuple(sc["modalities"]),
                      shape_yx=(int(shape[3]), int(shape[4])), dtype=dtype, pixel_size_um=float(sc["pixel_size_um"]),
                      position_um=tuple(sc["position_um"]), n_z=int(shape[2]), z_step_um=float(scale[2]),
                      detector=sc.get("detector", ""), position_index=int(sc.get("position_index", 0)))


def _check_planes(series_path: Path, spec: SeriesSpec, headers: list[dict[str, Any]]) -> None:
    """``ValueError`` naming the series unless its array's planes are the shape of the frames its journal lists
    and at most :data:`MAX_PLANE_PIXELS` (checked before anything is read or changed in the series)."""
    ny, nx = spec.shape_yx
    frames = sorted({tuple(h.get("shape") or ()) for h in headers} - {(ny, nx)})
    if frames or ny * nx > MAX_PLANE_PIXELS:
        why = (f"its journal's frames are {' and '.join('x'.join(map(str, s)) for s in frames)[:200]}" if frames
               else f"more than any camera frame ({MAX_PLANE_PIXELS} pixels)")
        raise ValueError(f"{series_path}: its array declares {ny}x{nx}-pixel planes, but {why}: its metadata is "
                         "corrupt; the series was not repaired")


def _remove_empty_dirs(top: Path) -> None:
    for folder, _dirs, _files in os.walk(top, topdown=False):  # children first: their parents empty after them
        if Path(folder) != top and not os.listdir(folder):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _rewrite_journal(path: Path, headers: list[dict[str, Any]]) -> None:
    """Drop a last line the crash cut short (readers warn about it on every open)."""
    text = "".join(json.dumps(h, separators=(",", ":")) + "\n" for h in headers)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _repair_series(series_path: Path, version: str) -> tuple[Any, SeriesSpec, SeriesMeta, int] | None:
    """Finalise one series' data and journal; returns its group, spec, metadata and frame count, for its
    attributes to be written once the recording's time origin is known; None for one killed before its
    recorder wrote its attributes (it holds no frame)."""
    group = zarr.open_group(str(series_path), mode="r+")
    attrs = ome_keys(dict(group.attrs))
    if "multiscales" not in attrs or "scopecast" not in attrs:
        log.warning("%s: a series without its attributes (the recorder died creating it); left out", series_path)
        return None
    array = ts.open({"driver": "zarr" if version == "0.4" else "zarr3",
                     "kvstore": {"driver": "file", "path": str(series_path / "0")}}).result()
    spec = _spec(attrs, tuple(array.shape), np.dtype(array.dtype.numpy_dtype).name)
    headers = [h.to_dict() for h in read_journal(series_path / JOURNAL)]
    _check_planes(series_path, spec, headers)
    meta = SeriesMeta(windows=[ChannelWindow(np.dtype(spec.dtype)) for _ in spec.channels])
    for h in headers:
        meta.add_plane(h["index"]["t"], h["index"]["c"], h["index"].get("z", 0), h)
    t_count = max((p.t for p in meta.planes), default=0) + 1
    meta.t_count = t_count
    # shrink, deleting the chunks past the last durable time point (not journaled: not durable)
    array.resize(exclusive_max=[t_count, None, None, None, None], shrink_only=True).result()
    _remove_empty_dirs(series_path / "0")  # the deleted chunks' folders
    for c in range(len(spec.channels)):
        planes = [p for p in meta.planes if p.c == c]
        for i in np.unique(np.linspace(0, len(planes) - 1, min(len(planes), WINDOW_SAMPLE_PLANES)).astype(int)):
            meta.windows[c].add(array[planes[i].t, c, planes[i].z].read().result())
    _rewrite_journal(series_path / JOURNAL, headers)
    return group, spec, meta, len(headers)


def repair_recording(path: str | Path) -> RepairReport:
    """Finalise the interrupted recording at ``path`` (see the module docstring); a closed one is left as is.

    Raises :class:`RecordingInUse` while a recorder has it open, ``ValueError`` when ``path`` is not a
    scopecast recording."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such recording")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as e:  # noqa: BLE001 - zarr raises several kinds
        raise ValueError(f"{path} is not a zarr store: {e}") from None
    if not _is_recording(root):
        raise ValueError(f"{path} is not a scopecast recording (no 'scopecast' and bioformats2raw attributes)")
    info = dict(dict(root.attrs)["scopecast"])
    if "complete" in info:
        return RepairReport(path, repaired=False)
    if being_written(path):
        raise RecordingInUse(f"{path} is still being recorded (a recorder holds {WRITING_LOCK})")
    version = info.get("ngff") or ("0.5" if isinstance(dict(root.attrs).get("ome"), dict) else "0.4")
    # every series group, also one created just before the kill and not yet listed in OME
    candidates = sorted((p.name for p in path.iterdir() if p.name.isdigit() and (p / "0").is_dir()), key=int)
    names, groups, series, frames = [], [], [], 0
    for name in candidates:
        if (repaired := _repair_series(path / name, version)) is not None:
            group, spec, meta, n = repaired
            names.append(name)
            groups.append(group)
            series.append((spec, meta))
            frames += n
    t_ns = [p.t_ns for _, m in series for p in m.planes if p.t_ns] + ([info["t0_ns"]] if info.get("t0_ns") else [])
    for name, group, (spec, meta) in zip(names, groups, series, strict=True):
        group.attrs.update(image_attrs(version, spec, meta, min(t_ns) if t_ns else None))
        write_trust_labels(path / name, version, spec, meta, min(t_ns) if t_ns else None)
    root = zarr.open_group(str(path), mode="r+")
    if "OME" not in root:
        root.create_group("OME")
    root["OME"].attrs.update(series_list_attrs(version, names))
    write_ome_xml(path, series, min(t_ns) if t_ns else None)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    info.update(frames_written=frames, complete=False, repaired=when,
                error="interrupted: the recorder never closed (the process died); "
                      f"finalised from the journal by 'scopecast repair' at {when}")
    root.attrs.update(root_attrs(version, info))
    (path / WRITING_LOCK).unlink(missing_ok=True)
    return RepairReport(path, True, len(series), frames, sum(m.t_count for _, m in series))
