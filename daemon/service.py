"""The acquisition daemon: a backend, the acquisition engine and the control socket.

:class:`Daemon` owns the microscope. Its public methods are the control
commands (docs/protocol.md lists them with their arguments); the control
server validates arguments strictly against these signatures.

The contract:

- Sockets are bound before any hardware is touched: a second daemon on the
  same ports fails before it loads a configuration.
- ``status``, ``job``, ``jobs`` and ``triggers`` never wait for the hardware
  (``status`` reports the last known position, channel and exposure while a
  frame is being taken); every other command runs off the socket thread.
- A request that cannot succeed is refused in its reply (an exposure outside
  the camera's range, an unwritable data directory), not accepted and failed later.
- Files: recordings go only into ``data_dir``; trigger configurations are read
  only from ``trigger_dirs``; Python triggers only from ``trigger_modules``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import useq
from pydantic import ValidationError

from .acquisition import AcquisitionEngine
from .backend import MicroscopeBackend
from .control import DEFAULT_CONTROL_ADDRESS, ControlServer
from .plans import (
    ChannelSpec, GridSpec, LivePlan, PairPlan, at_current_position, default_exposures_ms, pin_exposures,
    with_field_of_view,
)
from .recording import NgffVersion, RecordingCap
from .stream import DEFAULT_STREAM_ADDRESS, FramePublisher
from .spot_checks import SpotChecker, SpotCheckSpec
from .trigger_actions import TriggerRunner
from .trigger_settings import with_settings
from .triggers import (TriggerConfigError, check_firing_light, check_hardware, check_sources, load_trigger_config,
                       make_measures, recent_lines)

__all__ = ["MAX_SPOT_CHECK_MODELS", "MAX_WAIT_S", "Daemon"]

#: Longest ``wait`` a request may ask for (s).
MAX_WAIT_S = 600.0
#: Models spot-checked at once (each has a thread, a result-stream socket and a frame sink on every frame).
MAX_SPOT_CHECK_MODELS = 8
#: How long shutdown waits for the running job to end (its recording closed and durable) before it gives up
SHUTDOWN_WAIT_S = 600

log = logging.getLogger(__name__)


class Daemon:
    """Serve a microscope on the control socket until ``shutdown``."""

    COMMANDS = (
        "status", "describe", "snap", "start_live", "stop", "set_channel", "set_pattern",
        "set_exposure", "set_objective", "move_stage", "capture_pairs", "run_scan", "job", "jobs", "wait",
        "load_triggers", "triggers", "unload_triggers", "start_spot_checks", "spot_checks", "stop_spot_checks",
        "shutdown",
    )

    #: Commands answered on the socket thread (they never wait for the hardware).
    INLINE = ("status", "job", "jobs", "triggers", "spot_checks", "shutdown")

    def __init__(self, backend: MicroscopeBackend | Callable[[], MicroscopeBackend], data_dir: str | Path,
                 control_address: str = DEFAULT_CONTROL_ADDRESS,
                 stream_address: str = DEFAULT_STREAM_ADDRESS,
                 trigger_dirs: Iterable[str | Path] | None = None,
                 trigger_modules: Iterable[str] = (), record_cap: RecordingCap | None = None,
                 ngff: NgffVersion = "0.4") -> None:
        """``backend`` may be a factory: it is called after the sockets are bound.

        ``record_cap``: the cap of every live recording (``start_live`` may lower it);
        ``ngff``: the OME-NGFF version of recordings (``"0.4"`` on zarr 2, or ``"0.5"`` on zarr 3).

        ``trigger_dirs`` (default: ``data_dir``) are where ``load_triggers`` may
        read configuration files; ``trigger_modules`` the ``module:Class`` Python
        triggers a configuration may name.
        """
        self.started = time.time()
        self._shutdown = threading.Event()
        self.trigger_runner: TriggerRunner | None = None
        self.spot_checkers: dict[str, SpotChecker] = {}
        # replacing the loaded triggers or a model's spot checks is stop-old-then-start-new: two requests at once
        # (they run on worker threads) must not both start one, or the one overwritten keeps running unseen
        self._triggers_lock = threading.RLock()
        self._spot_checks_lock = threading.RLock()
        self.trigger_dirs = [Path(d) for d in (trigger_dirs if trigger_dirs is not None else [data_dir])]
        self.trigger_modules = frozenset(trigger_modules)
        self._hw_state: dict[str, Any] = {}
        self.server = ControlServer({c: getattr(self, c) for c in self.COMMANDS}, control_address,
                                    inline=self.INLINE)
        try:
            self.publisher = FramePublisher(stream_address)
        except Exception:
            self.server.stop()
            raise
        try:
            self.backend = backend() if callable(backend) else backend
        except BaseException:
            self.server.stop()
            self.publisher.close()
            raise
        try:
            self.engine = AcquisitionEngine(self.backend, data_dir, record_cap=record_cap, ngff=ngff)
        except BaseException:
            self.server.stop()
            self.publisher.close()
            self.backend.close()
            raise
        self.engine.sinks.append(self._note_frame)
        self.engine.sinks.append(self.publisher)
        self.engine.event_sinks.append(self.publisher.publish_event)

    @property
    def control_address(self) -> str:
        return self.server.address

    @property
    def stream_address(self) -> str:
        return self.publisher.address

    def start(self) -> Daemon:
        self.server.start()
        log.info("control socket on %s, frame stream on %s", self.control_address, self.stream_address)
        return self

    def wait_for_shutdown(self, timeout: float | None = None) -> bool:
        return self._shutdown.wait(timeout)

    def close(self) -> None:
        """Stop any job (keeping what it recorded), the socket and the hardware. From the start, requests are
        refused naming the shutdown (but ``wait`` and ``stop``: a client still learns how its job ended); each
        one in progress is answered before the socket closes (control.ControlServer.stop)."""
        self._shutdown.set()
        self.server.close_to_new("the daemon is shutting down", allowed=("wait", "stop"))
        # no job starts from here, and the running one (a trigger's scan too) stops at its current frame: the
        # trigger actions are not waited for while their scan goes on, nor can one start a scan behind the stop
        self.engine.close_to_new("the daemon is shutting down")
        job = self.engine.stop()
        self.unload_triggers()
        self._stop_spot_checks(None, "the daemon is shutting down")
        waited = 0
        while job is not None and self.engine.wait(job.id, timeout=30).finished is None:
            waited += 30  # a loaded disk may take long to make a recording durable: never cut it short
            if waited >= SHUTDOWN_WAIT_S:
                log.error("shutdown: %s job %s still running after %d s; closing without it", job.kind, job.id,
                          waited)
                break
            log.warning("shutdown: waiting for %s job %s to finish its recording (%d s so far)", job.kind, job.id,
                        waited)
        self.server.stop()
        self.publisher.close()
        self.backend.close()

    # ---------------------------------------------------------------- commands
    def _hardware_state(self) -> dict[str, Any]:
        """Position, channel, LED pattern and exposure: read now if the hardware is free, else the
        last values read (``hardware_busy`` says which). Never waits."""
        b = self.backend
        if b.lock.acquire(blocking=False):
            try:
                x, y, z = b.position_um()
                self._hw_state = {"channel": b.current_channel(), "pattern": b.current_pattern(),
                                  "exposure_ms": b.exposure_ms(), "position_um": {"x": x, "y": y, "z": z}}
            finally:
                b.lock.release()
            return {**self._hw_state, "hardware_busy": False}
        return {"channel": None, "pattern": None, "exposure_ms": None, "position_um": None, **self._hw_state,
                "hardware_busy": True}

    def _note_frame(self, frame: Any) -> None:
        """Frame sink: the hardware state each frame was taken in (for ``status`` while busy; the LED pattern
        of its label-free frames, the one before kept over a fluorescence frame, which names none)."""
        h = frame.header
        self._hw_state = {"channel": h.channel, "pattern": h.pattern or self._hw_state.get("pattern"),
                          "exposure_ms": h.exposure_ms,
                          "position_um": {"x": h.stage_x_um, "y": h.stage_y_um, "z": h.stage_z_um}}

    def status(self) -> dict[str, Any]:
        """State, position, counters and the running job (answered at once, never waits)."""
        e = self.engine
        job = e.current_job
        return {
            "state": e.state,
            "job": job.to_dict() if job else None,
            **self._hardware_state(),
            "frames_acquired": e.frames_acquired,
            "frames_recorded": e.frames_recorded,
            "last_error": e.last_error,
            "uptime_s": time.time() - self.started,
            "control": self.server.counters(),
            "stream": {"address": self.stream_address, "subscribers": self.publisher.subscriptions.count,
                       "subscribers_cut": dict(self.publisher.subscriptions.cut), **self.publisher.stats.to_dict()},
        }

    def describe(self) -> dict[str, Any]:
        """The microscope: channels (with modality and LED pattern), patterns, detectors, the stage travel the
        adapters declare (what plans and triggers are checked against)."""
        travel = {axis: list(span) for axis, span in self.backend.travel_um().items()}
        return {**self.backend.describe(), "travel_um": travel, "data_dir": str(self.engine.data_dir),
                "commands": list(self.COMMANDS), "stream_address": self.stream_address}

    def snap(self, channel: str | None = None, exposure_ms: float | None = None,
             detector: str | None = None, record: bool = False):
        """Snap one frame; the reply carries the header and the raw pixels as a second part.

        ``exposure_ms`` applies to this frame only (``set_exposure`` changes the camera's)."""
        if record:
            self.engine.check_writable()
        if exposure_ms is not None:
            self.backend.check_exposure_ms(exposure_ms, detector)
        spec = ChannelSpec(name=channel or self.backend.current_channel(), exposure_ms=exposure_ms,
                           detector=detector)
        frame = self.engine.snap(spec, record=record)
        return {"frame": frame.header.to_dict()}, [frame.data]

    def start_live(self, channels: list[str | dict] | None = None, exposure_ms: float | None = None,
                   interval_ms: float = 0.0, max_cycles: int | None = None, record: bool = False,
                   record_max_bytes: int | None = None, record_max_frames: int | None = None,
                   hardware_sequence: bool = False, pace_from: list[str] | None = None) -> dict:
        """Start repeating an illumination cycle (default: DPC halves, BF, DF).

        ``pace_from``: the results addresses of one or more engines; each cycle is then acquired just
        in time for the slowest of their models (one bundle in each model, the next being
        acquired, none dropped) instead of as fast as the camera goes (daemon/pacing.py; the job's
        ``pacing`` reports it).

        ``hardware_sequence``: the DPC channels as one LED-array/camera burst per cycle where the rig
        can (the job's ``sequenced`` says which channels, or why not), the rest software-timed.

        ``record_max_bytes`` / ``record_max_frames`` cap this recording (raw pixel bytes; only
        below the daemon's configured cap): live stops there with ``stop_reason`` on the job."""
        args: dict[str, Any] = {"exposure_ms": exposure_ms, "interval_ms": interval_ms,
                                "max_cycles": max_cycles, "record": record, "hardware_sequence": hardware_sequence,
                                "pace_from": pace_from}
        if channels is not None:
            args["channels"] = channels
        plan = _validated(LivePlan, args)
        self._check_detectors_and_exposures(plan.channels, plan.exposure_ms)
        cap = _validated(RecordingCap, {"max_bytes": record_max_bytes, "max_frames": record_max_frames})
        _check_cap_records(record, record_max_bytes, record_max_frames)
        if record:
            self.engine.check_writable()
        return self.engine.start_live(plan, cap).to_dict()

    def _check_detectors_and_exposures(self, channels: Iterable[ChannelSpec], default: float | None) -> None:
        """Refuse, at the request, an unknown detector and an exposure the detector cannot take."""
        detectors = self.backend.detectors()
        for c in channels:
            if c.detector and c.detector not in detectors:
                raise ValueError(f"unknown detector {c.detector!r} for channel {c.name!r}; "
                                 f"detectors: {', '.join(detectors)}")
            value = c.exposure_ms or default
            if value is not None:
                self.backend.check_exposure_ms(value, c.detector)

    def stop(self, job: str | None = None) -> dict:
        """Stop the running job (or ``job``) after its current frame; replies when it has stopped
        (at most 30 s)."""
        if job == "":
            raise ValueError("job must be a job id (omit it to stop the running job)")
        j = self.engine.stop(job)
        if j is None:
            return {"stopped": None}
        self.engine.wait(j.id, timeout=30)
        return {"stopped": j.to_dict()}

    def set_channel(self, channel: str) -> dict:
        """Apply a channel preset (allowed during live, between its frames)."""
        self.engine.require_idle("change channel", allow_live=True)
        self.backend.set_channel(channel)
        return {"channel": self.backend.current_channel()}

    def set_pattern(self, pattern: str) -> dict:
        """Set the LED array pattern directly (IlluminateLedArray's IlluminationPattern values: Brightfield,
        DPC Left, Clear, ...).

        The reply names the pattern the array then shows, read back as ``set_channel`` reads its preset: the
        adapter may show another (``Manual LED Indicies`` without a ``ManualLedList`` is ``Clear``)."""
        self.engine.require_idle("change pattern", allow_live=True)
        self.backend.set_pattern(pattern)
        return {"pattern": self.backend.current_pattern()}

    def set_exposure(self, exposure_ms: float) -> dict:
        """Set the main camera's exposure (ms); a live cycle keeps the exposures it was started with, and a
        job ends leaving this exposure set."""
        self.backend.set_exposure_ms(exposure_ms)
        self.engine.note_exposure(exposure_ms)
        return {"exposure_ms": self.backend.exposure_ms()}

    def set_objective(self, objective: str) -> dict:
        """Switch the objective (a preset of the config's ``Objective`` group); allowed during live, between frames.

        The pixel size follows (the pixel-size presets); the reply names the objective and the new pixel size.
        Refused, before the turret moves, during a recorded live job where no pixel-size preset would match:
        the recording's next frame would have no scale."""
        self.engine.require_idle("change the objective", allow_live=True)
        job = self.engine.current_job
        if (job is not None and (job.plan or {}).get("record") and objective in self.backend.objectives()
                and not self.backend.pixel_size_preset_with(objective)):
            raise ValueError(f"cannot switch to objective {objective!r} while live job {job.id} records: no pixel "
                             "size is calibrated for it (no pixel-size preset matches), and the recording needs one; "
                             "the objective was not changed. Stop the live job first, or add 'ConfigPixelSize' and "
                             "'PixelSize_um' lines for it to the .cfg")
        self.backend.set_objective(objective)
        return {"objective": objective, "pixel_size_um": self.backend.pixel_size_um()}

    def move_stage(self, x: float | None = None, y: float | None = None, z: float | None = None,
                   relative: bool = False) -> dict:
        """Move the stage (µm, absolute unless ``relative``); a refused move leaves it in place."""
        self.engine.require_idle("move the stage", allow_live=True)
        if relative:
            cx, cy, cz = self.backend.position_um()
            x = None if x is None else cx + x
            y = None if y is None else cy + y
            z = None if z is None else cz + z
        self.backend.move_um(x, y, z)
        px, py, pz = self.backend.position_um()
        return {"position_um": {"x": px, "y": py, "z": pz}}

    def capture_pairs(self, label_free: list[str | dict] | None = None,
                      fluorescence: list[str | dict] | None = None,
                      positions: list[tuple[float, float]] | None = None,
                      grid: dict | None = None, exposure_ms: float | None = None) -> dict:
        """Dual-modality capture at positions / a grid; returns the job (poll or ``wait``)."""
        args: dict[str, Any] = {"positions": positions, "exposure_ms": exposure_ms,
                                "grid": None if grid is None else _validated(GridSpec, grid)}
        if label_free is not None:
            args["label_free"] = label_free
        if fluorescence is not None:
            args["fluorescence"] = fluorescence
        plan = _validated(PairPlan, args)
        self._check_detectors_and_exposures([*plan.label_free, *plan.fluorescence], plan.exposure_ms)
        self.engine.check_writable()
        return self.engine.capture_pairs(plan).to_dict()

    def run_scan(self, sequence: dict) -> dict:
        """Run a useq-schema MDASequence (JSON form); returns the job. A channel without an exposure takes its
        preset's, else the camera's at the request (as live and pairs do); a relative z plan or grid at a position
        that leaves out z (x, y) is taken around the current one (:func:`at_current_position`)."""
        self.engine.require_idle("run a scan", allow_live=False)
        seq = _validated(useq.MDASequence, sequence)
        seq = with_field_of_view(seq, self._field_of_view_um())
        if seq.channels:  # no channels: refused by run_sequence, naming it
            seq = pin_exposures(seq, default_exposures_ms(self.backend.channels(), None, self.backend.exposure_ms()))
        for ch in seq.channels:
            if ch.exposure is not None:
                self.backend.check_exposure_ms(ch.exposure, ch.camera)
        self.engine.check_writable()
        seq = at_current_position(seq, self.backend.position_um())
        return self.engine.run_sequence(seq).to_dict()

    def _field_of_view_um(self) -> tuple[float, float]:
        """The main camera's field (width, height, µm) at the current image size and pixel size."""
        h, w = self.backend.describe()["image_shape"]
        px = self.backend.pixel_size_um()
        return w * px, h * px

    def job(self, job: str) -> dict:
        """One job (live, pairs, scan) by id: status, frames, recording, errors."""
        return self.engine.job(job).to_dict()

    def jobs(self) -> list[dict]:
        """Every job of this daemon run, oldest first."""
        return [j.to_dict() for j in self.engine.jobs()]

    def wait(self, job: str, wait_s: float = 60.0) -> dict:
        """Block until ``job`` ends or ``wait_s`` (0-600 s) passes; returns its state.
        Clients should wait for the reply at least ``wait_s`` plus a margin."""
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s must be between 0 and {MAX_WAIT_S:g} s, got {wait_s}")
        return self.engine.wait(job, timeout=wait_s).to_dict()

    def load_triggers(self, config: dict | str, sources: dict[str, str]) -> dict:
        """Start smart acquisition: ``config`` (a dict, or a .yaml/.json path) and the
        result stream address of each model it measures (``{"virtual-staining": "tcp://…"}``).

        A configuration whose actions could only fail when they fire is refused here (``ValueError`` naming
        the trigger, field and value): out-of-bounds fields, repeated names, channels the microscope lacks,
        exposures outside the camera's range, models without a result stream. A refused load leaves the
        triggers already loaded as they were."""
        try:
            cfg = load_trigger_config(config, allowed_dirs=self.trigger_dirs)
        except TriggerConfigError as e:
            raise ValueError(f"invalid trigger config: {e}") from None
        for t in cfg.triggers:
            if t.python is not None and t.python not in self.trigger_modules:
                raise PermissionError(
                    f"trigger {t.name!r}: Python trigger {t.python!r} is not allowed; the operator allows "
                    f"{sorted(self.trigger_modules) or 'none'} (scopecast daemon --allow-trigger {t.python})"
                )
        check_sources(cfg, sources)
        check_hardware(cfg, self.backend)
        check_firing_light(cfg)
        measures = make_measures(cfg)  # a Python trigger that cannot be loaded is refused before anything changes
        with self._triggers_lock:
            self.unload_triggers()
            self.trigger_runner = TriggerRunner(cfg, sources, self.engine, self.publisher, self.engine.data_dir,
                                                measures)
            runner = self.trigger_runner
            return with_settings(runner.status(), runner.config, runner.decider.state)

    def triggers(self) -> dict:
        """Trigger states, light-dose use, decisions so far (the newest as log lines: ``recent``) and closed-loop
        latency."""
        runner = self.trigger_runner
        if runner is None:
            return {"loaded": False}
        status = with_settings(runner.status(), runner.config, runner.decider.state)  # each trigger's settings too
        return {"loaded": True, **status, "recent": recent_lines(runner.decisions)}

    def unload_triggers(self) -> dict:
        """Stop and remove the loaded smart-acquisition triggers (their decision logs stay)."""
        with self._triggers_lock:
            runner, self.trigger_runner = self.trigger_runner, None
            if runner is not None:
                runner.close()
        return {"loaded": False}

    def start_spot_checks(self, model: str, results: str, period_s: float = 30.0,
                          channels: dict[str, str | dict] | None = None, exposure_ms: float = 20.0,
                          power: float = 1.0, reference_exposure_ms: float | None = None,
                          min_psnr_db: float | None = None, morphology: str | None = None,
                          tolerance_db: float = 3.0, window: int = 5,
                          dose_per_position: float = 500.0, dose_per_session: float = 5000.0,
                          position_grid_um: float = 100.0, record: bool = True) -> dict:
        """Compare ``model``'s newest trusted result with the real fluorescence every ``period_s``
        during live (daemon/spot_checks.py); replaces a running spot check of the same model.

        The alarm compares with the package's validated floor, or with ``morphology``'s validated
        figure when the specimen's morphology is known; the light dose is shared with the triggers."""
        args = {k: v for k, v in locals().items() if k != "self"}
        spec = _validated(SpotCheckSpec, args)
        known = self.backend.describe()["channels"]
        self.backend.check_exposure_ms(spec.exposure_ms, None)
        for c in (spec.channels or {}).values():
            name, det, exp = (c, None, None) if isinstance(c, str) else (c.channel, c.detector, c.exposure_ms)
            if name not in known:
                raise ValueError(f"spot checks: unknown channel {name!r} (channels: {sorted(known)})")
            self.backend.check_exposure_ms(exp or spec.exposure_ms, det)
        if spec.record:
            self.engine.check_writable()
        with self._spot_checks_lock:
            _check_room_for_spot_checks(model, self.spot_checkers)
            self.stop_spot_checks(model)
            checker = self.spot_checkers[model] = SpotChecker(spec, self.engine, self.publisher,
                                                              self.engine.data_dir)
        return checker.status()

    def spot_checks(self) -> dict:
        """Per model: running fidelity, the last check, alarms, light dose, recordings."""
        return {"models": {m: c.status() for m, c in list(self.spot_checkers.items())}}

    def stop_spot_checks(self, model: str | None = None) -> dict:
        """Stop the spot checks of ``model`` (default: all); returns their final status. Each stopped one
        publishes a spot-check event ``kind: "stopped"``, as one the light budget stops does: a viewer's
        fidelity figure then says so instead of showing its last figures (or alarm) as current."""
        return self._stop_spot_checks(model, "on request (stop_spot_checks)")

    def _stop_spot_checks(self, model: str | None, reason: str) -> dict:
        """:meth:`stop_spot_checks`, its events saying ``reason``."""
        with self._spot_checks_lock:
            names = [model] if model is not None else list(self.spot_checkers)
            out = {}
            for m in names:
                checker = self.spot_checkers.pop(m, None)
                if checker is not None:
                    checker.close()
                    out[m] = checker.status()
                    self.publisher.publish_event({"source": "spot_checks", "model": m, "kind": "stopped",
                                                  "reason": reason})
        return {"stopped": out}

    def shutdown(self) -> dict:
        """Stop the daemon after replying."""
        threading.Timer(0.05, self._shutdown.set).start()
        return {"shutting_down": True}


def _check_cap_records(record: bool, max_bytes: int | None, max_frames: int | None) -> None:
    """Raise ``ValueError`` naming the cap when a live request caps a recording it does not make (``record``
    false): the cap would be ignored, and nothing recorded."""
    given = [f"{k} = {v}" for k, v in (("record_max_bytes", max_bytes), ("record_max_frames", max_frames))
             if v is not None]
    if given and not record:
        raise ValueError(f"{' and '.join(given)} caps a recording, but this live records nothing (record is "
                         "false): add record (`scopecast ctl live --record ...`), or leave the cap out")


def _check_room_for_spot_checks(model: str, running: dict[str, SpotChecker]) -> None:
    """Raise ``ValueError`` naming the limit when spot checks of a new ``model`` would exceed
    :data:`MAX_SPOT_CHECK_MODELS` (replacing a running model's spot checks is always allowed)."""
    if model not in running and len(running) >= MAX_SPOT_CHECK_MODELS:
        raise ValueError(f"spot checks already run for {len(running)} models ({', '.join(sorted(running))}), the "
                         f"most this daemon runs at once ({MAX_SPOT_CHECK_MODELS}); stop one first "
                         "(stop_spot_checks with its model)")


def _validated(model: Any, data: dict) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(
            f"invalid {model.__name__}: "
            + "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in e.errors())
        ) from None
