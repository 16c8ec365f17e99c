"""Thin structures of the simulated slide: filaments, membrane stacks, fibres, a resolution target.

Curvilinear structures are stored as short straight segments (µm, slide
coordinates) carrying a linear density (stain per µm, or OPD·width in µm²). They
are drawn by depositing points along each segment (at most half a pixel apart,
bilinear) and blurring once with the width of a thin line sampled by a pixel
(:func:`~.specimens.line_profile`), so a line keeps its integrated density at
every pixel size and any region renders the same from any stage path.

The resolution target is analytic: pairs of thin lines (fluorescent in the
``membrane`` channel, and phase) at the spacings of
:data:`RESOLUTION_TARGET_SPACINGS_UM`, laid out as :func:`resolution_target_geometry`
returns, repeated every :data:`RESOLUTION_TARGET_PERIOD_UM` in x and y.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from .specimens import TILE_UM, Cell, _window, line_profile, owned_by
from .specimens_kinds import _seed_key, cells_in_tile, neighbour_cells

__all__ = [
    "RESOLUTION_TARGET_LINE_LENGTH_UM",
    "RESOLUTION_TARGET_PERIOD_UM",
    "RESOLUTION_TARGET_SPACINGS_UM",
    "Segments",
    "render_resolution_target",
    "render_segments",
    "resolution_target_geometry",
    "tile_segments",
]

#: Centre-to-centre distances of the two lines of each line pair, µm.
RESOLUTION_TARGET_SPACINGS_UM: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5)
#: The target (all pairs) repeats with this period in x and y; one copy is centred on (0, 0).
RESOLUTION_TARGET_PERIOD_UM = 100.0
RESOLUTION_TARGET_LINE_LENGTH_UM = 6.0
_TARGET_PITCH_UM = 9.0  # between the centres of neighbouring pairs
_TARGET_ROW_UM = 6.0  # vertical-line pairs at y = -6 µm, horizontal-line pairs at y = +6 µm
_TARGET_LINE_SIGMA_UM = 0.034  # 80 nm FWHM lines
_TARGET_STAIN_PER_UM = 48.0  # membrane-channel fluorophore per µm of line
_TARGET_OPD_UM2 = 0.012  # OPD x width of one line (a 80 nm wide, 150 nm high ridge)


class Segments(NamedTuple):
    """Straight pieces of thin structures: ends (µm) and linear density per µm."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    lam: np.ndarray

    @staticmethod
    def empty() -> Segments:
        z = np.zeros(0)
        return Segments(z, z, z, z, z)

    @staticmethod
    def from_polyline(x: np.ndarray, y: np.ndarray, ok: np.ndarray, lam: float) -> Segments:
        """Segments between consecutive points that are both ``ok``."""
        keep = ok[:-1] & ok[1:]
        return Segments(x[:-1][keep], y[:-1][keep], x[1:][keep], y[1:][keep], np.full(int(keep.sum()), lam))

    @staticmethod
    def concat(parts: list[Segments]) -> Segments:
        if not parts:
            return Segments.empty()
        return Segments(*(np.concatenate([getattr(p, f) for p in parts]) for f in Segments._fields))


def render_segments(target: np.ndarray, seg: Segments, x0: float, y0: float, pixel_um: float,
                    sigma_um: float = 0.004) -> None:
    """Add the density of thin line segments to ``target`` (grid origin x0, y0)."""
    if len(seg.x0) == 0:
        return
    ny, nx = target.shape
    sig = float(np.hypot(sigma_um, 0.6 * pixel_um))
    blur_px = np.sqrt(max(sig**2 - pixel_um**2 / 6, 0.0)) / pixel_um  # bilinear deposit adds px²/6
    pad = int(np.ceil(4 * blur_px)) + 2
    dx, dy = seg.x1 - seg.x0, seg.y1 - seg.y0
    length = np.hypot(dx, dy)
    n = np.maximum(np.ceil(length / (0.5 * pixel_um)).astype(np.int64), 1)
    idx = np.repeat(np.arange(len(n)), n)
    frac = (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + 0.5) / n[idx]
    fx = (seg.x0[idx] + frac * dx[idx] - x0) / pixel_um + pad
    fy = (seg.y0[idx] + frac * dy[idx] - y0) / pixel_um + pad
    w = seg.lam[idx] * length[idx] / n[idx] / pixel_um**2  # per-area density
    W, H = nx + 2 * pad, ny + 2 * pad
    ok = (fx >= 0) & (fx < W - 1) & (fy >= 0) & (fy < H - 1)
    fx, fy, w = fx[ok], fy[ok], w[ok]
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    ax, ay = fx - ix, fy - iy
    buf = np.zeros(H * W)
    for ox, oy, wt in ((0, 0, (1 - ax) * (1 - ay)), (1, 0, ax * (1 - ay)), (0, 1, (1 - ax) * ay), (1, 1, ax * ay)):
        buf += np.bincount((iy + oy) * W + ix + ox, weights=w * wt, minlength=H * W)
    img = gaussian_filter(buf.reshape(H, W), blur_px, mode="constant", truncate=4.0) if blur_px > 0.05 \
        else buf.reshape(H, W)
    target += img[pad: pad + ny, pad: pad + nx].astype(np.float32)


