"""Cells of the simulated slide: what a cell is, and how cells are drawn without overlapping.

The kinds themselves (where cells go, what each looks like) live in
:mod:`.specimens_kinds`; thin structures in :mod:`.specimens_structures`.

Physical rules every cell-based kind follows:

- **No overlapping cell bodies.** Cells that touch share the contact zone:
  every pixel belongs to the one cell with the smallest normalised distance (a
  multiplicatively weighted Voronoi partition; a power / Laguerre tessellation
  for confluent sheets). Two cells in contact therefore meet at one junction,
  with one membrane line, like real cells pressing on each other
  (:func:`render_cells`).
- **Nuclei are never cut.** A nucleus belongs to its cell whatever the
  partition says, and placement shrinks nuclei until they fit their cell's
  share of space.
- **Smooth textures.** Chromatin is a band-limited (0.3-1.5 cycles/µm) random
  field; nucleoli exclude DNA; granules are small Gaussians.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

__all__ = [
    "TILE_UM",
    "Cell",
    "CellRender",
    "Nucleus",
    "line_profile",
    "nominal_metrics",
    "owned_by",
    "render_cells",
    "stamp_gaussians",
]

TILE_UM = 80.0

_DN_CYTO = 0.025  # refractive index excess of cytoplasm over medium
_DN_NUC = 0.012  # extra for the nucleus
_DN_NUCLEOLUS = 0.03
_DN_GRANULE = 0.12
_GUARD = 1.05  # a nucleus keeps the pixels of its cell up to this normalised radius
_NUC_EDGE_UM = 0.4
_SHEET_REACH = 1.25  # a cell of a sheet owns no pixel beyond this many lattice spacings
_CUT = 1.12  # a spread cell owns no pixel beyond this normalised radius (its membrane is gone by then)
_THICK_MEMBRANE_UM = 0.35  # 1/e half-width of the membrane stain of cultured cells
_F32 = np.float32


# ------------------------------------------------------------------ objects
@dataclass(frozen=True)
class Nucleus:
    """A nucleus (or a chromosome plate during mitosis), relative to its cell."""

    dx: float  # centre offset from the cell centre (slide axes, µm)
    dy: float
    a: float  # semi-axes, µm
    b: float
    angle: float
    density: float = 1.0  # DNA stain relative to an interphase nucleus
    texture: float = 0.2  # chromatin contrast (std of the smooth texture)
    tex_x: float = 0.0  # where in the shared texture this nucleus samples
    tex_y: float = 0.0


@dataclass(frozen=True)
class Cell:
    """One cell. ``r`` is the semi-axis along ``angle``; ``r * aspect`` the other.

    ``taper`` > 0 makes a spindle (width ∝ sqrt((1 - t²)/(1 + taper t²))); ``bend``
    curves it.
    ``weight``/``scale`` define the power distance of confluent sheets.
    """

    uid: int
    x: float
    y: float
    r: float
    aspect: float
    angle: float
    height: float
    nuclei: tuple[Nucleus, ...]
    taper: float = 0.0
    bend: float = 0.0  # curvature of the long axis: the axis is offset by bend * r * t² across
    harmonics: tuple[tuple[float, float], ...] = ()
    brightness: float = 1.0
    profile: str = "dome"  # "dome" (spread cell) or "flat" (cells of a sheet)
    weight: float = 0.0
    scale: float = 1.0
    gap: float = 0.0  # distance between this cell's membrane and the junction x2 (µm)
    granules: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # x, y, r
    nucleoli: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # x, y, r

    @cached_property
    def reach(self) -> float:
        """Largest distance from the centre at which the cell can own pixels, µm."""
        if self.profile == "flat":
            return _SHEET_REACH * self.scale
        return _CUT * self.r * (1 + abs(self.bend) + sum(abs(h[0]) for h in self.harmonics)) + 0.5

    @cached_property
    def inner(self) -> float:
        """A radius within which every point is inside the body (rn < 1), µm."""
        if self.profile == "flat":
            return 0.0
        emin = 1 - sum(abs(h[0]) for h in self.harmonics)
        return max(self.r * min(self.aspect, 1.0) * emin / np.sqrt(1 + self.taper) - abs(self.bend) * self.r, 0.0)

    @cached_property
    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        return _tables(self)

    @cached_property
    def box(self) -> tuple[float, float]:
        return self.extent()

    def extent(self) -> tuple[float, float]:
        """Half-size (x, y) of a box holding the cell body and its membrane."""
        if self.profile == "flat":
            return self.scale * _SHEET_REACH, self.scale * _SHEET_REACH
        ca, sa = abs(np.cos(self.angle)), abs(np.sin(self.angle))
        w = self.r * (self.aspect + abs(self.bend))
        f = _CUT * (1 + sum(abs(h[0]) for h in self.harmonics))
        return (f * float(np.hypot(self.r * ca, w * sa)) + 0.5, f * float(np.hypot(self.r * sa, w * ca)) + 0.5)


# ----------------------------------------------------------------- geometry
_ANGLES = 256  # outline tables: the edge radius and gradient per direction (harmonics <= 5)
_THETA = np.arange(_ANGLES) * (2 * np.pi / _ANGLES)
_COS, _SIN = np.cos(_THETA), np.sin(_THETA)


def _tables(c: Cell) -> tuple[np.ndarray, np.ndarray]:
    """1/edge and |∇rn| (for cells without taper or bend) at ``_ANGLES`` directions."""
    if c.harmonics:
        amp, ph = np.array(c.harmonics).T
        k = np.arange(2, 2 + len(amp))[:, None]
        edge = 1 + amp @ np.cos(k * _THETA + ph[:, None])
    else:
        edge = np.ones(_ANGLES)
    grad = np.hypot(_COS / c.r, _SIN / (c.r * c.aspect)) / edge
    return (1 / edge).astype(_F32), grad.astype(_F32)


def _shape(c: Cell, X, Y, need_grad: bool = True):
    """Normalised radius ``rn`` (1 at the membrane) and its gradient magnitude (1/µm).

    The irregular outline is tabulated per direction (``_ANGLES`` steps, smooth
    at that sampling), so points and rendered grids agree exactly.
    """
    ca, sa = float(np.cos(c.angle)), float(np.sin(c.angle))  # Python floats keep float32 grids float32
    t = (X * ca + Y * sa) * (1 / c.r)
    w = (Y * ca - X * sa - c.bend * c.r * t * t) * (1 / (c.r * c.aspect)) if c.bend else \
        (Y * ca - X * sa) * (1 / (c.r * c.aspect))
    if c.taper:
        w = w * np.sqrt(1 + c.taper * t * t)
    rho = np.hypot(t, w)
    inv_edge, grad_tab = c.tables
    idx = np.rint(np.arctan2(w, t) * (_ANGLES / (2 * np.pi))).astype(np.int32) & (_ANGLES - 1)
    rn = rho * inv_edge[idx]
    if not need_grad:
        return rn, None
    if c.taper or c.bend:
        inv = 1.0 / (rho + 1e-6)
        return rn, np.hypot(t * inv / c.r, w * inv / (c.r * c.aspect)) * inv_edge[idx]
    return rn, grad_tab[idx]


def _nucleus_r(c: Cell, n: Nucleus, X, Y):
    cn, sn = float(np.cos(n.angle)), float(np.sin(n.angle))
    NX, NY = X - n.dx, Y - n.dy
    return np.hypot((NX * cn + NY * sn) / n.a, (NY * cn - NX * sn) / n.b)


def _metric_points(c: Cell, px: np.ndarray, py: np.ndarray, nuclei: bool = True) -> np.ndarray:
    """Partition metric of ``c`` at slide points (same rule as :func:`render_cells`).

    ``nuclei=False`` leaves out the nucleus guard (the cell's nominal shape only).
    """
    X, Y = px - c.x, py - c.y
    if c.profile == "flat":
        m = (X * X + Y * Y - c.weight) / c.scale**2
        guard = 10.0
        m = np.where(np.hypot(X, Y) < _SHEET_REACH * c.scale, m, np.inf)
    else:
        m, _ = _shape(c, X, Y, need_grad=False)
        m = np.where(m < _CUT, m, np.inf)
        guard = 2.0
    for n in c.nuclei if nuclei else ():
        m = m - guard * (_nucleus_r(c, n, X, Y) < _GUARD)
    return m


def nominal_metrics(cells: Sequence[Cell], px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """``(len(cells), len(px))`` partition metrics of the cells' nominal shapes (no nucleus guard).

    Cells that cannot reach the points get ``inf`` without being evaluated.
    """
    out = np.full((len(cells), len(px)), np.inf)
    if not len(px):
        return out
    x0, x1, y0, y1 = px.min(), px.max(), py.min(), py.max()
    flat = []
    for k, o in enumerate(cells):
        if o.x + o.reach < x0 or o.x - o.reach > x1 or o.y + o.reach < y0 or o.y - o.reach > y1:
            continue
        if o.profile == "flat":
            flat.append(k)
        else:
            out[k] = _metric_points(o, px, py, nuclei=False)
    if flat:  # power distances of a sheet: all at once
        sheet = [cells[k] for k in flat]
        cx, cy = np.array([o.x for o in sheet])[:, None], np.array([o.y for o in sheet])[:, None]
        w, sc = np.array([o.weight for o in sheet])[:, None], np.array([o.scale for o in sheet])[:, None]
        d2 = (px[None, :] - cx) ** 2 + (py[None, :] - cy) ** 2
        out[flat] = np.where(d2 < (_SHEET_REACH * sc) ** 2, (d2 - w) / sc**2, np.inf)
    return out


def owned_by(cell: Cell, neighbours: Sequence[Cell], px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """True where the points fall in ``cell``'s nominal share of the partition.

    Nuclei are fitted inside the nominal shares, so the nucleus guard changes nothing here.
    """
    m = _metric_points(cell, px, py, nuclei=False)
    others = [o for o in neighbours if o.uid != cell.uid]
    return np.isfinite(m) & np.all(nominal_metrics(others, px, py) > m[None, :], axis=0)


# ----------------------------------------------------------------- textures
_TEX_PX = 0.2
_TEX_N = 512


@lru_cache(maxsize=1)
def _texture() -> np.ndarray:
    """A periodic, band-limited (0.3-1.5 cycles/µm) Gaussian random field, unit std."""
    rng = np.random.default_rng(20240611)
    white = rng.standard_normal((_TEX_N, _TEX_N))
    f = np.fft.fftfreq(_TEX_N, _TEX_PX)
    fr = np.hypot(f[None, :], f[:, None])
    band = np.exp(-((fr / 1.0) ** 2)) - np.exp(-((fr / 0.3) ** 2))
    tex = np.fft.ifft2(np.fft.fft2(white) * band).real
    tex = (tex - tex.mean()) / tex.std()
    return tex.astype(_F32)


def _sample_texture(xw: np.ndarray, yw: np.ndarray) -> np.ndarray:
    """Bilinear samples of the texture on the grid ``yw x xw`` (µm, 1-D axes)."""
    tex = _texture()
    fx, fy = xw / _TEX_PX, yw / _TEX_PX
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    wx, wy = (fx - ix).astype(_F32)[None, :], (fy - iy).astype(_F32)[:, None]
    x0, x1 = ix % _TEX_N, (ix + 1) % _TEX_N
    y0, y1 = iy % _TEX_N, (iy + 1) % _TEX_N
    top = tex[np.ix_(y0, x0)] * (1 - wx) + tex[np.ix_(y0, x1)] * wx
    bot = tex[np.ix_(y1, x0)] * (1 - wx) + tex[np.ix_(y1, x1)] * wx
    return top * (1 - wy) + bot * wy


def line_profile(d, pixel_um: float, sigma_um: float = 0.004):
    """Cross-section (1/µm, unit integral) of a thin line sampled at pixel centres.

    The true width ``sigma_um`` is widened by the pixel footprint so that a line
    thinner than a pixel keeps its integrated density at any sampling.
    """
    s = float(np.hypot(sigma_um, 0.6 * pixel_um))
    return np.exp(-0.5 * (d / s) ** 2) * _F32(1.0 / (np.sqrt(2 * np.pi) * s))


def stamp_gaussians(
    targets: Sequence[tuple[np.ndarray, np.ndarray]], x0: float, y0: float, pixel_um: float,
    cx: np.ndarray, cy: np.ndarray, r: np.ndarray, extent: float = 2.5,
) -> None:
    """Add ``amp * exp(-2 d²/r²)`` blobs (sampled at pixel centres) to each target map.

    ``targets`` is a list of ``(map, amplitudes)``; all blobs are drawn at once.
    """
    if len(cx) == 0:
        return
    ny, nx = targets[0][0].shape
    half = int(np.ceil(extent * float(r.max()) / pixel_um))
    ci = np.rint((cx - x0) / pixel_um).astype(np.int64)
    cj = np.rint((cy - y0) / pixel_um).astype(np.int64)
    keep = (ci + half >= 0) & (ci - half < nx) & (cj + half >= 0) & (cj - half < ny)
    if not keep.any():
        return
    ci, cj, cx, cy, r = ci[keep], cj[keep], cx[keep], cy[keep], r[keep]
    offs = np.arange(-half, half + 1)
    ix, iy = ci[:, None] + offs, cj[:, None] + offs
    dx = (x0 + ix * pixel_um - cx[:, None]) / r[:, None]
    dy = (y0 + iy * pixel_um - cy[:, None]) / r[:, None]
    g = np.exp(-2 * (dx[:, None, :] ** 2 + dy[:, :, None] ** 2))
    valid = ((ix >= 0) & (ix < nx) & (np.abs(dx) <= extent))[:, None, :] & \
        ((iy >= 0) & (iy < ny) & (np.abs(dy) <= extent))[:, :, None]
    flat = (iy[:, :, None] * nx + ix[:, None, :])[valid]
    for target, amp in targets:
        w = (g * np.asarray(amp)[keep][:, None, None])[valid]
        target += np.bincount(flat, weights=w, minlength=nx * ny).reshape(ny, nx).astype(_F32)


# ---------------------------------------------------------------- rendering
def _window(c: float, extent: float, axis: np.ndarray) -> slice:
    step = axis[1] - axis[0] if len(axis) > 1 else 1.0
    i0 = int(np.floor((c - extent - axis[0]) / step))
    i1 = int(np.ceil((c + extent - axis[0]) / step)) + 1
    return slice(max(i0, 0), min(i1, len(axis)))


@dataclass
class CellRender:
    """Ownership diagnostics of one :func:`render_cells` call."""

    cell_ids: np.ndarray | None = None
    nucleus_ids: np.ndarray | None = None
    overlap_px: int = 0  # pixels claimed by two cell bodies (0 by construction)


def render_cells(
    cells: Sequence[Cell], xs: np.ndarray, ys: np.ndarray, opd: np.ndarray,
    absorption: np.ndarray, lab: dict[str, np.ndarray], *, pixel_um: float, membrane: str = "thick",
    ids: bool = False,
) -> CellRender:
    """Draw ``cells`` on the grid ``ys x xs`` (µm) into the maps, in place.

    Pass 1 computes every cell's partition metric and keeps, per pixel, the best
    and second-best cell; pass 2 draws each cell only on the pixels it owns,
    with junction distances from the metric difference to the runner-up.
    """
    shape = opd.shape
    out = CellRender()
    if ids:
        out.cell_ids = np.zeros(shape, np.int64)
        out.nucleus_ids = np.zeros(shape, np.int64)
    if not cells:
        return out
    pixel = float(pixel_um)
    b1 = np.full(shape, np.inf, _F32)
    b2 = np.full(shape, np.inf, _F32)
    o1 = np.full(shape, -1, np.int32)
    o2 = np.full(shape, -1, np.int32)
    geo: list = []
    for i, c in enumerate(cells):
        ex, ey = c.box
        sx, sy = _window(c.x, ex, xs), _window(c.y, ey, ys)
        if sx.start >= sx.stop or sy.start >= sy.stop:
            geo.append(None)
            continue
        xw, yw = (xs[sx] - c.x).astype(_F32), (ys[sy] - c.y).astype(_F32)
        X, Y = xw[None, :], yw[:, None]
        if c.profile == "flat":
            r2 = X * X + Y * Y
            rn = np.sqrt(r2) / _F32(_SHEET_REACH * c.scale)
            m = (r2 - _F32(c.weight)) / _F32(c.scale**2)
            m[rn >= 1] = np.inf
            grad, guard = None, 10.0
        else:
            rn, grad = _shape(c, X, Y)
            m = np.where(rn < _CUT, rn, _F32(np.inf))
            guard = 2.0
        nucs = []
        for n in c.nuclei:
            ext = max(n.a, n.b) * _GUARD + pixel
            nsx, nsy = _window(n.dx, ext, xw), _window(n.dy, ext, yw)
            if nsx.start >= nsx.stop or nsy.start >= nsy.stop:
                continue
            rnuc = _nucleus_r(c, n, xw[nsx][None, :], yw[nsy][:, None])
            m[nsy, nsx] -= _F32(guard) * (rnuc < _GUARD)
            nucs.append((n, nsy, nsx, rnuc))
        B1, B2, O1, O2 = b1[sy, sx], b2[sy, sx], o1[sy, sx], o2[sy, sx]
        better = m < B1
        O2[...] = np.where(better, O1, np.where(m < B2, i, O2))
        B2[...] = np.where(better, B1, np.minimum(B2, m))
        np.copyto(B1, m, where=better)
        O1[better] = i
        geo.append((sy, sx, rn, grad, nucs))

    # per-cell arrays for the runner-up lookups (index -1 = none)
    bright = np.array([c.brightness for c in cells] + [0.0], _F32)
    gaps = np.array([c.gap for c in cells] + [0.0], _F32)
    cxs = np.array([c.x for c in cells] + [1e9])
    cys = np.array([c.y for c in cells] + [1e9])
    nuc_lab = lab.get("nuclei")
    mem_lab = lab.get("membrane")
    for i, g in enumerate(geo):
        if g is None:
            continue
        c = cells[i]
        sy, sx, rn, grad, nucs = g
        mask = o1[sy, sx] == i
        if not mask.any():
            continue
        O2 = np.where(mask, o2[sy, sx], -1)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            diff = np.where(mask, b2[sy, sx] - b1[sy, sx], _F32(np.inf))  # metric gap to the runner-up
            if c.profile == "flat":
                dij = np.hypot(cxs[O2] - c.x, cys[O2] - c.y).astype(_F32)
                dj = diff * _F32(c.scale**2) / (2 * dij)
                de = np.full_like(rn, 1e3)
                body = mask
                h = c.height * (0.85 + 0.15 * (1 - rn * rn)) * (1 - 0.45 * np.exp(-dj * dj))
            else:
                de = (1 - rn) / grad
                body = mask & (rn < 1)
                h = c.height * np.sqrt(np.clip(1 - rn * rn, 0, 1)) * np.clip(de / 0.5, 0, 1)
                if (O2 >= 0).any():  # touches another cell
                    dj = diff / (2 * grad)
                    h *= 1 - 0.6 * np.exp(-((dj / 0.8) ** 2))
                    # a junction exists only where both bodies would be: none past either free edge
                    both = np.minimum(de, (1 - (b1[sy, sx] + diff)) / grad)
                    dj = np.where(both > -0.2, dj, np.inf)
                else:
                    dj = _F32(np.inf)
        o = (_DN_CYTO * h * mask).astype(_F32)
        dna = np.zeros_like(o) if nuc_lab is not None else None
        for n, nsy, nsx, rnuc in nucs:
            nuc = np.clip((1 - rnuc) * (n.b / _NUC_EDGE_UM), 0, 1) * mask[nsy, nsx]
            o[nsy, nsx] += _DN_NUC * c.height * nuc * np.sqrt(np.clip(1 - rnuc * rnuc, 0, 1))
            if dna is not None:
                tx = (xs[sx][nsx] - c.x - n.dx) + n.tex_x
                ty = (ys[sy][nsy] - c.y - n.dy) + n.tex_y
                chrom = np.clip(1 + n.texture * _sample_texture(tx, ty), 0.1, None)
                dna[nsy, nsx] += (100.0 * c.brightness * n.density) * nuc * chrom
            if ids:
                win = out.nucleus_ids[sy, sx][nsy, nsx]
                hit = nuc > 0.5
                out.overlap_px += int(np.count_nonzero(win[hit]))
                win[hit] = c.uid
        opd[sy, sx] += o
        if dna is not None:
            nuc_lab[sy, sx] += dna
        if mem_lab is not None and membrane != "none":
            mem_lab[sy, sx] += _membrane(c, membrane, pixel, rn, de, dj, O2, bright, gaps) * mask
        if ids:
            win = out.cell_ids[sy, sx]
            out.overlap_px += int(np.count_nonzero(win[body]))
            win[body] = c.uid

    # granules (scattering, slightly absorbing) and nucleoli (dense, exclude DNA)
    x0, y0 = float(xs[0]), float(ys[0])
    gr = np.concatenate([c.granules for c in cells]) if cells else np.zeros((0, 3))
    if len(gr):
        stamp_gaussians([(opd, _DN_GRANULE * 2 * gr[:, 2]), (absorption, np.full(len(gr), 0.04))],
                        x0, y0, pixel, gr[:, 0], gr[:, 1], gr[:, 2])
    nl = np.concatenate([c.nucleoli for c in cells])
    if len(nl):
        excl = np.zeros(shape, _F32)
        stamp_gaussians([(opd, np.full(len(nl), _DN_NUCLEOLUS * 1.2)), (excl, np.ones(len(nl)))],
                        x0, y0, pixel, nl[:, 0], nl[:, 1], nl[:, 2])
        if nuc_lab is not None:
            nuc_lab *= 1 - 0.7 * np.minimum(excl, 1)
    return out


def _membrane(c: Cell, style: str, pixel: float, rn, de, dj, O2, bright, gaps) -> np.ndarray:
    """Membrane stain of cell ``c`` on its window: free edges and junctions.

    At a junction each side draws both cells' membranes (its own at +gap/2, the
    neighbour's at -gap/2), so the line(s) come out whole and continuous.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        if style == "thick":
            s = _THICK_MEMBRANE_UM
            junction = np.exp(-((dj / s) ** 2)) * (0.5 * (c.brightness + bright[O2]))
            mem = junction
            if c.profile != "flat":
                ring = np.exp(-((de / s) ** 2)) * np.where(rn < 1, 1.0, 0.3) * c.brightness
                mem = np.maximum(mem, ring)
            return (80.0 * mem).astype(_F32)
        lam = 40.0  # stain per µm of membrane
        half = 0.25 * (c.gap + gaps[O2])  # each membrane sits half the pair's mean gap from the junction
        own = line_profile(dj - half, pixel) * c.brightness
        other = line_profile(dj + half, pixel) * bright[O2]
        mem = np.nan_to_num(own + other, nan=0.0)
        if c.profile != "flat":
            mem = np.maximum(mem, line_profile(de, pixel) * c.brightness)
        return (lam * mem).astype(_F32)
