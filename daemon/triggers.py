"""Smart acquisition: triggers that turn model output into microscope actions.

A trigger measures each result of one model (declaratively — area fraction,
object count, maximum, ROI mean, change between results — or with a Python
class implementing :class:`Trigger`), compares it with a threshold with
hysteresis (fire above ``above``; re-arm only below ``rearm_below``), waits out
a cooldown, and lists actions. Safeguards are part of the decision: a rate
limit and light-dose budgets per position and per session, charged with each
action's planned excitation dose (exposure ms, at full power), each field's to the
position it lands at (a tile scan's tiles: :mod:`.action_plans`). Live, the budget is the
session's shared :class:`~scopecast.daemon.dose.DoseBudget` (spot checks draw from it too,
and the ``safety`` limits are its limits); a :class:`Decider` made without one keeps its own.

Trust gating: a result whose ``trust.ok`` is not ``true`` (or that carries no
``trust`` verdict) is not measured, so it can neither fire nor re-arm a trigger
nor feed a ``change`` measurement — unless the trigger opts in with
``act_on_untrusted: true``. Each refusal is counted; the decision log gets one
``untrusted`` line (with the trust reasons) per transition into untrusted per
trigger — the first refused result after a trusted one (or the first result of
the session) — not one per result, so a blank slide does not flood the log.

Suppressions are logged the same way: a ``suppressed`` line when a trigger's suppression reason
changes (cooldown, rate limit, light budget, or the budget's position), then only counted while
the same reason repeats; the stretch's count is written on one more ``suppressed`` line (its
``repeats``) when another line of the trigger follows, and every :data:`SUPPRESSION_SUMMARY_S`
of acquisition time while it lasts. A spent light budget therefore does not flood the log.

Loading: the specs bound what is physical or structural (ROI, tile grid, Z planes, ring buffer,
windows; the limits are in the field descriptions); :func:`check_hardware` checks a configuration
against the microscope (channels, exposures, a Z stack against the focus travel) and :func:`check_sources` its
result streams (both in :mod:`.trigger_checks`), so the daemon refuses at ``load_triggers`` what could only fail
when a trigger fires.

:class:`Decider` is pure and deterministic: its decisions depend only on the
sequence of results (values and acquisition timestamps), so :func:`replay` over
a recording and its offline results reproduces the live decision log (a light-budget
suppression reproduces only if no other source, e.g. spot checks, drew from the shared
budget live: replay has its own).
Executing actions is :mod:`scopecast.daemon.trigger_actions`' job.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import ndimage

from .action_plans import field_of_view_um, planned_light
from .dose import DoseBudget, full_power
from .plans import MAX_LIVE_INTERVAL_MS, z_stack_planes
from .trigger_checks import check_hardware, check_sources

__all__ = [
    "MAX_RING_BUFFER_S", "MAX_TILES_PER_AXIS", "MAX_WINDOW_S", "MAX_Z_PLANES", "MAX_Z_RANGE_UM", "RECENT_DECISIONS",
    "SUPPRESSION_SUMMARY_S", "ActionSpec", "Decider", "Decision", "MeasurementSpec", "SafetySpec", "Trigger",
    "TriggerConfig", "TriggerConfigError", "TriggerSpec", "check_firing_light", "check_hardware", "check_sources",
    "load_trigger_config", "make_measures", "recent_lines", "replay", "trust_refusal",
]

#: Most rows, and most columns, of a ``tile_scan`` action (at most 100 × 100 = 10,000 fields).
MAX_TILES_PER_AXIS = 100
#: Most planes of a ``z_stack`` action (:func:`.plans.z_stack_planes`).
MAX_Z_PLANES = 1000
#: Largest ``z_range_um`` of a ``z_stack`` action (µm): beyond any objective's working distance.
MAX_Z_RANGE_UM = 2000.0
#: Longest ``before_s`` / ``after_s`` of a ``save_window`` action (s); ``after_s`` holds the action thread.
MAX_WINDOW_S = 600.0
#: Longest ``ring_buffer_s`` (s); the ring is also capped in bytes (trigger_frames.RING_BYTES).
MAX_RING_BUFFER_S = 600.0
#: While one suppression reason repeats, its count is logged at least this often (s of acquisition time).
SUPPRESSION_SUMMARY_S = 60.0


# ----------------------------------------------------------------------- config
class MeasurementSpec(BaseModel):
    """A number computed from one output channel of a result."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    kind: Literal["area_fraction", "count", "max", "mean", "change"]
    channel: str
    threshold: float = Field(default=0.0, description="pixel threshold (output units) for area_fraction/count")
    roi: tuple[int, int, int, int] | None = Field(
        default=None, description="y0, x0, y1, x1 in output pixels: 0 <= y0 < y1 and 0 <= x0 < x1")
    min_pixels: int = Field(default=10, ge=1, description="smallest object counted by 'count'")

    @model_validator(mode="after")
    def _check_roi(self) -> MeasurementSpec:
        if self.roi is not None:
            y0, x0, y1, x1 = self.roi
            if min(y0, x0) < 0 or y1 <= y0 or x1 <= x0:
                raise ValueError(f"roi {list(self.roi)} must be y0, x0, y1, x1 with 0 <= y0 < y1 and 0 <= x0 < x1 "
                                 "(a region of positive size, in output pixels)")
        return self


class ConditionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    above: float
    rearm_below: float | None = Field(default=None, description="hysteresis: re-arm below this (default: above)")

    @model_validator(mode="after")
    def _check(self) -> ConditionSpec:
        if self.rearm_below is not None and self.rearm_below > self.above:
            raise ValueError(f"rearm_below ({self.rearm_below}) must not exceed above ({self.above})")
        return self


class ActionSpec(BaseModel):
    """One action; the fields each kind uses are listed in docs/smart-acquisition.md."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    kind: Literal["confirm_fluorescence", "switch_live", "save_window", "center_object", "z_stack",
                  "tile_scan", "notify"]
    channels: list[str] = Field(default_factory=list)
    exposure_ms: float = Field(default=100.0, gt=0)
    power: float = Field(default=1.0, description="1 only: frames are charged at full power (dose.full_power)")
    interval_ms: float | None = Field(default=None, ge=0, le=MAX_LIVE_INTERVAL_MS,
                                      description="switch_live: at most one day (plans.MAX_LIVE_INTERVAL_MS)")
    live_channels: list[str] | None = None
    before_s: float = Field(default=2.0, ge=0, le=MAX_WINDOW_S, description=f"at most {MAX_WINDOW_S:g} s")
    after_s: float = Field(default=2.0, ge=0, le=MAX_WINDOW_S, description=f"at most {MAX_WINDOW_S:g} s")
    z_range_um: float = Field(default=6.0, gt=0, le=MAX_Z_RANGE_UM, description=(
        f"at most {MAX_Z_RANGE_UM:g} µm, and at most {MAX_Z_PLANES} planes (plans.z_stack_planes)"))
    z_step_um: float = Field(default=2.0, gt=0)
    rows: int = Field(default=2, ge=1, le=MAX_TILES_PER_AXIS, description=f"at most {MAX_TILES_PER_AXIS}")
    columns: int = Field(default=2, ge=1, le=MAX_TILES_PER_AXIS, description=f"at most {MAX_TILES_PER_AXIS}")
    threshold: float | None = Field(default=None, description="center_object: object threshold (default: the measurement's)")
    message: str = ""

    _full_power = field_validator("power")(full_power)

    @model_validator(mode="after")
    def _check_planes(self) -> ActionSpec:
        if self.kind == "z_stack" and self.z_planes() > MAX_Z_PLANES:
            raise ValueError(f"z_range_um {self.z_range_um:g} / z_step_um {self.z_step_um:g} makes "
                             f"{self.z_planes():.6g} planes; at most {MAX_Z_PLANES}")
        return self

    def z_planes(self) -> float:
        """Planes of a ``z_stack``: those its useq plan acquires (:func:`.plans.z_stack_planes`)."""
        return z_stack_planes(self.z_range_um, self.z_step_um)

    def uses_channels(self) -> bool:
        """Whether the action takes frames (``channels`` and ``exposure_ms`` apply)."""
        return self.kind in ("confirm_fluorescence", "z_stack", "tile_scan")


class TriggerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="also part of recording names: letters, digits, '_', '.', '-'")
    model: str = Field(description="name of the model whose results are measured")
    measurement: MeasurementSpec | None = None
    python: str | None = Field(default=None, description="'module:Class' implementing the Trigger protocol")
    condition: ConditionSpec
    cooldown_s: float = Field(default=10.0, ge=0)
    actions: list[ActionSpec] = Field(default_factory=list)
    act_on_untrusted: bool = Field(default=False, description="measure results whose trust.ok is false too")

    @model_validator(mode="after")
    def _one_measure(self) -> TriggerSpec:
        if (self.measurement is None) == (self.python is None):
            raise ValueError(f"trigger {self.name!r} needs exactly one of 'measurement' or 'python'")
        centre = [i for i, a in enumerate(self.actions) if a.kind == "center_object"]
        if self.python is not None and centre:
            raise ValueError(f"actions[{centre[0]}] (center_object) centres the largest object of the measured "
                             "channel: it needs a declarative 'measurement' (a Python trigger names no channel)")
        return self


class SafetySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    dose_per_position: float = Field(default=5_000.0, ge=0, description="exposure ms at full power, per position")
    dose_per_session: float = Field(default=50_000.0, ge=0)
    max_actions_per_minute: int = Field(default=6, ge=0)
    position_grid_um: float = Field(default=100.0, gt=0, description="positions closer than this share a budget")


class TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a YAML .nan or .inf is refused

    triggers: list[TriggerSpec]
    safety: SafetySpec = Field(default_factory=SafetySpec)
    ring_buffer_s: float = Field(default=10.0, ge=0, le=MAX_RING_BUFFER_S, description=(
        f"frames kept for save_window and confirmation pairs, at most {MAX_RING_BUFFER_S:g} s"))
    lockstep: bool = Field(default=False, description=(
        "live waits after each cycle until its bundle is decided on (and a firing's first action holds the "
        "microscope): the loop as in-process, no bundle queued behind the model, no live frame in the action's "
        "way; the frame rate drops to one cycle per (cycle + model)"))
    lockstep_timeout_s: float = Field(default=2.0, gt=0, description="lockstep: go on without a decision after this")

    @model_validator(mode="after")
    def _unique_names(self) -> TriggerConfig:
        """Names identify triggers (state, log, recordings): a repeated one would silently replace another."""
        repeated = [n for n, k in Counter(t.name for t in self.triggers).items() if k > 1]
        if repeated:
            where = {n: [i for i, t in enumerate(self.triggers) if t.name == n] for n in repeated}
            raise ValueError("trigger names must be unique: " + "; ".join(
                f"{n!r} is the name of triggers {', '.join(f'[{i}]' for i in where[n])}" for n in repeated))
        limit = self.safety.max_actions_per_minute
        for t in self.triggers:
            if 0 < limit < len(t.actions):
                raise ValueError(f"trigger {t.name!r} has {len(t.actions)} actions, more than safety."
                                 f"max_actions_per_minute = {limit}: it could never fire")
        short = [f"trigger {t.name!r} actions[{j}] save_window before_s = {a.before_s:g}"
                 for t in self.triggers for j, a in enumerate(t.actions)
                 if a.kind == "save_window" and 0 < a.before_s >= self.ring_buffer_s]
        if short:
            raise ValueError(f"ring_buffer_s = {self.ring_buffer_s:g} cannot hold the frames before an event: "
                             + "; ".join(short) + " (the ring keeps before_s plus the time a result takes to be "
                             "decided on; raise ring_buffer_s)")
        return self


def check_firing_light(config: TriggerConfig) -> None:
    """``ValueError`` naming the trigger when one firing plans more light than a ``safety`` budget allows, so it
    could never fire: more at one position (its confirmations and Z stacks all land at the deciding one; a tile at
    its own) than ``dose_per_position``, or more in all than ``dose_per_session`` (a limit of 0 lets no light
    through at all). The daemon checks it at ``load_triggers``, after the channels and exposures."""
    s = config.safety
    for t in config.triggers:
        fields = [(a.kind, d) for a in t.actions for _, _, d in planned_light(a, 0.0, 0.0, (0.0, 0.0))]
        here = sum(d for kind, d in fields if kind != "tile_scan")
        one = max([here] + [d for kind, d in fields if kind == "tile_scan"])
        for name, limit, need, where in (("dose_per_position", s.dose_per_position, one, "at one position"),
                                         ("dose_per_session", s.dose_per_session, sum(d for _, d in fields), "in all")):
            if 0 < limit < need:
                raise ValueError(f"trigger {t.name!r}: one firing's actions plan {need:g} ms of light {where} "
                                 "(exposure_ms x channels, x planes or tiles, at full power), more than "
                                 f"safety.{name} = {limit:g}: it could never fire")


#: Largest trigger configuration file read (bytes).
MAX_CONFIG_BYTES = 1 << 20


class TriggerConfigError(ValueError):
    """A trigger configuration that does not validate; the message names each trigger, field and value."""


def _config_error(e: ValidationError, data: Any) -> TriggerConfigError:
    """``e`` as one message: ``trigger 'name' (triggers[i]) actions[j].rows = 1000000: <problem>`` per error."""
    problems = []
    for err in e.errors():
        loc = list(err["loc"])
        head = ""
        if len(loc) >= 2 and loc[0] == "triggers" and isinstance(loc[1], int):
            raw = data.get("triggers") if isinstance(data, dict) else None
            name = raw[loc[1]].get("name") if isinstance(raw, list) and isinstance(raw[loc[1]], dict) else None
            head = f"trigger {name!r} (triggers[{loc[1]}])" if name is not None else f"triggers[{loc[1]}]"
            loc = loc[2:]
        path = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
        where = " ".join(x for x in (head, path) if x)
        value = err.get("input")
        shown = f" = {value!r}" if path and isinstance(value, int | float | str | list | tuple | None) else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}{shown}: {msg}" if where else msg)
    return TriggerConfigError("; ".join(problems))


def load_trigger_config(source: str | Path | dict, allowed_dirs: list[Path] | None = None) -> TriggerConfig:
    """From a dict, or a .yaml/.yml/.json file. A configuration that does not validate raises
    :class:`TriggerConfigError` (a ``ValueError``) naming each trigger, field and value.

    With ``allowed_dirs`` (a client's request), a path must be a regular file of
    at most :data:`MAX_CONFIG_BYTES` inside one of them.
    """
    if isinstance(source, dict):
        return _validate_config(source)
    path = Path(source)
    if allowed_dirs is not None:
        from .confine import confined

        path = confined(path, allowed_dirs, "file", "trigger config", MAX_CONFIG_BYTES)
    if path.suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"trigger config {source} must be a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TriggerConfigError(f"trigger config {source} is not UTF-8 text ({e.reason} at byte {e.start}): "
                                 "save it as UTF-8") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)
            raise TriggerConfigError(f"trigger config {source} is not valid YAML{where}: {what}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TriggerConfigError(f"trigger config {source} is not valid JSON at line {e.lineno}, column "
                                     f"{e.colno}: {e.msg}") from None
    try:
        return _validate_config(data)
    except TriggerConfigError as e:
        raise TriggerConfigError(f"trigger config {source}: {e}") from None


def _validate_config(data: Any) -> TriggerConfig:
    try:
        return TriggerConfig.model_validate(data)
    except ValidationError as e:
        raise _config_error(e, data) from None


# ---------------------------------------------------------------- measurements
@runtime_checkable
class Trigger(Protocol):
    """A custom measurement: one number per result (raise to report a problem)."""

    def measure(self, header: dict[str, Any], data: np.ndarray) -> float: ...


class DeclarativeMeasurement:
    """:class:`MeasurementSpec` as a :class:`Trigger`."""

    def __init__(self, spec: MeasurementSpec) -> None:
        self.spec = spec
        self._previous: np.ndarray | None = None

    def _channel(self, header: dict[str, Any], data: np.ndarray) -> np.ndarray:
        names = header.get("channels", [])
        if self.spec.channel not in names:
            raise KeyError(f"model output has no channel {self.spec.channel!r} (channels: {names})")
        img = data[names.index(self.spec.channel)]
        if self.spec.roi is not None:
            y0, x0, y1, x1 = self.spec.roi
            h, w = img.shape[-2:]
            if y1 > h or x1 > w:  # numpy would clip it: another region than the one asked for, measured silently
                raise ValueError(f"ROI {list(self.spec.roi)} (y0, x0, y1, x1) extends past the output, {h} x {w} "
                                 f"pixels (y1 <= {h}, x1 <= {w}): the part inside is not the region asked for")
            img = img[y0:y1, x0:x1]
        return img

    def measure(self, header: dict[str, Any], data: np.ndarray) -> float:
        img = self._channel(header, data)
        k = self.spec.kind
        if k == "area_fraction":
            return float(np.mean(img > self.spec.threshold))
        if k == "count":
            labels, n = ndimage.label(img > self.spec.threshold)
            if n == 0:
                return 0.0
            sizes = np.bincount(labels.ravel())[1:]
            return float(np.count_nonzero(sizes >= self.spec.min_pixels))
        if k == "max":
            return float(img.max())
        if k == "mean":
            return float(img.mean())
        prev, self._previous = self._previous, img.astype(np.float32, copy=True)
        if prev is None or prev.shape != img.shape:
            return 0.0
        return float(np.mean(np.abs(img - prev)))


def make_measures(config: TriggerConfig) -> dict[str, Trigger]:
    """Each trigger's measurement by name (a Python trigger's class imported and instantiated); ``ValueError``
    naming the class that cannot be loaded. The daemon builds them before it unloads the running triggers, so
    a refused load leaves those as they were."""
    return {t.name: DeclarativeMeasurement(t.measurement) if t.measurement is not None
            else _python_trigger(str(t.python)) for t in config.triggers}


def _python_trigger(path: str) -> Trigger:
    """The object of ``'module:Class'``, made within :data:`.trigger_timeout.IMPORT_TIMEOUT_S` (a module that
    hangs at import is refused, not waited for); ``ValueError`` naming the class and the problem."""
    from .trigger_timeout import load_within  # it imports this module

    mod_name, _, cls_name = path.partition(":")
    try:
        obj = load_within(mod_name, lambda: getattr(importlib.import_module(mod_name), cls_name)())
    except Exception as e:  # noqa: BLE001 - the user's module or class failed: say which, in one line
        raise ValueError(f"cannot load trigger class {path!r}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, Trigger):
        raise ValueError(f"{path!r} does not implement Trigger.measure(header, data) -> float")
    return obj


# --------------------------------------------------------------------- decider
@dataclass
class Decision:
    """One line of the decision log."""

    t_ns: int  # acquisition time of the deciding result's last frame
    trigger: str
    model: str
    event: str  # fire | rearm | suppressed | disabled | untrusted
    reason: str
    measurement: float | None
    above: float
    rearm_below: float
    acquisition_id: str
    bundle_id: int
    source_seqs: list[int]
    position_um: list[float]
    actions: list[str] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)  # filled when actions ran (live only)
    trust_reasons: list[str] = field(default_factory=list)  # 'untrusted' lines only
    # 'suppressed' lines that close or summarise a stretch of one reason: the suppressed results (this one
    # included) since the stretch's previous line, which were counted but not logged; 0: not such a line
    repeats: int = 0

    def key(self) -> dict[str, Any]:
        """What replay must reproduce: everything but the live outcome (``trust_reasons`` and ``repeats`` only
        when set)."""
        d = asdict(self)
        d.pop("outcome")
        if not self.trust_reasons:
            d.pop("trust_reasons")
        if not self.repeats:
            d.pop("repeats")
        d["measurement"] = None if self.measurement is None else round(self.measurement, 9)
        return d


@dataclass
class _State:
    armed: bool = True
    last_fire_ns: int | None = None
    disabled: str | None = None
    untrusted: bool = False  # the last result of this trigger's model was refused as untrusted
    untrusted_refusals: int = 0  # results not measured because untrusted
    last_measurement: float | None = None  # the value measured on the newest result measured (trigger_settings)
    suppressed: int = 0  # results suppressed (cooldown, rate limit, light budget), logged or not
    stretch: tuple[str, tuple[int, int]] | None = None  # (reason kind, budget cell) of the logged suppression
    stretch_logged_ns: int = 0  # acquisition time of the stretch's last line
    unlogged: Decision | None = None  # the stretch's latest suppression not logged yet
    unlogged_count: int = 0  # suppressions of the stretch since its last line


#: How many of the newest decision lines the ``triggers`` reply carries (``recent``: what a viewer shows of the log).
RECENT_DECISIONS = 12


def recent_lines(decisions: list[Decision], n: int = RECENT_DECISIONS) -> list[dict[str, Any]]:
    """The newest ``n`` of ``decisions`` as their decision-log lines (:meth:`Decision.key`), oldest first."""
    return [d.key() for d in decisions[-n:]]


def _reason_kind(reason: str) -> str:
    """What makes a suppression reason new: its kind (``cooldown``, ``rate limit``, ``light budget at this
    position`` …), not the figures in it (the seconds of a cooldown change with every result)."""
    return reason.split(":", 1)[0]


def trust_refusal(header: dict[str, Any]) -> list[str] | None:
    """``None`` when the result's ``trust.ok`` is true; else the reasons it is untrusted (never empty)."""
    t = header.get("trust")
    if not isinstance(t, dict):
        return ["no trust verdict in the result header"]
    if t.get("ok") is True:
        return None
    reasons = [str(r) for r in t.get("reasons") or [] if isinstance(r, str | int | float)]
    return reasons or ["trust.ok is false (no reason given)"]


