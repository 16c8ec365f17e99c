"""Overlapping tiles with a halo and blended seams.

A frame larger than the model's tile is cut into tiles of ``tile`` pixels (a
multiple of the network's size multiple). Each tile carries ``halo`` pixels of
context on every side that are discarded after inference; the kept *cores*
overlap their neighbours by ``blend`` pixels, where the two predictions are
mixed with linear weights, so no seam shows. Tiles never reach beyond the
frame: a border tile's window is moved inward to the frame's edge, where the
network pads as it does for a whole frame (and as the exported bioimage.io
package does), so the outer pixels do not depend on whether the frame was
tiled (a reflect-padded halo there gave them other context than a whole frame,
up to 70 % of the output's range apart). An axis no longer than a tile runs in
one window; frames no larger than a tile run whole. Both are padded up to the
size multiple at their far end.

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
    windows_y: tuple[int, ...] = ()  # each core's tile (window) start in frame coordinates, inside the frame
    windows_x: tuple[int, ...] = ()

    @property
    def n_tiles(self) -> int:
        return len(self.starts_y) * len(self.starts_x)


def _axis(n: int, tile: int, halo: int, blend: int, multiple: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(window length, core starts, window starts) along one axis. Windows lie inside ``[0, n)`` (one window
    of ``n`` rounded up to the multiple where ``n <= tile``); each core has ``halo`` pixels of context on either
    side, or the frame's own edge."""
    if n <= tile:
        return _round_up(n, multiple), (0,), (0,)
    core = tile - 2 * halo
    stride = max(core - blend, 1)
    starts = sorted({*range(0, n - core, stride), n - core})
    return tile, tuple(starts), tuple(min(max(s - halo, 0), n - tile) for s in starts)


def plan_tiles(shape: tuple[int, int], tile: int, halo: int, multiple: int, blend: int | None = None) -> TilePlan:
    """Plan the tiles of a ``shape`` frame for a model with the given tile geometry."""
    h, w = shape
    if h <= tile and w <= tile:
        return TilePlan(shape, (_round_up(h, multiple), _round_up(w, multiple)), 0, 0, (0,), (0,), True)
    blend = min(halo, (tile - 2 * halo) // 4) if blend is None else blend
    th, sy, wy = _axis(h, tile, halo, blend, multiple)
    tw, sx, wx = _axis(w, tile, halo, blend, multiple)
    return TilePlan(shape, (th, tw), halo, blend, sy, sx, False, wy, wx)


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
        batch_in = _pad_to(image, th, tw)[None].astype(np.float32, copy=False)
        out = _checked(run(batch_in), batch_in, scale)[0]
        return out[:, : h * scale, : w * scale]
    padded = _pad_to(image, max(th, h), max(tw, w))  # only an axis that runs in one window, to the multiple
    win_y = dict(zip(plan.starts_y, plan.windows_y, strict=True))
    win_x = dict(zip(plan.starts_x, plan.windows_x, strict=True))
    coords = [(y, x) for y in plan.starts_y for x in plan.starts_x]
    # an axis in one window keeps all of it; else each core is the tile less its halos
    core_h = th - 2 * plan.halo if len(plan.starts_y) > 1 else h
    core_w = tw - 2 * plan.halo if len(plan.starts_x) > 1 else w
    acc: np.ndarray | None = None
    wsum = np.zeros((h * scale, w * scale), np.float32)
    s = scale
    for i in range(0, len(coords), batch):
        chunk = coords[i : i + batch]
        tiles = np.stack([padded[:, win_y[y] : win_y[y] + th, win_x[x] : win_x[x] + tw]
                          for y, x in chunk]).astype(np.float32, copy=False)
        res = _checked(run(tiles), tiles, scale)
        if acc is None:
            acc = np.zeros((res.shape[1], h * s, w * s), np.float32)
        for (y, x), r in zip(chunk, res, strict=True):
            kh, kw = min(core_h, h - y), min(core_w, w - x)
            oy, ox = y - win_y[y], x - win_x[x]  # the core's place in its window
            core = r[:, oy * s : (oy + kh) * s, ox * s : (ox + kw) * s]
            wy = _ramp(kh * s, plan.blend * s, y > 0, y + kh < h)
            wx = _ramp(kw * s, plan.blend * s, x > 0, x + kw < w)
            wgt = wy[:, None] * wx[None, :]
            acc[:, y * s : (y + kh) * s, x * s : (x + kw) * s] += core * wgt
            wsum[y * s : (y + kh) * s, x * s : (x + kw) * s] += wgt
    assert acc is not None
    acc /= np.maximum(wsum, 1e-12)
    return acc


def _pad_to(image: np.ndarray, th: int, tw: int) -> np.ndarray:
    """``image`` ``(C, h, w)`` reflect-padded at its far ends to ``th`` × ``tw`` (itself when it is that size)."""
    _, h, w = image.shape
    if (th, tw) == (h, w):
        return image
    return np.pad(image, ((0, 0), (0, th - h), (0, tw - w)), mode="reflect" if min(h, w) > 1 else "edge")
