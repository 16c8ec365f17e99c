"""The recorder: one acquisition to one OME-Zarr store, written off the acquiring thread.

Contract:

- :meth:`Recorder.write` validates the frame, stamps its header's ``series``
  and ``index`` and queues it; it returns at once unless the frames accepted
  but not yet durable exceed ``queue_bytes`` (default 512 MiB), in which case
  it waits (back-pressure): recording never drops a frame. It waits while the
  writer makes frames durable; storage that makes none for :data:`_STALL_S`
  (a write that never returns, e.g. a hung network share) fails the write
  with :class:`RecordingError` saying the storage stalled, logged, so the
  acquisition ends instead of hanging; what is durable is kept.
  Creating the recorder, :meth:`add_series` and :meth:`close` are bounded the
  same way: storage that does not answer within :data:`_STALL_S` makes the
  constructor and ``add_series`` raise :class:`RecordingError` (storage
  stalled), and ``close`` return with the
  reason, leaving the metadata unfinalised (the journal lists what is
  durable; :func:`~.repair.repair_recording` finalises it once the storage
  is back).
- A writer thread hands each frame to tensorstore (chunk compression and file
  writes run on tensorstore's own threads, several frames in flight) and
  appends the frame's header to its series' ``scopecast_frames.jsonl`` only
  once tensorstore has committed the chunk (written and, with tensorstore's
  default ``file_io_sync``, fsync'ed). The journal therefore lists exactly the
  planes that are durable; a crash loses at most the queued frames, never
  one the journal names. ``on_durable(n)`` is called as frames become durable.
- A write failure (a full disk) is raised by the next :meth:`write` (and
  :meth:`flush`) as :class:`RecordingError` naming the recording and the OS
  error; :meth:`close` never raises, marks the recording ``complete: false``
  with the reason, and keeps what is durable.
- At close the time axes are trimmed to what was written, the time scale is
  set to the measured mean interval and the time translation to when the
  series began, the omero display windows to the data's range, and
  ``OME/METADATA.ome.xml`` lists every plane with its time, exposure and stage
  position (it is written as soon as a series exists, so an interrupted
  recording still opens whole); a series of results gets its ``trust`` label
  image (:mod:`.labels`) and its planes their trust annotations.
- From creation to close the recorder holds an advisory lock on
  ``.scopecast-writing`` in the store (:func:`being_written`); a recording
  left without ``complete`` and without a held lock was interrupted, and
  :func:`~.repair.repair_recording` finalises it.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import tensorstore as ts
import zarr

from ..frames import Frame
from .labels import write_trust_labels
from .ngff import ChannelWindow, NgffVersion, SeriesMeta, image_attrs, ome_xml, root_attrs, series_list_attrs

__all__ = ["JOURNAL", "WRITING_LOCK", "Recorder", "RecordingError", "SeriesSpec", "being_written", "bounded",
           "stall_s", "write_ome_xml"]

log = logging.getLogger(__name__)

JOURNAL = "scopecast_frames.jsonl"
#: Held (flock) by the recorder from creation to close; left behind, unlocked, by a recorder that died.
WRITING_LOCK = ".scopecast-writing"
_GROW_T = 16  # time axis grows in steps of this many points; trimmed at close
_MAX_IN_FLIGHT = 16  # frames handed to tensorstore and not yet committed
#: While commits are in flight the writer also polls their futures this often (s), so that it never
#: depends on a done-callback's wake-up alone.
_POLL_S = 0.05
#: close() gives up on a writer that commits nothing for this long (s) and marks the recording incomplete.
_STALL_S = 20.0
#: Once the storage has stalled, close waits this long (s) for the final metadata (a few small files), so that the
#: job ends well within the 30 s a ``stop`` waits for it.
_FINALISE_AFTER_STALL_S = 5.0
DEFAULT_QUEUE_BYTES = 512 << 20
_T = TypeVar("_T")


class RecordingError(RuntimeError):
    """A frame could not be made durable (the writer stopped; later frames are refused)."""


def stall_s() -> float:
    """How long (s) storage may take to answer before it counts as stalled (:data:`_STALL_S`, read now)."""
    return _STALL_S


def bounded(call: Callable[[], _T], timeout: float, what: str, name: str,
            on_late: Callable[[_T], None] | None = None) -> _T:
    """``call()``'s result (or exception), run on a daemon thread; :class:`RecordingError` saying the storage
    stalled (``what`` did not finish in ``timeout`` s, ``name`` the recording or directory) when it has not
    returned by then. A storage call that hangs cannot be cancelled: it is left behind, and whoever called
    goes on; should it return after all, ``on_late`` gets its result (to release what it holds)."""
    box: list[tuple[bool, Any]] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            result = (True, call())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            result = (False, e)
        with lock:
            box.append(result)
            late = len(box) > 1  # the caller gave up first (its marker)
        if late and result[0] and on_late is not None:
            on_late(result[1])

    t = threading.Thread(target=run, name=f"storage-io-{name}", daemon=True)
    t.start()
    t.join(timeout)
    with lock:
        gave_up = not box
        if gave_up:
            box.append((False, None))  # the marker: a result that comes later goes to on_late
    if gave_up:
        msg = f"{name}: storage stalled: {what} did not finish in {timeout:g} s"
        log.error("%s", msg)
        raise RecordingError(msg)
    ok, value = box[0]
    if not ok:
        raise value
    return value


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
class _Series:
    spec: SeriesSpec
    group: Any  # zarr group (attributes)
    array: Any  # tensorstore handle; replaced on resize
    journal: Any
    meta: SeriesMeta
    t_capacity: int = _GROW_T
    t_max: int = -1


@dataclass
class _Item:
    series: int
    t: int
    c: int
    z: int
    data: np.ndarray
    header: dict[str, Any]
    future: Any = None
    nbytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = self.data.nbytes


def _array_spec(path: Path, version: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> dict:
    kv = {"driver": "file", "path": str(path)}
    if version == "0.4":
        return {"driver": "zarr", "kvstore": kv, "metadata": {
            "shape": list(shape), "chunks": list(chunks), "dtype": np.dtype(dtype).str, "fill_value": 0,
            "dimension_separator": "/", "order": "C",
            # bit shuffle: ~20 % less CPU per 2048² frame than byte shuffle and a better ratio (1.47 vs 1.40)
            "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2},
        }}
    return {"driver": "zarr3", "kvstore": kv, "metadata": {
        "shape": list(shape), "data_type": np.dtype(dtype).name, "fill_value": 0,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "dimension_names": ["t", "c", "z", "y", "x"],
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                   {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "bitshuffle",
                                                       "typesize": np.dtype(dtype).itemsize, "blocksize": 0}}],
    }}


class Recorder:
    """Write one acquisition to ``path`` (an ``.ome.zarr`` directory).

    ``ngff``: ``"0.4"`` (zarr format 2, the default: read by every reader
    tried) or ``"0.5"`` (zarr format 3). ``t0_ns``: the time origin of its
    ``DeltaT`` and time translations when the frames derive from another
    recording (offline results: the source's first exposure; kept as the
    root's ``scopecast.t0_ns``); default the first exposure written.
    """

    def __init__(self, path: str | Path, acquisition_id: str, info: dict[str, Any], *,
                 ngff: NgffVersion = "0.4", queue_bytes: int | None = None,
                 on_durable: Callable[[int], None] | None = None, t0_ns: int | None = None) -> None:
        if ngff not in ("0.4", "0.5"):
            raise ValueError(f"ngff must be '0.4' or '0.5', got {ngff!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"recording {self.path} already exists; refusing to overwrite")
        self.acquisition_id = acquisition_id
        self.ngff = ngff
        self._info = {"acquisition_id": acquisition_id, "ngff": ngff, **info}
        if t0_ns:
            self._info["t0_ns"] = int(t0_ns)
        # bounded: on storage that hangs (a hung network share) starting a recording fails naming it, instead of
        # hanging whoever starts it (a job that could then never be stopped, a control request never answered)
        self._root, self._writing_lock, self._ome = bounded(
            self._create_store, _STALL_S, "creating the recording", f"recording {self.path}",
            on_late=lambda created: created[1].close())  # storage back after all: the writing lock is released
        self._series: list[_Series] = []
        self._t0_ns: int | None = t0_ns or None
        self._queue_bytes = max(int(DEFAULT_QUEUE_BYTES if queue_bytes is None else queue_bytes), 1)
        self._on_durable = on_durable
        # _cv guards the byte accounting (back-pressure); it is never taken by tensorstore's
        # threads: their completion callbacks only post to the writer's inbox (a blocked
        # callback would starve tensorstore's pool, and an open() waiting on it).
        self._cv = threading.Condition()
        self._series_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()  # None: a write completed / close
        self._pending_bytes = 0  # accepted, not yet durable
        self._pending_frames = 0
        self._error: BaseException | None = None
        self._xml_series = 0  # series already in OME/METADATA.ome.xml
        self.frames_accepted = 0
        self.bytes_accepted = 0
        self.frames_written = 0  # durable and journaled
        self.closed = False
        #: Why the recording is incomplete (set by :meth:`close`; None: every accepted frame is durable).
        self.error: str | None = None
        self._given_up = False  # close left a stalled writer behind (_join_writer)
        self._stalled = False  # a write or a storage call already waited for the storage in vain
        self._thread = threading.Thread(target=self._run, name=f"recorder-{acquisition_id}", daemon=True)
        self._thread.start()

    def _create_store(self) -> tuple[Any, IO[str], Any]:
        """Create the store, take its writing lock and write its first metadata: ``(root, lock, OME group)``."""
        root = zarr.open_group(str(self.path), mode="w-", zarr_format=2 if self.ngff == "0.4" else 3)
        lock = _hold_writing_lock(self.path)
        root.attrs.update(root_attrs(self.ngff, self._info))
        ome = root.create_group("OME")
        ome.attrs.update(series_list_attrs(self.ngff, []))
        return root, lock, ome

    # ------------------------------------------------------------------ series
    def add_series(self, spec: SeriesSpec) -> int:
        """Create a series; returns its index (its group name is ``str(index)``). Storage that does not
        create it within :data:`_STALL_S` raises :class:`RecordingError` (storage stalled)."""
        self._raise_if_failed()
        return self._bounded(lambda: self._create_series(spec), _STALL_S, "creating a series")

    def _create_series(self, spec: SeriesSpec) -> int:
        with self._series_lock:  # taken here, not by the caller: a hung creation holds it, so a next one waits
            idx = len(self._series)
            g = self._root.create_group(str(idx))
            ny, nx = spec.shape_yx
            arr = ts.open(_array_spec(self.path / str(idx) / "0", self.ngff,
                                      (_GROW_T, len(spec.channels), spec.n_z, ny, nx), (1, 1, 1, ny, nx), spec.dtype),
                          create=True).result()
            meta = SeriesMeta(windows=[ChannelWindow(np.dtype(spec.dtype)) for _ in spec.channels])
            g.attrs.update(image_attrs(self.ngff, spec, meta))
            journal = open(self.path / str(idx) / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
            self._series.append(_Series(spec, g, arr, journal, meta))
            self._ome.attrs.update(series_list_attrs(self.ngff, [str(i) for i in range(len(self._series))]))
            return idx  # the writer adds it to OME/METADATA.ome.xml before journaling its first frame

    # ------------------------------------------------------------------ frames
    def write(self, frame: Frame, series: int, t: int, c: int, z: int = 0) -> None:
        """Queue ``frame`` for ``(t, c, z)`` of ``series``; waits only while the queue is full."""
        data = frame.data
        with self._cv:
            if self.closed:
                raise RuntimeError(f"recording {self.path} is closed")
            self._raise_if_failed()
            s = self._series[series]
            ny, nx = s.spec.shape_yx
            if data.shape != (ny, nx):
                raise ValueError(f"frame shape {data.shape} does not match series {series} shape {(ny, nx)}")
            if data.dtype != np.dtype(s.spec.dtype):
                raise ValueError(f"frame dtype {data.dtype} does not match series {series} dtype {s.spec.dtype}")
            if not (0 <= c < len(s.spec.channels) and 0 <= z < s.spec.n_z and t >= 0):
                raise ValueError(f"index (t={t}, c={c}, z={z}) is outside series {series} "
                                 f"({len(s.spec.channels)} channels, {s.spec.n_z} planes)")
            frame.header.series = str(series)
            frame.header.index = {"t": t, "c": c, "z": z}
            item = _Item(series, t, c, z, data, frame.header.to_dict())
            while self._pending_bytes and self._pending_bytes + item.nbytes > self._queue_bytes and not self._error:
                self._wait_for_room()  # back-pressure: the writer is behind
            if self.closed:  # closed by another thread meanwhile
                raise RuntimeError(f"recording {self.path} is closed")
            self._raise_if_failed()
            self._pending_bytes += item.nbytes
            self._pending_frames += 1
            self.frames_accepted += 1
            self.bytes_accepted += item.nbytes
            self._inbox.put(item)  # under the lock: always before close's end marker

    def _wait_for_room(self) -> None:
        """Back-pressure (``_cv`` held): wait until the writer makes a frame durable (or fails). Raises
        :class:`RecordingError` when it made none for :data:`_STALL_S`: storage that hangs must not hang the
        acquiring thread, which could then never be stopped."""
        durable = self.frames_written
        if self._cv.wait_for(lambda: self.frames_written != durable or self._error is not None, _STALL_S):
            return
        msg = (f"recording {self.path}: storage stalled: no frame became durable for {_STALL_S:g} s with "
               f"{self._pending_frames} frames ({self._pending_bytes / 2**20:.0f} MiB) queued; "
               f"{self.frames_written} frames are durable")
        log.error("%s", msg)
        self._stalled = True
        raise RecordingError(msg)

    def _bounded(self, call: Callable[[], _T], timeout: float, what: str) -> _T:
        """``call()``'s result (or exception), run on a daemon thread; :class:`RecordingError` (storage stalled)
        when it has not returned in ``timeout`` s. A storage call that hangs cannot be cancelled: it is left
        behind, and whoever called goes on."""
        try:
            return bounded(call, timeout, what, f"recording {self.path}")
        except RecordingError:
            self._stalled = True
            raise

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted frame is durable (or the writer failed: raises)."""
        with self._cv:
            done = self._cv.wait_for(lambda: self._error or not self._pending_frames, timeout)
            self._raise_if_failed()
            return bool(done)

    @property
    def pending(self) -> int:
        """Frames accepted and not yet durable."""
        with self._cv:
            return self._pending_frames

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            e = self._error
            raise RecordingError(f"recording {self.path} failed: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ writer
    def _run(self) -> None:
        """Submit queued frames (at most ``_MAX_IN_FLIGHT`` uncommitted) and journal the committed
        ones in order, until close has been asked and nothing is left."""
        waiting: collections.deque[_Item] = collections.deque()
        in_flight: collections.deque[_Item] = collections.deque()
        closing = False
        try:
            while True:
                msgs = []
                try:  # a commit's done-callback wakes the writer; while commits are in flight it also polls
                    msgs.append(self._inbox.get(timeout=_POLL_S if in_flight else None))
                except queue.Empty:
                    pass
                while True:  # drain what else arrived
                    try:
                        msgs.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                for msg in msgs:
                    if msg is None:
                        closing = closing or self.closed
                    else:
                        waiting.append(msg)
                done = []
                while in_flight and in_flight[0].future.done():
                    done.append(in_flight.popleft())
                # submit after retiring: frames left waiting then always have a full in_flight beside them,
                # so the get above polls. Submitting first let a full in_flight retire completely (its
                # callbacks' wake-ups already drained) with frames still waiting, and the untimed get blocked
                # for ever: the recording stall seen about once in 50 recordings of 160 frames.
                while waiting and len(in_flight) < _MAX_IN_FLIGHT:
                    item = waiting.popleft()
                    self._submit(item)
                    in_flight.append(item)
                if self._given_up:  # close closed without these frames; the writer ends, whatever the storage does
                    self._log_given_up(len(done), len(in_flight) + len(waiting))
                    return
                if done:
                    self._journal(done)
                if closing and not waiting and not in_flight:
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the next write and by close
            log.exception("recording %s: writer failed", self.path)
            with self._cv:
                self._error = e
                self._pending_bytes = self._pending_frames = 0
                self._cv.notify_all()

    def _log_given_up(self, answered: int, unanswered: int) -> None:
        """Say what became of the frames a writer held when close gave up on it: ``answered`` writes the
        storage completed since (it came back), ``unanswered`` ones it still has not."""
        if answered:
            log.warning("recording %s: the storage answered %d writes after close gave up on the writer; those and "
                        "its %d other frames stay out of the closed recording, which says they were not committed",
                        self.path, answered, unanswered)
        else:
            log.warning("recording %s: the writer stops: close gave up on it and the storage has still not "
                        "committed its %d frames, which stay out of the closed recording", self.path, unanswered)

    def _submit(self, item: _Item) -> None:
        s = self._series[item.series]
        if item.t >= s.t_capacity:
            s.t_capacity = (item.t // _GROW_T + 1) * _GROW_T
            s.array = s.array.resize(exclusive_max=[s.t_capacity, None, None, None, None], expand_only=True).result()
        item.future = s.array[item.t, item.c, item.z].write(item.data).commit
        item.future.add_done_callback(lambda _f: self._inbox.put(None))  # never blocks
        # a commit may be deferred until forced; only result() forces it by itself, and a callback alone
        # never does (tensorstore Future.force). Unforced, the last commits of a short recording could wait
        # forever and close() with them: seen as a trigger's save_window that never finished.
        item.future.force()
        s.meta.windows[item.c].add(item.data)

    def _journal(self, done: list[_Item]) -> None:
        if self._xml_series < len(self._series):  # a new series: the root must open with it (planes at close)
            self._xml_series = len(self._series)
            self._write_ome_xml(planes=False)
        touched = set()
        for item in done:
            item.future.result()  # raises the write's error
            s = self._series[item.series]
            h = item.header
            s.journal.write(json.dumps(h, separators=(",", ":")) + "\n")
            touched.add(item.series)
            s.t_max = max(s.t_max, item.t)
            t_ns = s.meta.add_plane(item.t, item.c, item.z, h)
            if t_ns:
                self._t0_ns = t_ns if self._t0_ns is None else min(self._t0_ns, t_ns)
        for i in touched:
            self._series[i].journal.flush()
        with self._cv:
            self._pending_bytes -= sum(item.nbytes for item in done)
            self._pending_frames -= len(done)
            self.frames_written += len(done)
            self._cv.notify_all()
        if self._on_durable is not None:
            self._on_durable(len(done))

    # ------------------------------------------------------------------ close
    def _join_writer(self) -> str | None:
        """Wait for the writer while it makes progress; None when it finished, else why it was given up on.

        A writer that commits nothing for :data:`_STALL_S` is left behind (a daemon thread) and the recording
        is marked incomplete with the count it still held: closing must not hang whoever closes (a trigger's
        action, live's end) whatever the storage does (a commit that never completes, e.g. on a hung
        network share). Should the storage come back, that writer journals nothing more and ends: the
        closed recording keeps saying what close found."""
        # storage a write already waited _STALL_S for in vain gets no second wait
        last, t_last = self.frames_written, time.monotonic() - (_STALL_S if self._stalled else 0.0)
        while self._thread.is_alive():
            self._thread.join(0.1)
            if self.frames_written != last:
                last, t_last = self.frames_written, time.monotonic()
            elif time.monotonic() - t_last > _STALL_S:
                log.error("recording %s: the writer committed nothing for %g s with %d frames pending; "
                          "closing without them", self.path, _STALL_S, self.pending)
                self._given_up = True
                return f"writer stalled: {self.pending} frames not committed after {_STALL_S:g} s without progress"
        return None

    def close(self, error: str | None = None) -> str | None:
        """Wait for every accepted frame, then finalise the metadata and close the journals.

        ``error`` (the acquisition failed, e.g. the disk filled up) marks the
        recording ``complete: false`` with that reason. Closing never raises:
        what could not be finalised is logged, and the journal keeps every
        frame header that was made durable. Returns (and keeps as :attr:`error`)
        why the recording is incomplete, or None: a writer that failed after the
        last :meth:`write` was accepted is reported here, and only here.
        Storage that stalls does not hang it: it gives up on the writer (see
        :meth:`_join_writer`) and on metadata the storage does not take within
        :data:`_STALL_S` (:data:`_FINALISE_AFTER_STALL_S` once it stalled),
        leaving the recording unfinalised, its journal listing what is durable.
        """
        with self._cv:
            if self.closed:
                return self.error
            self.closed = True
        self._inbox.put(None)
        stalled = self._join_writer()
        if self._error is not None:
            error = error or f"{type(self._error).__name__}: {self._error}"
        error = error or stalled
        self.error = error
        wait = _FINALISE_AFTER_STALL_S if self._stalled or stalled else _STALL_S
        try:
            self.error = self._bounded(lambda: self._finalise(error), wait, "writing its final metadata")
        except RecordingError as e:
            self.error = error or str(e)
            log.error("recording %s: left unfinalised with %d durable frames (its journal lists them; `scopecast "
                      "repair`, or the daemon's next start, finalises it once the storage is back)", self.path,
                      self.frames_written)
        return self.error

    def _finalise(self, error: str | None) -> str | None:
        """Trim the time axes, write the final metadata and release the writing lock; returns ``error``, or
        else what could not be finalised."""
        for i, s in enumerate(self._series):
            s.meta.t_count = s.t_max + 1
            try:
                s.array = s.array.resize(exclusive_max=[max(s.t_max + 1, 1), None, None, None, None],
                                         shrink_only=True, resize_metadata_only=True).result()
            except Exception as e:  # noqa: BLE001 - keep closing the others
                error = error or f"could not trim series: {type(e).__name__}: {e}"
            try:
                s.journal.close()
            except OSError as e:
                error = error or f"could not close a journal: {e}"
            try:
                s.group.attrs.update(image_attrs(self.ngff, s.spec, s.meta, self._t0_ns))
                write_trust_labels(self.path / str(i), self.ngff, s.spec, s.meta, self._t0_ns)
            except Exception:  # noqa: BLE001 - e.g. a full disk
                log.exception("recording %s: could not write the final metadata of a series", self.path)
        try:
            self._write_ome_xml()
        except Exception:  # noqa: BLE001
            log.exception("recording %s: could not write OME/METADATA.ome.xml", self.path)
        info = {**self._info, "frames_written": self.frames_written, "complete": error is None}
        if error is not None:
            info["error"] = error
        try:
            self._root.attrs.update(root_attrs(self.ngff, info))
        except Exception:  # noqa: BLE001 - e.g. a full disk
            log.exception("recording %s: could not write its final metadata", self.path)
        try:
            (self.path / WRITING_LOCK).unlink(missing_ok=True)
        except OSError:
            log.warning("recording %s: could not remove %s", self.path, WRITING_LOCK)
        self._writing_lock.close()  # releases the lock
        return error

    def raise_if_incomplete(self) -> None:
        """After :meth:`close`: raise :class:`RecordingError` where frames it accepted were not made durable.
        A short job's frames all fit in the queue, so the writer can fail (a full disk) after the last
        :meth:`write` returned; only :meth:`close` then knows, and an acquisition must not end 'done'."""
        if self.error is not None:
            raise RecordingError(f"recording {self.path} is incomplete ({self.frames_written} of "
                                 f"{self.frames_accepted} frames durable): {self.error}")

    def _write_ome_xml(self, planes: bool = True) -> None:
        write_ome_xml(self.path, [(s.spec, s.meta) for s in self._series], self._t0_ns, planes)


def write_ome_xml(path: Path, series: list[tuple[SeriesSpec, SeriesMeta]], t0_ns: int | None,
                  planes: bool = True) -> None:
    """Replace ``OME/METADATA.ome.xml`` of the recording at ``path`` (atomically: a reader never sees half)."""
    xml = ome_xml(series, t0_ns, planes)
    tmp = path / "OME" / "METADATA.ome.xml.tmp"
    tmp.write_text(xml, encoding="utf-8")
    tmp.replace(path / "OME" / "METADATA.ome.xml")


def _hold_writing_lock(path: Path) -> IO[str]:
    """Create and lock ``path/WRITING_LOCK`` for as long as the recorder is open (the OS drops the lock
    when the process dies, however it dies): :func:`being_written` tells a live recording from an
    interrupted one."""
    f = open(path / WRITING_LOCK, "w", encoding="utf-8")  # noqa: SIM115 - held until close
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def being_written(path: str | Path) -> bool:
    """Whether a recorder (in this process or another) still has the recording at ``path`` open."""
    try:
        f = open(Path(path) / WRITING_LOCK, encoding="utf-8")  # noqa: SIM115
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False
