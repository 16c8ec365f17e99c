"""Imaging physics of the simulated microscope.

Label-free images use partially coherent (Abbe) imaging: every lit LED is a
mutually incoherent plane wave with spatial frequency ``k_j = na_j / λ``; the
image is ``I = Σ_j w_j |IFFT(P(k + k_j) H_z(k + k_j) T(k))|²`` with ``T`` the
spectrum of the complex transmission ``t = exp(-a + iφ)``, ``P`` the pupil
(cut-off ``NA/λ``) and ``H_z`` the angular-spectrum defocus phase. Shifting the
pupil instead of the object spectrum is exact (the two differ by a phase ramp
that ``|·|²`` removes) and lets the pupil be evaluated analytically at
sub-pixel LED frequencies.

Fluorescence is incoherent: ``I = F ⊛ |IFFT(P H_z)|²``, computed with the OTF.
The super-resolution ground truth uses a Gaussian effective PSF ``factor``
times narrower than the widefield PSF (a STED-like depletion).

All functions are pure; arrays are float32/complex64. Spectra are handled
fftshift-ed (DC in the centre) so the support of each shifted pupil is one
contiguous box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

__all__ = [
    "airy_fwhm_um",
    "fluorescence_image",
    "gaussian_otf",
    "label_free_image",
    "widefield_otf",
]

_WORKERS = 2


def airy_fwhm_um(wavelength_um: float, na: float) -> float:
    """Theoretical FWHM of the widefield (Airy) PSF: 0.51 λ / NA."""
    return 0.51 * wavelength_um / na


def _freq_axis(n: int, pixel_um: float) -> np.ndarray:
    """Centred frequency axis (cycles/µm) of an fftshift-ed spectrum."""
    return (np.arange(n) - n // 2) / (n * pixel_um)


def _pupil(
    fx: np.ndarray, fy: np.ndarray, na: float, wavelength_um: float, defocus_um: float,
    n_medium: float,
) -> np.ndarray:
    """Pupil × defocus at the given frequencies (broadcasting)."""
    f2 = fx * fx + fy * fy
    cutoff = na / wavelength_um
    inside = f2 < cutoff * cutoff
    if defocus_um == 0.0:
        return inside.astype(np.complex64)
    kz = np.sqrt(np.maximum((n_medium / wavelength_um) ** 2 - f2, 0.0))
    phase = 2 * np.pi * defocus_um * (kz - n_medium / wavelength_um)
    return (inside * np.exp(1j * phase)).astype(np.complex64)


#: Grid lengths a squared field is resampled on (7-smooth, ≤ 25 % apart: few distinct grids to batch over).
_GRID_LADDER: tuple[int, ...] = tuple(sorted({b << k for b in (8, 10, 12, 14) for k in range(12)}))


@dataclass(frozen=True)
class _LedJob:
    """One lit LED: its illumination frequency, weight and the spectrum box its shifted pupil passes."""

    kx: float
    ky: float
    weight: float
    rows: slice
    cols: slice


def _grid_len(support: int, n: int) -> int:
    """Length of an axis on which ``|field|²`` of a spectrum spanning ``support`` bins is sampled exactly.

    ``|field|²`` spans ``2·support − 1`` bins (the box's autocorrelation), so any grid at least that long
    holds it without aliasing; the shortest :data:`_GRID_LADDER` length that does, or ``n`` (the image's
    own grid, exact by definition) when that is no shorter.
    """
    need = 2 * support - 1
    return next((m for m in _GRID_LADDER if need <= m < n), n)


def _led_jobs(
    led_na_xy: np.ndarray, weights: np.ndarray, shape: tuple[int, int], pixel_um: float,
    wavelength_um: float, objective_na: float,
) -> list[_LedJob]:
    """The lit LEDs whose shifted pupil passes some frequency the sampled spectrum carries."""
    ny, nx = shape
    cutoff = objective_na / wavelength_um
    dfx = 1.0 / (nx * pixel_um)
    dfy = 1.0 / (ny * pixel_um)
    jobs = []
    for (na_x, na_y), w in zip(led_na_xy, weights, strict=True):
        if w == 0:
            continue
        # pupil evaluated at k + k_j; rows grow downwards so k_row = -na_y/λ
        kx, ky = na_x / wavelength_um, -na_y / wavelength_um
        # support: |k + k_j| < cutoff  ->  centred on -k_j
        cx, cy = nx // 2 - kx / dfx, ny // 2 - ky / dfy
        x0, x1 = max(int(np.floor(cx - cutoff / dfx)), 0), min(int(np.ceil(cx + cutoff / dfx)) + 1, nx)
        y0, y1 = max(int(np.floor(cy - cutoff / dfy)), 0), min(int(np.ceil(cy + cutoff / dfy)) + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue  # this LED's light misses every frequency the sample carries
        jobs.append(_LedJob(kx, ky, float(w), slice(y0, y1), slice(x0, x1)))
    return jobs


def _job_grid(job: _LedJob, shape: tuple[int, int]) -> tuple[int, int]:
    """The grid an LED's intensity is computed on (:func:`_grid_len` per axis)."""
    return (_grid_len(job.rows.stop - job.rows.start, shape[0]),
            _grid_len(job.cols.stop - job.cols.start, shape[1]))


def _intensity_sum(
    spec: np.ndarray, jobs: list[_LedJob], grid: tuple[int, int], pupil_at: Callable[[_LedJob], np.ndarray],
    batch: int, scale: float = 1.0,
) -> np.ndarray:
    """``Σ_j scale·w_j |IFFT_grid(box_j · pupil_at(job_j))|²`` (float32, ``grid``-shaped), batched.

    On the spectrum's own grid each box keeps its place (the image as it always was computed); on a
    shorter grid it moves to the origin: an integer shift of a spectrum multiplies the field by a
    unit-modulus phase, which ``|·|²`` removes.
    """
    own = grid == spec.shape
    buf = np.zeros((min(batch, len(jobs)), *grid), np.complex64)
    power = np.empty(buf.shape, np.float32)
    total = np.zeros(grid, np.float32)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        for b, job in enumerate(chunk):
            buf[b] = 0
            box = spec[job.rows, job.cols] * pupil_at(job)
            if own:
                buf[b, job.rows, job.cols] = box
            else:
                buf[b, : box.shape[0], : box.shape[1]] = box
        n = len(chunk)
        field = sfft.ifft2(buf[:n], workers=_WORKERS, overwrite_x=True)
        np.abs(field, out=power[:n])
        np.square(power[:n], out=power[:n])
        w = np.array([job.weight for job in chunk], np.float32) * np.float32(scale)
        # numpy's own loop, not BLAS: a threaded sgemv spins against the FFT's workers (0.3 s per DF frame)
        total += np.einsum("b,bij->ij", w, power[:n])
    return total


def _fold_into(acc: np.ndarray, intensity: np.ndarray) -> None:
    """Add the rfft2 spectrum of ``intensity`` (sampled on a coarser grid over the same period) to ``acc``,
    the rfft2-layout spectrum of an ``(acc.shape[0], ·)`` image: each coefficient goes to its signed frequency,
    so the image's samples are the band-limited ``intensity`` evaluated on the finer grid (exact while
    ``intensity`` carries no frequency at its own Nyquist, as :func:`_grid_len` ensures)."""
    my, mx = intensity.shape
    k = np.arange(my)
    rows = np.where(k <= my // 2, k, k - my) % acc.shape[0]
    acc[rows, : mx // 2 + 1] += sfft.rfft2(intensity, workers=_WORKERS) * (my * mx)


def label_free_image(
    transmission: np.ndarray,
    pixel_um: float,
    wavelength_um: float,
    objective_na: float,
    led_na_xy: np.ndarray,
    weights: np.ndarray,
    defocus_um: float = 0.0,
    n_medium: float = 1.0,
    batch: int = 8,
) -> np.ndarray:
    """Abbe image of a thin sample under a set of LEDs.

    Parameters
    ----------
    transmission:
        Complex transmission ``t(x, y)`` of the sample (rows = image y, top first).
    led_na_xy:
        ``(L, 2)`` illumination NA ``(na_x, na_y)`` of the lit LEDs; ``na_y > 0``
        points to the top of the image.
    weights:
        ``(L,)`` relative LED intensities.

    Returns
    -------
    float32 image in units of "one bright-field LED through a clear sample".

    An LED whose pupil passes a small box of the spectrum (dark-field LEDs, whose pupil mostly falls
    beyond the sampled frequencies) has a band-limited intensity: it is computed on a grid just long
    enough to hold it and interpolated exactly (in Fourier space) onto the image's grid, the same image
    to float rounding at a fraction of the cost. LEDs that need the full grid are computed on it as before.
    """
    ny, nx = transmission.shape
    spec = sfft.fftshift(sfft.fft2(transmission.astype(np.complex64), workers=_WORKERS))
    spec /= np.float32(nx * ny)
    fxa = _freq_axis(nx, pixel_um)
    fya = _freq_axis(ny, pixel_um)

    def pupil_at(job: _LedJob) -> np.ndarray:
        return _pupil(fxa[job.cols][None, :] + job.kx, fya[job.rows][:, None] + job.ky, objective_na,
                      wavelength_um, defocus_um, n_medium)

    groups: dict[tuple[int, int], list[_LedJob]] = {}
    for job in _led_jobs(led_na_xy, weights, (ny, nx), pixel_um, wavelength_um, objective_na):
        groups.setdefault(_job_grid(job, (ny, nx)), []).append(job)
    out = np.zeros((ny, nx), np.float32)
    full = groups.pop((ny, nx), [])
    if full:
        out += _intensity_sum(spec, full, (ny, nx), pupil_at, batch, (nx * ny) ** 2)
    if groups:
        acc = np.zeros((ny, nx // 2 + 1), np.complex128)
        for grid, jobs in groups.items():
            wide = max(batch, batch * (ny * nx) // (grid[0] * grid[1]))  # the same memory as a full batch
            _fold_into(acc, _intensity_sum(spec, jobs, grid, pupil_at, min(wide, 64)))
        coarse = sfft.irfft2(acc, s=(ny, nx), workers=_WORKERS) * float(nx * ny)
        out += np.maximum(coarse, 0.0).astype(np.float32)  # a sum of squares: below 0 only by rounding
    return out


@lru_cache(maxsize=32)
def widefield_otf(
    shape: tuple[int, int], pixel_um: float, wavelength_um: float, na: float,
    defocus_um: float = 0.0, n_medium: float = 1.0,
) -> np.ndarray:
    """rfft2-layout OTF of the incoherent widefield PSF (normalised to 1 at DC)."""
    ny, nx = shape
    fx = _freq_axis(nx, pixel_um)[None, :]
    fy = _freq_axis(ny, pixel_um)[:, None]
    amp = sfft.ifft2(sfft.ifftshift(_pupil(fx, fy, na, wavelength_um, defocus_um, n_medium)))
    psf = (amp.real**2 + amp.imag**2).astype(np.float32)
    otf = sfft.rfft2(psf / psf.sum(), workers=_WORKERS).astype(np.complex64)
    otf.setflags(write=False)
    return otf


@lru_cache(maxsize=32)
def gaussian_otf(shape: tuple[int, int], pixel_um: float, fwhm_um: float) -> np.ndarray:
    """rfft2-layout OTF of a Gaussian PSF of the given FWHM (the STED-like PSF)."""
    ny, nx = shape
    sigma = fwhm_um / (2 * np.sqrt(2 * np.log(2)))
    fx = sfft.rfftfreq(nx, d=pixel_um)[None, :]
    fy = sfft.fftfreq(ny, d=pixel_um)[:, None]
    otf = np.exp(-2 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy)).astype(np.complex64)
    otf.setflags(write=False)
    return otf


def fluorescence_image(fluorophores: np.ndarray, otf: np.ndarray) -> np.ndarray:
    """Blur a fluorophore density map with an OTF from :func:`widefield_otf`."""
    spec = sfft.rfft2(fluorophores, workers=_WORKERS)
    img = sfft.irfft2(spec * otf, s=fluorophores.shape, workers=_WORKERS)
    return np.maximum(img, 0, out=img).astype(np.float32, copy=False)
