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
    """
    ny, nx = transmission.shape
    spec = sfft.fftshift(sfft.fft2(transmission.astype(np.complex64), workers=_WORKERS))
    spec /= np.float32(nx * ny)
    fxa = _freq_axis(nx, pixel_um)
    fya = _freq_axis(ny, pixel_um)
    cutoff = objective_na / wavelength_um
    out = np.zeros((ny, nx), np.float32)
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
        jobs.append((kx, ky, float(w), slice(y0, y1), slice(x0, x1)))
    buf = np.zeros((min(batch, max(len(jobs), 1)), ny, nx), np.complex64)
    power = np.empty(buf.shape, np.float32)
    scale = np.float32((nx * ny) ** 2)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        for b, (kx, ky, _, sy, sx) in enumerate(chunk):
            buf[b] = 0
            buf[b, sy, sx] = spec[sy, sx] * _pupil(
                fxa[sx][None, :] + kx, fya[sy][:, None] + ky, objective_na,
                wavelength_um, defocus_um, n_medium,
            )
        n = len(chunk)
        field = sfft.ifft2(buf[:n], workers=_WORKERS, overwrite_x=True)
        np.abs(field, out=power[:n])
        np.square(power[:n], out=power[:n])
        w = np.array([c[2] for c in chunk], np.float32) * scale
        out += np.tensordot(w, power[:n], axes=1)
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