# ---------------------------------------------------------------- per kind
def _inside(cell: Cell, others: list[Cell], x: np.ndarray, y: np.ndarray, rn_max: float) -> np.ndarray:
    """Points inside ``cell``'s body (normalised radius < rn_max) and in its share of space."""
    from .specimens import _shape

    rn, _ = _shape(cell, x - cell.x, y - cell.y)
    return (rn < rn_max) & owned_by(cell, others, x, y)


def _cytoskeleton(rng, cell: Cell, others: list[Cell]) -> list[tuple[Segments, str]]:
    """Stress fibres (straight bundles of 1-3 fibres 0.12-0.35 µm apart) and microtubules."""
    parts = []
    half_w = cell.r * cell.aspect
    s = np.arange(-1.2 * cell.r, 1.2 * cell.r, 0.25)
    for _ in range(int(rng.integers(8, 20))):
        th = cell.angle + rng.normal(0, 0.15)
        ct, st = np.cos(th), np.sin(th)
        off = rng.uniform(-0.75, 0.75) * half_w
        bow = rng.normal(0, 0.02 * cell.r)
        lam, gap = rng.uniform(40.0, 80.0), rng.uniform(0.12, 0.35)
        for j in range(int(rng.integers(1, 4))):
            o = off + j * gap + bow * np.cos(0.5 * np.pi * s / cell.r)
            x, y = cell.x + s * ct - o * st, cell.y + s * st + o * ct
            parts.append(Segments.from_polyline(x, y, _inside(cell, others, x, y, 0.92), lam))
    n = cell.nuclei[0]
    cx, cy = cell.x + n.dx, cell.y + n.dy
    steps = 180
    for _ in range(int(rng.integers(35, 70))):
        phi = rng.uniform(0, 2 * np.pi)
        start = max(n.a, n.b) + 0.5
        turn = np.cumsum(rng.normal(0, np.sqrt(0.25 / 20.0), steps))  # persistence length 20 µm
        ang = phi + rng.normal(0, 0.6) + turn
        x = cx + start * np.cos(phi) + np.concatenate([[0], np.cumsum(0.25 * np.cos(ang[:-1]))])
        y = cy + start * np.sin(phi) + np.concatenate([[0], np.cumsum(0.25 * np.sin(ang[:-1]))])
        ok = _inside(cell, others, x, y, 0.95)
        ok &= np.cumprod(ok).astype(bool)  # a microtubule stops at the cell edge
        parts.append(Segments.from_polyline(x, y, ok, rng.uniform(15.0, 30.0)))
    return [(Segments.concat(parts), "membrane")]


def _golgi(rng, cell: Cell, others: list[Cell]) -> list[tuple[Segments, str]]:
    """A Golgi stack cupping the nucleus: 3-5 membrane arcs 0.12-0.3 µm apart."""
    n = cell.nuclei[0]
    cx, cy = cell.x + n.dx, cell.y + n.dy
    phi, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.2)
    spacing = rng.uniform(0.12, 0.3)
    r0 = 1.1 * max(n.a, n.b) + 0.8
    arcs = []
    for j in range(int(rng.integers(3, 6))):
        r = r0 + j * spacing
        t = np.linspace(phi - span / 2, phi + span / 2, max(int(r * span / 0.1), 2))
        arcs.append((cx + r * np.cos(t), cy + r * np.sin(t)))
    x, y = np.concatenate([a[0] for a in arcs]), np.concatenate([a[1] for a in arcs])
    ok = np.split(_inside(cell, others, x, y, 2.0), np.cumsum([len(a[0]) for a in arcs])[:-1])
    parts = [Segments.from_polyline(ax, ay, k, 40.0 * cell.brightness) for (ax, ay), k in zip(arcs, ok, strict=True)]
    return [(Segments.concat(parts), "membrane")]


def _fibres(rng, tx: int, ty: int) -> list[tuple[Segments, str]]:
    """Dust and lint fibres on the glass: absorbing, refractile, not fluorescent."""
    out_opd, out_abs = [], []
    for _ in range(rng.poisson(0.3)):
        x0, y0 = (tx + rng.uniform()) * TILE_UM, (ty + rng.uniform()) * TILE_UM
        n = int(rng.uniform(10, 40) / 0.25)
        ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.03, n))
        x = x0 + np.concatenate([[0], np.cumsum(0.25 * np.cos(ang[:-1]))])
        y = y0 + np.concatenate([[0], np.cumsum(0.25 * np.sin(ang[:-1]))])
        ok = np.ones(n, bool)
        width = rng.uniform(0.5, 1.5)
        out_opd.append(Segments.from_polyline(x, y, ok, 0.06 * width))
        out_abs.append(Segments.from_polyline(x, y, ok, 0.15 * width))
    return [(Segments.concat(out_opd), "opd"), (Segments.concat(out_abs), "absorption")]