def _read_only(data: np.ndarray) -> np.ndarray:
    """A read-only view of ``data``: a trigger that writes into its input raises (and is disabled with the error)
    instead of silently changing what the triggers after it, and a firing's actions, see."""
    view = np.asarray(data).view()
    view.flags.writeable = False
    return view


class Decider:
    """Turn results into decisions (deterministic; no hardware)."""

    def __init__(self, config: TriggerConfig, budget: DoseBudget | None = None,
                 measures: dict[str, Trigger] | None = None) -> None:
        """``budget``: the light budget to charge (live: the session's shared one); default: a budget of
        its own with the ``safety`` limits. ``measures``: from :func:`make_measures` (default: made here)."""
        self.config = config
        s = config.safety
        self.budget = budget if budget is not None else DoseBudget(s.dose_per_position, s.dose_per_session,
                                                                  s.position_grid_um)
        self.measures: dict[str, Trigger] = measures if measures is not None else make_measures(config)
        self.state = {t.name: _State() for t in config.triggers}
        self.action_times: list[int] = []

    @property
    def dose_session(self) -> float:
        """Light charged in the session, by every source of the budget."""
        return self.budget.session

    @property
    def dose_position(self) -> dict[tuple[int, int], float]:
        """Light charged per position (grid keys), by every source of the budget."""
        return self.budget.by_position()

    def decide(self, header: dict[str, Any], data: np.ndarray) -> list[Decision]:
        """Decisions (fires, re-arms, suppressions, disablements, untrusted refusals) for one result."""
        out = []
        t_ns = int(header.get("t_acquired_ns") or 0)
        refusal_reasons = trust_refusal(header)
        data = _read_only(data)  # every trigger measures the same result: none may change it for the others
        for spec in self.config.triggers:
            if spec.model != header.get("model"):
                continue
            st = self.state[spec.name]
            if st.disabled:
                continue
            cond = spec.condition
            rearm = cond.above if cond.rearm_below is None else cond.rearm_below

            def decision(event: str, reason: str, value: float | None, actions=(), spec=spec, rearm=rearm):
                return Decision(
                    t_ns=t_ns, trigger=spec.name, model=spec.model, event=event, reason=reason, measurement=value,
                    above=cond.above, rearm_below=rearm, acquisition_id=str(header.get("acquisition_id")),
                    bundle_id=int(header.get("bundle_id", -1)), source_seqs=list(header.get("source_seqs", [])),
                    position_um=[float(header.get(k) or 0.0) for k in ("stage_x_um", "stage_y_um", "stage_z_um")],
                    actions=list(actions),
                )

            if refusal_reasons is not None and not spec.act_on_untrusted:
                st.untrusted_refusals += 1
                if not st.untrusted:
                    st.untrusted = True
                    d = decision("untrusted", "not measured: " + "; ".join(refusal_reasons), None)
                    d.trust_reasons = list(refusal_reasons)
                    self._emit(out, st, d)
                continue
            st.untrusted = False
            try:
                value = float(self.measures[spec.name].measure(dict(header), data))
                if not np.isfinite(value):
                    raise ValueError(f"measurement is {value}")
                st.last_measurement = value
            except Exception as e:  # noqa: BLE001 - a failing trigger is disabled, acquisition goes on
                st.disabled = f"{type(e).__name__}: {e}"
                self._emit(out, st, decision("disabled", f"trigger disabled: {st.disabled}", None))
                continue
            if not st.armed:
                if value < rearm:
                    st.armed = True
                    self._emit(out, st, decision("rearm", f"{value:.4g} < {rearm:.4g}", value))
                continue
            if value < cond.above:
                continue
            if st.last_fire_ns is not None and t_ns - st.last_fire_ns < spec.cooldown_s * 1e9:
                self._suppress(out, st, decision("suppressed", f"cooldown: {(t_ns - st.last_fire_ns) / 1e9:.2f} s "
                                                 f"of {spec.cooldown_s:g} s", value))
                continue
            refusal = self._admit(spec, header, t_ns)
            if refusal:
                self._suppress(out, st, decision("suppressed", refusal, value))
                continue
            st.armed = False
            st.last_fire_ns = t_ns
            self._emit(out, st, decision("fire", f"{value:.4g} >= {cond.above:.4g}", value,
                                         [a.kind for a in spec.actions]))
        return out

    @staticmethod
    def _close_stretch(out: list[Decision], st: _State) -> None:
        """Log the count of a stretch of one suppression reason, on its latest suppression, if any is unlogged."""
        if st.unlogged is not None:
            st.unlogged.repeats = st.unlogged_count
            out.append(st.unlogged)
        st.stretch, st.unlogged, st.unlogged_count = None, None, 0

    def _emit(self, out: list[Decision], st: _State, d: Decision) -> None:
        """Log a line other than a suppression: it ends the trigger's stretch of suppressions (its count first)."""
        self._close_stretch(out, st)
        out.append(d)

    def _suppress(self, out: list[Decision], st: _State, d: Decision) -> None:
        """Log a suppression when its reason (kind, and budget cell) differs from the stretch's; else count it,
        writing the count every :data:`SUPPRESSION_SUMMARY_S` of acquisition time."""
        st.suppressed += 1
        g = self.budget.grid_um
        key = (_reason_kind(d.reason), (int(round(d.position_um[0] / g)), int(round(d.position_um[1] / g))))
        if st.stretch == key:
            st.unlogged, st.unlogged_count = d, st.unlogged_count + 1
            if d.t_ns - st.stretch_logged_ns >= SUPPRESSION_SUMMARY_S * 1e9:
                self._close_stretch(out, st)
                st.stretch, st.stretch_logged_ns = key, d.t_ns
            return
        self._close_stretch(out, st)
        out.append(d)
        st.stretch, st.stretch_logged_ns = key, d.t_ns

    def _admit(self, spec: TriggerSpec, header: dict[str, Any], t_ns: int) -> str:
        """The rate limit and the light budget; ``""`` when the firing may go ahead, its planned dose charged
        (in one step with the check: another source cannot take the same light meanwhile)."""
        s = self.config.safety
        recent = [t for t in self.action_times if t_ns - t < 60e9]
        n = len(spec.actions)
        if n and len(recent) + n > s.max_actions_per_minute:
            return (f"rate limit: {len(recent)} actions in the last minute + {n} of this firing > "
                    f"{s.max_actions_per_minute}")
        x, y = float(header.get("stage_x_um") or 0.0), float(header.get("stage_y_um") or 0.0)
        fov = field_of_view_um(header)  # the deciding result's field: the tiles' spacing
        light = [c for a in spec.actions for c in planned_light(a, x, y, fov)]  # each field where it lands
        if light and (r := self.budget.request_all(light, "triggers")) is not None:
            return r.reason
        self.action_times += [t_ns] * n  # the limit counts actions, not firings
        return ""

    def status(self) -> dict[str, Any]:
        return {
            "triggers": {n: {"armed": s.armed, "disabled": s.disabled, "last_fire_ns": s.last_fire_ns,
                             "untrusted": s.untrusted, "untrusted_refusals": s.untrusted_refusals,
                             "suppressed": s.suppressed, "suppressed_unlogged": s.unlogged_count}
                         for n, s in self.state.items()},
            "untrusted_refusals": sum(s.untrusted_refusals for s in self.state.values()),
            **self.budget.status(),
        }


