"""A procedural specimen slide much larger than one field of view.

The slide is cut into square tiles; the objects whose centres fall in a tile
are drawn from a generator seeded by ``(seed, tile)``, so any region renders
the same way every time and from any stage path. A rendered region gives the
maps the optics need, sampled on an arbitrary pixel grid:

- ``opd``: optical path difference (µm) -> phase ``2π·opd/λ``,
- ``absorption``: amplitude attenuation ``a`` in ``t = exp(-a + iφ)``,
- ``labels``: fluorophore density per label (``nuclei``, ``membrane``).

Sample kinds: ``cells`` (cultured cells: irregular cytoplasm, nucleus with
nucleoli, scattering granules, membrane; four times denser in one colony at
:data:`COLONY_CENTER_UM`), ``beads`` (sparse 100 nm
fluorescent beads), ``phase-grating`` (a pure, weak sinusoidal phase object
along x), ``blank``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["LABELS", "SAMPLE_KINDS", "RegionMaps", "Slide"]

LABELS: tuple[str, ...] = ("nuclei", "membrane")
SAMPLE_KINDS: tuple[str, ...] = ("cells", "beads", "phase-grating", "blank")

_TILE_UM = 80.0
#: A dense colony (cell density ×4) around (x, y) with this radius, µm: the slide
#: region designed to contain the smart-acquisition target event.
COLONY_CENTER_UM = (40000.0, 0.0)
COLONY_RADIUS_UM = 400.0
#: Period of the ``phase-grating`` sample: half the coherent cut-off of a 10x/0.25
#: objective, inside the band where DPC with discrete LEDs transfers phase.
GRATING_PERIOD_UM = 5.0
GRATING_OPD_UM = 0.02
_DN_CYTO = 0.025  # refractive index excess of cytoplasm over medium
_DN_NUC = 0.012  # extra for the nucleus
_DN_NUCLEOLUS = 0.03
_DN_GRANULE = 0.12


@dataclass
class RegionMaps:
    """Sample maps for one rendered region (all arrays share one shape)."""

    opd: np.ndarray
    absorption: np.ndarray
    labels: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Cell:
    x: float
    y: float
    r: float  # mean radius, µm
    aspect: float
    angle: float
    harmonics: tuple[tuple[float, float], ...]  # (amplitude, phase) for k=2..
    height: float  # µm
    nuc_dx: float
    nuc_dy: float
    nuc_r: float
    nucleoli: tuple[tuple[float, float, float], ...]  # (dx, dy, r) relative to nucleus
    granules: tuple[tuple[float, float, float], ...]  # (x, y, r) absolute
    brightness: float


class Slide:
    """A seeded, procedurally generated specimen."""

    def __init__(self, kind: str = "cells", seed: int = 0, density: float = 1.0) -> None:
        if kind not in SAMPLE_KINDS:
            raise ValueError(
                f"unknown sample kind {kind!r}; valid kinds: {', '.join(SAMPLE_KINDS)}"
            )
        self.kind = kind
        self.seed = int(seed)
        self.density = float(density)

    # ------------------------------------------------------------------ objects
    def _tile_cells(self, tx: int, ty: int) -> tuple[_Cell, ...]:
        cx, cy = (tx + 0.5) * _TILE_UM, (ty + 0.5) * _TILE_UM
        in_colony = np.hypot(cx - COLONY_CENTER_UM[0], cy - COLONY_CENTER_UM[1]) < COLONY_RADIUS_UM
        return _tile_cells(self.seed, tx, ty, self.density * (4.0 if in_colony else 1.0))

    def _tile_beads(self, tx: int, ty: int) -> np.ndarray:
        rng = np.random.default_rng(_seed_key(self.seed, tx, ty, 7))
        n = rng.poisson(12 * self.density)
        xy = rng.uniform(0, _TILE_UM, size=(n, 2)) + (tx * _TILE_UM, ty * _TILE_UM)
        return xy

    # ------------------------------------------------------------------ render
    def render(
        self, x0_um: float, y0_um: float, pixel_um: float, shape: tuple[int, int],
        labels: tuple[str, ...] = LABELS,
    ) -> RegionMaps:
        """Render the region whose top-left pixel centre is at ``(x0, y0)``.

        Slide y grows downwards with image rows (stage coordinates, µm).
        """
        ny, nx = shape
        opd = np.zeros(shape, np.float32)
        absorption = np.zeros(shape, np.float32)
        lab = {name: np.zeros(shape, np.float32) for name in labels}
        xs = x0_um + pixel_um * np.arange(nx, dtype=np.float64)
        ys = y0_um + pixel_um * np.arange(ny, dtype=np.float64)
        if self.kind == "phase-grating":
            opd += (GRATING_OPD_UM * np.sin(2 * np.pi * xs / GRATING_PERIOD_UM)).astype(np.float32)[None, :]
        elif self.kind == "beads":
            self._render_beads(xs, ys, pixel_um, opd, lab)
        elif self.kind == "cells":
            for cell in self._cells_near(xs, ys):
                _render_cell(cell, xs, ys, opd, absorption, lab)
        return RegionMaps(opd=opd, absorption=absorption, labels=lab)

    def _tiles(self, xs: np.ndarray, ys: np.ndarray, margin: float):
        tx0, tx1 = int(np.floor((xs[0] - margin) / _TILE_UM)), int(np.floor((xs[-1] + margin) / _TILE_UM))
        ty0, ty1 = int(np.floor((ys[0] - margin) / _TILE_UM)), int(np.floor((ys[-1] + margin) / _TILE_UM))
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                yield tx, ty

    def _cells_near(self, xs: np.ndarray, ys: np.ndarray):
        for tx, ty in self._tiles(xs, ys, margin=40.0):
            yield from self._tile_cells(tx, ty)

    def _render_beads(self, xs, ys, pixel_um, opd, lab) -> None:
        for tx, ty in self._tiles(xs, ys, margin=2.0):
            for bx, by in self._tile_beads(tx, ty):
                ix, iy = (bx - xs[0]) / pixel_um, (by - ys[0]) / pixel_um
                if not (-1 <= ix < len(xs) and -1 <= iy < len(ys)):
                    continue
                # a sub-resolution point: deposit into the 4 nearest pixels
                jx, jy = int(np.floor(ix)), int(np.floor(iy))
                fx, fy = ix - jx, iy - jy
                for dy, wy in ((0, 1 - fy), (1, fy)):
                    for dx, wx in ((0, 1 - fx), (1, fx)):
                        if 0 <= jy + dy < len(ys) and 0 <= jx + dx < len(xs):
                            for m in lab.values():
                                m[jy + dy, jx + dx] += 1000.0 * wy * wx
                            opd[jy + dy, jx + dx] += 0.01 * wy * wx

    def emitters(
        self, x0_um: float, y0_um: float, pixel_um: float, shape: tuple[int, int],
        label: str, per_um2: float = 2.0,
    ) -> np.ndarray:
        """Single-molecule positions ``(N, 2)`` (x, y µm) labelling ``label`` in a region.

        Emitters are drawn from the label's density map with a generator seeded by
        the region, so the same field always holds the same molecules.
        """
        maps = self.render(x0_um, y0_um, pixel_um, shape, labels=(label,))
        density = maps.labels[label]
        total = float(density.sum())
        if total <= 0:
            return np.zeros((0, 2))
        rng = np.random.default_rng(
            _seed_key(self.seed, round(x0_um * 10), round(y0_um * 10), LABELS.index(label))
        )
        area = shape[0] * shape[1] * pixel_um**2
        mean = per_um2 * area * float((density > 0.05 * density.max()).mean())
        n = rng.poisson(max(mean, 1.0))
        flat = rng.choice(density.size, size=n, p=(density / total).ravel())
        iy, ix = np.divmod(flat, shape[1])
        jitter = rng.uniform(-0.5, 0.5, size=(n, 2))
        return np.stack(
            [x0_um + (ix + jitter[:, 0]) * pixel_um, y0_um + (iy + jitter[:, 1]) * pixel_um],
            axis=1,
        )


def _seed_key(*parts: int) -> tuple[int, ...]:
    """Non-negative seed entropy from signed integers (tile indices can be < 0)."""
    return tuple(int(p) + (1 << 40) for p in parts)


@lru_cache(maxsize=4096)
def _tile_cells(seed: int, tx: int, ty: int, density: float) -> tuple[_Cell, ...]:
    rng = np.random.default_rng(_seed_key(seed, tx, ty, 1))
    n = rng.poisson(9 * density)
    cells = []
    for _ in range(n):
        x = (tx + rng.uniform()) * _TILE_UM
        y = (ty + rng.uniform()) * _TILE_UM
        r = rng.uniform(9.0, 16.0)
        nuc_r = r * rng.uniform(0.35, 0.5)
        off = (r - nuc_r) * 0.4
        nuc_dx, nuc_dy = rng.uniform(-off, off, size=2)
        nucleoli = tuple(
            (float(a), float(b), float(c))
            for a, b, c in zip(
                rng.uniform(-0.5, 0.5, 3) * nuc_r, rng.uniform(-0.5, 0.5, 3) * nuc_r,
                rng.uniform(0.6, 1.2, 3), strict=True,
            )
        )[: rng.integers(1, 4)]
        ng = rng.integers(8, 30)
        ang = rng.uniform(0, 2 * np.pi, ng)
        rad = r * np.sqrt(rng.uniform(0.25, 0.8, ng))
        granules = tuple(
            (float(x + rr * np.cos(a)), float(y + rr * np.sin(a)), float(s))
            for a, rr, s in zip(ang, rad, rng.uniform(0.25, 0.6, ng), strict=True)
        )
        cells.append(
            _Cell(
                x=float(x), y=float(y), r=float(r), aspect=float(rng.uniform(0.7, 1.0)),
                angle=float(rng.uniform(0, np.pi)),
                harmonics=tuple(
                    (float(rng.uniform(0, 0.12 / k)), float(rng.uniform(0, 2 * np.pi)))
                    for k in range(2, 6)
                ),
                height=float(rng.uniform(2.5, 4.5)),
                nuc_dx=float(nuc_dx), nuc_dy=float(nuc_dy), nuc_r=float(nuc_r),
                nucleoli=nucleoli, granules=granules,
                brightness=float(rng.uniform(0.6, 1.4)),
            )
        )
    return tuple(cells)


def _window(c: float, extent: float, axis: np.ndarray) -> slice:
    step = axis[1] - axis[0] if len(axis) > 1 else 1.0
    i0 = int(np.floor((c - extent - axis[0]) / step))
    i1 = int(np.ceil((c + extent - axis[0]) / step)) + 1
    return slice(max(i0, 0), min(i1, len(axis)))


def _render_cell(cell: _Cell, xs, ys, opd, absorption, lab) -> None:
    ext = cell.r * 1.35
    sx, sy = _window(cell.x, ext, xs), _window(cell.y, ext, ys)
    if sx.start >= sx.stop or sy.start >= sy.stop:
        return
    X = xs[sx][None, :] - cell.x
    Y = ys[sy][:, None] - cell.y
    ca, sa = np.cos(cell.angle), np.sin(cell.angle)
    u = X * ca + Y * sa
    v = (-X * sa + Y * ca) / cell.aspect
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    edge = np.ones_like(rho)
    for k, (amp, ph) in enumerate(cell.harmonics, start=2):
        edge += amp * np.cos(k * theta + ph)
    rn = rho / (cell.r * edge)  # 1 at the membrane
    inside = rn < 1
    # smooth dome-shaped cytoplasm, soft edge of ~0.5 µm
    soft = np.clip((1 - rn) * cell.r / 0.5, 0, 1)
    height = cell.height * np.sqrt(np.clip(1 - rn**2, 0, 1)) * soft
    o = _DN_CYTO * height
    # nucleus
    nx_, ny_ = X - cell.nuc_dx, Y - cell.nuc_dy
    rnuc = np.hypot(nx_, ny_ / 0.9) / cell.nuc_r
    nuc = np.clip((1 - rnuc) * cell.nuc_r / 0.4, 0, 1)
    o += _DN_NUC * cell.height * nuc * np.sqrt(np.clip(1 - rnuc**2, 0, 1))
    chromatin = 1.0 + 0.25 * np.cos(1.7 * nx_) * np.cos(1.3 * ny_)
    for dx, dy, r in cell.nucleoli:
        d = np.hypot(nx_ - dx, ny_ - dy) / r
        o += _DN_NUCLEOLUS * 1.2 * np.exp(-(d**2) * 2)
    opd[sy, sx] += o.astype(np.float32)
    # scattering granules (lipid droplets, vesicles): strong, small, slightly absorbing
    for gx, gy, r in cell.granules:
        gsx, gsy = _window(gx, 2.5 * r, xs), _window(gy, 2.5 * r, ys)
        if gsx.start >= gsx.stop or gsy.start >= gsy.stop:
            continue
        d2 = ((xs[gsx][None, :] - gx) ** 2 + (ys[gsy][:, None] - gy) ** 2) / (r * r)
        g = np.exp(-d2 * 2).astype(np.float32)
        opd[gsy, gsx] += np.float32(_DN_GRANULE * 2 * r) * g
        absorption[gsy, gsx] += np.float32(0.04) * g
    if "nuclei" in lab:
        lab["nuclei"][sy, sx] += (cell.brightness * 100.0 * nuc * chromatin).astype(np.float32)
    if "membrane" in lab:
        ring = np.exp(-(((rn - 1) * cell.r / 0.35) ** 2)) * inside.clip(0.3, 1)
        lab["membrane"][sy, sx] += (cell.brightness * 80.0 * ring).astype(np.float32)
