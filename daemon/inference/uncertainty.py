"""Per-pixel model uncertainty by test-time augmentation (TTA) over the dihedral group.

A fully convolutional image-to-image network trained on specimens that have no
preferred orientation should answer a flipped or rotated field with the
flipped or rotated image. Where it does not, it is guessing: the spread of
its answers to the eight dihedral copies of one input (identity, three
rotations by 90°, and the four mirror images), brought back to the original
orientation, is a per-pixel uncertainty that needs no retraining and no second
model. :func:`tta_std` runs the model on ``n`` of those copies (the identity
first, then the copies in :data:`DIHEDRAL` order: mirrors before rotations,
since those keep the field's shape) and returns the per-pixel standard
deviation across them, in the model's output units.

:func:`summary` condenses it for the result header's ``trust.uncertainty``:
per output channel the mean and 99th percentile of the standard deviation
divided by the output's training scale (``output_scaling.scale``, the span of
the training targets), so figures of different outputs and models compare.

It costs ``n − 1`` extra inferences per bundle (the identity is the result
itself), far above the monitor's 5 % budget on every bundle, so the per-pixel
map is off unless an engine asks for it (``InferenceEngine(uncertainty=n)``).
:class:`UncertaintyCheck` makes a verdict of it within the budget: a scalar
:func:`statistic` against the package's validated threshold, run on the first
bundle of each new :class:`Scene` when a duty-cycle credit covers it and
carried to the later bundles of the scene. benchmarks/bench_trust.py measures
how well it flags errors and its cost; bench_trust_models.py ``--uncertainty``
measures the thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["COPY_COST", "DIHEDRAL", "STATISTICS", "UNCERTAINTY_CHOICES", "Scene", "UncertaintyCheck", "apply",
           "channel_order", "invert", "statistic", "summary", "tta_std", "tta_stds", "validated_threshold"]

#: The dihedral group of the square as ``(k, flip)``: ``np.rot90(·, k)`` after an optional left-right mirror.
#: Order: identity, the three mirrors that keep the shape (lr, ud, both = rot180), then the transposing ones.
DIHEDRAL: tuple[tuple[int, bool], ...] = ((0, False), (0, True), (2, True), (2, False),
                                          (1, False), (3, False), (1, True), (3, True))
#: Allowed numbers of copies (0: off).
UNCERTAINTY_CHOICES = (0, 2, 4, 8)


#: Direction-specific inputs (illumination from one side) and what a mirror does to them: a left-right mirror of
#: the field is the field lit from the other side, so its DPC-Left is the mirrored DPC-Right (and vice versa).
_LR_SWAP = {"DPC-Left": "DPC-Right", "DPC-Right": "DPC-Left"}
_UD_SWAP = {"DPC-Top": "DPC-Bottom", "DPC-Bottom": "DPC-Top"}


def channel_order(inputs: list[str] | None, t: tuple[int, bool]) -> list[int] | None:
    """Which input channel feeds each position of the transformed bundle, so that the copy is a physical
    input (the field mirrored, lit as the model expects); None when ``t`` cannot be expressed that way.

    Isotropic channels (bright-field, dark-field, fluorescence) stay. Under the left-right mirror DPC-Left
    and DPC-Right swap, under the up-down mirror (``(2, True)``) DPC-Top and DPC-Bottom, under the 180°
    rotation both pairs. A 90° rotation would turn left/right illumination into top/bottom in a sense
    that depends on how the camera sits on the LED array, which the package does not record: None."""
    names = list(inputs or [])
    if not any(n in _LR_SWAP or n in _UD_SWAP for n in names):
        return list(range(len(names)))
    k, flip = t
    if k % 2:
        return None
    # (0, True): left-right mirror; (2, False): 180°, both mirrors; (2, True): lr mirror then 180° = up-down mirror
    swap: dict[str, str] = {}
    if flip != (k == 2):
        swap.update(_LR_SWAP)
    if k == 2:
        swap.update(_UD_SWAP)
    try:
        return [names.index(swap.get(n, n)) for n in names]
    except ValueError:  # one side of a pair is missing: that copy is not a physical input
        return None


def apply(x: np.ndarray, t: tuple[int, bool]) -> np.ndarray:
    """Transform the last two (spatial) axes of ``x`` by ``t``."""
    k, flip = t
    if flip:
        x = x[..., :, ::-1]
    return np.rot90(x, k, axes=(-2, -1)) if k else x


def invert(y: np.ndarray, t: tuple[int, bool]) -> np.ndarray:
    """Undo :func:`apply` on the last two axes of ``y``."""
    k, flip = t
    if k:
        y = np.rot90(y, -k, axes=(-2, -1))
    return y[..., :, ::-1] if flip else y


def tta_stds(x: np.ndarray, infer: Callable[[np.ndarray], np.ndarray], ns: tuple[int, ...] | list[int],
             identity: np.ndarray | None = None, inputs: list[str] | None = None) -> dict[int, np.ndarray]:
    """Per-pixel standard deviation ``(C_out, H', W')`` of ``infer`` over the first ``n`` dihedral copies of ``x``
    ``(C, H, W)`` for every ``n`` in ``ns``, from one pass over ``max(ns)`` copies (the first ``n`` copies of a
    larger set are exactly the ``n``-copy set).

    ``infer`` maps a normalized input to the raw model output (any spatial size: the engine tiles). ``identity``:
    the model's answer to ``x`` itself when already computed (saves one inference). ``inputs``: the channel
    names, so direction-specific channels are permuted (:func:`channel_order`); raises ``ValueError`` when
    a copy cannot be a physical input."""
    bad = [n for n in ns if n not in UNCERTAINTY_CHOICES[1:]]
    if bad or not ns:
        raise ValueError(f"uncertainty needs {', '.join(map(str, UNCERTAINTY_CHOICES[1:]))} dihedral copies, "
                         f"got {list(ns)}")
    top = max(ns)
    orders = [channel_order(inputs, t) if inputs is not None else list(range(x.shape[0])) for t in DIHEDRAL[:top]]
    if any(o is None for o in orders):
        raise ValueError(f"uncertainty {top} needs 90° rotations, which turn DPC left/right into top/bottom in a "
                         "sense the package does not record; use 2 or 4 (mirrors and 180°)")
    mean = m2 = d = None
    out: dict[int, np.ndarray] = {}
    for i, t in enumerate(DIHEDRAL[:top]):
        if i == 0 and identity is not None:
            y = np.asarray(identity, np.float32)
        else:  # one copy: the transformed view, its channels permuted (fancy indexing allocates it contiguous)
            y = np.asarray(invert(infer(np.ascontiguousarray(apply(x, t)[orders[i]])), t), np.float32)
        if i == 0:  # Welford in float32 (at most 8 answers): in place, no stack of n outputs
            mean = y if top == 2 else y.copy()  # two answers need no running mean: ``identity`` is only read
            continue
        d = np.subtract(y, mean, out=d)  # y - the mean of the first i
        if i + 1 == 2 and 2 in ns:
            out[2] = np.abs(d) * np.float32(0.5)  # two answers: the std is half their difference
        if top == 2:
            break
        d *= np.float32(1.0 / (i + 1))  # the mean's step
        mean += d
        d *= d
        d *= np.float32(i * (i + 1))  # m2 grows by (y - old mean)² · i / (i + 1)
        m2 = d.copy() if m2 is None else np.add(m2, d, out=m2)
        if i + 1 in ns and i + 1 > 2:
            out[i + 1] = np.sqrt(m2 / np.float32(i + 1))
    return out


def tta_std(x: np.ndarray, infer: Callable[[np.ndarray], np.ndarray], n: int,
            identity: np.ndarray | None = None, inputs: list[str] | None = None) -> np.ndarray:
    """:func:`tta_stds` for one ``n``."""
    return tta_stds(x, infer, (n,), identity, inputs)[n]


def summary(std: np.ndarray, outputs: list[str], scale: list[float] | None, n: int) -> dict[str, Any]:
    """``trust.uncertainty``: per output the mean and 99th percentile of ``std`` (physical units) over the output's
    training scale; ``mean``/``p99``: the largest of the outputs'."""
    s = [abs(float(v)) or 1.0 for v in scale] if scale is not None else [1.0] * len(outputs)
    per: dict[str, dict[str, float]] = {}
    for c, name in enumerate(outputs):
        ch = std[c]
        sub = ch[::max(1, ch.shape[0] // 256), ::max(1, ch.shape[1] // 256)]  # ~256² pixels for the percentile
        per[name] = {"mean": float(f"{float(ch.mean()) / s[c]:.4g}"),
                     "p99": float(f"{float(np.percentile(sub, 99)) / s[c]:.4g}")}
    return {"tta": n, "channels": per, "mean": max(v["mean"] for v in per.values()),
            "p99": max(v["p99"] for v in per.values())}


# ------------------------------------------------------------------ the check
#: A floor under the denominators of the relative statistics: 1 % of the output's training span (model units).
_EPS = 0.01

#: Scalar statistics of a bundle's spread, in the model's output units (the training targets' span is 1, so each
#: is scale-free): the largest over the output channels of
#: ``mean``: the mean per-pixel std; ``signal``: the mean std over the output's own mean |signal| (above its
#: background); ``structure``: the mean std over the output's spatial standard deviation.
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mean": lambda s, y: float(s.mean()),
    "signal": lambda s, y: float(s.mean()) / (float(np.abs(y).mean()) + _EPS),
    "structure": lambda s, y: float(s.mean()) / (float(y.std()) + _EPS),
}


def statistic(std: np.ndarray, y: np.ndarray, kind: str) -> float:
    """The ``kind`` statistic (:data:`STATISTICS`) of a per-pixel ``std`` ``(C, H, W)`` around the answer ``y``,
    both in the model's output units (before ``output_scaling``): the largest over the channels."""
    try:
        f = STATISTICS[kind]
    except KeyError:
        raise ValueError(f"unknown uncertainty statistic {kind!r}; known: {sorted(STATISTICS)}") from None
    return max(f(s, v) for s, v in zip(std, y, strict=True))


def _hnum(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) else None


@dataclass(frozen=True)
class Scene:
    """What a bundle's frame header says about the field it shows; :meth:`same` tells whether two bundles show the
    same scene (an uncertainty verdict carries over) or not (a new check is due).

    Same scene: the same acquisition, the stage within a quarter of the field of view in x and y and within 1 µm
    in z (well inside the 10x depth of field), the same pixel size (objective, binning) and exposure within 1 %.
    A header that lacks any of these figures proves nothing: such a bundle is a scene of its own."""

    acquisition_id: Any
    x: float | None
    y: float | None
    z: float | None
    pixel_size_um: float | None
    exposure_ms: float | None
    field_px: int

    @classmethod
    def of(cls, header: dict[str, Any], field_px: int) -> Scene:
        g = header.get
        return cls(g("acquisition_id"), _hnum(g("stage_x_um")), _hnum(g("stage_y_um")), _hnum(g("stage_z_um")),
                   _hnum(g("pixel_size_um")), _hnum(g("exposure_ms")), field_px)

    @property
    def known(self) -> bool:
        return None not in (self.x, self.y, self.z, self.pixel_size_um, self.exposure_ms)

    def same(self, other: Scene | None) -> bool:
        if other is None or not (self.known and other.known) or self.acquisition_id != other.acquisition_id:
            return False
        a, b = self, other
        assert a.pixel_size_um and b.pixel_size_um and a.exposure_ms is not None and b.exposure_ms is not None
        assert a.x is not None and b.x is not None and a.y is not None and b.y is not None
        assert a.z is not None and b.z is not None
        fov = min(a.field_px, b.field_px) * a.pixel_size_um
        return (abs(a.x - b.x) <= fov / 4 and abs(a.y - b.y) <= fov / 4 and abs(a.z - b.z) <= 1.0
                and abs(a.pixel_size_um / b.pixel_size_um - 1) <= 0.01
                and abs(a.exposure_ms - b.exposure_ms) <= 0.01 * max(a.exposure_ms, b.exposure_ms))


#: What one extra copy of a check is charged, in model passes over the bundle: the pass, plus the mirrored input,
#: the running spread and the statistic. Measured (bench_trust.py at 512² on the shared 2-core dev machine, median
#: check against the median bundle, 2026-11-23, after the mirrored input became one copy and two answers' spread
#: one subtraction): 1.05-1.06 virtual staining and its live tier, 1.12-1.17 super-resolution (4x the output
#: pixels); before, 1.0-1.75. The charge keeps a margin over that for slower machines: the check's time stays
#: within the budget (1.8-2.0 % of the bundles' time at a 2.5 % budget).
COPY_COST = 1.5


def validated_threshold(validated: Any, morphology: str | None) -> tuple[float, str]:
    """The threshold of a validated check (``validated.uncertainty`` or ``validated.consistency``: per-morphology
    thresholds and their ``ceiling``) that applies to ``morphology``, and what it is: that morphology's own, or
    the ceiling (the largest) when none is named or the package did not validate the one named."""
    if morphology is not None and morphology in validated.morphologies:
        return float(validated.morphologies[morphology].threshold), morphology
    return float(validated.ceiling), "ceiling" if morphology is None else f"ceiling; {morphology!r} not validated"


class UncertaintyCheck:
    """The uncertainty check under a duty-cycle budget, for one worker (not thread-safe).

    Work is counted in model passes over the bundle's pixels, so the budget is exact and deterministic: every
    ordinary inference earns ``budget`` × its pixels of credit; a check costs ``tta − 1`` copies (the answer to
    the bundle itself is the first) of :data:`COPY_COST` passes each and runs when the credit covers it: on the
    first bundle of a new :class:`Scene` as soon as it does, on a scene already checked only when the credit covers two checks
    (one stays in reserve for the next new scene). The credit never exceeds two checks' cost, so the extra
    passes over any run stay within ``budget`` × the ordinary passes. The verdict carries to the later
    bundles of its scene (with its age) and is dropped when the scene changes.

    ``validated``: the package's :class:`~scopecast.models.manifest.ValidatedUncertainty` (None: no threshold;
    the statistic is still measured and reported, never judged). ``morphology``: whose threshold applies
    (None or one the package did not validate: the ``ceiling``, the largest). ``budget`` 0 disables the
    check; ``float('inf')`` checks every inferred bundle."""

    def __init__(self, validated: Any, budget: float = 0.025, morphology: str | None = None,
                 default_tta: int = 2) -> None:
        if not budget >= 0:
            raise ValueError(f"uncertainty budget must be a fraction of inference time >= 0, got {budget}")
        self.validated = validated
        self.budget = budget
        self.tta = int(validated.tta) if validated is not None else default_tta
        self.kind = validated.statistic if validated is not None else "signal"
        if self.kind not in STATISTICS:
            raise ValueError(f"the package's uncertainty statistic {self.kind!r} is not one this engine knows "
                             f"({sorted(STATISTICS)})")
        self.threshold: float | None = None
        self.against = "no validated threshold"
        if validated is not None:
            self.threshold, self.against = validated_threshold(validated, morphology)
        self.credit = 0.0
        self.passes = 0.0  # ordinary passes (bundle pixels / 1e6 each) and the checks' extra ones
        self.extra_passes = 0.0
        self.checks = 0
        self.bundles = 0
        self.scene_changed = False  # by the last due(): verdicts of the previous scene no longer apply
        self._scene: Scene | None = None
        self._verdict: dict[str, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def due(self, header: dict[str, Any], shape: tuple[int, int], inferred: bool) -> bool:
        """Account one bundle (its frame header, input ``shape``; ``inferred``: the model ran on it) and say
        whether the check should run on it now."""
        self.bundles += 1
        scene = Scene.of(header, min(shape))
        self.scene_changed = not scene.same(self._scene)
        if self.scene_changed:
            self._verdict = None
        self._scene = scene
        if not (self.enabled and inferred):
            return False
        work = shape[0] * shape[1] / 1e6
        cost = (self.tta - 1) * COPY_COST * work
        self.passes += work
        self.credit = min(self.credit + self.budget * work, 2 * cost) if np.isfinite(self.budget) else np.inf
        return self.credit >= (cost if self._verdict is None else 2 * cost)

    def record(self, value: float, header: dict[str, Any], shape: tuple[int, int], spent: bool = True,
               ms: float = 0.0) -> None:
        """The statistic measured on this bundle (``spent``: its copies were run for the check, not for a
        per-pixel map the engine computes anyway; ``ms``: the time they took)."""
        if spent:
            passes = (self.tta - 1) * shape[0] * shape[1] / 1e6
            self.credit -= COPY_COST * passes
            self.extra_passes += passes
        self.checks += 1
        ok = None if self.threshold is None else bool(value <= self.threshold)
        self._verdict = {"value": float(f"{value:.4g}"), "ok": ok, "checked_bundle": header.get("bundle_id"),
                         "checked_at": self.bundles, "ms": round(ms, 2)}

    def report(self) -> tuple[dict[str, Any], str | None]:
        """``trust.uncertainty.check`` for the bundle last passed to :meth:`due`, and the failure reason (or None)."""
        rep: dict[str, Any] = {"statistic": self.kind, "tta": self.tta, "threshold": self.threshold,
                               "morphology": self.against, "budget": self.budget if np.isfinite(self.budget) else None}
        v = self._verdict
        if not self.enabled:
            return {**rep, "state": "off", "ok": None}, None
        if v is None:
            return {**rep, "state": "pending", "ok": None}, None
        age = self.bundles - v["checked_at"]
        rep.update(state="checked" if age == 0 else "carried", value=v["value"], ok=v["ok"],
                   checked_bundle=v["checked_bundle"], age=age, ms=v["ms"])
        if self.threshold is None:
            rep["state"] += " (informational: the package records no validated uncertainty threshold)"
            return rep, None
        if v["ok"]:
            return rep, None
        return rep, (f"uncertainty: {self.kind} {v['value']:.3g} > validated {self.threshold:.3g} ({self.against}, "
                     f"x{self.tta}{'' if age == 0 else f', checked {age} bundles ago'})")
