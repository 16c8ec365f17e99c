"""The acquisition engine: live cycles, dual-modality pairs and scans.

One worker thread runs one job at a time (a live session, a pair capture, a
scan). Every frame gets a :class:`~scopecast.daemon.frames.FrameHeader`, goes to
the recorder of its acquisition (which queues it for its writer thread and
only waits when that queue is full: recording never drops) and then to the
registered frame sinks (the stream publisher), which must not block. A job
that fails keeps and closes everything it recorded. A live recording stops at
its cap (:class:`~scopecast.daemon.recording.RecordingCap`, and always before
the data disk fills), with a warning event first and the reason on the job.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import useq

from .backend import ChannelInfo, MicroscopeBackend
from .event_clock import EventClock
from .frames import Frame, FrameHeader
from .pacing import EnginePacer
from .plans import ChannelSpec, LivePlan, PairPlan, default_exposures_ms
from .recording import NgffVersion, Recorder, RecordingCap, SeriesSpec
from .recording.writer import bounded, stall_s
from .scan_bundles import MAX_SEQUENCE_DAYS, MAX_SEQUENCE_EVENTS, bundle_size, channel_frames, sequence_size
from .scan_checks import check_devices, check_travel

__all__ = ["MAX_SEQUENCE_DAYS", "MAX_SEQUENCE_EVENTS", "AcquisitionEngine", "BusyError", "Job", "moved_from",
           "sequence_size"]

log = logging.getLogger(__name__)

FrameSink = Callable[[Frame], None]
EventSink = Callable[[dict[str, Any]], None]


class BusyError(RuntimeError):
    """The request needs the microscope while another job holds it."""


@dataclass
class Job:
    id: str
    kind: str  # "live" | "pairs" | "scan"
    acquisition_id: str
    path: str | None = None
    status: str = "queued"  # queued | running | done | failed | stopped
    frames: int = 0
    total: int | None = None
    error: str | None = None
    plan: dict[str, Any] | None = None  # the live plan, so a trigger can switch it
    stop_reason: str | None = None  # why a job stopped by itself (e.g. its recording cap)
    recording: dict[str, Any] | None = None  # a live recording's cap and progress
    sequenced: dict[str, Any] | None = None  # live: channels taken as a hardware burst, or why none
    frames_at_stop: int | None = None  # frames acquired when the stop request arrived
    pacing: dict[str, Any] | None = None  # live paced by an engine (plan.pace_from): results seen, waits
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _restore: dict[str, Any] = field(default_factory=dict, repr=False)  # the hardware state the job found

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class AcquisitionEngine:
    """Runs acquisitions on a :class:`MicroscopeBackend`."""

    def __init__(self, backend: MicroscopeBackend, data_dir: str | Path, *,
                 record_cap: RecordingCap | None = None, ngff: NgffVersion = "0.4") -> None:
        """``record_cap``: the configured cap of live recordings (a request may only lower it);
        ``ngff``: the OME-NGFF version recordings are written in."""
        self.backend = backend
        self.record_cap = record_cap or RecordingCap()
        self.ngff = ngff
        self.event_sinks: list[EventSink] = []
        # absolute: job paths, describe's data_dir and spot-check recordings go to clients in other directories
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.sinks: list[FrameSink] = []
        self._seq = itertools.count()
        self._bundle = itertools.count()
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        self._lock = threading.Lock()
        self.frames_acquired = 0
        self.frames_recorded = 0  # durable frames (journaled), counted by the recorders' writers
        self._count_lock = threading.Lock()
        self.last_error: str | None = None
        self._wanted = 0  # threads waiting in hardware(): a live cycle yields to them between frames
        self._wanted_cv = threading.Condition()
        #: called after each live cycle with (job, bundle id), before the interval's rest; may wait (lockstep
        #: triggers wait there for the cycle's decision) and must return once ``job`` is stopped
        self.cycle_gates: list[Callable[[Job, int], None]] = []
        self.closed_to_new: str | None = None  # why no job or snap starts any more (:meth:`close_to_new`)

    # ------------------------------------------------------------------ state
    @property
    def current_job(self) -> Job | None:
        """The running job, if any."""
        return self._current

    @property
    def state(self) -> str:
        job = self._current
        return "idle" if job is None else job.kind

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def job(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id!r}") from None

    def check_writable(self) -> None:
        """Raise ``PermissionError`` naming the data directory unless a recording can be created there,
        ``ValueError`` unless the disk holds a camera frame beyond the reserve every recording leaves, and
        :class:`~.recording.RecordingError` (storage stalled) when the storage has not answered within the
        recorder's stall deadline (a hung network share: the request fails instead of never being answered)."""
        shape = self.backend.describe()["image_shape"]  # here: the caller may hold the hardware lock
        bounded(lambda: self._check_storage(*shape), stall_s(), "checking that a recording can be created",
                f"data directory {self.data_dir}")

    def _check_storage(self, height: int, width: int) -> None:
        """:meth:`check_writable`'s storage calls (a file created, the free space) for ``height`` x ``width``
        frames; they touch no hardware, so they can run on a thread that may be left behind."""
        import tempfile

        try:
            with tempfile.NamedTemporaryFile(dir=self.data_dir, prefix=".write-test-"):
                pass
        except OSError as e:
            raise PermissionError(f"cannot record: data directory {self.data_dir} is not writable ({e})") from None
        RecordingCap().require_frames(self.data_dir, 1, height, width)

    def close_to_new(self, reason: str) -> None:
        """From now on refuse every new job and snap (:class:`BusyError` naming ``reason``): the daemon shutting
        down stops the running job, and no other (a trigger's scan, live resumed after it) may start behind it."""
        with self._lock:
            self.closed_to_new = reason

    def require_idle(self, what: str, allow_live: bool = True) -> None:
        """Raise :class:`BusyError` if a job that owns the stage is running, or no job may start any more."""
        if self.closed_to_new:
            raise BusyError(f"cannot {what}: {self.closed_to_new}")
        job = self._current
        if job is not None and not (allow_live and job.kind == "live"):
            how = "stop it first (`scopecast ctl stop`, the `stop` command), then try again"
            if job.kind != "live" or (job.plan or {}).get("max_cycles"):  # it ends by itself
                how += f", or wait until it ends (`scopecast ctl wait {job.id}`)"
            else:
                how = "live runs until stopped: " + how
            raise BusyError(f"cannot {what}: {job.kind} job {job.id} is running; {how}")

    # ------------------------------------------------------------------ frames
    def acquire(
        self, spec: ChannelSpec, *, acquisition_id: str, bundle_id: int, bundle_index: int,
        bundle_size: int, position_index: int = 0, default_exposure: float | None = None,
    ) -> Frame:
        """Set the channel (an empty name keeps the hardware as it is) and exposure,
        snap, and build the frame header."""
        b = self.backend
        if spec.name:
            info = b.channels().get(spec.name)
            if info is None:
                raise ValueError(f"unknown channel {spec.name!r}; channels: {', '.join(b.channels())}")
        else:  # the hardware as it is (e.g. after set_pattern): no preset applies
            info = ChannelInfo("", "unknown", b.current_pattern())
        with b.lock:  # type: ignore[attr-defined]
            if spec.name:
                b.set_channel(spec.name)
            x, y, z = b.position_um()
            snap = b.snap(spec.detector, spec.exposure_ms or default_exposure)
            pixel = b.pixel_size_um(spec.detector)
        return self._frame(spec, info, snap, (x, y, z), pixel, acquisition_id=acquisition_id, bundle_id=bundle_id,
                           bundle_index=bundle_index, bundle_size=bundle_size, position_index=position_index)

    def _modality(self, channel: str, detector: str | None) -> str:
        """The modality the frames of ``channel`` on ``detector`` will carry (as :meth:`_frame` sets it): a
        detector other than the main camera is a ground-truth detector (STED)."""
        if detector and detector != getattr(self.backend, "main_camera", detector):
            return "super-resolution"
        return self.backend.channels()[channel].modality

    def _frame(self, spec: ChannelSpec, info: ChannelInfo, snap: Any, position: tuple[float, float, float],
               pixel: float, *, acquisition_id: str, bundle_id: int, bundle_index: int, bundle_size: int,
               position_index: int = 0) -> Frame:
        """The frame of one snap: its header (sequence number, bundle, channel, stage, timing)."""
        b = self.backend
        x, y, z = position
        modality = info.modality
        if spec.detector and spec.detector != getattr(b, "main_camera", spec.detector):
            modality = "super-resolution"
        header = FrameHeader(
            acquisition_id=acquisition_id, seq=next(self._seq), bundle_id=bundle_id,
            bundle_index=bundle_index, bundle_size=bundle_size, channel=spec.name,
            modality=modality, pattern=info.pattern, detector=snap.detector,
            stage_x_um=x, stage_y_um=y, stage_z_um=z, exposure_ms=snap.exposure_ms,
            pixel_size_um=pixel, dtype=str(snap.data.dtype), shape=tuple(snap.data.shape),
            position_index=position_index, t_exposure_start_ns=snap.t_exposure_start_ns,
            t_acquired_ns=snap.t_acquired_ns, extra=snap.extra,
        )
        self.frames_acquired += 1
        return Frame(header, snap.data)

    @contextlib.contextmanager
    def hardware(self) -> Iterator[None]:
        """Hold the microscope (``backend.lock``) from the end of the frame in progress: a live cycle
        yields before its next frame until the holder is done. The lock alone is not fair: on a busy
        core the live thread took it again, frame after frame, while a snap waited."""
        with self._wanted_cv:
            self._wanted += 1
        try:
            with self.backend.lock:  # type: ignore[attr-defined]
                yield
        finally:
            with self._wanted_cv:
                self._wanted -= 1
                self._wanted_cv.notify_all()

    def _yield_hardware(self) -> None:
        """Between live frames: let the callers of :meth:`hardware` have the microscope first."""
        if self._wanted:
            with self._wanted_cv:
                self._wanted_cv.wait_for(lambda: not self._wanted)

    def _emit(self, frame: Frame) -> None:
        for sink in tuple(self.sinks):  # a sink added or removed meanwhile neither repeats nor skips another
            try:
                sink(frame)
            except Exception:  # noqa: BLE001 - a consumer must never stop acquisition
                log.exception("frame sink failed")

    def snap(self, spec: ChannelSpec, record: bool = False) -> Frame:
        """One frame outside any job (allowed during live, between its frames).

        A ``spec.exposure_ms`` applies to this frame only: the detector's previous
        exposure is restored afterwards.
        """
        self.require_idle("snap")
        self._require_pixel_size("record a snap", record)
        acq = _new_id("snap")
        with self.hardware():
            # the exposure of the detector the frame is taken on (each keeps its own)
            previous = self.backend.exposure_ms(spec.detector) if spec.exposure_ms else None
            try:
                frame = self.acquire(spec, acquisition_id=acq, bundle_id=next(self._bundle),
                                     bundle_index=0, bundle_size=1)
            finally:
                if previous is not None and previous != spec.exposure_ms:
                    self.backend.set_exposure_ms(previous, spec.detector)
        if record:
            rec = self._recorder(acq, "snap", {"channel": spec.name})
            try:
                idx = rec.add_series(self.series_spec(frame, [spec.name], [frame.header.modality]))
                rec.write(frame, idx, 0, 0)
            finally:
                rec.close()
            rec.raise_if_incomplete()
            frame.header.extra = {**frame.header.extra, "recording": str(rec.path)}
        self._emit(frame)
        return frame

    # --------------------------------------------------------------------- jobs
    def _start(self, kind: str, run: Callable[[Job], None], record: bool, total: int | None = None,
               plan: dict[str, Any] | None = None) -> Job:
        self._require_pixel_size(f"record {kind}", record)
        with self._lock:
            self.require_idle(f"start {kind}", allow_live=False)
            acq = _new_id(kind)
            job = Job(id=acq, kind=kind, acquisition_id=acq, total=total, plan=plan, _restore=self._found_state())
            if record:
                job.path = str(self._recording_path(acq, kind))
            self._jobs[job.id] = job
            self._current = job
        threading.Thread(target=self._run_job, args=(job, run), name=f"acq-{kind}", daemon=True).start()
        return job

    def _require_pixel_size(self, what: str, record: bool = True) -> None:
        """Refuse (``ValueError``) before any frame to ``record`` without a pixel size (a recording's scale)."""
        if record and not self.backend.pixel_size_um() > 0:
            raise ValueError(f"cannot {what}: no pixel size is calibrated for the current objective (the core "
                             "reports 0 µm); add 'ConfigPixelSize' and 'PixelSize_um' lines to the .cfg")

    def _run_job(self, job: Job, run: Callable[[Job], None]) -> None:
        job.status = "running"
        try:
            run(job)
            cut_short = job.kind == "live" or job.total is None or job.frames < job.total
            job.status = "stopped" if job._stop.is_set() and cut_short else "done"
        except Exception as e:  # noqa: BLE001 - reported on the job and the control socket
            log.exception("%s job %s failed", job.kind, job.id)
            job.status = "failed"
            job.error = f"{type(e).__name__}: {e}"
            self.last_error = f"{job.kind} {job.id}: {job.error}"
        finally:
            self._restore_state(job)
            job.finished = time.time()
            with self._lock:
                if self._current is job:
                    self._current = None
            job._done.set()

    def note_exposure(self, exposure_ms: float) -> None:
        """The user set the main camera's exposure: the running job leaves it at this value when it ends."""
        job = self._current
        if job is not None:
            job._restore["exposure_ms"] = exposure_ms

    def _found_state(self) -> dict[str, Any]:
        """What a job puts back when it ends (:meth:`_restore_state`): the main camera's exposure, the
        channel preset, the LED pattern (``set_pattern``'s, which no preset may match) and the stage position."""
        b = self.backend
        with b.lock:  # type: ignore[attr-defined]
            return {"exposure_ms": b.exposure_ms(), "channel": b.current_channel(), "pattern": b.current_pattern(),
                    "position_um": b.position_um()}

    def _restore_state(self, job: Job) -> None:
        """Leave the microscope as the job found it, like pymmcore-plus's MDA engine: the main camera's
        exposure (or the one the user set during the job, :meth:`note_exposure`), the channel preset and the LED
        pattern, so a job's last channel never becomes the next job's default; and the focus, where the job ends
        at the XY position it started from (a z-stack around the current plane: a move back within the
        range the job itself just travelled). XY is not moved back: with no known focus direction the
        order of the moves could not be made safe."""
        found, b = job._restore, self.backend
        if not found:
            return
        try:
            with self.hardware():
                if b.exposure_ms() != found["exposure_ms"]:
                    b.set_exposure_ms(found["exposure_ms"])
                if found["channel"] in b.channels() and b.current_channel() != found["channel"]:
                    b.set_channel(found["channel"])
                if found.get("pattern") and b.current_pattern() != found["pattern"]:
                    b.set_pattern(found["pattern"])
                (x0, y0, z0), (x, y, z) = found["position_um"], b.position_um()
                if job.kind != "live" and abs(x - x0) < 1e-3 and abs(y - y0) < 1e-3 and z != z0:
                    b.move_um(z=z0)
        except Exception as e:  # noqa: BLE001 - the job's own outcome stands; say what was left as it is
            log.warning("%s job %s: could not restore the microscope's state: %s: %s", job.kind, job.id,
                        type(e).__name__, e)

    def stop(self, job_id: str | None = None) -> Job | None:
        """Ask the running job (or ``job_id``: ``KeyError`` if unknown) to stop after its current frame."""
        job = self.job(job_id) if job_id else self._current
        if job is not None and not job._stop.is_set():
            job._stop.set()  # first: a frame counted after this read is the one in progress, at most
            job.frames_at_stop = job.frames  # what "within one frame" is measured from
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        job = self.job(job_id)
        job._done.wait(timeout)
        return job

    # --------------------------------------------------------------------- live
    def start_live(self, plan: LivePlan, cap: RecordingCap | None = None) -> Job:
        """Start the live cycle; a recording stops at ``cap`` merged with the configured cap."""
        for c in plan.channels:
            if c.name not in self.backend.channels():
                raise ValueError(
                    f"unknown channel {c.name!r} in live cycle; channels: {', '.join(self.backend.channels())}"
                )
        # pin every channel's exposure now, so nothing done during live (a trigger's
        # snap, another client) changes what the cycle acquires
        default = default_exposures_ms(self.backend.channels(), plan.exposure_ms, self.backend.exposure_ms())
        plan = plan.model_copy(update={"channels": [
            c if c.exposure_ms else c.model_copy(update={"exposure_ms": default[c.name]}) for c in plan.channels]})
        cap = self.record_cap.merged(cap)
        if plan.record:
            self._check_room_to_record(cap)
        return self._start("live", lambda job: self._live(job, plan, cap), plan.record, plan=plan.model_dump())

    def _check_room_to_record(self, cap: RecordingCap, frames: int = 1) -> None:
        """Refuse, at the request, a recording with room for less than ``frames`` camera frames (live: one)."""
        cap.require_frames(self.data_dir, frames, *self.backend.describe()["image_shape"])

    def _live(self, job: Job, plan: LivePlan, cap: RecordingCap) -> None:
        names = [c.name for c in plan.channels]
        rec = None
        if plan.record:
            rec = self._recorder(job.acquisition_id, "live", {"plan": plan.model_dump()}, job.path)
            max_bytes, max_frames, limited_by = cap.limits(self.data_dir)
            job.recording = {"frames": 0, "bytes": 0, "max_bytes": max_bytes, "max_frames": max_frames,
                             "bytes_limited_by": limited_by, "warned": False}
        # one series per detector and sampling, as scans have: a cycle may take channels on another detector
        # (STED), and the objective may change during live (set_objective), so a series never holds frames of
        # another shape or pixel size than its metadata say; nor of another place (a stage move: moved_from). A
        # series begun later counts time from its cycle.
        # (detector, px, shape) -> (index, channels, 1st cycle, stage position of its first frame)
        series: dict[tuple, tuple[int, list[int], int, tuple[float, float, float]]] = {}
        burst_plan = self._burst_plan(job, plan) if plan.hardware_sequence else None
        pacer = EnginePacer(plan.pace_from, job.acquisition_id) if plan.pace_from else None
        previous: int | None = None
        try:
            for cycle in itertools.count():
                if job._stop.is_set() or (plan.max_cycles and cycle >= plan.max_cycles):
                    break
                t_start = time.perf_counter()
                if pacer is not None:
                    pacer.cycle_started()
                bundle = next(self._bundle)
                frames = []
                self._yield_hardware()
                burst = self._burst(burst_plan, plan) if burst_plan else {}
                for i, spec in enumerate(plan.channels):
                    if job._stop.is_set():  # stop takes effect within one frame
                        break
                    if rec is not None and self._cap_reached(job, rec, cap):
                        break
                    self._yield_hardware()
                    if spec.name in burst:
                        snap, where, pixel = burst[spec.name]
                        frame = self._frame(spec, self.backend.channels()[spec.name], snap, where, pixel,
                                            acquisition_id=job.acquisition_id, bundle_id=bundle, bundle_index=i,
                                            bundle_size=len(names))  # _frame counts it in frames_acquired
                    else:
                        frame = self.acquire(spec, acquisition_id=job.acquisition_id, bundle_id=bundle,
                                             bundle_index=i, bundle_size=len(names),
                                             default_exposure=plan.exposure_ms)
                    if rec is not None:
                        h = frame.header
                        key = (spec.detector, h.detector, h.pixel_size_um, tuple(h.shape))
                        # a move starts a new series at a cycle's first frame of it, so a cycle (a bundle, one model
                        # input) stays in one series: one the stage moved in keeps its place, as offline reads it
                        if key not in series or (i == series[key][1][0] and moved_from(series[key][3], h)):
                            idxs = [j for j, c in enumerate(plan.channels) if c.detector == spec.detector]
                            sspec = self.series_spec(frame, [names[j] for j in idxs], [
                                h.modality if j == i else self._modality(names[j], plan.channels[j].detector)
                                for j in idxs])
                            if any(k[1] == h.detector for k in series):
                                sspec = replace(sspec, name=f"{sspec.name} from cycle {cycle}")
                            series[key] = (rec.add_series(sspec), idxs, cycle, (h.stage_x_um, h.stage_y_um,
                                                                                 h.stage_z_um))
                        sidx, idxs, first, _ = series[key]
                        rec.write(frame, sidx, cycle - first, idxs.index(i))
                        job.recording.update(frames=rec.frames_accepted, bytes=rec.bytes_accepted)  # type: ignore[union-attr]
                    job.frames += 1
                    frames.append(frame)
                    self._emit(frame)
                for gate in list(self.cycle_gates):
                    gate(job, bundle)
                if pacer is not None:
                    pacer.gate(job, bundle, previous)
                    job.pacing = pacer.status()
                previous = bundle
                if plan.max_cycles and cycle + 1 >= plan.max_cycles:
                    break  # the last cycle: no interval to wait out (the job held the microscope for nothing)
                wait = plan.interval_ms / 1000 - (time.perf_counter() - t_start)
                if wait > 0:
                    job._stop.wait(wait)
        except BaseException as e:
            if rec is not None:
                rec.close(error=f"{type(e).__name__}: {e}")
            raise
        finally:
            if pacer is not None:
                job.pacing = pacer.status()
                pacer.close()
            if rec is not None:
                rec.close()
        if rec is not None:
            rec.raise_if_incomplete()  # the writer may fail after the last frame was queued

    def _burst_plan(self, job: Job, plan: LivePlan) -> Any:
        """The DPC burst this live cycle can run in hardware, or None (software timing); the
        choice and its reason go on the job (``sequenced``)."""
        from .sequenced import plan_dpc_sequence

        seq = plan_dpc_sequence(self.backend)
        specs = {c.name: c for c in plan.channels}
        why = seq.why
        if seq and not set(seq.channels) <= set(specs):
            why = f"the cycle lacks {', '.join(c for c in seq.channels if c not in specs)}"
        elif seq and (len({specs[c].exposure_ms for c in seq.channels}) > 1
                      or any(specs[c].detector for c in seq.channels)):
            why = "the DPC channels differ in exposure or detector (one camera sequence has one of each)"
        job.sequenced = {"hardware": list(seq.channels)} if seq and not why else {"hardware": [], "why": why}
        if why:
            log.info("live %s: software-timed cycle (%s)", job.id, why)
        return seq if seq and not why else None

    def _burst(self, seq: Any, plan: LivePlan) -> dict[str, tuple[Any, tuple[float, float, float], float]]:
        """One hardware DPC burst: ``{channel: (snap, stage position, pixel size)}``."""
        from .sequenced import acquire_dpc_sequence

        exposure = next(c.exposure_ms for c in plan.channels if c.name == seq.channels[0]) or plan.exposure_ms
        with self.backend.lock:  # type: ignore[attr-defined]
            where = self.backend.position_um()
            pixel = self.backend.pixel_size_um()
            snaps = acquire_dpc_sequence(self.backend, seq, exposure)  # type: ignore[arg-type]
        return {c: (snap, where, pixel) for c, snap in snaps}

    # -------------------------------------------------------------- sequences
    def capture_pairs(self, plan: PairPlan) -> Job:
        """Dual-modality capture (training pairs) as an MDA sequence."""
        b = self.backend
        x, y, z = b.position_um()
        h, w = b.describe()["image_shape"]
        px = b.pixel_size_um()
        seq = plan.to_sequence((x, y, z), (w * px, h * px),
                               default_exposures_ms(b.channels(), plan.exposure_ms, b.exposure_ms()))
        return self.run_sequence(seq, kind="pairs")

    def run_sequence(self, seq: useq.MDASequence, kind: str = "scan") -> Job:
        """Run and record a useq ``MDASequence``; frames at one (position, grid, time) form a bundle.

        Refused at the request (``ValueError`` naming the problem): an unknown channel or detector, no
        channels, a stage target outside the travel the stages declare, a position with a sequence of its own,
        more than :data:`MAX_SEQUENCE_EVENTS` frames or a last time point beyond :data:`MAX_SEQUENCE_DAYS`, more
        frames than the data disk holds (less its reserve, as live). Events are made as the job reaches them."""
        check_devices(seq, self.backend.channels(), self.backend.detectors())
        total = sequence_size(seq)
        check_travel(seq, self.backend.travel_um())
        self._check_room_to_record(RecordingCap(), total)  # no cap: the disk's free space (less its reserve)
        return self._start(kind, lambda job: self._sequence(job, seq, seq.iter_events()), True, total)

    def _sequence(self, job: Job, seq: useq.MDASequence, events: Iterable[useq.MDAEvent]) -> None:
        rec = self._recorder(job.acquisition_id, job.kind, {"sequence": seq.model_dump(mode="json")}, job.path)
        detectors = [c.camera for c in seq.channels]
        # (position, tile, detector) -> (series, its channels' indices in seq.channels: a channel's column is its
        # own, also where two channels share a preset, e.g. one at two exposures)
        series: dict[tuple, tuple[int, list[int]]] = {}
        bundles: dict[tuple, tuple[int, int]] = {}  # (p, g, t) -> (bundle id, next index)
        sizes = seq.sizes
        n_z, n_g = max(sizes.get("z", 1), 1), max(sizes.get("g", 1), 1)
        # the planes' real offsets: a step-less plan (absolute/relative positions) or a stack taken top down
        # (go_up false) must not read as planes 1 µm apart going up. Stored bottom up, at their mean spacing
        # (NGFF has one scale per axis; OME-XML's Plane elements keep each plane's own z).
        offsets = [float(v) for v in seq.z_plan] if seq.z_plan is not None else []
        descending = len(offsets) > 1 and offsets[-1] < offsets[0]
        z_step = (abs(offsets[-1] - offsets[0]) / (len(offsets) - 1) if len(offsets) > 1 else 0.0) \
            or float(getattr(seq.z_plan, "step", None) or 1.0)
        per_channel = channel_frames(seq)  # a bundle's size: the frames its time point really gets
        clock = EventClock(job._stop)
        try:
            for ev in events:
                if job._stop.is_set():
                    break
                idx = dict(ev.index)
                p, g, t, c, zi = idx.get("p", 0), idx.get("g", 0), idx.get("t", 0), idx.get("c", 0), idx.get("z", 0)
                if not clock.wait_due(ev):
                    break
                self.backend.move_um(ev.x_pos, ev.y_pos, ev.z_pos)
                key = (p, g, t)
                bid, bi = bundles.get(key) or (next(self._bundle), 0)
                bundles[key] = (bid, bi + 1)
                spec = ChannelSpec(name=ev.channel.config if ev.channel else seq.channels[c].config,
                                   exposure_ms=ev.exposure, detector=detectors[c])
                position_index = p * n_g + g
                frame = self.acquire(spec, acquisition_id=job.acquisition_id, bundle_id=bid,
                                     bundle_index=bi, bundle_size=bundle_size(per_channel, t),
                                     position_index=position_index)
                skey = (p, g, spec.detector)
                if skey not in series:
                    cols = [j for j, ch in enumerate(seq.channels) if ch.camera == spec.detector]
                    chans = [seq.channels[j].config for j in cols]
                    mods = [frame.header.modality if ch == spec.name else self._modality(ch, spec.detector)
                            for ch in chans]
                    label = ev.pos_name and (f"{ev.pos_name} g{g:03d}" if n_g > 1 else ev.pos_name)  # as useq names it
                    sspec = self.series_spec(frame, chans, mods, n_z=n_z, z_step=z_step, position_index=position_index,
                                             label=label)
                    if offsets:  # the series sits at the plan's lowest plane: the first frame's z less its
                        # plane's offset and its channel's z_offset (useq adds it to the z plan's planes only; that
                        # channel's own frames keep their real z in the OME-XML)
                        x0, y0, z0 = sspec.position_um
                        below = offsets[zi] - min(offsets) + seq.channels[c].z_offset
                        sspec = replace(sspec, position_um=(x0, y0, z0 - below))
                    series[skey] = (rec.add_series(sspec), cols)
                sidx, cols = series[skey]
                rec.write(frame, sidx, t, cols.index(c), n_z - 1 - zi if descending else zi)
                job.frames += 1
                self._emit(frame)
        except BaseException as e:
            rec.close(error=f"{type(e).__name__}: {e}")
            raise
        finally:
            rec.close()
        rec.raise_if_incomplete()  # the writer may fail after the last frame was queued

    # ------------------------------------------------------------------ helpers
    def _cap_reached(self, job: Job, rec: Recorder, cap: RecordingCap) -> bool:
        """Before the next live frame: warn once near the cap; at the cap stop the job with its reason.

        The next frame is assumed as large as the last (a live series has one shape)."""
        r = job.recording
        assert r is not None
        frame_bytes = rec.bytes_accepted // rec.frames_accepted if rec.frames_accepted else 0
        max_bytes, max_frames = r["max_bytes"], r["max_frames"]
        used = max(rec.bytes_accepted / max_bytes if max_bytes else 0.0,
                   rec.frames_accepted / max_frames if max_frames else 0.0)
        if not r["warned"] and used >= cap.warn_fraction:
            r["warned"] = True
            msg = (f"recording {rec.path.name} has used {used:.0%} of its cap "
                   f"({_cap_text(rec.frames_accepted, rec.bytes_accepted, r)})")
            log.warning("%s", msg)
            self._event({"source": "recording", "kind": "cap_warning", "job": job.id, "path": str(rec.path),
                         "used": used, "message": msg, **{k: v for k, v in r.items() if k != "warned"}})
        over_bytes = max_bytes is not None and rec.bytes_accepted + frame_bytes > max_bytes
        over_frames = max_frames is not None and rec.frames_accepted + 1 > max_frames
        if not (over_bytes or over_frames):
            return False
        what = "frame cap" if over_frames else ("byte cap" if r["bytes_limited_by"] == "cap" else "free disk space")
        job.stop_reason = (f"recording {what} reached: {_cap_text(rec.frames_accepted, rec.bytes_accepted, r)}; "
                           "everything acquired was recorded")
        log.warning("live %s stopped: %s", job.id, job.stop_reason)
        self._event({"source": "recording", "kind": "cap_reached", "job": job.id, "path": str(rec.path),
                     "message": job.stop_reason})
        job._stop.set()
        return True

    def _event(self, event: dict[str, Any]) -> None:
        for sink in self.event_sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a consumer must never stop acquisition
                log.exception("event sink failed")

    def _count_recorded(self, n: int) -> None:
        with self._count_lock:
            self.frames_recorded += n

    def _recording_path(self, acquisition_id: str, kind: str) -> Path:
        return self.data_dir / f"{acquisition_id}.ome.zarr"

    def _recorder(self, acquisition_id: str, kind: str, info: dict, path: str | None = None) -> Recorder:
        return Recorder(
            path or self._recording_path(acquisition_id, kind), acquisition_id,
            {"kind": kind, "created": datetime.now(timezone.utc).isoformat(), **info},
            ngff=self.ngff, on_durable=self._count_recorded,
        )

    @staticmethod
    def series_spec(
        frame: Frame, channels: Iterable[str], modalities: Iterable[str], n_z: int = 1,
        z_step: float = 1.0, position_index: int = 0, label: str | None = None,
    ) -> SeriesSpec:
        """The series of ``frame``'s detector, named ``"<label> <detector>"``: ``label`` is the position's name
        (a scan position's useq ``name``, with its grid tile), else ``pos<position_index>`` (``pos003``)."""
        h = frame.header
        x, y = h.stage_x_um, h.stage_y_um
        roi, sensor = (h.extra or {}).get("roi"), (h.extra or {}).get("sensor")
        if roi and sensor:  # an ROI's field is centred off the optical axis (the stage position) by this much
            x += (roi[0] + roi[2] / 2 - sensor[0] / 2) * h.pixel_size_um
            y += (roi[1] + roi[3] / 2 - sensor[1] / 2) * h.pixel_size_um
        return SeriesSpec(
            name=f"{label or f'pos{position_index:03d}'} {h.detector}", channels=tuple(channels),
            modalities=tuple(modalities), shape_yx=(h.shape[0], h.shape[1]), dtype=h.dtype,
            pixel_size_um=h.pixel_size_um, position_um=(x, y, h.stage_z_um),
            n_z=n_z, z_step_um=z_step, detector=h.detector, position_index=position_index,
        )


#: A recorded frame this far from where its series began (in its pixels in x or y, in µm in z: the limits of the
#: engine's ``moved`` guard) starts a new series: one NGFF translation places every frame of a series
MOVED_XY_PX = 1.0
MOVED_Z_UM = 0.5


def moved_from(where: tuple[float, float, float], h: FrameHeader) -> bool:
    """Whether the frame of header ``h`` was taken away from ``where`` (x, y, z µm: where its series began): a
    recorded series has one place (its NGFF translation), so such a frame starts another series."""
    x, y, z = where
    xy = max(abs(h.stage_x_um - x), abs(h.stage_y_um - y))
    return xy > MOVED_XY_PX * h.pixel_size_um or abs(h.stage_z_um - z) > MOVED_Z_UM


def _cap_text(frames: int, nbytes: int, r: dict[str, Any]) -> str:
    parts = [f"{frames} frames" + (f" of {r['max_frames']}" if r["max_frames"] else "")]
    if r["max_bytes"] is not None:
        parts.append(f"{nbytes / 1e6:.1f} of {r['max_bytes'] / 1e6:.1f} MB ({r['bytes_limited_by']})")
    return ", ".join(parts)


def _new_id(kind: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"

