"""The first dark-field frame at a new position: the same Abbe image, at a fraction of the FFT work.

A dark-field pattern lights ~1000 LEDs; most pass only a corner of the sampled spectrum. Computing each on the
full grid made the first DF frame at every new stage position cost seconds (one full-size inverse FFT per LED).
"""

import numpy as np
import pytest

from scopecast.daemon.sim import optics
from scopecast.daemon.sim.scope import SimScope


def _reference_image(t, pixel_um, wl, na, led_na_xy, weights, defocus_um):
    """The docstring's formula in float64, one full-grid transform per LED: Σ_j w_j |IFFT(P(k + k_j) T(k))|²."""
    ny, nx = t.shape
    spec = np.fft.fftshift(np.fft.fft2(t)) / (nx * ny)
    fx = ((np.arange(nx) - nx // 2) / (nx * pixel_um))[None, :]
    fy = ((np.arange(ny) - ny // 2) / (ny * pixel_um))[:, None]
    out = np.zeros(t.shape)
    for (na_x, na_y), w in zip(led_na_xy, weights, strict=True):
        gx, gy = fx + na_x / wl, fy - na_y / wl
        f2 = gx * gx + gy * gy
        kz = np.sqrt(np.maximum(1 / wl**2 - f2, 0.0))
        pupil = (f2 < (na / wl) ** 2) * np.exp(2j * np.pi * defocus_um * (kz - 1 / wl))
        field = np.fft.ifft2(np.fft.ifftshift(spec * pupil)) * (nx * ny)
        out += w * np.abs(field) ** 2
    return out


@pytest.mark.parametrize("shape", [(96, 96), (90, 77)])
@pytest.mark.parametrize("defocus_um", [0.0, 2.5])
def test_label_free_image_matches_the_abbe_sum(shape, defocus_um):
    rng = np.random.default_rng(3)
    t = np.exp(-0.2 * rng.random(shape) + 1j * rng.normal(0, 0.8, shape))
    na = np.linspace(-0.75, 0.75, 11)
    led = np.array([(a, b) for a in na for b in na])  # bright- and dark-field, some beyond the sampled spectrum
    weights = rng.uniform(0.5, 1.5, len(led))
    got = optics.label_free_image(t, 0.65, 0.53, 0.25, led, weights, defocus_um=defocus_um)
    want = _reference_image(t, 0.65, 0.53, 0.25, led, weights, defocus_um)
    assert got.dtype == np.float32 and got.min() >= 0
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * want.max())


class _CountingFFT:
    """``scipy.fft`` with every transform's points counted (batched transforms count every one)."""

    def __init__(self, module):
        self._module, self.points = module, 0

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        if not (name.startswith(("fft", "ifft", "rfft", "irfft")) and callable(fn)) or "shift" in name \
                or "freq" in name:
            return fn

        def counted(x, *args, **kwargs):
            self.points += np.asarray(x).size
            return fn(x, *args, **kwargs)

        return counted


def test_first_darkfield_frame_costs_a_fraction_of_a_full_grid_transform_per_led(monkeypatch):
    scope = SimScope("cells", 0)
    scope.led.pattern_name = "Darkfield"
    pixel_um, shape = 0.65, (256, 256)
    padded = scope._region(pixel_um, shape).opd.size
    counter = _CountingFFT(optics.sfft)
    monkeypatch.setattr(optics, "sfft", counter)
    img = scope.label_free_rate(pixel_um, shape)
    lit = scope.led.pattern().n_lit
    assert img is not None and img.shape == shape and lit > 900
    # one full-grid transform per LED whose pupil meets the sampled spectrum was ~0.65 * lit * padded here;
    # LEDs passing a small spectral box are computed on a grid just long enough for their intensity
    assert counter.points < 0.4 * lit * padded, (counter.points / (lit * padded))
