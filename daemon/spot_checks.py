"""Spot checks: the real fluorescence (or super-resolution ground truth) beside the virtual output.

A :class:`SpotChecker` watches one model's result stream. Every ``period_s``,
while live runs, it takes the newest *trusted* result of that model from the
running live job (acquired after the previous check; results of snaps are
ignored), snaps the real channel behind each checked output
at the current position (:meth:`AcquisitionEngine.snap`, allowed during live
between its frames), and compares the two per output channel: PSNR (data range
of the real image, as the model card's evaluation computes it) and Pearson r
(:mod:`scopecast.models.evaluation`). The running fidelity (the mean over the
last ``window`` checks) is published as an ``event`` on the frame stream and
in ``spot_checks`` status; an alarm is raised when a channel's running PSNR
falls below the figure the package validated, less ``tolerance_db``, or below
``min_psnr_db``. The validated figure (``status.comparator`` says which was used):
the package's per-morphology table (``ModelManifest.validated``): the figure of
the specimen's ``morphology`` when the request names one the table holds, else the
table's floor (the lowest in-domain morphology figure: an ordinary field of any
training morphology must not raise the alarm); a package without that table falls
back to the card's validation mean (``provenance.metrics.model``, a mean over the
training morphologies, which sits above the weaker ones).

Units. The virtual output is in the package's physical units
(``output_scaling``): camera counts at a *reference exposure*: for virtual
staining 100 ms, the exposure of the training targets (models/dataset.py
``TASKS``; targets taken shorter are rescaled to it); for super-resolution the
input's own exposure (its STED targets were taken at the input's exposure, and
with calibrated normalization the network sees the exposure), unless the
package's ``provenance.reference_exposure_ms`` or the request says otherwise.
The real capture is brought to those units as
``(counts - offset) × reference / actual + offset`` (offset: the package's camera
calibration, else 100 ADU); each check reports the factor it applied. A
capture is taken at ``exposure_ms`` (default 20 ms: the virtual-staining
targets' unclipped exposure for nuclei). When the two images differ in
sampling by an integer factor, the finer one is block-averaged.

Light dose. Each check is charged ``exposure_ms`` (at full power) per channel, before it
captures, to the session's one light budget (:func:`scopecast.daemon.dose.shared_budget`),
which the triggers charge too: its limits (the triggers' ``SafetySpec``) bound
the light of both, and the request's ``dose_per_position`` / ``dose_per_session``
cap the spot checks' own share (positions closer than ``position_grid_um``
share one). A check that would exceed a position budget is skipped (counted);
one that would exceed a session budget stops the spot checks (``stopped_reason``).
A check whose capture was not taken in the result's field (the stage moved in x/y by more than 1 µm or in
z by more than 1 µm, or another objective or binning changed the field of view: :func:`capture_differs`)
is not compared (counted as skipped; its dose is still charged); a stage already away from the result's field
before the capture (:func:`stage_moved`) skips it before any light. An untrusted result of the live job drops
the newest trusted one: the field it showed is no longer the one under the objective (the user focused away,
switched objective, emptied the field), so no check compares it with a capture of the new field.

Weights. Results name the weights that computed them (``model_sha256``, ``precision``). The checker judges one
set of weights at a time: when results of other weights arrive under the same model name (``load_model`` of a
fine-tuned package of that name, an engine restarted with ``--precision int8``), the running fidelity starts
again from their checks, the alarm clears, the comparator is read again for them (their shipped package, or none),
an event ``kind: "weights_changed"`` is published, and ``status`` reports ``weights`` and ``weights_changes``.
A result of the previous weights that arrives later (a bundle in flight at the switch) is skipped, not checked.

Recording. Each check writes ``<data_dir>/<session>-<model>-spotcheck-<n>.ome.zarr``:
the label-free bundle the result came from (from a ring buffer of recent
frames, or pinned beside it for the check: :mod:`.spot_check_pins`) and the real capture, one series per detector; its
``scopecast.spot_check`` attribute holds the figures and units. That is a
training pair for later fine-tuning.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .acquisition import AcquisitionEngine
from .confine import inside, safe_name
from .dose import full_power, shared_budget
from .frames import Frame, now_ns
from .plans import ChannelSpec
from .recorder import Recorder, RecordingError
from .security import connect_socket
from .shm_results import SharedResults
from .spot_check_pins import MISSES_BEFORE_SKIP, PinningRing
from .stream import FramePublisher, decode
from .action_recordings import record_by_sampling
from .trigger_actions import FrameRing

__all__ = ["SpotCheckChannel", "SpotCheckSpec", "SpotChecker", "fidelity", "stage_moved", "validated_psnr",
           "weights_of"]

log = logging.getLogger(__name__)

#: Camera offset assumed when the package does not record its camera (typical sCMOS).
DEFAULT_OFFSET_ADU = 100.0
#: Reference exposure of the outputs (models/dataset.py TASKS: targets in counts at 100 ms) when the
#: package does not say (``provenance.reference_exposure_ms``).
REFERENCE_EXPOSURE_MS = 100.0
#: Output -> real channel, by task, when the request names none.
DEFAULT_CHANNELS: dict[str, dict[str, dict[str, Any]]] = {
    "virtual-staining": {"nuclei": {"channel": "Nuclei"}, "membrane": {"channel": "Membrane"}},
    "super-resolution": {"membrane-sr": {"channel": "Membrane", "detector": "STED"}},
}


class SpotCheckChannel(BaseModel):
    """The real acquisition behind one output channel."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="channel preset, e.g. Nuclei")
    detector: str | None = Field(default=None, description="e.g. STED (default: the camera)")
    exposure_ms: float | None = Field(default=None, gt=0, description="default: the spec's exposure_ms")