_PER_CELL = {"filaments": _cytoskeleton, "membranes": _golgi}
#: Kinds with thin structures, and the true line width (σ, µm) each draws them with.
SEGMENT_SIGMA_UM = {"filaments": 0.01, "membranes": 0.004, "debris": 0.3}


@lru_cache(maxsize=512)
def tile_segments(kind: str, seed: int, tx: int, ty: int, density: float = 1.0) -> tuple[tuple[Segments, str], ...]:
    """Thin structures of one tile, each with the map it goes to (a label, ``opd`` or ``absorption``)."""
    rng = np.random.default_rng(_seed_key(seed, tx, ty, 99))
    if kind == "debris":
        return tuple(_fibres(rng, tx, ty))
    make = _PER_CELL.get(kind)
    if make is None:
        return ()
    cells = cells_in_tile(kind, seed, tx, ty, density)
    if not cells:
        return ()
    around = neighbour_cells(kind, seed, tx, ty, density)
    ax, ay = np.array([o.x for o in around]), np.array([o.y for o in around])
    reach = np.array([o.reach for o in around])
    by_target: dict[str, list[Segments]] = {}
    for c in cells:
        close = np.flatnonzero(np.hypot(ax - c.x, ay - c.y) < reach + c.reach)
        others = [around[k] for k in close if around[k].uid != c.uid]
        for seg, target in make(rng, c, others):
            by_target.setdefault(target, []).append(seg)
    return tuple((Segments.concat(v), k) for k, v in by_target.items())


# ------------------------------------------------------------ resolution target
def resolution_target_geometry() -> list[dict]:
    """The line pairs of the copy of the target centred on (0, 0).

    Each entry: ``spacing_um``, ``orientation`` (``"vertical"``: lines along y,
    separated along x; ``"horizontal"``: lines along x, separated along y),
    ``center_um`` (x, y) of the pair, ``lines_um`` (the two line positions across
    the lines: x for vertical, y for horizontal), ``length_um``. Copies repeat
    every :data:`RESOLUTION_TARGET_PERIOD_UM` in x and y.
    """
    out = []
    n = len(RESOLUTION_TARGET_SPACINGS_UM)
    for row, orientation in ((-_TARGET_ROW_UM, "vertical"), (_TARGET_ROW_UM, "horizontal")):
        for k, s in enumerate(RESOLUTION_TARGET_SPACINGS_UM):
            cx, cy = (k - (n - 1) / 2) * _TARGET_PITCH_UM, row
            across = cx if orientation == "vertical" else cy
            out.append({"spacing_um": s, "orientation": orientation, "center_um": (cx, cy),
                        "lines_um": (across - s / 2, across + s / 2),
                        "length_um": RESOLUTION_TARGET_LINE_LENGTH_UM})
    return out


def render_resolution_target(xs: np.ndarray, ys: np.ndarray, pixel: float, opd: np.ndarray,
                             lab: dict[str, np.ndarray]) -> None:
    """Draw every copy of the target that reaches the grid ``ys x xs`` (pixel size ``pixel`` µm)."""
    P, half = RESOLUTION_TARGET_PERIOD_UM, RESOLUTION_TARGET_LINE_LENGTH_UM / 2
    reach = 0.5 * len(RESOLUTION_TARGET_SPACINGS_UM) * _TARGET_PITCH_UM + half + 2
    mem = lab.get("membrane")
    for j in range(int(np.floor((ys[0] - reach) / P)) + 1, int(np.floor((ys[-1] + reach) / P)) + 1):
        for i in range(int(np.floor((xs[0] - reach) / P)) + 1, int(np.floor((xs[-1] + reach) / P)) + 1):
            for g in resolution_target_geometry():
                cx, cy = g["center_um"][0] + i * P, g["center_um"][1] + j * P
                vertical = g["orientation"] == "vertical"
                ex, ey = (1.5, half + 1) if vertical else (half + 1, 1.5)
                sx, sy = _window(cx, ex, xs), _window(cy, ey, ys)
                if sx.start >= sx.stop or sy.start >= sy.stop:
                    continue
                X, Y = (xs[sx] - cx)[None, :], (ys[sy] - cy)[:, None]
                across, along = (X, Y) if vertical else (Y, X)
                ends = np.clip((half - np.abs(along)) / pixel + 0.5, 0, 1)
                prof = 0
                for p in g["lines_um"]:
                    off = p - g["center_um"][0 if vertical else 1]
                    prof = prof + line_profile(across - off, pixel, _TARGET_LINE_SIGMA_UM)
                prof = (prof * ends).astype(np.float32)
                opd[sy, sx] += np.float32(_TARGET_OPD_UM2) * prof
                if mem is not None:
                    mem[sy, sx] += np.float32(_TARGET_STAIN_PER_UM) * prof