# ---------------------------------------------------------------------- replay
def _replayed_header(h0: Any, channels: list[str], shape: tuple[int, ...]) -> dict[str, Any]:
    """The result header live triggers got, from a recorded result frame (``h0``, written by offline
    inference): every field the recording keeps (``model_sha256``, ``precision``, ``task``, ``trust`` … from
    its ``extra``); not the engine's run-time fields (``runtime``, ``worker``, stage timestamps). Without a
    recorded ``trust`` the result is untrusted, as live."""
    extra = {k: v for k, v in h0.extra.items() if k not in ("source_acquisition_id", "source_series", "source_index")}
    return {
        **extra, "version": h0.version, "kind": "result", "model": h0.extra.get("model"), "channels": channels,
        "acquisition_id": h0.extra.get("source_acquisition_id"), "bundle_id": h0.bundle_id,
        "position_index": h0.position_index, "series": h0.extra.get("source_series", ""),
        "index": h0.extra.get("source_index", {}),
        "source_seqs": h0.extra.get("source_seqs", []), "dtype": "float32", "shape": list(shape),
        "t_exposure_start_ns": h0.t_exposure_start_ns, "t_acquired_ns": h0.t_acquired_ns,
        "stage_x_um": h0.stage_x_um, "stage_y_um": h0.stage_y_um, "stage_z_um": h0.stage_z_um,
        "pixel_size_um": h0.pixel_size_um,
    }


