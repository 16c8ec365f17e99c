"""Running triggers in the daemon: results in, decisions logged, actions executed.

:class:`TriggerRunner` subscribes to the engines' result streams, feeds each
result to the :class:`~scopecast.daemon.triggers.Decider`, and executes the
actions of each firing in one action thread (so deciding never waits for
hardware). It keeps a ring buffer of recent frames for pre-trigger windows and
the label-free half of confirmation pairs. Every decision is appended to the
decision log (JSON lines) with its outcome and the closed-loop latency — from
the exposure start of the deciding frame (the last frame of the deciding bundle,
whose timestamps the result header carries) to the moment the first action
starts on the hardware (holds the microscope; an action without hardware: when
it starts). Its parts are logged beside it (``closed_loop_ms``: the engine's
stages from the result header, then delivery to this runner, the decision, the
hand-off to the action thread and the wait for the microscope), and the
acquisition of the rest of the bundle before the deciding frame. Decisions are
logged in the order taken; the outcome of a firing's actions follows as its own
line (``outcome_of`` names the decision). An action that fails is logged as
failed; acquisition continues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import useq
import zmq
from scipy import ndimage

from .acquisition import AcquisitionEngine
from .action_recordings import record_by_sampling, window_layout
from .action_plans import (Field, NotRun, charge_where_run, decided_field, field_of_view_um, give_back, left_field,
                           tile_scan_plan)
from .confine import inside
from .dose import shared_budget
from .frame_ring import FrameRing
from .frames import Frame, now_ns
from .plans import ChannelSpec, LivePlan
from .recorder import Recorder, RecordingCap
from .scan_checks import check_travel
from .security import connect_socket
from .shm_results import SharedResults
from .stream import FramePublisher, decode, threads_ended
from .trigger_frames import (Window, after_warning, make_ring, pair_warning, reads_frames, repin_for_next,
                             take_frames)
from .trigger_timeout import TimedTrigger, time_limited
from .triggers import ActionSpec, Decider, Decision, TriggerConfig, TriggerSpec, make_measures

__all__ = ["LOOP_STAGES", "FrameRing", "TriggerRunner", "loop_breakdown"]

#: Actions that start by holding the microscope (their closed loop ends when they hold it); the
#: others start when they start (``z_stack``/``tile_scan``/``switch_live`` begin by stopping live).
HARDWARE_ACTIONS = frozenset({"confirm_fluorescence", "center_object"})
#: Actions that expose or move the sample: none runs once the live acquisition it was decided on was stopped.
SCOPE_ACTIONS = HARDWARE_ACTIONS | {"z_stack", "tile_scan", "switch_live"}
#: ``center_object`` moves by an offset measured in the deciding result's field: only while the stage is still there
#: (within this many µm, as spot checks' ``SAME_FIELD_UM``), not after another centring or a user's move.
CENTRE_SAME_FIELD_UM = 1.0

log = logging.getLogger(__name__)


@dataclass
class _Firing:
    """A firing on its way to the hardware, with the runner's timestamps (ns since the epoch)."""

    decision: Decision
    header: dict[str, Any]
    data: Any
    t_received_ns: int  # the result reached the trigger thread
    t_decided_ns: int  # the decision was taken
    t_action_ns: int = 0  # the action thread took it up
    t_hardware_ns: int = 0  # its first action held the microscope (0: no hardware action yet)
    logged: threading.Event = field(default_factory=threading.Event)  # its decision line is in the log
    held: bool = False  # its first action has started (on the microscope, for a hardware action)
    # what its actions read from the ring, taken when it is decided (later actions, a queue of firings or a
    # slow model would otherwise find those frames evicted): the deciding bundle, and per save_window action
    # (by id) the frames before the event, the bucket that collects those after it and a warning if any
    bundle: list[Frame] = field(default_factory=list)
    windows: dict[int, Window] = field(default_factory=dict)


#: The parts of the closed loop (name, from, to): result-header stamps, then the runner's.
LOOP_STAGES = (
    ("exposure_readout", "t_exposure_start_ns", "t_acquired_ns"),
    ("frame_publish", "t_acquired_ns", "t_frame_published_ns"),
    ("transport", "t_frame_published_ns", "t_received_ns"),
    ("engine_queue", "t_received_ns", "t_dequeued_ns"),
    ("model", "t_dequeued_ns", "t_postprocessed_ns"),
    ("result_publish", "t_postprocessed_ns", "t_published_ns"),
    ("result_delivery", "t_published_ns", "t_trigger_received_ns"),
    ("decide", "t_trigger_received_ns", "t_decided_ns"),
    ("action_handoff", "t_decided_ns", "t_action_ns"),
    ("hardware_wait", "t_action_ns", "t_hardware_ns"),
)


