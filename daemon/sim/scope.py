"""The simulated LED-array microscope as one physical state.

:class:`SimScope` holds what the devices set (LED pattern, stage positions,
objective, light source, emission filter) and turns it into an expected photon
map for a detector. The devices in :mod:`scopecast.daemon.sim.devices` are thin
Micro-Manager adapters over it.

Caching: the noiseless photon rate (photons / pixel / ms) of a detector view is
cached by everything it depends on (position, focus, objective, pattern,
wavelengths, sampling, sample), so a repeated pattern at one position costs
only the camera noise; a new position costs the optics. :class:`PhotonTerms`
names one exposure by those cached maps, so a camera without noise keeps the
frame it made from them (as a real camera's frame costs little CPU).

Brightness follows the objective and the sampling as on a real stand. ``led_flux`` and ``fluo_flux`` are
given for the reference view (:data:`~.slide.REFERENCE_PIXEL_UM` at the sample, 10×/0.25 on the 6.5 µm camera
unbinned, the view the packages are trained on); a camera pixel collects in proportion to its area at the
sample, so bright-field and dark-field per pixel scale as (pixel at the sample)² (times the LEDs the
pattern lights inside the NA, each at 1/distance² of the array), and epi-fluorescence as
NA⁴ × (pixel at the sample)², the NA⁴/M² rule (excitation and collection each ∝ NA²; photobleaching
follows the excitation). Binning sums the charge of binning² pixels into one pixel of the
camera's full well, as on-chip binning does. The STED detector is a scanning one: its photons per pixel
are set by the dwell, not by the pixel's area, and keep the reference flux.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy.fft import next_fast_len

from ..illumination import LedArrayState
from . import optics
from .slide import REFERENCE_PIXEL_UM, RegionMaps, Slide

__all__ = ["FLUOROPHORES", "OBJECTIVES", "REFERENCE_ARRAY_DISTANCE_MM", "REFERENCE_NA", "REFERENCE_PIXEL_UM",
           "Objective", "PhotonTerms", "SimScope"]


@dataclass(frozen=True)
class Objective:
    name: str
    magnification: float
    na: float


#: The turret of the simulated scope (state index -> objective).
OBJECTIVES: tuple[Objective, ...] = (
    Objective("4x/0.13", 4.0, 0.13),
    Objective("10x/0.25", 10.0, 0.25),
    Objective("20x/0.40", 20.0, 0.40),
    Objective("40x/0.65", 40.0, 0.65),
)

#: label -> (excitation peak nm, emission peak nm)
FLUOROPHORES: dict[str, tuple[float, float]] = {
    "nuclei": (405.0, 460.0),  # Hoechst-like
    "membrane": (561.0, 600.0),  # CellMask-orange-like
}

#: Objective NA at which ``fluo_flux`` holds (with :data:`~.slide.REFERENCE_PIXEL_UM` at the sample:
#: 10×/0.25 on 6.5 µm camera pixels, unbinned).
REFERENCE_NA = 0.25
#: LED array distance from the sample (mm) at which ``led_flux`` holds; an LED's irradiance at the sample
#: falls as 1/distance² (the inverse-square law), so a farther array lights more LEDs inside the NA, each dimmer.
REFERENCE_ARRAY_DISTANCE_MM = 50.0

#: Photobleaching is tracked per cell of this size on the slide (µm): far coarser than the PSF, far finer than a field.
BLEACH_CELL_UM = 10.0
_BLEACH_BLOCK = 64  # cells a side of one block of kept doses

_MIN_GUARD_PX = 24  # margin rendered around a field so FFT wrap-around stays outside


def _guard(n: int) -> int:
    """Guard band (pixels per side) giving a fast FFT length of at least n + 2·24."""
    m = next_fast_len(n + 2 * _MIN_GUARD_PX)
    while (m - n) % 2:
        m = next_fast_len(m + 1)
    return (m - n) // 2


@dataclass(frozen=True, eq=False)
class PhotonTerms:
    """One exposure's expected photon map before it is summed: cached rate maps and their factors.

    :meth:`compose` sums them (photons / pixel for ``exposure_ms``). The maps are the scope's cached,
    read-only arrays, held here: while this object lives, :attr:`key` (their ids and every factor) names
    the same map exactly, so a noiseless detector may keep the frame it made for it.
    """

    shape: tuple[int, int]
    exposure_ms: float
    label_free: np.ndarray | None  # photons / pixel / ms from the LED array
    fluorescence: tuple[tuple[np.ndarray, float, np.ndarray | None], ...]  # (map, efficiency x flux, bleaching)

    @property
    def key(self) -> tuple:
        lf = None if self.label_free is None else id(self.label_free)
        return (self.shape, self.exposure_ms, lf,
                tuple((id(m), f, None if b is None else id(b)) for m, f, b in self.fluorescence))

    def compose(self) -> np.ndarray:
        parts = [] if self.label_free is None else [self.label_free]
        fl = None
        for m, factor, bleach in self.fluorescence:
            rate = m * np.float32(factor)
            if bleach is not None:
                rate = rate * bleach
            fl = rate if fl is None else fl + rate
        if fl is not None:
            parts.append(fl)
        if not parts:
            return np.zeros(self.shape, np.float32)
        total = parts[0] * np.float32(self.exposure_ms)
        for p in parts[1:]:
            total += p * np.float32(self.exposure_ms)
        return total


@dataclass
class FluorescenceState:
    wavelength_nm: float = 405.0
    power: float = 1.0  # 0..1
    is_open: bool = False
    emission_filter_nm: float | None = None  # None: no emission filter (label-free)


class SimScope:
    """Physical state of the simulated microscope and its image formation."""

    def __init__(self, sample: str = "cells", seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.slide = Slide(sample, seed)
        self.led = LedArrayState()
        self.fluo = FluorescenceState()
        self.objective: Objective = OBJECTIVES[1]
        self.x_um = 0.0
        self.y_um = 0.0
        self.z_um = 0.0
        self.focal_plane_um = 0.0
        # both at the reference view (REFERENCE_PIXEL_UM, REFERENCE_NA); other views scale as the module says
        self.led_flux = 60.0  # photons / pixel / ms for one bright-field LED at full brightness
        self.fluo_flux = 4.0  # photons / pixel / ms per unit fluorophore density at full power
        self.photobleaching = False
        self.bleach_dose_half = 2.0e5  # density-weighted ms·power for 1/e bleaching
        self._bleach: dict[tuple[str, int, int], np.ndarray] = {}  # (label, block x, block y) -> doses
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._region_cache: tuple[tuple, RegionMaps] | None = None
        self.cache_size = 48

    # ----------------------------------------------------------------- helpers
    def set_sample(self, kind: str, seed: int) -> None:
        with self.lock:
            self.slide = Slide(kind, seed)
            self._cache.clear()
            self._region_cache = None
            self._bleach.clear()

    def pixel_um(self, camera_pixel_um: float, binning: int = 1) -> float:
        """Pixel size at the sample."""
        return camera_pixel_um * binning / self.objective.magnification

    @staticmethod
    def pixel_area(pixel_um: float) -> float:
        """A pixel's area at the sample relative to the reference view's: what it collects, other things equal."""
        return (pixel_um / REFERENCE_PIXEL_UM) ** 2

    def epi_collection(self, pixel_um: float) -> float:
        """Epi-fluorescence photons per pixel relative to the reference view: NA⁴ × pixel area."""
        return (self.objective.na / REFERENCE_NA) ** 4 * self.pixel_area(pixel_um)

    def _cached(self, key: tuple, make) -> np.ndarray:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        value = make()
        value.setflags(write=False)
        self._cache[key] = value
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def _region(self, pixel_um: float, shape: tuple[int, int]) -> RegionMaps:
        """Sample maps of the field of view plus a guard band sized for a fast FFT.

        Cached by position and sampling: every pattern and label at one position
        shares one rendering.
        """
        key = (self.slide.kind, self.slide.seed, round(self.x_um, 4), round(self.y_um, 4),
               round(pixel_um, 6), shape)
        if self._region_cache is not None and self._region_cache[0] == key:
            return self._region_cache[1]
        gy, gx = _guard(shape[0]), _guard(shape[1])
        x0 = self.x_um - (shape[1] / 2 + gx - 0.5) * pixel_um
        y0 = self.y_um - (shape[0] / 2 + gy - 0.5) * pixel_um
        maps = self.slide.render(x0, y0, pixel_um, (shape[0] + 2 * gy, shape[1] + 2 * gx))
        self._region_cache = (key, maps)
        return maps

    @staticmethod
    def _crop(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        gy, gx = _guard(shape[0]), _guard(shape[1])
        return np.ascontiguousarray(img[gy : gy + shape[0], gx : gx + shape[1]])

    def _view_key(self, pixel_um: float, shape: tuple[int, int]) -> tuple:
        return (
            self.slide.kind, self.slide.seed, round(self.x_um, 4), round(self.y_um, 4),
            round(self.z_um - self.focal_plane_um, 4), self.objective.name,
            round(pixel_um, 6), shape,
        )

    # ------------------------------------------------------------- components
    def label_free_rate(self, pixel_um: float, shape: tuple[int, int], binning: int = 1) -> np.ndarray | None:
        """Photon rate per pixel of ``pixel_um`` at the sample from the LED array, or None when it is dark.

        With ``binning`` > 1 a pixel is ``binning``² sensor pixels whose charge is summed: the optics are
        imaged on the sensor's own grid and summed (:func:`_bin`), so binning changes the sampling of the
        image, not the image (re-imaging on the coarse grid dropped the light of every LED whose scattered
        light needs sample detail finer than a binned pixel, half the dark-field at 4x)."""
        if not self.led.emitting:  # the light path and the array's global shutter are open
            return None
        pattern = self.led.pattern()
        if pattern.n_lit == 0:
            return None
        wl = pattern.mean_wavelength_nm() / 1000.0
        key = ("lf", *self._view_key(pixel_um, shape), binning, pattern.key(), wl, self.led.geometry)

        def make() -> np.ndarray:
            px, fine = pixel_um / binning, (shape[0] * binning, shape[1] * binning)  # the sensor's own pixels
            maps = self._region(px, fine)
            t = np.exp(-maps.absorption + 1j * (2 * np.pi / wl) * maps.opd)
            lit = pattern.lit
            img = optics.label_free_image(
                t, px, wl, self.objective.na, self.led.geometry.na_xy[lit],
                pattern.weights[lit], defocus_um=self.z_um - self.focal_plane_um,
            )
            irradiance = (REFERENCE_ARRAY_DISTANCE_MM / self.led.geometry.distance_mm) ** 2
            rate = self._crop(img, fine) * np.float32(self.led_flux * self.pixel_area(px) * irradiance)
            return _bin(rate, binning, "sum")

        return self._cached(key, make)

    def _label_efficiency(self, label: str) -> float:
        ex, em = FLUOROPHORES[label]
        f = self.fluo
        if f.emission_filter_nm is None:
            return 0.0
        e = np.exp(-(((f.wavelength_nm - ex) / 35.0) ** 2))
        e *= np.exp(-(((f.emission_filter_nm - em) / 30.0) ** 2))
        return float(e * f.power)

    def fluorescence_terms(
        self, pixel_um: float, shape: tuple[int, int], sted_factor: float | None = None, binning: int = 1,
    ) -> tuple[tuple[np.ndarray, float, np.ndarray | None], ...]:
        """Fluorescence, one term per label: (cached rate map at unit density and flux, efficiency × flux,
        the map of what is left unbleached, or None); ``sted_factor`` gives the narrowed ground truth of the scanning
        detector, at the reference flux. ``binning``: imaged on the sensor's own pixels, then binned (the
        flux is that of the binned pixel's area, so the mean of the sensor pixels is their sum)."""
        if not self.fluo.is_open:
            return ()
        terms = []
        flux = self.fluo_flux * (1.0 if sted_factor else self.epi_collection(pixel_um))
        for label in FLUOROPHORES:
            eff = self._label_efficiency(label)
            if eff < 1e-3:
                continue
            em_um = FLUOROPHORES[label][1] / 1000.0
            key = ("fl", label, sted_factor, *self._view_key(pixel_um, shape), binning)

            def make(label=label, em_um=em_um) -> np.ndarray:
                px, fine = pixel_um / binning, (shape[0] * binning, shape[1] * binning)
                maps = self._region(px, fine)
                padded = maps.opd.shape
                if sted_factor:
                    fwhm = optics.airy_fwhm_um(em_um, self.objective.na) / sted_factor
                    otf = optics.gaussian_otf(padded, px, fwhm)
                else:
                    otf = optics.widefield_otf(
                        padded, px, em_um, self.objective.na,
                        round(self.z_um - self.focal_plane_um, 4),
                    )
                return _bin(self._crop(optics.fluorescence_image(maps.labels[label], otf), fine), binning, "mean")

            bleach = self._bleach_map(label, pixel_um, shape) if self.photobleaching else None
            terms.append((self._cached(key, make), eff * flux, bleach))
        return tuple(terms)

    # ---------------------------------------------------------- photobleaching
    def _cells(self, pixel_um: float, n: int, centre_um: float) -> np.ndarray:
        """Bleaching-grid index (:data:`BLEACH_CELL_UM` cells of the slide) of each of ``n`` pixels of
        ``pixel_um`` along one axis of a field centred on ``centre_um`` (non-decreasing)."""
        centres = centre_um + (np.arange(n) - (n / 2 - 0.5)) * pixel_um
        return np.floor(centres / BLEACH_CELL_UM).astype(np.int64)

    def _doses(self, label: str, rows: np.ndarray, cols: np.ndarray, add: float = 0.0) -> np.ndarray:
        """The dose ``label`` received in the slide cells from ``rows[0]`` to ``rows[-1]`` (y) by ``cols[0]`` to
        ``cols[-1]`` (x), after ``add`` more in each. Doses are kept in blocks of :data:`_BLEACH_BLOCK`² cells
        (a 10 mm square of the slide is a few MiB)."""
        b = _BLEACH_BLOCK
        (y0, y1), (x0, x1) = (int(rows[0]), int(rows[-1]) + 1), (int(cols[0]), int(cols[-1]) + 1)
        out = np.zeros((y1 - y0, x1 - x0))
        for by in range(y0 // b, (y1 - 1) // b + 1):
            for bx in range(x0 // b, (x1 - 1) // b + 1):
                block = self._bleach.get((label, bx, by))
                if block is None:
                    if not add:
                        continue
                    block = self._bleach[(label, bx, by)] = np.zeros((b, b))
                ya, yb, xa, xb = max(y0, by * b), min(y1, (by + 1) * b), max(x0, bx * b), min(x1, (bx + 1) * b)
                cells = block[ya - by * b : yb - by * b, xa - bx * b : xb - bx * b]
                cells += add
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = cells
        return out

    def _bleach_map(self, label: str, pixel_um: float, shape: tuple[int, int]) -> np.ndarray | None:
        """What is left of ``label`` at each pixel of the field (``pixel_um`` at the sample, centred on the
        stage), from the dose its slide cells received; None where no cell of the field was lit."""
        rows, cols = self._cells(pixel_um, shape[0], self.y_um), self._cells(pixel_um, shape[1], self.x_um)
        dose = self._doses(label, rows, cols)
        if not dose.any():
            return None
        left = np.exp(-dose / self.bleach_dose_half).astype(np.float32)
        return np.ascontiguousarray(left[(rows - rows[0])[:, None], (cols - cols[0])[None, :]])

    def excitation_irradiance(self) -> float:
        """Epi excitation at the sample relative to the reference objective: ∝ NA² (the objective is the
        condenser). What each fluorophore absorbs, so what it emits (:meth:`epi_collection`'s excitation
        half) and how fast it bleaches."""
        return (self.objective.na / REFERENCE_NA) ** 2

    def record_exposure(self, exposure_ms: float, pixel_um: float, shape: tuple[int, int]) -> None:
        """Accumulate excitation dose (for photobleaching) in every slide cell of the lit field (``shape``
        pixels of ``pixel_um`` at the sample, centred on the stage: the field the detector images): ∝ the
        excitation irradiance, so a fluorophore emits as many photons before it bleaches under every objective.
        A cell is :data:`BLEACH_CELL_UM` of the slide, so a field moved by a few µm stays bleached where it
        overlaps the old one, and a larger field is bleached only where it was lit."""
        if not (self.photobleaching and self.fluo.is_open):
            return
        irradiance = self.excitation_irradiance()
        rows, cols = self._cells(pixel_um, shape[0], self.y_um), self._cells(pixel_um, shape[1], self.x_um)
        for label in FLUOROPHORES:
            self._doses(label, rows, cols, add=self._label_efficiency(label) * irradiance * exposure_ms * 100.0)

    # -------------------------------------------------------------- detectors
    def photon_terms(
        self, camera_pixel_um: float, binning: int, shape: tuple[int, int],
        exposure_ms: float, sted_factor: float | None = None,
    ) -> PhotonTerms:
        """What one exposure on a detector is made of (and the exposure recorded, for photobleaching)."""
        with self.lock:
            px = self.pixel_um(camera_pixel_um, binning)
            lf = self.label_free_rate(px, shape, binning) if sted_factor is None else None
            fl = self.fluorescence_terms(px, shape, sted_factor, binning)
            self.record_exposure(exposure_ms, px, shape)
        return PhotonTerms(tuple(shape), float(exposure_ms), lf, fl)

    def photons(
        self, camera_pixel_um: float, binning: int, shape: tuple[int, int],
        exposure_ms: float, sted_factor: float | None = None,
    ) -> np.ndarray:
        """Expected photons per pixel for one exposure on a detector."""
        return self.photon_terms(camera_pixel_um, binning, shape, exposure_ms, sted_factor).compose()

    def blinking_photons(
        self, camera_pixel_um: float, binning: int, shape: tuple[int, int],
        exposure_ms: float, rng: np.random.Generator, on_fraction: float = 0.01,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Single-molecule frame: a sparse random subset of emitters is on.

        Returns ``(photon map, emitters)`` where ``emitters`` is ``(K, 3)``:
        x, y (µm, stage coordinates) and photons of each emitter that was on. An emitter's photons scale as
        NA⁴ like the ensemble's (excitation × collection), and its spot widens out of focus.
        """
        with self.lock:
            px = self.pixel_um(camera_pixel_um, binning)
            img = np.zeros(shape, np.float32)
            label = max(FLUOROPHORES, key=self._label_efficiency)
            eff = self._label_efficiency(label)
            if not self.fluo.is_open or eff < 1e-3:
                return img, np.zeros((0, 3))
            ny, nx = shape
            x0 = self.x_um - (nx / 2 - 0.5) * px
            y0 = self.y_um - (ny / 2 - 0.5) * px
            em = self.slide.emitters(x0, y0, px, shape, label)
            na = self.objective.na
            fwhm = optics.airy_fwhm_um(FLUOROPHORES[label][1] / 1000.0, na)
            defocus = abs(self.z_um - self.focal_plane_um)
        on = rng.random(len(em)) < on_fraction
        pts = em[on]
        # a point: excitation ∝ NA² and collection ∝ NA² (the NA⁴ of the ensemble, without a pixel's area)
        photons = 1500.0 * eff * (na / REFERENCE_NA) ** 4 * exposure_ms / 20.0
        n_ph = rng.lognormal(np.log(photons), 0.4, len(pts))
        # out of focus the spot spreads over the geometric cone (radius defocus·tan θ; a disc of radius R: σ = R/2)
        blur = defocus * na / np.sqrt(1.0 - na * na) / 2.0
        sigma = float(np.hypot(fwhm / 2.3548, blur)) / px
        _render_gaussians(img, (pts[:, 0] - x0) / px, (pts[:, 1] - y0) / px, n_ph, sigma)
        return img, np.column_stack([pts, n_ph]) if len(pts) else np.zeros((0, 3))


def _bin(img: np.ndarray, binning: int, how: str) -> np.ndarray:
    """``binning`` x ``binning`` blocks of ``img`` summed (charge) or averaged (a density)."""
    if binning == 1:
        return img
    h, w = img.shape[0] // binning, img.shape[1] // binning
    blocks = img.reshape(h, binning, w, binning)
    out = blocks.sum(axis=(1, 3), dtype=np.float32) if how == "sum" else blocks.mean(axis=(1, 3), dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _render_gaussians(img, xs, ys, photons, sigma) -> None:
    """Add pixel-integrated Gaussian spots (erf differences) to ``img``."""
    from scipy.special import erf

    r = int(np.ceil(4 * sigma)) + 1
    s2 = np.sqrt(2) * sigma
    ny, nx = img.shape
    for x, y, n in zip(xs, ys, photons, strict=True):
        cx, cy = int(round(x)), int(round(y))
        x0, x1 = max(cx - r, 0), min(cx + r + 1, nx)
        y0, y1 = max(cy - r, 0), min(cy + r + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = np.arange(x0, x1 + 1) - 0.5 - x
        ey = np.arange(y0, y1 + 1) - 0.5 - y
        gx = np.diff(erf(ex / s2)) / 2
        gy = np.diff(erf(ey / s2)) / 2
        img[y0:y1, x0:x1] += np.float32(n) * np.outer(gy, gx).astype(np.float32)
