"""Overlapping tiles with a halo and blended seams.

A frame larger than the model's tile is cut into tiles of ``tile`` pixels (a
multiple of the network's size multiple). Each tile carries ``halo`` pixels of
context on every side that are discarded after inference; the kept *cores*
overlap their neighbours by ``blend`` pixels, where the two predictions are
mixed with linear weights, so no seam shows. The image is reflect-padded by the
halo so border tiles see context too. Frames no larger than a tile run whole,
padded up to the size multiple.

``run(batch) -> batch`` is any function mapping ``(N, C, h, w)`` float32 to
``(N, C_out, s·h, s·w)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ModelShapeError", "TilePlan", "plan_tiles", "run_tiled"]


class ModelShapeError(ValueError):
    """The model returned another spatial size than its input's × the manifest's scale factor."""


def _checked(res: np.ndarray, tiles: np.ndarray, scale: int) -> np.ndarray:
    """``res`` if it is ``(N, C_out, s·h, s·w)`` for input ``tiles`` ``(N, C, h, w)``; else :class:`ModelShapeError`
    (a cropped or misplaced output would be a silently wrong image)."""
    n, _, h, w = tiles.shape
    if res.ndim != 4 or res.shape[0] != n or res.shape[2:] != (h * scale, w * scale):
        raise ModelShapeError(
            f"the model returned shape {tuple(res.shape)} for input {tuple(tiles.shape)}; with scale_factor "
            f"{scale} it must return (N, C_out, {h * scale}, {w * scale}): the manifest's scale_factor does not "
            "match the model")
    return res


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one frame go."""

    shape: tuple[int, int]  # frame (h, w)
    tile: tuple[int, int]  # tile (th, tw) including halos
    halo: int
    blend: int
    starts_y: tuple[int, ...]  # core starts in frame coordinates
    starts_x: tuple[int, ...]
    whole: bool  # the frame runs in one piece (padded to the multiple)

    @property
    def n_tiles(self) -> int:
        return len(self.starts_y) * len(self.starts_x)


def _axis(n: int, tile: int, halo: int, blend: int, multiple: int) -> tuple[int, tuple[int, ...]]:
    """(tile length, core starts) along one axis."""
    core = tile - 2 * halo
    if n <= core:
        return _round_up(n + 2 * halo, multiple), (0,)
    stride = max(core - blend, 1)
    starts = list(range(0, n - core, stride))
    starts.append(n - core)
    return tile, tuple(sorted(set(starts)))


def plan_tiles(shape: tuple[int, int], tile: int, halo: int, multiple: int, blend: int | None = None) -> TilePlan:
    """Plan the tiles of a ``shape`` frame for a model with the given tile geometry."""
    h, w = shape
    if h <= tile and w <= tile:
        return TilePlan(shape, (_round_up(h, multiple), _round_up(w, multiple)), 0, 0, (0,), (0,), True)
    blend = min(halo, (tile - 2 * halo) // 4) if blend is None else blend
    th, sy = _axis(h, tile, halo, blend, multiple)
    tw, sx = _axis(w, tile, halo, blend, multiple)
    return TilePlan(shape, (th, tw), halo, blend, sy, sx, False)


def _ramp(length: int, blend: int, rise: bool, fall: bool) -> np.ndarray:
    w = np.ones(length, np.float32)
    if blend > 0:
        r = (np.arange(blend, dtype=np.float32) + 0.5) / blend
        if rise:
            w[:blend] = np.minimum(w[:blend], r)
        if fall:
            w[-blend:] = np.minimum(w[-blend:], r[::-1])
    return w


def run_tiled(
    image: np.ndarray, plan: TilePlan, run: Callable[[np.ndarray], np.ndarray],
    scale: int = 1, batch: int = 4,
) -> np.ndarray:
    """Apply ``run`` to ``image`` ``(C, h, w)`` following ``plan``; returns ``(C_out, s·h, s·w)``."""
    c, h, w = image.shape
    th, tw = plan.tile
    if plan.whole:
        padded = image if (th, tw) == (h, w) else \
            np.pad(image, ((0, 0), (0, th - h), (0, tw - w)), mode="reflect" if min(h, w) > 1 else "edge")
        batch_in = padded[None].astype(np.float32, copy=False)
        out = _checked(run(batch_in), batch_in, scale)[0]
        return out[:, : h * scale, : w * scale]
    hal = plan.halo
    # reflect-pad by the halo (and more where one tile is larger than the frame)
    pad_y = max(th - (h + 2 * hal), 0)
    pad_x = max(tw - (w + 2 * hal), 0)
    padded = np.pad(image, ((0, 0), (hal, hal + pad_y), (hal, hal + pad_x)), mode="reflect")
    coords = [(y, x) for y in plan.starts_y for x in plan.starts_x]
    core_h, core_w = th - 2 * hal, tw - 2 * hal
    acc: np.ndarray | None = None
    wsum = np.zeros((h * scale, w * scale), np.float32)
    s = scale
    for i in range(0, len(coords), batch):
        chunk = coords[i : i + batch]
        tiles = np.stack([padded[:, y : y + th, x : x + tw] for y, x in chunk]).astype(np.float32, copy=False)
        res = _checked(run(tiles), tiles, scale)
        if acc is None:
            acc = np.zeros((res.shape[1], h * s, w * s), np.float32)
        for (y, x), r in zip(chunk, res, strict=True):
            kh, kw = min(core_h, h - y), min(core_w, w - x)
            core = r[:, hal * s : (hal + kh) * s, hal * s : (hal + kw) * s]
            wy = _ramp(kh * s, plan.blend * s, y > 0, y + kh < h)
            wx = _ramp(kw * s, plan.blend * s, x > 0, x + kw < w)
            wgt = wy[:, None] * wx[None, :]
            acc[:, y * s : (y + kh) * s, x * s : (x + kw) * s] += core * wgt
            wsum[y * s : (y + kh) * s, x * s : (x + kw) * s] += wgt
    assert acc is not None
    acc /= np.maximum(wsum, 1e-12)
    return acc