def loop_breakdown(stamps: dict[str, int]) -> dict[str, float | None]:
    """Milliseconds per :data:`LOOP_STAGES` entry (``None`` where a stamp is missing); they add up to the
    closed-loop latency."""
    out: dict[str, float | None] = {}
    for name, a, b in LOOP_STAGES:
        ta, tb = stamps.get(a) or 0, stamps.get(b) or 0
        out[name] = round((tb - ta) / 1e6, 3) if ta and tb else None
    return out


def continued_live(live: Any, **changes: Any) -> tuple[LivePlan, RecordingCap | None] | None:
    """The plan (with ``changes``) and recording cap that continue the stopped live job ``live`` where it left
    off: a bounded live keeps the cycles it has left, a capped recording what its cap has left (the request's
    ``record_max_frames`` / ``record_max_bytes``, already merged with the daemon's cap); None when nothing is
    left. Restarting with the plan alone made a resumed live unbounded: its recording cap was lost and its
    ``max_cycles`` counted again from 0."""
    plan = {**(live.plan or LivePlan().model_dump()), **changes}
    if plan.get("max_cycles"):
        left = plan["max_cycles"] - live.frames // max(len((live.plan or plan)["channels"]), 1)
        if left < 1:
            return None
        plan["max_cycles"] = left
    r, cap = live.recording, None
    if plan.get("record") and r:
        frames = r["max_frames"] - r["frames"] if r["max_frames"] else None
        nbytes = r["max_bytes"] - r["bytes"] if r["bytes_limited_by"] == "cap" else None
        frame_bytes = r["bytes"] // r["frames"] if r["frames"] else 1
        if (frames is not None and frames < 1) or (nbytes is not None and nbytes < frame_bytes):
            return None
        cap = RecordingCap(max_frames=frames, max_bytes=nbytes)
    return LivePlan.model_validate(plan), cap


def switched_cycle(plan: dict[str, Any] | None, names: list[str]) -> list[dict[str, Any]]:
    """The live cycle ``names`` a ``switch_live`` changes to, from the running ``plan``: a channel the running
    cycle takes keeps its exposure and detector there (a 2 ms bright-field took the camera's exposure of the
    moment, e.g. 10 ms, and saturated); a channel new to it takes its default (``start_live``'s)."""
    running: dict[str, dict[str, Any]] = {}
    for c in (plan or {}).get("channels") or []:
        running.setdefault(c["name"], c)
    return [dict(running.get(n) or {"name": n}) for n in names]