def replay(config: TriggerConfig | str | Path | dict, results: str | Path) -> list[Decision]:
    """Run the triggers over offline results (``scopecast engine --offline``), in acquisition order.

    Returns the decisions live operation would have taken on those results;
    actions are not executed (their planned doses are charged to the budgets as live).
    """
    from .recorder import open_recording

    cfg = config if isinstance(config, TriggerConfig) else load_trigger_config(config)
    rec = open_recording(results)
    items = []
    for s in rec.series:
        by_plane: dict[tuple[int, int], list] = {}  # each plane of a scan's z-stack is a result, as live
        for h in s.frames:
            by_plane.setdefault((h.bundle_id, h.index.get("z", 0)), []).append(h)
        shape = (len(s.channels), *map(int, s.data.shape[3:]))
        for (bundle_id, z), hs in by_plane.items():
            h0 = hs[0]
            items.append((h0.t_acquired_ns, bundle_id, _replayed_header(h0, s.channels, shape), s, h0.index))
    # zero decisions must mean the triggers never fired, not that they were given nothing they watch
    models = {header["model"] for _, _, header, _, _ in items if header["model"]}
    if not models:
        raise ValueError(f"{results} holds no inference results (no frame names a model): replay reads what "
                         "'scopecast engine --offline RECORDING' writes, <recording>.<model>.ome.zarr")
    watched = {t.model for t in cfg.triggers}
    if not watched & models:
        raise ValueError(f"no trigger watches the model of these results: the triggers watch "
                         f"{', '.join(sorted(watched))}; {results} holds results of {', '.join(sorted(models))}")
    items.sort(key=lambda x: (x[0], x[1]))
    decider = Decider(cfg)
    decisions: list[Decision] = []
    for _, _, header, s, index in items:  # one result in memory at a time, as live (not the whole recording)
        t, z = index.get("t", 0), index.get("z", 0)
        decisions += decider.decide(header, np.stack([s.image(c, t=t, z=z) for c in s.channels]))
    return decisions