class SpotCheckSpec(BaseModel):
    """What ``start_spot_checks`` accepts (see docs/protocol.md)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="the model's name; also part of recording names: 1-64 letters, digits, "
                       "'_', '.', '-' (starting with a letter or digit, no '..')")
    results: str = Field(description="the model's result stream address")
    period_s: float = Field(default=30.0, ge=0.1)
    channels: dict[str, str | SpotCheckChannel] | None = Field(
        default=None, description="output channel -> real channel (default by task)")
    exposure_ms: float = Field(default=20.0, gt=0)
    power: float = Field(default=1.0, description="1 only: checks are charged at full power (dose.full_power)")
    reference_exposure_ms: float | None = Field(default=None, gt=0)
    min_psnr_db: float | None = Field(default=None, description="alarm threshold (default: validated - tolerance)")
    morphology: str | None = Field(default=None, description="the specimen's morphology, when known: its "
                                   "validated figure is the comparator (default: the validated floor)")
    tolerance_db: float = Field(default=3.0, ge=0)
    window: int = Field(default=5, ge=1, le=1000)
    dose_per_position: float = Field(default=500.0, ge=0)
    dose_per_session: float = Field(default=5000.0, ge=0)
    position_grid_um: float = Field(default=100.0, gt=0)
    record: bool = True

    _full_power = field_validator("power")(full_power)

    @field_validator("model")
    @classmethod
    def _plain_model_name(cls, v: str) -> str:
        """A model name becomes part of a file name: refuse one that could leave the data directory."""
        return safe_name(v, "model")

    def real_channels(self, task: str) -> dict[str, SpotCheckChannel]:
        raw = self.channels if self.channels is not None else DEFAULT_CHANNELS.get(task)
        if not raw:
            raise ValueError(f"model task {task!r} has no default spot-check channels: give 'channels'")
        out = {}
        for name, c in raw.items():
            c = SpotCheckChannel(channel=c) if isinstance(c, str) else SpotCheckChannel.model_validate(c)
            out[name] = c if c.exposure_ms else c.model_copy(update={"exposure_ms": self.exposure_ms})
        return out


#: The spot checks' name in the shared light budget.
DOSE_SOURCE = "spot_checks"
#: How far (µm, in x/y and in z: the uncertainty check's scene rule for z) the capture may be from the result.
SAME_FIELD_UM = 1.0


def _finite(v: float) -> float | None:
    return round(float(v), 4) if np.isfinite(v) else None


def weights_of(header: dict[str, Any]) -> dict[str, Any]:
    """The weights a result was computed with: ``{"model_sha256", "precision"}`` (None where it does not say)."""
    return {"model_sha256": header.get("model_sha256"), "precision": header.get("precision")}


def capture_differs(result: dict[str, Any], bundle: list[Frame], capture: Frame) -> str | None:
    """Why ``capture`` (the real channel) does not show the field of ``result`` (its label-free ``bundle``), or
    None: the stage moved (x/y or z by more than :data:`SAME_FIELD_UM`), or the field of view differs by more than
    1 % (another objective or binning; the pixel size times the width, so a finer detector of the same field,
    e.g. STED, is the same field)."""
    c = capture.header
    moved = stage_moved(result, (c.stage_x_um or 0.0, c.stage_y_um or 0.0, c.stage_z_um or 0.0),
                        "between the result and the capture")
    if moved:
        return moved
    b = bundle[-1].header
    fov_b, fov_c = (b.pixel_size_um or 0.0) * b.shape[-1], (c.pixel_size_um or 0.0) * c.shape[-1]
    if fov_b > 0 and fov_c > 0 and abs(fov_c / fov_b - 1) > 0.01:
        return (f"field of view changed: {fov_c:.0f} µm captured, {fov_b:.0f} µm in the result (another objective "
                "or binning between the result and the capture)")
    return None


def stage_moved(result: dict[str, Any], here: tuple[float, float, float], when: str) -> str | None:
    """Why a stage at ``here`` (x, y, z µm) is not at the field of ``result`` (x/y or z more than
    :data:`SAME_FIELD_UM` away), ending with ``when``; or None."""
    moved = max(abs(here[0] - float(result.get("stage_x_um") or 0.0)),
                abs(here[1] - float(result.get("stage_y_um") or 0.0)))
    if moved > SAME_FIELD_UM:
        return f"stage moved: {moved:.1f} µm {when}"
    dz = abs(here[2] - float(result.get("stage_z_um") or 0.0))
    if dz > SAME_FIELD_UM:
        return f"stage moved: focus {dz:.1f} µm away from the result's {when}"
    return None


def _same_sampling(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-average the finer of two images to the coarser's sampling (integer factors only)."""
    if a.shape == b.shape:
        return a, b
    swap = a.shape[0] < b.shape[0]
    fine, coarse = (b, a) if swap else (a, b)
    f = fine.shape[0] // coarse.shape[0]
    if f < 1 or fine.shape != (coarse.shape[0] * f, coarse.shape[1] * f):
        raise ValueError(f"virtual output {a.shape} and real capture {b.shape} differ by no integer factor")
    fine = fine.reshape(coarse.shape[0], f, coarse.shape[1], f).mean(axis=(1, 3))
    return (coarse, fine) if swap else (fine, coarse)