class TriggerRunner:
    """Live triggers for one daemon (see module docstring)."""

    def __init__(self, config: TriggerConfig, sources: dict[str, str], engine: AcquisitionEngine,
                 publisher: FramePublisher | None, data_dir: Path, measures: dict[str, Any] | None = None) -> None:
        missing = {t.model for t in config.triggers} - set(sources)
        if missing:
            raise ValueError(f"no result stream given for model(s) {sorted(missing)}; sources: {sorted(sources)}")
        self.config = config
        s = config.safety
        self.budget = shared_budget(engine)  # the session's one light budget: spot checks draw from it too
        self.budget.set_limits(s.dose_per_position, s.dose_per_session, s.position_grid_um)
        # a Python trigger that hangs is disabled after trigger_timeout.MEASURE_TIMEOUT_S, not left holding
        # the trigger thread (and with it every other trigger)
        self.decider = Decider(config, self.budget, time_limited(measures or make_measures(config)))
        self.engine = engine
        self.publisher = publisher
        self.session = f"{time.strftime('%Y%m%d-%H%M%S')}-triggers-{uuid.uuid4().hex[:6]}"
        self.log_path = Path(data_dir) / f"{self.session}.decisions.jsonl"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the deciding bundle of a slow engine's result outlives the ring: pinned (trigger_frames)
        self.ring = make_ring(config)
        self._pins = reads_frames(config)
        # before the publisher: a frame is in the ring before any engine can have computed a result on it
        engine.sinks.insert(0, self.ring)
        self.decisions: list[Decision] = []
        self.fired = 0  # counted when decided (actions may still be running)
        self.results_seen = 0  # results received and decided on
        self.results_not_live = 0  # results of a scan or pair capture of this daemon: not decided on
        self._pending = 0  # firings decided whose outcome is not logged yet (queued or executing)
        self.latencies_ms: list[float] = []
        self._lock = threading.Lock()
        self._actions: queue.Queue = queue.Queue()
        self._firing: _Firing | None = None  # the firing whose actions run now
        # lockstep: what live waits for after each cycle
        self._progress = threading.Condition()
        self._decided: dict[str, tuple[str, int]] = {}  # model -> (acquisition id, bundle id) last decided on
        self._unheld = 0  # firings whose first action has not started yet
        self.lockstep_timeouts = 0
        self._stop = threading.Event()
        self._continues: dict[str, str] = {}  # a live the actions started -> the live job it continues
        self.ctx = zmq.Context.instance()
        self._subs = []
        self._shared: dict[zmq.Socket, SharedResults] = {}  # results by shared memory from local engines
        self._source_of: dict[zmq.Socket, str] = {}  # socket -> its key in `sources`, the name triggers use
        for model, addr in sources.items():
            s = self.ctx.socket(zmq.SUB)
            self._source_of[s] = model
            self._shared[s] = SharedResults(s, addr)
            s.setsockopt(zmq.RCVHWM, 16)
            s.setsockopt(zmq.LINGER, 0)
            connect_socket(s, addr)
            self._subs.append(s)
        self._threads = [threading.Thread(target=self._receive, name="triggers", daemon=True),
                         threading.Thread(target=self._act, name="trigger-actions", daemon=True)]
        for t in self._threads:
            t.start()
        if config.lockstep:
            engine.cycle_gates.append(self._gate)

    def close(self) -> None:
        self._stop.set()
        if self._gate in self.engine.cycle_gates:
            self.engine.cycle_gates.remove(self._gate)
        self._actions.put(None)
        self._threads[1].join(timeout=5)  # an action under way (a tile scan, say) finishes on its own
        if threads_ended(self._threads[:1], "trigger runner"):
            for s in self._subs:
                s.close(linger=0)
                self._shared[s].close()
        if self.ring in self.engine.sinks:
            self.engine.sinks.remove(self.ring)
        for m in self.decider.measures.values():
            if isinstance(m, TimedTrigger):
                m.close()

    def status(self) -> dict[str, Any]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        return {
            "session": self.session, "log": str(self.log_path), **self.decider.status(),
            "decisions": len(self.decisions),
            "results": self.results_seen,
            "results_not_live": self.results_not_live,
            "fired": self.fired,
            "actions_pending": self._pending,
            "lockstep": {"enabled": self.config.lockstep, "timeouts": self.lockstep_timeouts},
            "pinned": self.ring.pins(),
            "closed_loop_latency_ms": None if lat is None else {
                "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": len(lat)},
        }

    # ----------------------------------------------------------------- decide
    def _receive(self) -> None:
        poller = zmq.Poller()
        for s in self._subs:
            poller.register(s, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(100):
                try:
                    parts = sock.recv_multipart(copy=False)
                    t_rx = now_ns()
                    got = self._shared[sock].resolve(*decode(parts))
                except Exception as e:  # noqa: BLE001 - garbage is logged, not fatal
                    log.warning("triggers: undecodable result: %s", e)
                    continue
                if got is None:  # a result lost in shared memory (a reused slot) or the switch to inline
                    continue
                _, header, data = got
                source = self._source_of[sock]
                if header.get("model") != source:  # a trigger's `model` is its key in `sources`, not the package name
                    header = {**header, "model": source, "package": header.get("model")}
                try:
                    if self._of_live(header):
                        self._decide(header, data, t_rx)
                    else:
                        self.results_not_live += 1
                    if self._pins:
                        job = self.engine.current_job
                        repin_for_next(self.ring, header, job.acquisition_id if job and job.kind == "live" else None)
                except Exception:  # noqa: BLE001 - the trigger thread must not die
                    log.exception("triggers: result %s not decided", header.get("bundle_id"))
                finally:  # counted once its decisions are logged: a client that waits for the count reads them
                    self.results_seen += 1

    def _of_live(self, header: dict[str, Any]) -> bool:
        """Whether a result is decided on: not when it is of a scan or pair capture this daemon ran (a client's,
        or a trigger's own ``z_stack``/``tile_scan``): triggers act on live only. A result of an acquisition that is
        no job of this daemon is decided on."""
        try:
            return self.engine.job(str(header.get("acquisition_id"))).kind == "live"
        except KeyError:
            return True

    def _decide(self, header: dict[str, Any], data: Any, t_received_ns: int = 0) -> None:
        """Decide on one result; a firing goes to the action thread before anything is logged (the
        hardware does not wait for the log), and its outcome line waits for its decision line."""
        decisions = self.decider.decide(header, data)
        t_decided = now_ns()
        firings = [_Firing(d, header, data, t_received_ns or t_decided, t_decided)
                   for d in decisions if d.event == "fire"]
        for f in firings:
            self._pin(f)
            with self._lock:
                self._pending += 1
            self.fired += 1
        with self._progress:
            self._unheld += len(firings)
            self._decided[str(header.get("model"))] = (str(header.get("acquisition_id")),
                                                       int(header.get("bundle_id", -1)))
            self._progress.notify_all()
        for f in firings:
            self._actions.put(f)
        try:
            for d in decisions:
                with self._lock:
                    self.decisions.append(d)
                self._log(d.key())
                for f in firings:
                    if f.decision is d:
                        f.logged.set()
                if d.event in ("fire", "disabled", "untrusted"):  # a firing is the normal case; the others warn
                    log.log(logging.INFO if d.event == "fire" else logging.WARNING, "trigger %s: %s (%s)",
                            d.trigger, d.event, d.reason)
        finally:  # an outcome never waits for a decision line that failed to be written
            for f in firings:
                f.logged.set()

    def _pin(self, f: _Firing) -> None:
        """Take from the ring (or its pins), now, the frames the firing's actions will read."""
        spec = next(t for t in self.config.triggers if t.name == f.decision.trigger)
        f.bundle, f.windows = take_frames(self.ring, f.decision, spec)

    def _log(self, line: dict[str, Any]) -> None:
        """Append one JSON line to the decision log (decisions in the order taken; outcomes later)."""
        with self._lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    # -------------------------------------------------------------------- act
    def _act(self) -> None:
        while True:
            firing = self._actions.get()
            if firing is None:
                return
            firing.t_action_ns = now_ns()
            try:
                self._run_actions(firing)
            finally:
                for _, bucket, _ in firing.windows.values():
                    self.ring.unfollow(bucket)
                self._held(firing)
                with self._lock:
                    self._pending -= 1

    def _run_actions(self, firing: _Firing) -> None:
        """Execute a firing's actions in order and log their outcome (after the decision's own line)."""
        d, header, data = firing.decision, firing.header, firing.data
        self._firing = firing
        spec = next(t for t in self.config.triggers if t.name == d.trigger)
        results = []
        for i, action in enumerate(spec.actions):
            if i == 0 and action.kind not in HARDWARE_ACTIONS:  # starts without the microscope
                self._held(firing)
            # the first hardware action asks for the microscope at once (live yields it before its next frame)
            first_on_hardware = i == 0 and action.kind in HARDWARE_ACTIONS
            if action.kind in SCOPE_ACTIONS and (why := self._stopped(d)):
                give_back(self.budget, action, decided_field(d.position_um, header))
                log.info("trigger %s action %s skipped: %s", d.trigger, action.kind, why)
                results.append({"action": action.kind, "ok": False, "skipped": why})
                continue
            try:
                with self._hardware() if first_on_hardware else contextlib.nullcontext():
                    res = getattr(self, f"_do_{action.kind}")(action, spec, d, header, data)
                results.append({"action": action.kind, "ok": True, **(res or {})})
            except NotRun as e:  # refused where it would run (the field changed since the decision), before light
                log.info("trigger %s action %s skipped: %s", d.trigger, action.kind, e)
                results.append({"action": action.kind, "ok": False, "skipped": str(e)})
            except Exception as e:  # noqa: BLE001 - a failing action is logged; acquisition goes on
                log.exception("trigger %s action %s failed", d.trigger, action.kind)
                results.append({"action": action.kind, "ok": False, "error": f"{type(e).__name__}: {e}"})
            if i == 0:
                if not firing.held:  # the microscope was never had (e.g. it raised): the loop ends at the start
                    firing.t_hardware_ns = firing.t_action_ns
                    self._held(firing)
                self._record_latency(firing)
        d.outcome["actions"] = results
        self._firing = None
        firing.logged.wait()
        self._log({"outcome_of": {"t_ns": d.t_ns, "trigger": d.trigger, "bundle_id": d.bundle_id}, **d.outcome})

    def _stopped(self, d: Decision) -> str | None:
        """Why the microscope must not act on ``d`` any more: the live acquisition it was decided on was stopped
        (by the user, or replaced by a trigger's ``switch_live``) and none runs now, or another live runs now, one
        that does not continue it (the user's next live, maybe at another field: a late result of the previous
        one is not of it). A result the model delivers after the stop is still decided on and logged, but the user
        may be at the slide. A live that ended by itself (``max_cycles``) still gets its last firings' actions
        while no other live runs. Nor once the triggers were unloaded (or replaced, or the daemon shuts down): the
        firings queued behind an action under way are not run."""
        if self._stop.is_set():
            return "the triggers were unloaded before this action ran"
        live = self.engine.current_job if self.engine.state == "live" else None
        if live is not None:
            if self._same_live(live.acquisition_id, d.acquisition_id):
                return None
            return (f"live acquisition {d.acquisition_id} ended before this action ran, and live {live.acquisition_id}"
                    " runs now: the result is not of the live running")
        job = next((j for j in self.engine.jobs() if j.acquisition_id == d.acquisition_id), None)
        if job is None or job.frames_at_stop is None:
            return None
        return f"live acquisition {d.acquisition_id} was stopped before this action ran, and no live runs"

    def _same_live(self, acquisition_id: str, other: str) -> bool:
        """Whether two acquisitions are one live: the same job, or jobs this runner's actions continued one with
        the other (a ``switch_live``, live resumed after a ``z_stack`` or ``tile_scan``)."""
        return self._first_of(acquisition_id) == self._first_of(other)

    def _first_of(self, acquisition_id: str) -> str:
        """The live job that ``acquisition_id`` continues (through this runner's actions), or itself."""
        seen = set()
        while acquisition_id in self._continues and acquisition_id not in seen:
            seen.add(acquisition_id)
            acquisition_id = self._continues[acquisition_id]
        return acquisition_id

    def _record_latency(self, f: _Firing) -> None:
        """``closed_loop_latency_ms`` (deciding frame's exposure start -> the first action on the hardware),
        its parts, and the deciding bundle's acquisition before its last frame."""
        h = f.header
        stamps = {k: h.get(k) for k in ("t_exposure_start_ns", "t_acquired_ns", "t_frame_published_ns",
                                          "t_received_ns", "t_dequeued_ns", "t_postprocessed_ns", "t_published_ns")}
        stamps.update(t_trigger_received_ns=f.t_received_ns, t_decided_ns=f.t_decided_ns,
                      t_action_ns=f.t_action_ns, t_hardware_ns=f.t_hardware_ns)
        t0 = int(h.get("t_exposure_start_ns") or 0)
        if not t0:
            return
        d = f.decision
        d.outcome["closed_loop_latency_ms"] = round((f.t_hardware_ns - t0) / 1e6, 3)
        d.outcome["closed_loop_ms"] = loop_breakdown(stamps)
        first = min((fr.header.t_exposure_start_ns for fr in f.bundle), default=0)
        d.outcome["bundle_before_deciding_frame_ms"] = round((t0 - first) / 1e6, 3) if first else None
        self.latencies_ms.append(d.outcome["closed_loop_latency_ms"])

    @contextlib.contextmanager
    def _hardware(self) -> Iterator[None]:
        """Hold the microscope for an action; the first time in a firing stamps when it started on the hardware."""
        with self.engine.hardware():  # live yields it before its next frame
            f = self._firing
            if f is not None:
                self._held(f)
            yield

    def _held(self, f: _Firing) -> None:
        """The firing's first action has started (holding the microscope, for a hardware action): stamp it,
        once, and let a lockstep live cycle go on."""
        if f.held:
            return
        f.held = True
        f.t_hardware_ns = f.t_hardware_ns or now_ns()
        with self._progress:
            self._unheld -= 1
            self._progress.notify_all()

    def _gate(self, job: Any, bundle: int) -> None:
        """Lockstep (an :class:`AcquisitionEngine` cycle gate): after a live cycle, wait until every model the
        triggers read has decided on this bundle (or a later one) and every firing's first action has started,
        so the microscope is idle while the model decides and free when an action needs it. Gives up after
        ``lockstep_timeout_s`` (counted in the status: an engine that dropped the bundle never stops live)."""
        models = {t.model for t in self.config.triggers}
        deadline = time.monotonic() + self.config.lockstep_timeout_s

        def done() -> bool:
            return not self._unheld and all(
                (d := self._decided.get(m)) is not None and d[0] == job.acquisition_id and d[1] >= bundle
                for m in models)

        with self._progress:
            while not done():
                left = deadline - time.monotonic()
                if job._stop.is_set() or self._stop.is_set():
                    return
                if left <= 0:
                    self.lockstep_timeouts += 1
                    return
                self._progress.wait(min(left, 0.05))  # a stop request is seen within 50 ms

    def _pinned(self) -> _Firing:
        """The firing whose actions run now (an action runs only inside :meth:`_run_actions`)."""
        if self._firing is None:
            raise RuntimeError("no firing is running")
        return self._firing

    def _recorder(self, kind: str, d: Decision) -> Recorder:
        self.engine.check_writable()  # the disk's reserve, as every recording leaves it
        acquisition_id = f"{self.session}-{d.trigger}-{kind}-{d.bundle_id}"
        path = inside(self.engine.data_dir, f"{acquisition_id}.ome.zarr", "trigger recording")
        return Recorder(path, acquisition_id, {"kind": f"trigger:{kind}", "decision": d.key()}, ngff=self.engine.ngff)

    def _do_confirm_fluorescence(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        """Snap the real fluorescence here and record it with the deciding label-free bundle as a pair (refused
        before any light when the pair could not be recorded). A pair is of one field: when the stage has left
        the deciding field since (an earlier ``center_object``, a ``move_stage``), the bundle's label-free channels
        are taken again here, with the fluorescence (``label_free`` in the outcome says so)."""
        try:
            self.engine.check_writable()
        except Exception:  # refused before any light (a full disk): the field's budget gets its charge back
            give_back(self.budget, a, decided_field(d.position_um, header))
            raise
        bundle = self._pinned().bundle  # the deciding bundle, taken from the ring when it was decided
        with self._hardware():
            x, y, _ = self.engine.backend.position_um()
            here = (x, y, field_of_view_um(header))
            moved = self._charge_here(a, d, header, here)
            if left := left_field(decided_field(d.position_um, header), here, CENTRE_SAME_FIELD_UM):
                bundle = [self.engine.snap(ChannelSpec(name=f.header.channel, exposure_ms=f.header.exposure_ms))
                          for f in bundle]
            fluo = [self.engine.snap(ChannelSpec(name=c, exposure_ms=a.exposure_ms)) for c in a.channels]
        rec = self._recorder("pair", d)
        names = [f.header.channel for f in bundle + fluo]
        record_by_sampling(rec, bundle + fluo)
        short = ({"label_free": f"taken again here: {left} since the decision"} if left
                 else self._bundle_short(bundle, header, d))
        return {"recording": str(rec.path), "channels": names, **moved, **short}

    def _charge_here(self, a: ActionSpec, d: Decision, header: dict[str, Any], here: Field) -> dict:
        """The action's light charged to the field it runs at, ``here`` (:func:`.action_plans.charge_where_run`:
        ``NotRun`` when that field's budget cannot take it)."""
        return charge_where_run(self.budget, a, decided_field(d.position_um, header), here)

    def _bundle_short(self, bundle: list[Frame], header: dict[str, Any], d: Decision) -> dict[str, str]:
        """``{"warning": ...}`` when the ring no longer held every frame the deciding result was computed from
        (its ``source_seqs``): the pair lacks them (nothing otherwise)."""
        held = {f.header.seq for f in bundle}
        missing = [s for s in header.get("source_seqs") or [] if s not in held]
        if not missing:
            return {}
        warning = pair_warning(self.ring, len(missing), len(header["source_seqs"]),
                               (self._pinned().t_decided_ns - d.t_ns) / 1e9)
        log.warning("trigger %s confirm_fluorescence: %s", d.trigger, warning)
        return {"warning": warning}

    def _do_save_window(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        """Frames from ``before_s`` before the deciding bundle's first frame (taken from the ring when it was
        decided) to ``after_s`` after the event (its last frame)."""
        t_event, t_end = d.t_ns, d.t_ns + int(a.after_s * 1e9)  # integers: a float sum rounds to 256 ns (1.8e18 ns)
        before, bucket, warning = self._pinned().windows[id(a)]
        deadline = time.monotonic() + a.after_s + 5.0
        while time.monotonic() < deadline and self.ring.newest_ns <= t_end:  # until a frame past the window came
            live = self.engine.current_job  # (or live ended or is another's, or the bucket is full: its byte cap)
            if live is None or live.kind != "live" or not self._same_live(live.acquisition_id, d.acquisition_id) \
                    or bucket.cut_ns:
                break
            time.sleep(0.02)
        self.ring.unfollow(bucket)
        if bucket.cut_ns:
            warning = "; ".join(w for w in (warning, after_warning(bucket, a, t_event)) if w)
        # another live's frames are not of this event's (the user's next live, maybe at another field)
        others = {j.acquisition_id for j in self.engine.jobs()
                  if j.kind == "live" and not self._same_live(j.acquisition_id, d.acquisition_id)}
        seen, frames = set(), []
        for f in before + bucket:
            if f.header.seq not in seen and f.header.t_acquired_ns <= t_end and f.header.acquisition_id not in others:
                seen.add(f.header.seq)
                frames.append(f)
        frames.sort(key=lambda f: f.header.seq)
        if not frames:
            return {"frames": 0, **self._window_short(d, warning)}
        rec = self._recorder("window", d)
        layouts = record_by_sampling(rec, frames, window_layout)
        columns = [c for cols, _ in layouts for c in cols]
        n_before = sum(f.header.t_acquired_ns < t_event for f in frames)
        return {"recording": str(rec.path), "frames": len(frames), "frames_before_event": n_before,
                "time_points": len({(f.header.acquisition_id, f.header.bundle_id) for f in frames}),
                "channels": columns,
                **self._window_short(d, warning)}

    @staticmethod
    def _window_short(d: Decision, warning: str) -> dict[str, str]:
        """``{"warning": ...}`` when the ring had already dropped the start of the window by the decision
        (:func:`.trigger_frames.take_frames`; nothing otherwise)."""
        if not warning:
            return {}
        log.warning("trigger %s save_window: %s", d.trigger, warning)
        return {"warning": warning}

    def _do_center_object(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        """Move the stage so the largest object of the measured channel is centred; not when the stage has left the
        deciding result's field (another centring, a ``move_stage``): the object's offset was measured there."""
        m = spec.measurement
        if m is None:
            raise ValueError("center_object needs a declarative measurement (which channel to centre)")
        img = data[header["channels"].index(m.channel)]
        labels, n = ndimage.label(img > (a.threshold if a.threshold is not None else m.threshold))
        if n == 0:
            return {"moved": False, "reason": "no object above the threshold"}
        sizes = np.bincount(labels.ravel())[1:]
        cy, cx = np.argwhere(labels == 1 + int(np.argmax(sizes))).mean(axis=0)
        px = float(header.get("pixel_size_um") or 0.0)
        h, w = img.shape
        dx, dy = (cx + 0.5 - w / 2) * px, (cy + 0.5 - h / 2) * px
        with self._hardware():
            x, y, z = self.engine.backend.position_um()
            (x0, y0, _), far = d.position_um, CENTRE_SAME_FIELD_UM
            if abs(x - x0) > far or abs(y - y0) > far:
                return {"moved": False, "reason": f"the stage moved from {x0:g}, {y0:g} to {x:g}, {y:g} µm since the "
                        "decision: the object's offset was measured in the field decided on"}
            self.engine.backend.move_um(x + dx, y + dy)
        return {"moved": True, "offset_um": [round(dx, 3), round(dy, 3)]}

    def _scan(self, seq: useq.MDASequence) -> dict:
        """Pause live (if running), run ``seq``, return the stage, resume the same live where it left off
        (:func:`continued_live`). A scan stopped from outside (a user's ``stop``, the daemon shutting down) or
        a runner being closed does not resume live: the stop was meant for the microscope, not for one job."""
        live = self.engine.current_job if self.engine.state == "live" else None
        if live:
            self.engine.stop(live.id)
            self.engine.wait(live.id, 30)
        home = self.engine.backend.position_um()
        job = None
        try:
            try:
                job = self.engine.run_sequence(seq, kind="scan")
            except Exception as e:  # refused before its first frame: no light reached the sample
                raise NotRun(f"the daemon refused the scan: {type(e).__name__}: {e}") from None
            self.engine.wait(job.id)  # as long as it takes: load accepts scans of hours; a stop ends it
            if job.frames_at_stop is not None:
                raise RuntimeError(f"scan {job.id} was stopped before it ended ({job.frames} frames): "
                                   "live is not resumed")
            if job.status != "done":
                raise RuntimeError(f"scan {job.id} {job.status}: {job.error}")
            return {"recording": job.path, "frames": job.frames}
        finally:
            self.engine.backend.move_um(*home)
            stopped = self._stop.is_set() or (job is not None and job.frames_at_stop is not None)
            if live and not stopped and (resumed := continued_live(live)):
                self._continues[self.engine.start_live(*resumed).acquisition_id] = live.acquisition_id

    def _fits(self, a: ActionSpec, d: Decision, header: dict[str, Any], seq: useq.MDASequence) -> None:
        """Raise :class:`NotRun` with the firing's light for ``a`` given back when ``seq`` leaves the stage travel
        the backend declares: the scan would be refused, but only after live had been stopped for it."""
        try:
            check_travel(seq, self.engine.backend.travel_um())
        except ValueError as e:
            give_back(self.budget, a, decided_field(d.position_um, header))
            raise NotRun(f"{e}; live was not stopped and its light was not charged") from None

    def _do_z_stack(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        x, y, z = self.engine.backend.position_um()
        seq = useq.MDASequence(
            stage_positions=[useq.Position(x=x, y=y, z=z)],
            channels=[useq.Channel(config=c, exposure=a.exposure_ms) for c in a.channels],
            z_plan=useq.ZRangeAround(range=a.z_range_um, step=a.z_step_um), axis_order="pcz")
        self._fits(a, d, header, seq)
        return self._charged_scan(a, d, header, (x, y, field_of_view_um(header)), seq)

    def _charged_scan(self, a: ActionSpec, d: Decision, header: dict[str, Any], here: Field,
                      seq: useq.MDASequence) -> dict:
        """Charge ``a``'s light to ``here`` and run ``seq`` (:meth:`_scan`); a scan the daemon refuses (raising
        :class:`NotRun`) took no light, so its charge is given back."""
        moved = self._charge_here(a, d, header, here)
        try:
            return {**self._scan(seq), **moved}
        except NotRun as e:
            give_back(self.budget, a, here)
            raise NotRun(f"{e}; its light was given back") from None

    def _do_tile_scan(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        """The tiles around here the firing was charged for, each in its cell (:func:`.action_plans.tile_scan_plan`)."""
        h, w = self.engine.backend.describe()["image_shape"]
        px = self.engine.backend.pixel_size_um()
        x, y, z = self.engine.backend.position_um()
        seq = tile_scan_plan(a, x, y, z, (w * px, h * px))
        self._fits(a, d, header, seq)
        return self._charged_scan(a, d, header, (x, y, (w * px, h * px)), seq)

    def _do_switch_live(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        """Restart the running live with another cycle and/or frame interval (fast <-> slow imaging); it never
        starts a live that has ended."""
        live = self.engine.current_job if self.engine.state == "live" else None
        if live is None:
            raise RuntimeError("no live runs: switch_live changes a running live cycle, it never starts one")
        changes: dict[str, Any] = {}
        if a.interval_ms is not None:
            changes["interval_ms"] = a.interval_ms
        if a.live_channels:
            changes["channels"] = switched_cycle(live.plan, a.live_channels)
        self.engine.stop(live.id)
        self.engine.wait(live.id, 30)
        resumed = continued_live(live, **changes)
        if resumed is None:
            return {"live_job": None, "reason": "the live had no cycles or recording cap left"}
        job = self.engine.start_live(*resumed)
        self._continues[job.acquisition_id] = live.acquisition_id
        return {"live_job": job.id, "interval_ms": resumed[0].interval_ms}

    def _do_notify(self, a: ActionSpec, spec: TriggerSpec, d: Decision, header, data) -> dict:
        if self.publisher is not None:
            self.publisher.publish_event({"source": "triggers", "message": a.message or f"{d.trigger} fired",
                                          "decision": d.key()})
        return {"published": self.publisher is not None}

