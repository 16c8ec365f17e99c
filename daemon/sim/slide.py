"""A procedural specimen slide much larger than one field of view.

The slide is cut into square tiles; the objects whose centres fall in a tile
are drawn from a generator seeded by ``(seed, tile, kind)``, so any region
renders the same way every time and from any stage path. A rendered region
gives the maps the optics need, sampled on an arbitrary pixel grid:

- ``opd``: optical path difference (µm) -> phase ``2π·opd/λ``,
- ``absorption``: amplitude attenuation ``a`` in ``t = exp(-a + iφ)``,
- ``labels``: fluorophore density per label (``nuclei``, ``membrane``): fluorophore per area of one
  :data:`REFERENCE_PIXEL_UM` pixel, so a map sampled twice as finely holds the same values and a
  sub-resolution point (a bead) deposits its fixed amount divided by the pixel's area,
- on request (``ids=True``), the ground-truth cell and nucleus label images.

Sample kinds (docs/specimens.md describes each and what it is for):

- ``cells``: cultured cells (irregular cytoplasm, nucleus with nucleoli and
  smooth chromatin, scattering granules, membrane); four times denser, smaller
  and taller in one colony at :data:`COLONY_CENTER_UM`;
- ``epithelium``: a confluent sheet, polygonal cells sharing junctions;
- ``fibroblasts``: aligned spindle cells with elongated nuclei;
- ``clusters``: tight clusters and dense colonies separated by empty glass;
- ``mitotic``: a culture rich in prophase, metaphase, anaphase, telophase and
  binucleated cells;
- ``sparse``: isolated, well-spread cells;
- ``debris``: dead-cell fragments, apoptotic bodies and dust fibres;
- ``beads``: sparse 100 nm fluorescent beads;
- ``filaments``: large flat cells with stress fibres and microtubules in the
  ``membrane`` (orange) channel, for super-resolution;
- ``membranes``: a sheet whose neighbouring membranes run 80-500 nm apart, with
  Golgi stacks, for super-resolution;
- ``resolution-target``: line pairs 0.3-1.5 µm apart, fluorescent and phase
  (:func:`resolution_target_geometry`);
- ``phase-grating``: a pure, weak sinusoidal phase object along x;
- ``blank``: nothing;
- ``file`` (:data:`FILE_KIND`): a user's specimen read by
  :func:`~.specimens_file.load_specimen`, centred on the slide origin.

Physical rules: cell bodies never overlap (touching cells share one junction),
nuclei are never cut, textures are smooth random fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .specimens import TILE_UM, render_cells
from .specimens_file import UserSpecimen
from .specimens_kinds import (
    CELL_KINDS,
    COLONY_CENTER_UM,
    COLONY_RADIUS_UM,
    _seed_key,
    cells_in_tile,
    kind_margin_um,
    membrane_style,
)
from .specimens_structures import (
    RESOLUTION_TARGET_PERIOD_UM,
    RESOLUTION_TARGET_SPACINGS_UM,
    SEGMENT_SIGMA_UM,
    Segments,
    render_resolution_target,
    render_segments,
    resolution_target_geometry,
    tile_segments,
)

__all__ = [
    "COLONY_CENTER_UM",
    "COLONY_RADIUS_UM",
    "FILE_KIND",
    "LABELS",
    "RESOLUTION_TARGET_PERIOD_UM",
    "RESOLUTION_TARGET_SPACINGS_UM",
    "SAMPLE_KINDS",
    "RegionMaps",
    "Slide",
    "clear_caches",
    "resolution_target_geometry",
]

LABELS: tuple[str, ...] = ("nuclei", "membrane")
SAMPLE_KINDS: tuple[str, ...] = (
    "cells", "epithelium", "fibroblasts", "clusters", "mitotic", "sparse", "debris", "beads",
    "filaments", "membranes", "resolution-target", "phase-grating", "blank",
)
#: The sample kind of a user-supplied specimen file.
FILE_KIND = "file"

#: The pixel size at the sample (µm) label densities are per (the 10×/0.25 objective on 6.5 µm pixels).
REFERENCE_PIXEL_UM = 0.65
#: Fluorophore in one bead, in density × reference pixels.
BEAD_FLUOROPHORE = 1000.0

_TILE_UM = TILE_UM
#: Period of the ``phase-grating`` sample: half the coherent cut-off of a 10x/0.25
#: objective, inside the band where DPC with discrete LEDs transfers phase.
GRATING_PERIOD_UM = 5.0
GRATING_OPD_UM = 0.02


@dataclass
class RegionMaps:
    """Sample maps for one rendered region (all arrays share one shape).

    ``cell_ids``/``nucleus_ids`` (ground-truth instance labels, 0 = none) are
    filled when rendering with ``ids=True``; ``overlap_px`` counts pixels that two
    cell bodies (or two nuclei) claimed, which the renderer never lets happen.
    """

    opd: np.ndarray
    absorption: np.ndarray
    labels: dict[str, np.ndarray]
    cell_ids: np.ndarray | None = None
    nucleus_ids: np.ndarray | None = None
    overlap_px: int = 0


def clear_caches() -> None:
    """Forget every generated tile (the next render regenerates them from the seed)."""
    from . import specimens_kinds, specimens_structures

    for f in (specimens_kinds._raw, specimens_kinds._keep, specimens_kinds._built,
              specimens_kinds.cells_in_tile, specimens_structures.tile_segments):
        f.cache_clear()


class Slide:
    """A seeded, procedurally generated specimen (or a user's specimen file)."""

    def __init__(self, kind: str = "cells", seed: int = 0, density: float = 1.0,
                 specimen: UserSpecimen | None = None) -> None:
        if kind == FILE_KIND:
            if specimen is None:
                raise ValueError("sample kind 'file' needs a specimen: load one with SpecimenFile first")
        elif kind not in SAMPLE_KINDS:
            raise ValueError(
                f"unknown sample kind {kind!r}; valid kinds: {', '.join((*SAMPLE_KINDS, FILE_KIND))}"
            )
        self.kind = kind
        self.seed = int(seed)
        self.density = float(density)
        self.specimen = specimen if kind == FILE_KIND else None

    # ------------------------------------------------------------------ objects
    def cells(self, tx: int, ty: int):
        """The cells of tile ``(tx, ty)`` (cell-based kinds; empty otherwise)."""
        if self.kind not in CELL_KINDS:
            return ()
        return cells_in_tile(self.kind, self.seed, tx, ty, self.density)

    def _tile_beads(self, tx: int, ty: int) -> np.ndarray:
        rng = np.random.default_rng(_seed_key(self.seed, tx, ty, 7))
        n = rng.poisson(12 * self.density)
        xy = rng.uniform(0, _TILE_UM, size=(n, 2)) + (tx * _TILE_UM, ty * _TILE_UM)
        return xy

    # ------------------------------------------------------------------ render
    def render(
        self, x0_um: float, y0_um: float, pixel_um: float, shape: tuple[int, int],
        labels: tuple[str, ...] = LABELS, ids: bool = False,
    ) -> RegionMaps:
        """Render the region whose top-left pixel centre is at ``(x0, y0)``.

        Slide y grows downwards with image rows (stage coordinates, µm).
        ``ids=True`` also fills the ground-truth cell / nucleus label images.
        """
        ny, nx = shape
        opd = np.zeros(shape, np.float32)
        absorption = np.zeros(shape, np.float32)
        lab = {name: np.zeros(shape, np.float32) for name in labels}
        out = RegionMaps(opd=opd, absorption=absorption, labels=lab)
        xs = x0_um + pixel_um * np.arange(nx, dtype=np.float64)
        ys = y0_um + pixel_um * np.arange(ny, dtype=np.float64)
        if self.kind == "phase-grating":
            opd += (GRATING_OPD_UM * np.sin(2 * np.pi * xs / GRATING_PERIOD_UM)).astype(np.float32)[None, :]
        elif self.kind == "beads":
            self._render_beads(xs, ys, pixel_um, opd, lab)
        elif self.kind == "resolution-target":
            render_resolution_target(xs, ys, pixel_um, opd, lab)
        elif self.kind == FILE_KIND:
            cid = self.specimen.render(xs, ys, pixel_um, opd, absorption, lab)
            if ids:
                out.cell_ids = cid if cid is not None else np.zeros(shape, np.int64)
        elif self.kind in CELL_KINDS:
            tiles = list(self._tiles(xs, ys, margin=kind_margin_um(self.kind)))
            cells = [c for tx, ty in tiles for c in cells_in_tile(self.kind, self.seed, tx, ty, self.density)]
            diag = render_cells(cells, xs, ys, opd, absorption, lab, pixel_um=pixel_um,
                                membrane=membrane_style(self.kind), ids=ids)
            out.cell_ids, out.nucleus_ids, out.overlap_px = diag.cell_ids, diag.nucleus_ids, diag.overlap_px
            if self.kind in SEGMENT_SIGMA_UM:
                targets = {"opd": opd, "absorption": absorption, **lab}
                found: dict[str, list[Segments]] = {}
                for tx, ty in tiles:
                    for seg, target in tile_segments(self.kind, self.seed, tx, ty, self.density):
                        found.setdefault(target, []).append(seg)
                for target, segs in found.items():
                    if target in targets:
                        render_segments(targets[target], Segments.concat(segs), float(xs[0]), float(ys[0]),
                                        pixel_um, SEGMENT_SIGMA_UM[self.kind])
        return out

    def _tiles(self, xs: np.ndarray, ys: np.ndarray, margin: float):
        tx0, tx1 = int(np.floor((xs[0] - margin) / _TILE_UM)), int(np.floor((xs[-1] + margin) / _TILE_UM))
        ty0, ty1 = int(np.floor((ys[0] - margin) / _TILE_UM)), int(np.floor((ys[-1] + margin) / _TILE_UM))
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                yield tx, ty

    def _render_beads(self, xs, ys, pixel_um, opd, lab) -> None:
        amount = BEAD_FLUOROPHORE * (REFERENCE_PIXEL_UM / pixel_um) ** 2
        for tx, ty in self._tiles(xs, ys, margin=2.0):
            for bx, by in self._tile_beads(tx, ty):
                ix, iy = (bx - xs[0]) / pixel_um, (by - ys[0]) / pixel_um
                if not (-1 <= ix < len(xs) and -1 <= iy < len(ys)):
                    continue
                # a sub-resolution point: deposit into the 4 nearest pixels (its fluorophore as a density)
                jx, jy = int(np.floor(ix)), int(np.floor(iy))
                fx, fy = ix - jx, iy - jy
                for dy, wy in ((0, 1 - fy), (1, fy)):
                    for dx, wx in ((0, 1 - fx), (1, fx)):
                        if 0 <= jy + dy < len(ys) and 0 <= jx + dx < len(xs):
                            for m in lab.values():
                                m[jy + dy, jx + dx] += amount * wy * wx
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