def fidelity(virtual: np.ndarray, real: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB, data range of ``real``) and Pearson r of ``virtual`` against ``real`` (same units),
    and both means (a mismatch of units or gain shows there first)."""
    from scopecast.models.evaluation import pearson, psnr

    v, r = _same_sampling(virtual.astype(np.float64), real.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"psnr_db": _finite(psnr(v, r)), "pearson": _finite(pearson(v, r)),
                "virtual_mean": _finite(v.mean()), "real_mean": _finite(r.mean())}


def validated_psnr(manifest: Any, outputs: list[str], morphology: str | None) -> tuple[dict[str, float], str]:
    """``(output -> validated PSNR dB, comparator)``: what the alarm compares the running fidelity with.

    The package's per-morphology table (``validated``): the ``morphology``'s figures when it holds them, else its
    floor; without the table, the card's validation mean (``provenance.metrics.model``); ``{}`` without either."""
    val = getattr(manifest, "validated", None) if manifest is not None else None
    if val is not None:
        if morphology and morphology in val.morphologies:
            figs, how = val.morphologies[morphology], f"validated {morphology} (package's per-morphology table)"
        else:
            figs = val.floor
            how = "validated floor (the lowest in-domain morphology figure of the package's per-morphology table)"
            if morphology:
                how += f"; morphology {morphology!r} is not among the validated {sorted(val.morphologies)}"
        return {k: float(figs[k].psnr_db) for k in outputs if k in figs}, how
    metrics = ((manifest.provenance.get("metrics") or {}).get("model") or {}) if manifest is not None else {}
    card = {k: float(metrics[k]["psnr"]) for k in outputs if isinstance(metrics.get(k), dict)
            and isinstance(metrics[k].get("psnr"), int | float)}
    if card:
        return card, "card validation mean over the training morphologies (package has no per-morphology table)"
    return {}, "none (the package records no validated fidelity; only min_psnr_db can raise the alarm)"


def _package_manifest(model: str, sha256: str | None, precision: str | None = None) -> Any:
    """The shipped package of ``model`` (matching ``sha256`` when given), or ``None``; for results of a
    lower-precision variant (``precision``) with the variant's own validated figures, as the engine judges it."""
    from scopecast.models import packages_root
    from scopecast.models.manifest import ModelManifest

    for p in sorted(packages_root().glob("*/manifest.json")):
        try:
            m = ModelManifest.model_validate(json.loads(p.read_text()))
        except Exception:  # noqa: BLE001 - a broken package is not this model's
            continue
        if m.name == model and (sha256 is None or m.sha256 == sha256):
            variant = m.variants.get(precision) if precision and precision != "fp32" else None
            if variant is not None and variant.validated is not None:
                return m.model_copy(update={"validated": variant.validated})
            return m
    return None


