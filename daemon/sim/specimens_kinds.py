"""Specimen kinds made of cells: where the cells go and what each one looks like.

Placement is local and deterministic: a tile's candidates come from a generator
seeded by ``(seed, tile, kind)``; a candidate is dropped when it conflicts with a
higher-priority candidate within the 3x3 tiles around (a Matérn type II
hard-core rule on discs or, for elongated cells, capsules). Survivors that still
touch are separated pixel by pixel by :func:`~.specimens.render_cells`.
Nuclei are then shrunk, if needed, until their outline lies in their own
cell's share of space (checked against the shapes of the touching cells), so a
junction never cuts a nucleus and two nuclei never touch.

See docs/specimens.md for what each kind contains and is meant for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .specimens import _GUARD, _TEX_N, _TEX_PX, TILE_UM, Cell, Nucleus, _metric_points, nominal_metrics

__all__ = [
    "CELL_KINDS",
    "COLONY_CENTER_UM",
    "COLONY_RADIUS_UM",
    "cells_in_tile",
    "kind_margin_um",
    "membrane_style",
    "neighbour_cells",
]

#: A dense colony (cell density x4) around (x, y) with this radius, µm: the slide
#: region designed to contain the smart-acquisition target event (``cells`` only).
COLONY_CENTER_UM = (40000.0, 0.0)
COLONY_RADIUS_UM = 400.0


# --------------------------------------------------------------- placement
class _Cand(NamedTuple):
    """Placement candidates of one tile: centres, exclusion capsules, priorities."""

    x: np.ndarray
    y: np.ndarray
    rad: np.ndarray  # capsule radius, µm
    hl: np.ndarray  # capsule half-length along ``ang`` (0: a disc)
    ang: np.ndarray
    prio: np.ndarray


def _seed_key(*parts: int) -> tuple[int, ...]:
    """Non-negative seed entropy from signed integers (tile indices can be < 0)."""
    return tuple(int(p) + (1 << 40) for p in parts)


def _slots(rng, tx: int, ty: int, cols: int, rows: int, jitter: float, hexagonal: bool = False):
    """Jittered lattice sites of a tile (``cols x rows``; odd global rows shifted)."""
    sx, sy = TILE_UM / cols, TILE_UM / rows
    j, i = np.divmod(np.arange(cols * rows), cols)
    x = tx * TILE_UM + (i + 0.5) * sx
    y = ty * TILE_UM + (j + 0.5) * sy
    if hexagonal:
        x = x + 0.5 * sx * ((ty * rows + j) % 2)
    x = x + rng.uniform(-jitter, jitter, len(x)) * sx
    y = y + rng.uniform(-jitter, jitter, len(y)) * sy
    return x, y


def _seg_dist(a: _Cand, ia, b: _Cand, ib) -> np.ndarray:
    """Distance between the capsule axes of candidates ``ia`` (rows) and ``ib`` (cols)."""
    if not (a.hl[ia].any() or b.hl[ib].any()):  # discs: centre distances
        return np.hypot(a.x[ia][:, None] - b.x[ib][None, :], a.y[ia][:, None] - b.y[ib][None, :])

    def ends(c, idx):
        dx, dy = np.cos(c.ang[idx]) * c.hl[idx], np.sin(c.ang[idx]) * c.hl[idx]
        return c.x[idx] - dx, c.y[idx] - dy, c.x[idx] + dx, c.y[idx] + dy

    ax0, ay0, ax1, ay1 = (v[:, None] for v in ends(a, ia))
    bx0, by0, bx1, by1 = (v[None, :] for v in ends(b, ib))
    best = np.full((len(ia), len(ib)), np.inf)
    for s in np.linspace(0, 1, 7):
        for (px, py), (qx0, qy0, qx1, qy1) in (
            ((ax0 + s * (ax1 - ax0), ay0 + s * (ay1 - ay0)), (bx0, by0, bx1, by1)),
            ((bx0 + s * (bx1 - bx0), by0 + s * (by1 - by0)), (ax0, ay0, ax1, ay1)),
        ):
            vx, vy = qx1 - qx0, qy1 - qy0
            L2 = vx * vx + vy * vy
            t = np.clip(((px - qx0) * vx + (py - qy0) * vy) / np.where(L2 > 0, L2, 1), 0, 1)
            best = np.minimum(best, np.hypot(px - qx0 - t * vx, py - qy0 - t * vy))
    return best


def _concat(cands: Sequence[_Cand]) -> _Cand:
    return _Cand(*(np.concatenate([getattr(c, f) for c in cands]) for f in _Cand._fields))


@dataclass(frozen=True)
class _KindSpec:
    name: str
    key: int  # mixed into the seed: kinds never share random streams
    candidates: Callable  # (rng, tx, ty, density) -> (_Cand, params)
    build: Callable  # (rng, tx, ty, cand, params, keep, limit) -> list[Cell]
    margin: float  # µm beyond a tile where its cells (and thin structures) can reach
    exclusion: float  # thinning: conflict if axis distance < exclusion * (rad_i + rad_j)
    membrane: str = "thick"


@lru_cache(maxsize=8192)
def _raw(kind: str, seed: int, tx: int, ty: int, density: float):
    spec = _KINDS[kind]
    rng = np.random.default_rng(_seed_key(seed, tx, ty, spec.key))
    return spec.candidates(rng, tx, ty, density)


def _neighbourhood(kind, seed, tx, ty, density, survivors: bool):
    parts, own = [], None
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            cand = _raw(kind, seed, tx + dx, ty + dy, density)[0]
            if survivors:
                cand = _Cand(*(v[_keep(kind, seed, tx + dx, ty + dy, density)] for v in cand))
            if dx == 0 and dy == 0:
                own = (sum(len(p.x) for p in parts), len(cand.x))
            parts.append(cand)
    return _concat(parts), own


@lru_cache(maxsize=8192)
def _keep(kind: str, seed: int, tx: int, ty: int, density: float) -> np.ndarray:
    """Matérn II thinning: drop a candidate that conflicts with a higher-priority one."""
    allc, (start, n) = _neighbourhood(kind, seed, tx, ty, density, survivors=False)
    if n == 0:
        return np.zeros(0, bool)
    own = np.arange(start, start + n)
    d = _seg_dist(allc, own, allc, np.arange(len(allc.x)))
    conflict = d < _KINDS[kind].exclusion * (allc.rad[own][:, None] + allc.rad[None, :])
    conflict[np.arange(n), own] = False
    stronger = allc.prio[None, :] > allc.prio[own][:, None]
    return ~np.any(conflict & stronger, axis=1)


def _limits(kind, seed, tx, ty, density, keep) -> np.ndarray:
    """Per kept candidate: its share of the distance to the nearest kept neighbour."""
    allc, (start, n) = _neighbourhood(kind, seed, tx, ty, density, survivors=True)
    own = np.arange(start, start + n)
    if n == 0:
        return np.zeros(0)
    d = _seg_dist(allc, own, allc, np.arange(len(allc.x)))
    d[np.arange(n), own] = np.inf
    share = d * allc.rad[own][:, None] / (allc.rad[own][:, None] + allc.rad[None, :])
    return share.min(axis=1) if share.shape[1] else np.full(n, np.inf)


@lru_cache(maxsize=4096)
def _built(kind: str, seed: int, tx: int, ty: int, density: float) -> tuple[Cell, ...]:
    spec = _KINDS[kind]
    cand, params = _raw(kind, seed, tx, ty, density)
    keep = _keep(kind, seed, tx, ty, density)
    limit = np.full(len(cand.x), np.inf)
    limit[keep] = _limits(kind, seed, tx, ty, density, keep)
    rng = np.random.default_rng(_seed_key(seed, tx, ty, spec.key, 2))
    return tuple(spec.build(rng, tx, ty, cand, params, keep, limit))


def neighbour_cells(kind: str, seed: int, tx: int, ty: int, density: float = 1.0) -> list[Cell]:
    """Cells of the 3x3 tiles around a tile (before organelle ownership filtering)."""
    return [c for dy in (-1, 0, 1) for dx in (-1, 0, 1) for c in _built(kind, seed, tx + dx, ty + dy, density)]


@lru_cache(maxsize=4096)
def cells_in_tile(kind: str, seed: int, tx: int, ty: int, density: float = 1.0) -> tuple[Cell, ...]:
    """The cells of one tile (deterministic in ``(kind, seed, tile, density)``).

    Granules that would fall in a neighbour's share of the partition are dropped.
    """
    around = neighbour_cells(kind, seed, tx, ty, density)
    ax, ay = np.array([o.x for o in around]), np.array([o.y for o in around])
    reach = np.array([o.reach for o in around])
    cells = []
    for c in _built(kind, seed, tx, ty, density):
        size = max((max(n.a, n.b) + np.hypot(n.dx, n.dy) for n in c.nuclei), default=0.0) * _GUARD + 0.5
        close = np.flatnonzero(np.hypot(ax - c.x, ay - c.y) < reach + size)
        cells.append(_fit_nuclei(c, [around[k] for k in close if around[k].uid != c.uid], size))
    counts = [len(c.granules) for c in cells]
    if not sum(counts):
        return tuple(cells)
    gr = np.concatenate([c.granules for c in cells])
    owner = np.repeat(np.arange(len(cells)), counts)
    # fitted nuclei lie inside the nominal shares: the nominal shapes decide
    metrics = nominal_metrics(around, gr[:, 0], gr[:, 1])
    index = {o.uid: k for k, o in enumerate(around)}
    rows = np.array([index[c.uid] for c in cells])[owner]
    mine = metrics[rows, np.arange(len(gr))]
    metrics[rows, np.arange(len(gr))] = np.inf
    best = metrics.min(axis=0)
    ok = np.isfinite(mine) & (mine < best)
    out = []
    for k, c in enumerate(cells):
        if counts[k]:
            c = replace(c, granules=c.granules[ok[owner == k]])
        out.append(c)
    return tuple(out)


_OUTLINE = np.linspace(0, 2 * np.pi, 24, endpoint=False)


def _fit_nuclei(c: Cell, others: Sequence[Cell], size: float) -> Cell:
    """Shrink the nuclei (about the cell centre) until each lies in the cell's own share.

    Checked on the nucleus outline (plus 0.3 µm) against the nominal shapes of
    the touching cells and, for spread cells, against the cell's own membrane.
    """
    if not c.nuclei or (not others and size < c.inner):
        return c
    s = 1.0
    for _ in range(16):
        ok = True
        for n in c.nuclei:
            cn, sn = np.cos(n.angle), np.sin(n.angle)
            u = (s * n.a * _GUARD + 0.3) * np.cos(_OUTLINE)
            v = (s * n.b * _GUARD + 0.3) * np.sin(_OUTLINE)
            px, py = c.x + s * n.dx + u * cn - v * sn, c.y + s * n.dy + u * sn + v * cn
            mine = _metric_points(c, px, py, nuclei=False)
            if size >= c.inner and c.profile != "flat" and np.any(mine >= 0.97):
                ok = False
                break
            if others and np.any(nominal_metrics(others, px, py) <= mine[None, :]):
                ok = False
                break
        if ok:
            break
        s *= 0.9
    if s == 1.0:
        return c
    nuclei = tuple(replace(n, dx=n.dx * s, dy=n.dy * s, a=n.a * s, b=n.b * s) for n in c.nuclei)
    nl = c.nucleoli.copy()
    if len(nl):
        nl[:, 0] = c.x + s * (nl[:, 0] - c.x)
        nl[:, 1] = c.y + s * (nl[:, 1] - c.y)
        nl[:, 2] *= s
    return replace(c, nuclei=nuclei, nucleoli=nl)


def kind_margin_um(kind: str) -> float:
    return _KINDS[kind].margin


def _uid(tx: int, ty: int, k: int) -> int:
    return (((int(tx) + (1 << 19)) << 20) | (int(ty) + (1 << 19))) << 12 | (int(k) + 1)


# ------------------------------------------------------------ cell parts
def _harmonics(rng, scale: float = 0.12) -> tuple[tuple[float, float], ...]:
    return tuple((float(rng.uniform(0, scale / k)), float(rng.uniform(0, 2 * np.pi))) for k in range(2, 6))


def _interphase_nucleus(rng, a: float, b: float, dx: float, dy: float, angle: float,
                        density: float = 1.0, texture: float | None = None) -> Nucleus:
    return Nucleus(dx=dx, dy=dy, a=a, b=b, angle=angle, density=density,
                   texture=float(rng.uniform(0.12, 0.25) if texture is None else texture),
                   tex_x=float(rng.uniform(0, _TEX_N * _TEX_PX)), tex_y=float(rng.uniform(0, _TEX_N * _TEX_PX)))


def _nucleoli(rng, x: float, y: float, n: Nucleus, count: int) -> np.ndarray:
    """Nucleoli inside nucleus ``n`` of a cell at (x, y): absolute (x, y, r)."""
    if count == 0:
        return np.zeros((0, 3))
    u = rng.uniform(-0.45, 0.45, count) * n.a
    v = rng.uniform(-0.45, 0.45, count) * n.b
    cn, sn = np.cos(n.angle), np.sin(n.angle)
    r = rng.uniform(0.5, 1.0, count) * min(1.0, n.b / 3.5)
    return np.column_stack([x + n.dx + u * cn - v * sn, y + n.dy + u * sn + v * cn, r])


def _granules(rng, x: float, y: float, r: float, aspect: float, angle: float, lo: int, hi: int) -> np.ndarray:
    ng = int(rng.integers(lo, hi))
    ang = rng.uniform(0, 2 * np.pi, ng)
    rad = np.sqrt(rng.uniform(0.25, 0.8, ng))
    u, v = r * rad * np.cos(ang), r * aspect * rad * np.sin(ang)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.column_stack([x + u * ca - v * sa, y + u * sa + v * ca, rng.uniform(0.25, 0.6, ng)])


def spread_cells(rng, uids, x, y, r, limit, *, nuc_frac=(0.35, 0.5), off_frac: float = 0.4,
                 height=(2.5, 4.5), granules=(8, 30)) -> list[Cell]:
    """Cultured, spread cells (irregular outline, dome, nucleus with nucleoli, granules).

    All random draws are made at once for the whole batch (it is a hot path).
    """
    n = len(x)
    if n == 0:
        return []
    x, y, r, limit = (np.asarray(v, float) for v in (x, y, r, limit))
    aspect, angle = rng.uniform(0.7, 1.0, n), rng.uniform(0, np.pi, n)
    amps = rng.uniform(0, 1, (n, 4)) * (0.12 / np.arange(2, 6))
    phases = rng.uniform(0, 2 * np.pi, (n, 4))
    inner = r * aspect * (1 - amps.sum(axis=1)) - 0.6  # closest the membrane comes to the centre
    a = r * rng.uniform(*nuc_frac, n)
    b = a * rng.uniform(0.8, 0.95, n)
    off = np.maximum((r * aspect - a) * off_frac, 0)
    dx, dy = rng.uniform(-1, 1, n) * off, rng.uniform(-1, 1, n) * off
    ext = np.hypot(dx, dy) + _GUARD * a
    s = np.clip(np.minimum(limit, inner) / ext, 0.25, 1.0)
    a, b, dx, dy = a * s, b * s, dx * s, dy * s
    nang = rng.uniform(0, np.pi, n)
    texture, tex = rng.uniform(0.12, 0.25, n), rng.uniform(0, _TEX_N * _TEX_PX, (n, 2))
    h, bright = rng.uniform(*height, n), rng.uniform(0.6, 1.4, n)
    # nucleoli: 1-3 per nucleus, inside its inner half
    n_nl = rng.integers(1, 4, n)
    nl_u, nl_v = rng.uniform(-0.45, 0.45, (n, 3)), rng.uniform(-0.45, 0.45, (n, 3))
    nl_r = rng.uniform(0.5, 1.0, (n, 3)) * np.minimum(1.0, b / 3.5)[:, None]
    cn, sn = np.cos(nang)[:, None], np.sin(nang)[:, None]
    nl_x = (x + dx)[:, None] + nl_u * a[:, None] * cn - nl_v * b[:, None] * sn
    nl_y = (y + dy)[:, None] + nl_u * a[:, None] * sn + nl_v * b[:, None] * cn
    # granules, uniform in area over the inner part of the cytoplasm
    n_gr = rng.integers(*granules, n)
    owner = np.repeat(np.arange(n), n_gr)
    g_ang = rng.uniform(0, 2 * np.pi, len(owner))
    g_rad = np.sqrt(rng.uniform(0.25, 0.8, len(owner))) * r[owner]
    gu, gv = g_rad * np.cos(g_ang), g_rad * aspect[owner] * np.sin(g_ang)
    ca, sa = np.cos(angle[owner]), np.sin(angle[owner])
    gr = np.column_stack([x[owner] + gu * ca - gv * sa, y[owner] + gu * sa + gv * ca,
                          rng.uniform(0.25, 0.6, len(owner))])
    g_split = np.split(gr, np.cumsum(n_gr)[:-1])
    cells = []
    for k in range(n):
        nuc = Nucleus(dx=float(dx[k]), dy=float(dy[k]), a=float(a[k]), b=float(b[k]), angle=float(nang[k]),
                      texture=float(texture[k]), tex_x=float(tex[k, 0]), tex_y=float(tex[k, 1]))
        m = n_nl[k]
        cells.append(Cell(
            uid=int(uids[k]), x=float(x[k]), y=float(y[k]), r=float(r[k]), aspect=float(aspect[k]),
            angle=float(angle[k]), height=float(h[k]), nuclei=(nuc,),
            harmonics=tuple(zip(amps[k].tolist(), phases[k].tolist(), strict=True)),
            brightness=float(bright[k]), granules=g_split[k],
            nucleoli=np.column_stack([nl_x[k, :m], nl_y[k, :m], nl_r[k, :m]])))
    return cells


def spread_cell(rng, uid: int, x: float, y: float, r: float, limit: float, **kw) -> Cell:
    """One cultured, spread cell (see :func:`spread_cells`)."""
    return spread_cells(rng, [uid], [x], [y], [r], [limit], **kw)[0]


# ------------------------------------------------------------------ kinds
def _disc_cands(x, y, rad, rng) -> _Cand:
    n = len(x)
    return _Cand(np.asarray(x, float), np.asarray(y, float), np.asarray(rad, float), np.zeros(n),
                 np.zeros(n), rng.uniform(size=n))


def _in_colony(tx: int, ty: int) -> bool:
    cx, cy = (tx + 0.5) * TILE_UM, (ty + 0.5) * TILE_UM
    return bool(np.hypot(cx - COLONY_CENTER_UM[0], cy - COLONY_CENTER_UM[1]) < COLONY_RADIUS_UM)


def _culture_cands(rng, tx, ty, density, sparse: bool = False):
    colony = not sparse and _in_colony(tx, ty)
    if colony:  # a compacted colony: 4x the cells, smaller and taller, big nuclei
        x, y = _slots(rng, tx, ty, 6, 7, 0.22, hexagonal=True)
        occ, r = 0.92, rng.uniform(7.0, 9.5, 42)
    elif sparse:
        x, y = _slots(rng, tx, ty, 3, 3, 0.35)
        occ, r = 0.15, rng.uniform(12.0, 20.0, 9)
    else:
        x, y = _slots(rng, tx, ty, 3, 3, 0.35)
        occ, r = 0.95, rng.uniform(9.0, 16.0, 9)
    on = rng.uniform(size=len(x)) < min(occ * density, 1.0)
    # colony cells press on each other: a smaller exclusion disc lets them touch more
    cand = _disc_cands(x[on], y[on], r[on] * (0.75 if colony else 1.0), rng)
    return cand, {"colony": colony, "r": r[on]}


def _culture_build(rng, tx, ty, cand, params, keep, limit):
    k = np.flatnonzero(keep)
    uids = [_uid(tx, ty, i) for i in k]
    r = params["r"][k]
    if params["colony"]:
        return spread_cells(rng, uids, cand.x[k], cand.y[k], r, limit[k] * r / cand.rad[k],
                            nuc_frac=(0.62, 0.75), off_frac=0.1, height=(4.0, 6.0), granules=(4, 12))
    return spread_cells(rng, uids, cand.x[k], cand.y[k], r, limit[k])


def _sheet_cands(rng, tx, ty, density, cols=6, rows=7):
    x, y = _slots(rng, tx, ty, cols, rows, 0.18, hexagonal=True)
    a = TILE_UM / cols
    return _disc_cands(x, y, np.full(len(x), 0.5 * a), rng), {"a": a}


def _sheet_build(rng, tx, ty, cand, params, keep, limit, *, gap=None):
    a = params["a"]
    k = np.flatnonzero(keep)
    n = len(k)
    x, y = cand.x[k], cand.y[k]
    na = rng.uniform(0.21, 0.27, n) * a
    nb = na * rng.uniform(0.8, 0.95, n)
    dx, dy = rng.uniform(-0.06, 0.06, n) * a, rng.uniform(-0.06, 0.06, n) * a
    # the power-distance weights move a junction by up to 0.08 a² / d from the midpoint
    lim = limit[k] - 0.08 * a * a / np.maximum(2 * limit[k], 0.5 * a)
    s = np.clip(lim / (np.hypot(dx, dy) + _GUARD * na), 0.25, 1.0)
    na, nb, dx, dy = na * s, nb * s, dx * s, dy * s
    nang, texture = rng.uniform(0, np.pi, n), rng.uniform(0.12, 0.25, n)
    tex = rng.uniform(0, _TEX_N * _TEX_PX, (n, 2))
    height, bright = rng.uniform(5.0, 7.0, n), rng.uniform(0.8, 1.2, n)
    weight = rng.uniform(-0.08, 0.08, n) * a * a
    gaps = rng.uniform(0.08, 0.5, n) if gap else np.zeros(n)
    n_gr, n_nl = rng.integers(2, 8, n), rng.integers(1, 3, n)
    owner = np.repeat(np.arange(n), n_gr)
    g_ang, g_rad = rng.uniform(0, 2 * np.pi, len(owner)), 0.4 * a * np.sqrt(rng.uniform(0.25, 0.8, len(owner)))
    gr = np.column_stack([x[owner] + g_rad * np.cos(g_ang), y[owner] + g_rad * np.sin(g_ang),
                          rng.uniform(0.25, 0.6, len(owner))])
    granules = np.split(gr, np.cumsum(n_gr)[:-1])
    nl_u, nl_v, nl_r = rng.uniform(-0.45, 0.45, (n, 2)), rng.uniform(-0.45, 0.45, (n, 2)), rng.uniform(0.5, 1.0, (n, 2))
    cells = []
    for q in range(n):
        nuc = Nucleus(dx=float(dx[q]), dy=float(dy[q]), a=float(na[q]), b=float(nb[q]), angle=float(nang[q]),
                      texture=float(texture[q]), tex_x=float(tex[q, 0]), tex_y=float(tex[q, 1]))
        cn, sn, m = np.cos(nang[q]), np.sin(nang[q]), n_nl[q]
        u, v = nl_u[q, :m] * na[q], nl_v[q, :m] * nb[q]
        nucleoli = np.column_stack([x[q] + dx[q] + u * cn - v * sn, y[q] + dy[q] + u * sn + v * cn,
                                    nl_r[q, :m] * min(1.0, nb[q] / 3.5)])
        cells.append(Cell(
            uid=_uid(tx, ty, int(k[q])), x=float(x[q]), y=float(y[q]), r=0.5 * a, aspect=1.0, angle=0.0,
            height=float(height[q]), nuclei=(nuc,), brightness=float(bright[q]), profile="flat",
            weight=float(weight[q]), scale=a, gap=float(gaps[q]), granules=granules[q], nucleoli=nucleoli))
    return cells


def _orientation(x: float, y: float) -> float:
    """A smooth orientation field: fibroblasts align with their neighbours."""
    return float(1.1 * np.sin(2 * np.pi * x / 370.0 + 0.7) * np.cos(2 * np.pi * y / 430.0 + 1.9)
                 + 0.8 * np.sin(2 * np.pi * (x + y) / 610.0 + 0.4))


def _fibro_cands(rng, tx, ty, density):
    n = rng.poisson(7.0 * density)
    x = (tx + rng.uniform(size=n)) * TILE_UM
    y = (ty + rng.uniform(size=n)) * TILE_UM
    ang = np.array([_orientation(a, b) for a, b in zip(x, y, strict=True)]) + rng.normal(0, 0.15, n)
    half = rng.uniform(30.0, 50.0, n)
    aspect = rng.uniform(0.12, 0.22, n)
    width = half * aspect
    cand = _Cand(x, y, width, 0.8 * half, ang, rng.uniform(size=n))
    return cand, {"half": half, "aspect": aspect}


def _fibro_build(rng, tx, ty, cand, params, keep, limit):
    cells = []
    for k in np.flatnonzero(keep):
        x, y, half, aspect, ang = cand.x[k], cand.y[k], params["half"][k], params["aspect"][k], cand.ang[k]
        b = min(float(rng.uniform(2.4, 3.2)), 0.7 * half * aspect)
        a = b * float(rng.uniform(2.5, 3.4))
        along = float(rng.uniform(-0.1, 0.1)) * half
        n = _interphase_nucleus(rng, a, b, along * np.cos(ang), along * np.sin(ang),
                                float(ang + rng.normal(0, 0.05)))
        cells.append(Cell(
            uid=_uid(tx, ty, k), x=float(x), y=float(y), r=float(half), aspect=float(aspect),
            angle=float(ang), taper=float(rng.uniform(2.0, 5.0)), bend=float(np.clip(rng.normal(0, 0.08), -0.2, 0.2)),
            height=float(rng.uniform(2.0, 3.5)),
            nuclei=(n,), harmonics=_harmonics(rng, 0.05), brightness=float(rng.uniform(0.6, 1.4)),
            granules=_granules(rng, x, y, 0.7 * half, aspect, ang, 6, 20),
            nucleoli=_nucleoli(rng, x, y, n, int(rng.integers(1, 3)))))
    return cells


def _cluster_cands(rng, tx, ty, density):
    n = rng.poisson(0.6 * density)
    x = (tx + rng.uniform(size=n)) * TILE_UM
    y = (ty + rng.uniform(size=n)) * TILE_UM
    R = 8.0 + 26.0 * rng.uniform(size=n) ** 2
    return _disc_cands(x, y, R + 5.0, rng), {"R": R}


def _cluster_build(rng, tx, ty, cand, params, keep, limit):
    cells: list[Cell] = []
    for k in np.flatnonzero(keep):
        R, a = params["R"][k], float(rng.uniform(10.0, 13.0))
        rot = float(rng.uniform(0, np.pi))
        m = int(np.ceil(R / a)) + 1
        j, i = np.mgrid[-m: m + 1, -m: m + 1]
        u = (i + 0.5 * (j % 2)) * a + rng.uniform(-0.15, 0.15, i.shape) * a
        v = j * a * 0.866 + rng.uniform(-0.15, 0.15, i.shape) * a
        px = u * np.cos(rot) - v * np.sin(rot)
        py = u * np.sin(rot) + v * np.cos(rot)
        th = np.arctan2(py, px)
        edge = R * (1 + 0.15 * np.cos(2 * th + rng.uniform(0, 6.3)) + 0.08 * np.cos(3 * th + rng.uniform(0, 6.3)))
        inside = (np.hypot(px, py) < edge).ravel()
        inside[np.argmin(np.hypot(px, py))] = True
        px, py = px.ravel()[inside] + cand.x[k], py.ravel()[inside] + cand.y[k]
        r = 0.62 * a * rng.uniform(0.9, 1.15, len(px))
        d = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
        np.fill_diagonal(d, np.inf)
        share = (d * r[:, None] / (r[:, None] + r[None, :])).min(axis=1)
        cells += spread_cells(rng, [_uid(tx, ty, 64 * k + q) for q in range(len(px))], px, py, r, share,
                              nuc_frac=(0.45, 0.6), off_frac=0.15, height=(4.0, 6.0), granules=(3, 10))
    return cells


_MITOTIC_STATES = ("interphase", "prophase", "metaphase", "anaphase", "telophase", "binucleated")
_MITOTIC_P = (0.35, 0.10, 0.15, 0.10, 0.10, 0.20)


def _mitotic_cands(rng, tx, ty, density):
    x, y = _slots(rng, tx, ty, 3, 3, 0.3)
    state = rng.choice(len(_MITOTIC_STATES), size=len(x), p=_MITOTIC_P)
    r = np.where(state == 0, rng.uniform(9.0, 15.0, len(x)), rng.uniform(8.5, 11.0, len(x)))
    r = np.where(state == 5, rng.uniform(13.0, 17.0, len(x)), r)
    r = np.where(state == 4, 2 * 7.5, r)  # a telophase pair: two daughters of ~7 µm
    on = rng.uniform(size=len(x)) < min(0.9 * density, 1.0)
    return _disc_cands(x[on], y[on], r[on], rng), {"state": state[on]}


def _mitotic_build(rng, tx, ty, cand, params, keep, limit):
    cells: list[Cell] = []
    for k in np.flatnonzero(keep):
        x, y, r, uid = float(cand.x[k]), float(cand.y[k]), float(cand.rad[k]), int(_uid(tx, ty, 2 * k))
        state = _MITOTIC_STATES[params["state"][k]]
        tex = dict(tex_x=float(rng.uniform(0, 100)), tex_y=float(rng.uniform(0, 100)))
        axis = float(rng.uniform(0, np.pi))
        ca, sa = np.cos(axis), np.sin(axis)
        rounded = dict(aspect=float(rng.uniform(0.9, 1.0)), harmonics=_harmonics(rng, 0.04),
                       brightness=float(rng.uniform(0.6, 1.4)))
        if state in ("interphase", "binucleated"):
            c = spread_cell(rng, uid, x, y, r, limit[k])
            if state == "binucleated":  # two nuclei side by side, one nucleolus each
                a = min(0.3 * r * c.aspect, float(rng.uniform(4.0, 5.5)))
                s = 1.05 * a + 0.4
                n1 = _interphase_nucleus(rng, a, a * 0.9, s * ca, s * sa, axis + np.pi / 2)
                n2 = _interphase_nucleus(rng, a, a * 0.9, -s * ca, -s * sa, axis + np.pi / 2)
                c = replace(c, nuclei=(n1, n2), nucleoli=np.concatenate(
                    [_nucleoli(rng, x, y, n1, 1), _nucleoli(rng, x, y, n2, 1)]))
            cells.append(c)
        elif state == "prophase":  # rounding up, chromatin condensing, nucleoli gone
            a = 0.5 * r
            n = _interphase_nucleus(rng, a, a * 0.92, 0.0, 0.0, axis, density=1.3, texture=0.55)
            cells.append(Cell(uid=uid, x=x, y=y, r=r, angle=axis, height=float(rng.uniform(6, 8)),
                              nuclei=(n,), granules=_granules(rng, x, y, r, 1.0, 0.0, 6, 16), **rounded))
        elif state in ("metaphase", "anaphase"):  # round, tall; chromosomes in plate(s)
            plate = dict(a=float(rng.uniform(4.0, 5.5)), b=float(rng.uniform(0.7, 1.0)),
                         angle=axis + np.pi / 2, density=2.5, texture=0.5)
            if state == "metaphase":
                nuclei = (Nucleus(dx=0.0, dy=0.0, **plate, **tex),)
                shape = dict(r=r)
            else:
                s = float(rng.uniform(1.5, 4.0))
                nuclei = (Nucleus(dx=s * ca, dy=s * sa, **plate, **tex),
                          Nucleus(dx=-s * ca, dy=-s * sa, **plate, **tex))
                shape = dict(r=r * 1.15)
                rounded["aspect"] = 0.8
            cells.append(Cell(uid=uid, x=x, y=y, angle=axis, height=float(rng.uniform(9, 12)),
                              nuclei=nuclei, granules=_granules(rng, x, y, 0.8 * r, 1.0, 0.0, 6, 16),
                              **shape, **rounded))
        else:  # telophase: two daughter cells pressed together, small dense nuclei
            rd = 0.5 * r
            for side in (1, -1):
                dxs, dys = side * 0.9 * rd * ca, side * 0.9 * rd * sa
                a = float(rng.uniform(2.5, 3.2))
                n = _interphase_nucleus(rng, a, a * 0.85, 0.3 * dxs / rd, 0.3 * dys / rd, axis + np.pi / 2,
                                        density=1.8, texture=0.4)
                cells.append(Cell(uid=uid + (side > 0), x=x + dxs, y=y + dys, r=rd, angle=axis,
                                  aspect=1.0, height=float(rng.uniform(6, 8)), nuclei=(n,),
                                  harmonics=_harmonics(rng, 0.03), brightness=rounded["brightness"],
                                  granules=_granules(rng, x + dxs, y + dys, 0.7 * rd, 1.0, 0.0, 3, 8)))
    return cells


def _flat_cell_cands(rng, tx, ty, density):
    x, y = _slots(rng, tx, ty, 2, 2, 0.3)
    on = rng.uniform(size=len(x)) < min(0.75 * density, 1.0)
    return _disc_cands(x[on], y[on], rng.uniform(22.0, 32.0, len(x))[on], rng), {}


def _flat_cell_build(rng, tx, ty, cand, params, keep, limit):
    """Large, thin, spread cells (U2OS-like) that carry the cytoskeleton of ``filaments``."""
    cells = []
    for k in np.flatnonzero(keep):
        x, y, r = cand.x[k], cand.y[k], cand.rad[k]
        aspect, angle = float(rng.uniform(0.55, 0.9)), float(rng.uniform(0, np.pi))
        a = float(rng.uniform(6.0, 8.0))
        n = _interphase_nucleus(rng, a, a * float(rng.uniform(0.7, 0.9)), 0.0, 0.0, angle)
        cells.append(Cell(uid=_uid(tx, ty, k), x=float(x), y=float(y), r=float(r), aspect=aspect,
                          angle=angle, height=float(rng.uniform(1.2, 2.2)), nuclei=(n,),
                          harmonics=_harmonics(rng, 0.15), brightness=float(rng.uniform(0.8, 1.2)),
                          granules=_granules(rng, x, y, 0.5 * r, aspect, angle, 4, 12),
                          nucleoli=_nucleoli(rng, x, y, n, int(rng.integers(1, 4)))))
    return cells


def _debris_cands(rng, tx, ty, density):
    n = rng.poisson(28.0 * density)
    x = (tx + rng.uniform(size=n)) * TILE_UM
    y = (ty + rng.uniform(size=n)) * TILE_UM
    apoptotic = rng.uniform(size=n) < 0.4
    r = np.where(apoptotic, rng.uniform(1.0, 3.0, n), 0.6 + 2.4 * rng.uniform(size=n) ** 2)
    return _disc_cands(x, y, 1.2 * r + 0.3, rng), {"apoptotic": apoptotic, "r": r}


def _debris_build(rng, tx, ty, cand, params, keep, limit):
    """Dead-cell fragments (refractile, slightly absorbing, faintly autofluorescent) and
    apoptotic bodies (round blebs holding 1-3 condensed DNA fragments)."""
    out = []
    for k in np.flatnonzero(keep):
        x, y, r = cand.x[k], cand.y[k], float(params["r"][k])
        angle = float(rng.uniform(0, np.pi))
        if params["apoptotic"][k]:
            m = int(rng.integers(1, 4))
            fr = 0.45 * r if m > 1 else 0.0
            a = min(0.3 * r, float(rng.uniform(0.35, 0.8)))
            phi = float(rng.uniform(0, 2 * np.pi))
            nuclei = tuple(
                _interphase_nucleus(rng, a, a * 0.9, fr * np.cos(phi + 2 * np.pi * q / m),
                                    fr * np.sin(phi + 2 * np.pi * q / m), angle, density=3.0, texture=0.1)
                for q in range(m))
            out.append(Cell(uid=_uid(tx, ty, k), x=float(x), y=float(y), r=r,
                            aspect=float(rng.uniform(0.85, 1.0)), angle=angle, height=1.5 * r, nuclei=nuclei,
                            harmonics=_harmonics(rng, 0.05), brightness=float(rng.uniform(0.8, 1.4))))
        else:
            aspect = float(rng.uniform(0.5, 1.0))
            out.append(Cell(uid=_uid(tx, ty, k), x=float(x), y=float(y), r=r, aspect=aspect, angle=angle,
                            height=3.0 * r * float(rng.uniform(0.8, 1.5)), nuclei=(),
                            harmonics=_harmonics(rng, 0.35), brightness=float(rng.uniform(0.05, 0.2)),
                            granules=_granules(rng, x, y, 0.6 * r, aspect, angle, 1, 4) * [1, 1, 0.7]))
    return out


_KINDS: dict[str, _KindSpec] = {
    k.name: k for k in (
        _KindSpec("cells", 1, _culture_cands, _culture_build, margin=40.0, exclusion=0.6),
        _KindSpec("sparse", 11, lambda rng, tx, ty, d: _culture_cands(rng, tx, ty, d, sparse=True),
                  _culture_build, margin=40.0, exclusion=0.6),
        _KindSpec("epithelium", 12, _sheet_cands, _sheet_build, margin=35.0, exclusion=0.0),
        _KindSpec("membranes", 13, lambda rng, tx, ty, d: _sheet_cands(rng, tx, ty, d, 5, 6),
                  lambda *a: _sheet_build(*a, gap=True), margin=35.0, exclusion=0.0, membrane="thin"),
        _KindSpec("fibroblasts", 14, _fibro_cands, _fibro_build, margin=75.0, exclusion=0.8),
        _KindSpec("clusters", 15, _cluster_cands, _cluster_build, margin=60.0, exclusion=1.0),
        _KindSpec("mitotic", 16, _mitotic_cands, _mitotic_build, margin=40.0, exclusion=0.6),
        _KindSpec("filaments", 17, _flat_cell_cands, _flat_cell_build, margin=50.0, exclusion=0.85,
                  membrane="none"),
        _KindSpec("debris", 18, _debris_cands, _debris_build, margin=45.0, exclusion=1.0),
    )
}
#: Kinds made of cells (drawn by :func:`render_cells`).
CELL_KINDS: tuple[str, ...] = tuple(_KINDS)


def membrane_style(kind: str) -> str:
    return _KINDS[kind].membrane
