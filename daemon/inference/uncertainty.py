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
itself), far above the monitor's 5 % budget, so it is off unless an engine
asks for it (``InferenceEngine(uncertainty=n)``; benchmarks/bench_trust.py
``--uncertainty n`` measures cost and how well it flags errors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DIHEDRAL", "UNCERTAINTY_CHOICES", "apply", "channel_order", "invert", "summary", "tta_std"]

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


def tta_std(x: np.ndarray, infer: Callable[[np.ndarray], np.ndarray], n: int,
            identity: np.ndarray | None = None, inputs: list[str] | None = None) -> np.ndarray:
    """Per-pixel standard deviation ``(C_out, H', W')`` of ``infer`` over ``n`` dihedral copies of ``x`` ``(C, H, W)``.

    ``infer`` maps a normalized input to the raw model output (any spatial size: the engine tiles). ``identity``:
    the model's answer to ``x`` itself when already computed (saves one inference). ``inputs``: the channel
    names, so direction-specific channels are permuted (:func:`channel_order`); raises ``ValueError`` when
    ``n`` needs a copy that cannot be a physical input."""
    if n not in UNCERTAINTY_CHOICES[1:]:
        raise ValueError(f"uncertainty needs {', '.join(map(str, UNCERTAINTY_CHOICES[1:]))} dihedral copies, got {n}")
    orders = [channel_order(inputs, t) if inputs is not None else list(range(x.shape[0])) for t in DIHEDRAL[:n]]
    if any(o is None for o in orders):
        raise ValueError(f"uncertainty {n} needs 90° rotations, which turn DPC left/right into top/bottom in a "
                         "sense the package does not record; use 2 or 4 (mirrors and 180°)")
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for i, t in enumerate(DIHEDRAL[:n]):
        if i == 0 and identity is not None:
            y = identity
        else:
            y = invert(infer(np.ascontiguousarray(apply(x[orders[i]], t))), t)
        y = y.astype(np.float64)
        if mean is None:  # Welford: one pass, no stack of n outputs
            mean, m2 = y.copy(), np.zeros_like(y)
            continue
        d = y - mean
        mean += d / (i + 1)
        m2 += d * (y - mean)
    assert m2 is not None
    return np.sqrt(m2 / n).astype(np.float32)


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