def _begun_ns(header: dict[str, Any]) -> int:
    """When the bundle of a result began (its first exposure; else its last frame's acquisition)."""
    return int(header.get("t_bundle_exposure_start_ns") or header.get("t_acquired_ns") or 0)


def _bundle_key(header: dict[str, Any]) -> tuple[str, int]:
    """``(acquisition id, bundle id)`` of a result."""
    return str(header.get("acquisition_id")), int(header.get("bundle_id", -1))


def ring_holds(ring: FrameRing) -> str:
    """What ``ring`` holds now, in words: ``the last 0.52 s of frames (at most 10 s and 256 MiB)``. Its byte
    limit, not its time, bounds it while live runs fast (512 frames of 512², half a second of the simulator)."""
    frames = ring.window(0)
    held_s = (frames[-1].header.t_acquired_ns - frames[0].header.t_acquired_ns) / 1e9 if frames else 0.0
    return f"the last {held_s:.2f} s of frames (at most {ring.seconds:g} s and {ring.max_bytes >> 20} MiB)"


class SpotChecker:
    """Spot checks of one model during live (see module docstring). ``close`` stops it."""

    def __init__(self, spec: SpotCheckSpec, engine: AcquisitionEngine, publisher: FramePublisher | None,
                 data_dir: Path) -> None:
        self.spec = spec
        self.engine = engine
        self.publisher = publisher
        self.data_dir = Path(data_dir)
        self.session = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.budget = shared_budget(engine)  # the session's one budget: the triggers draw from it too
        self.own_caps = (spec.dose_per_position, spec.dose_per_session, spec.position_grid_um)
        # 256 MiB are half a second of a fast live at 512²: the bundle of the result a check takes is pinned
        self.ring = PinningRing(10.0, 256 << 20)
        # before the publisher: a frame is in the ring before any engine can have computed a result on it
        engine.sinks.insert(0, self.ring)
        self.results_seen = 0
        self.untrusted_seen = 0
        self.checks: list[dict[str, Any]] = []  # compared checks (the last ``window`` feed the fidelity)
        self.skipped: collections.Counter[str] = collections.Counter()
        self.last_skip: str | None = None
        self.recordings: list[str] = []
        self._pairs = 0  # pair recordings begun: a pair that failed keeps its number (its directory stays)
        self.alarm_reasons: list[str] = []
        self.alarms_raised = 0
        self.stopped_reason: str | None = None
        self.card: dict[str, float] = {}  # output -> the validated PSNR the alarm compares with
        self.comparator = "not yet known (set by the first result)"
        self._manifest: Any = None
        self._channels: dict[str, SpotCheckChannel] | None = None
        self.weights: dict[str, Any] | None = None  # whose checks the running fidelity averages (set by a result)
        self._weights_t_ns = 0  # acquisition time of the newest result of those weights
        self.weights_changes: list[dict[str, Any]] = []
        self._fidelity_from = 0  # index in ``checks`` of the first check of the current weights
        self._newest: tuple[dict[str, Any], np.ndarray] | None = None
        self.pin_misses = 0  # due checks whose newest result's bundle was neither in the ring nor pinned
        self._checking: threading.Thread | None = None  # the check under way
        self._next_t = time.monotonic()  # when the next check is due
        self._last_result_t = 0.0  # when the newest live result came (monotonic)
        # a result of frames taken before the ring existed has no label-free bundle to record beside the capture
        # (the first check's pair held the capture alone): check only results of bundles begun from now on
        self._last_capture_ns = now_ns()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sub = zmq.Context.instance().socket(zmq.SUB)
        self._shared = SharedResults(self._sub, spec.results)  # by shared memory from a local engine
        self._sub.setsockopt(zmq.RCVHWM, 16)
        self._sub.setsockopt(zmq.LINGER, 0)
        connect_socket(self._sub, spec.results)
        self._thread = threading.Thread(target=self._run, name=f"spot-checks-{spec.model}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() not in (self._thread, self._checking):
            self._thread.join(timeout=60)
        self._sub.close(linger=0)
        self._shared.close()
        if self.ring in self.engine.sinks:
            self.engine.sinks.remove(self.ring)

    # ---------------------------------------------------------------- status
    def running_fidelity(self) -> dict[str, dict[str, Any]]:
        """Per output channel: mean PSNR and r over the last ``window`` compared checks of the current weights."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.checks[self._fidelity_from:][-self.spec.window:]:  # the current weights' checks only
            for name, f in c["channels"].items():
                out.setdefault(name, {"psnr": [], "r": []})
                if f["psnr_db"] is not None:
                    out[name]["psnr"].append(f["psnr_db"])
                if f["pearson"] is not None:
                    out[name]["r"].append(f["pearson"])
        return {k: {"psnr_db": _finite(np.mean(v["psnr"])) if v["psnr"] else None,
                    "pearson": _finite(np.mean(v["r"])) if v["r"] else None, "n": len(v["psnr"])}
                for k, v in out.items()}

    def thresholds(self) -> dict[str, float]:
        if self.spec.min_psnr_db is not None:
            return {k: self.spec.min_psnr_db for k in (self._channels or {})}
        return {k: v - self.spec.tolerance_db for k, v in self.card.items()}

    def status(self) -> dict[str, Any]:
        own = self.budget.by_position(DOSE_SOURCE, self.spec.position_grid_um)
        shared = self.budget.status()
        with self._lock:
            return {
                "model": self.spec.model, "running": self.running and not self._stop.is_set(),
                "stopped_reason": self.stopped_reason, "period_s": self.spec.period_s,
                "channels": {k: c.model_dump() for k, c in (self._channels or {}).items()},
                "results": self.results_seen, "untrusted_results": self.untrusted_seen,
                "checks": len(self.checks), "skipped": dict(self.skipped), "last_skip": self.last_skip,
                "last": self.checks[-1] if self.checks else None,
                "fidelity": self.running_fidelity(), "window": self.spec.window,
                "card_psnr_db": self.card, "comparator": self.comparator, "alarm_below_db": self.thresholds(),
                "alarm": bool(self.alarm_reasons), "alarm_reasons": list(self.alarm_reasons),
                "alarms_raised": self.alarms_raised,
                "weights": self.weights, "weights_changes": self.weights_changes[-5:],
                "dose_session": sum(own.values()), "dose_session_budget": self.spec.dose_per_session,
                "dose_per_position_budget": self.spec.dose_per_position,
                "dose_by_position": {f"{k[0]},{k[1]}": v for k, v in own.items()},
                "shared_budget": shared,
                "recordings": self.recordings[-5:], "recordings_written": len(self.recordings),
                "pinned": {**self.ring.pins(), "misses": self.pin_misses},
            }

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        """Receive results, pinning the candidates for the next one as each comes, and start each due check on a
        thread of its own: a check (snaps, a recording) takes up to seconds, and results received that late pin
        bundles acquired long after the engine took its next one (spot_check_pins)."""
        self._next_t, misses = time.monotonic(), 0
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        while not self._stop.is_set():
            for _ in poller.poll(50):
                self._receive()
            if (time.monotonic() < self._next_t or self._newest is None or self.engine.state != "live"
                    or self._checking is not None and self._checking.is_alive()):
                continue
            header, data = self._newest
            self._newest = None
            if _begun_ns(header) <= self._last_capture_ns:  # received during the previous check: not after it
                continue
            bundle, missing = self._label_free(header)
            self.ring.release(_bundle_key(header))  # ``bundle`` holds its frames from here
            if (missing or not bundle) and misses < MISSES_BEFORE_SKIP:  # the engine computed no pinned bundle
                misses, self.pin_misses = misses + 1, self.pin_misses + 1  # (or its first result): wait for the next
                continue
            self._next_t, misses = time.monotonic() + self.spec.period_s, 0
            self._checking = threading.Thread(target=self._check_logged, args=(header, data, bundle), daemon=True,
                                              name=f"spot-checks-{self.spec.model}-check")
            self._checking.start()
        if self._checking is not None:
            self._checking.join(timeout=30)

    def _check_logged(self, header: dict[str, Any], data: np.ndarray, bundle: list[Frame]) -> None:
        """:meth:`_check`; a check that fails is counted and said (live goes on)."""
        try:
            self._check(header, data, bundle)
        except Exception as e:  # noqa: BLE001 - a failed check is counted; live goes on
            log.exception("spot check of %s failed", self.spec.model)
            self._skip_check(f"failed: {type(e).__name__}: {e}")

    def _receive(self) -> None:
        try:
            got = self._shared.resolve(*decode(self._sub.recv_multipart(copy=False)))
        except Exception as e:  # noqa: BLE001 - garbage is logged, not fatal
            log.warning("spot checks: undecodable result: %s", e)
            return
        if got is None:  # a result lost in shared memory (a reused slot) or the switch to inline
            return
        _, header, data = got
        if header.get("model") != self.spec.model:  # a spot check names the model by its package name
            self._skip(f"other model: these results are of {header.get('model')!r}, the spot checks name "
                       f"{self.spec.model!r} (the package's name)")
            return
        if data is None or not self._same_weights(header):
            return
        self.results_seen += 1
        trust = header.get("trust")
        job = self.engine.current_job  # only results of the running live job: a snap (ours included: a
        live = job is not None and job.kind == "live"  # STED snap is the SR model's channel) is no live field
        live = live and header.get("acquisition_id") == job.acquisition_id
        if not (isinstance(trust, dict) and trust.get("ok") is True):
            self.untrusted_seen += 1
            if live:  # the field changed since the newest trusted result (focus, objective, specimen)
                self._newest = None
        elif live and _begun_ns(header) > self._last_capture_ns:
            self._newest = (header, np.array(data, np.float32, copy=True))
        if live:
            self._pin_for_next(header)

    def _pin_for_next(self, header: dict[str, Any]) -> None:
        """On a live result: when a check may be due before the result after next (the results' last gap, 3
        times), keep the newest result's bundle and pin the candidates for the next result's; else pin nothing."""
        now = time.monotonic()
        gap, self._last_result_t = now - self._last_result_t, now
        if now + 3 * gap < self._next_t:
            self.ring.release()
            return
        keep = _bundle_key(self._newest[0]) if self._newest is not None else None
        self.ring.repin(*_bundle_key(header), keep)

    def _label_free(self, header: dict[str, Any]) -> tuple[list[Frame], set[int]]:
        """The frames of the result's bundle in the ring (or pinned), and the sequence numbers of the inputs
        it lacks."""
        bundle = self.ring.bundle(*_bundle_key(header))
        return bundle, set(header.get("source_seqs") or []) - {f.header.seq for f in bundle}


    def _same_weights(self, header: dict[str, Any]) -> bool:
        """Whether ``header`` is a result of the weights being judged. Results of other weights acquired after the
        newest of the current ones switch the checker to them (:meth:`_switch_weights`); earlier ones (a bundle
        the old weights were computing at the switch) are skipped."""
        weights, t_ns = weights_of(header), int(header.get("t_acquired_ns") or 0)
        if self.weights is None or weights == self.weights:
            self.weights, self._weights_t_ns = weights, max(self._weights_t_ns, t_ns)
            return True
        if t_ns <= self._weights_t_ns:
            self._skip(f"other weights: a result of {weights} acquired before the newest of {self.weights}")
            return False
        self._switch_weights(header)
        return True

    def _switch_weights(self, header: dict[str, Any]) -> None:
        """Judge the weights of ``header`` from now on: their own comparator and a running fidelity of their checks
        only; the alarm of the previous weights clears, and the change is published and kept in the status."""
        change = {"t_ns": now_ns(), "from": self.weights, "to": weights_of(header)}
        with self._lock:
            self.weights, self._weights_t_ns = change["to"], int(header.get("t_acquired_ns") or 0)
            self._fidelity_from, self.alarm_reasons = len(self.checks), []
            self._channels, self._newest = None, None
            try:
                self._setup(header)
            except ValueError as e:  # the next check says it again, as a skip
                self.card, self.comparator = {}, f"none ({e})"
            change["comparator"] = self.comparator
            self.weights_changes.append(change)
            del self.weights_changes[:-100]
        log.warning("spot checks %s: results of other weights %s (were %s): running fidelity restarted, comparator "
                    "%s", self.spec.model, change["to"], change["from"], self.comparator)
        self._event({"kind": "weights_changed", **change, "card_psnr_db": self.card})

    def _skip(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason.split(":", 1)[0]] += 1
            self.last_skip = reason

    def _skip_check(self, reason: str) -> None:
        """Count a check not made (:meth:`_skip`) and say why on the frame stream, an event ``kind: "skipped"`` with
        the counts, the running fidelity and the alarm: at most one a period, so that a viewer whose fidelity figure
        gets no new point can say why (a spent light budget at this position, the stage moved, ...)."""
        self._skip(reason)
        with self._lock:
            counts, alarm = dict(self.skipped), list(self.alarm_reasons)
        self._event({"kind": "skipped", "reason": reason, "skipped": counts, "fidelity": self.running_fidelity(),
                     "alarm": bool(alarm), "alarm_reasons": alarm})

    def _setup(self, header: dict[str, Any]) -> None:
        """On the first result: the package (card figures, units) and the channels to check."""
        self._manifest = _package_manifest(self.spec.model, header.get("model_sha256"), header.get("precision"))
        outputs = list(header.get("channels") or [])
        chans = self.spec.real_channels(str(header.get("task")))
        unknown = sorted(set(chans) - set(outputs))
        if unknown:
            raise ValueError(f"model {self.spec.model!r} has no output channel(s) {unknown} (outputs: {outputs})")
        self._channels = chans
        self.card, self.comparator = validated_psnr(self._manifest, list(chans), self.spec.morphology)
        sha = header.get("model_sha256")
        if self._manifest is None and isinstance(sha, str):
            self.comparator = (f"none (no shipped package {self.spec.model!r} has these weights, sha256 {sha[:12]}: "
                               "only min_psnr_db can raise the alarm)")

    def _comparator_short(self) -> str:
        """The comparator as an alarm reason names it: ``validated floor``, ``validated cells`` or ``card``."""
        return self.comparator.split(" (")[0].split(";")[0] if self.comparator.startswith("validated") else "card"

    def _units(self, task: str, bundle: list[Frame]) -> tuple[float, float | None, str]:
        """``(offset_adu, reference_exposure_ms, how)`` of the output units (None: the capture's own)."""
        from scopecast.models.dataset import TASKS

        m = self._manifest
        offset = float(m.camera.offset_adu) if m is not None and m.camera is not None else DEFAULT_OFFSET_ADU
        if self.spec.reference_exposure_ms is not None:
            return offset, self.spec.reference_exposure_ms, "reference exposure from the request"
        prov = m.provenance.get("reference_exposure_ms") if m is not None else None
        if isinstance(prov, int | float) and prov > 0:
            return offset, float(prov), "reference exposure from the package provenance"
        if task in TASKS and not TASKS[task]["label_free"]:
            exp = sorted({float(f.header.exposure_ms) for f in bundle if f.header.exposure_ms})
            if exp:
                return offset, exp[-1], ("training targets are taken at the input's exposure (models/dataset.py "
                                         "DOMAIN): the result's input exposure")
            return offset, None, "training targets are taken at the input's exposure, unknown here: the capture's"
        return offset, REFERENCE_EXPOSURE_MS, "training targets are counts at 100 ms (models/dataset.py TASKS)"

    def _check(self, header: dict[str, Any], data: np.ndarray, bundle: list[Frame] | None = None) -> None:
        """Check ``data``, the output of ``header``, against the real thing; ``bundle``: its label-free frames as
        found when the check was due (default: as the ring holds them now)."""
        if self._channels is None:
            self._setup(header)
        chans = self._channels or {}
        # the whole label-free bundle, or no check (no light spent): a pair without all its inputs is no
        # training pair (frames the ring dropped, no pinned bundle the result's: see spot_check_pins)
        bundle = self._label_free(header)[0] if bundle is None else bundle
        missing = set(header.get("source_seqs") or []) - {f.header.seq for f in bundle}
        if missing or not bundle:
            begun = _begun_ns(header)
            self._skip_check(f"label-free frames gone: {len(missing) or 'all'} of the result's bundle neither in "
                             f"the ring, which holds {ring_holds(self.ring)}, nor pinned (the last "
                             f"{MISSES_BEFORE_SKIP + 1} results were of none of the bundles pinned for them, "
                             f"{self.pin_misses} misses in all: an engine far behind the frame stream); the result "
                             f"came {(now_ns() - begun) / 1e9:.2f} s after its bundle began (a live cycle with an "
                             "interval_ms or pace_from keeps it longer)")
            return
        # the light goes where the stage is: a field the result does not show gets none (nor its charge)
        moved = stage_moved(header, self.engine.backend.position_um(), "since the result (no light spent)")
        if moved:
            self._skip_check(moved)
            return
        x, y = float(header.get("stage_x_um") or 0.0), float(header.get("stage_y_um") or 0.0)
        dose = sum(c.exposure_ms or self.spec.exposure_ms for c in chans.values())  # at full power
        refusal = self.budget.request(dose, x, y, DOSE_SOURCE, self.own_caps)  # charged now if it fits
        if refusal is not None and refusal.scope == "session":
            self.stopped_reason = refusal.reason
            self._skip(refusal.reason)
            self._event({"kind": "stopped", "reason": refusal.reason})
            self._stop.set()
            return
        if refusal is not None:
            self._skip_check(refusal.reason)
            return
        frames = {k: self.engine.snap(ChannelSpec(name=c.channel, exposure_ms=c.exposure_ms, detector=c.detector))
                  for k, c in chans.items()}
        self._last_capture_ns = max(f.header.t_acquired_ns for f in frames.values())
        differs = next(filter(None, (capture_differs(header, bundle, f) for f in frames.values())), None)
        if differs:
            self._skip_check(differs)
            return
        offset, ref, how = self._units(str(header.get("task")), bundle)
        names = list(header.get("channels") or [])
        figures, scales = {}, {}
        for k, f in frames.items():
            real = f.data.astype(np.float32)
            factor = 1.0 if ref is None else ref / float(f.header.exposure_ms)
            real = (real - offset) * np.float32(factor) + np.float32(offset)
            figures[k] = fidelity(data[names.index(k)], real)
            scales[k] = round(factor, 6)
        check = {
            "t_ns": self._last_capture_ns, "result_t_acquired_ns": int(header.get("t_acquired_ns") or 0),
            "acquisition_id": header.get("acquisition_id"), "bundle_id": header.get("bundle_id"),
            "position_um": [x, y, float(header.get("stage_z_um") or 0.0)],
            "trust_score": (header.get("trust") or {}).get("score"),
            "channels": figures, "real": {k: {"channel": c.channel, "detector": frames[k].header.detector,
                                              "exposure_ms": frames[k].header.exposure_ms, "scale": scales[k]}
                                          for k, c in chans.items()},
            "units": {"offset_adu": offset, "reference_exposure_ms": ref, "how": how}, "dose": dose,
            "label_free_frames": len(bundle), **weights_of(header),
        }
        if self.spec.record:
            try:
                self.engine.check_writable()  # the disk's reserve, as every recording leaves it
                check["recording"] = self._record(check, bundle, list(frames.values()))
            except (RecordingError, ValueError, OSError) as e:  # the comparison stands; its frames were
                # not kept (a full disk, the reserve reached)
                log.error("spot check of %s: %s", self.spec.model, e)
                check["recording_error"] = str(e)
        with self._lock:
            self.checks.append(check)
            trimmed = max(len(self.checks) - 1000, 0)
            del self.checks[:trimmed]
            self._fidelity_from = max(self._fidelity_from - trimmed, 0)
        self._judge(check)

    def _judge(self, check: dict[str, Any]) -> None:
        fid = self.running_fidelity()
        reasons = []
        for k, thr in self.thresholds().items():
            run = (fid.get(k) or {}).get("psnr_db")
            if run is not None and run < thr:
                if self.spec.min_psnr_db is not None:
                    reasons.append(f"spot-check fidelity {k} {run:.1f} dB < threshold {thr:.1f} dB")
                else:
                    reasons.append(f"spot-check fidelity {k} {run:.1f} dB < {self._comparator_short()} "
                                   f"{self.card[k]:.1f} dB"
                                   + (f" - {self.spec.tolerance_db:g} dB" if self.spec.tolerance_db else ""))
        with self._lock:
            raised = bool(reasons) and not self.alarm_reasons
            self.alarm_reasons = reasons
            self.alarms_raised += raised
        self._event({"kind": "fidelity", "check": check, "fidelity": fid, "alarm": bool(reasons),
                     "alarm_reasons": reasons})
        if raised:
            log.warning("spot checks %s: ALARM %s", self.spec.model, "; ".join(reasons))
            self._event({"kind": "alarm", "alarm_reasons": reasons, "fidelity": fid})

    def _event(self, body: dict[str, Any]) -> None:
        if self.publisher is not None:
            self.publisher.publish_event({"source": "spot_checks", "model": self.spec.model, **body})

    def _record(self, check: dict[str, Any], bundle: list[Frame], real: list[Frame]) -> str:
        """The label-free bundle and the real capture as one pair recording (one series per detector)."""
        self._pairs += 1
        acquisition_id = f"{self.session}-{self.spec.model}-spotcheck-{self._pairs}"
        path = inside(self.data_dir, f"{acquisition_id}.ome.zarr", "spot-check recording")
        info = {k: v for k, v in check.items() if k != "recording"}
        rec = Recorder(path, acquisition_id, {"kind": "spot-check:pair", "model": self.spec.model, "spot_check": info},
                       ngff=self.engine.ngff)
        record_by_sampling(rec, bundle + real)
        with self._lock:
            self.recordings.append(str(path))
        return str(path)
