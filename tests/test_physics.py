"""The simulator's physics, checked against theory through the real device chain."""

import numpy as np
import pytest

from scopecast.daemon.sim import optics
from scopecast.daemon.sim.slide import GRATING_PERIOD_UM, Slide


def _snap(backend, channel, exposure=None, detector=None):
    backend.set_channel(channel)
    return backend.snap(detector, exposure).data.astype(np.float64)


def _fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a single peak (linear interpolation), in samples."""
    p = profile - profile.min()
    half = p.max() / 2
    i = int(np.argmax(p))
    left = i - 1
    while p[left] > half:
        left -= 1
    right = i + 1
    while p[right] > half:
        right += 1
    xl = left + (half - p[left]) / (p[left + 1] - p[left])
    xr = right - 1 + (p[right - 1] - half) / (p[right - 1] - p[right])
    return xr - xl


def test_widefield_psf_fwhm_matches_theory():
    wl, na, px = 0.52, 0.65, 0.02  # fine sampling: 18 samples across the FWHM
    delta = np.zeros((256, 256), np.float32)
    delta[128, 128] = 1
    psf = optics.fluorescence_image(delta, optics.widefield_otf((256, 256), px, wl, na))
    measured = _fwhm(psf[128]) * px
    assert measured == pytest.approx(optics.airy_fwhm_um(wl, na), rel=0.10)


def test_bead_image_through_camera_has_theoretical_fwhm(backend, core):
    # a 100 nm bead imaged by the 40x/0.65 objective on a camera with 1 µm pixels
    # (25 nm at the sample) -- the whole device chain, noise included
    core.setProperty("Scope", "Sample", "beads")
    core.setConfig("Objective", "40x")
    core.setProperty("Camera", "PhysicalPixelSizeUm", 1.0)
    bx, by = Slide("beads", 0)._tile_beads(0, 0)[0]
    backend.move_um(bx, by)
    img = _snap(backend, "Nuclei", exposure=10)  # NA⁴/M²: 46x the photons of 10x/0.25 from the same bead
    iy, ix = np.unravel_index(np.argmax(img), img.shape)
    px = 1.0 / 40
    measured = np.mean([_fwhm(img[iy, ix - 40: ix + 41]), _fwhm(img[iy - 40: iy + 41, ix])]) * px
    assert measured == pytest.approx(optics.airy_fwhm_um(0.460, 0.65), rel=0.10)


def test_darkfield_background_is_dark_without_sample(backend, core):
    core.setProperty("Scope", "Sample", "blank")
    offset = float(core.getProperty("Camera", "Offset"))
    bf = _snap(backend, "BF", exposure=10) - offset
    df = _snap(backend, "DF", exposure=10) - offset
    assert bf.mean() > 1000
    assert abs(df.mean()) < 2.0  # read noise only: 1.6 e- × 0.5 ADU/e-
    assert abs(df.mean()) / bf.mean() < 1e-3


def test_darkfield_shows_scattering_edges(backend, core):
    df = _snap(backend, "DF", exposure=50)
    offset = float(core.getProperty("Camera", "Offset"))
    assert np.percentile(df, 99.5) - offset > 20 * max(np.median(df) - offset, 1)


def test_dpc_of_pure_phase_gradient_is_antisymmetric(backend, core):
    core.setProperty("Scope", "Sample", "phase-grating")
    lft, rgt = _snap(backend, "DPC-Left", 10), _snap(backend, "DPC-Right", 10)
    top, bot = _snap(backend, "DPC-Top", 10), _snap(backend, "DPC-Bottom", 10)
    dl, dr = lft - lft.mean(), rgt - rgt.mean()
    # the grating varies along x only: the left/right signals are mirror images
    assert np.corrcoef(dl.ravel(), dr.ravel())[0, 1] < -0.9
    dpc = (lft - rgt) / (lft + rgt)
    # DPC follows the phase gradient dφ/dx ∝ cos(2πx/period): zero mean, linear in it
    prof = dpc.mean(axis=0)
    x_um = backend.position_um()[0] + (np.arange(lft.shape[1]) - lft.shape[1] / 2 + 0.5) * backend.pixel_size_um()
    grad = np.cos(2 * np.pi * x_um / GRATING_PERIOD_UM)
    assert abs(np.corrcoef(prof, grad)[0, 1]) > 0.95
    assert abs(prof.mean()) < 0.1 * prof.std()
    # no gradient along y: top/bottom DPC carries only noise
    assert ((top - bot) / (top + bot)).mean(axis=0).std() < 0.1 * prof.std()


def test_brightfield_mean_scales_linearly_with_exposure(backend, core):
    offset = float(core.getProperty("Camera", "Offset"))
    exposures = np.array([1.0, 2.0, 4.0, 8.0])
    means = np.array([(_snap(backend, "BF", e) - offset).mean() for e in exposures])
    slope, intercept = np.polyfit(exposures, means, 1)
    resid = means - (slope * exposures + intercept)
    assert np.max(np.abs(resid)) < 0.005 * means.max()
    assert abs(intercept) < 0.01 * means.max()


def test_defocus_removes_high_frequencies(backend, core):
    def high_freq_energy(img):
        spec = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
        n = img.shape[0]
        fy, fx = np.mgrid[-n // 2: n // 2, -n // 2: n // 2] / n
        return spec[np.hypot(fx, fy) > 0.12].sum()

    focused = _snap(backend, "Nuclei", 100)
    backend.move_um(z=15.0)
    defocused = _snap(backend, "Nuclei", 100)
    assert high_freq_energy(defocused) < 0.3 * high_freq_energy(focused)


def test_super_resolution_ground_truth_is_sharper(backend, core):
    wide = _snap(backend, "Membrane", 100)
    sted = _snap(backend, "Membrane", 100, detector="STED")
    assert sted.shape == (2 * wide.shape[0], 2 * wide.shape[1])
    # same field of view: downsampled ground truth correlates with the widefield image
    small = sted.reshape(wide.shape[0], 2, wide.shape[1], 2).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), wide.ravel())[0, 1] > 0.8
    # and the narrowed PSF is what makes it sharp: factor 4 vs factor 1 at equal sampling
    offset = float(core.getProperty("STED", "Offset"))

    def sharpness(im):
        return np.mean(np.abs(np.diff(im, axis=1))) / (im.mean() - offset)

    core.setProperty("STED", "StedFactor", 1.0)
    plain = _snap(backend, "Membrane", 100, detector="STED")
    assert sharpness(sted) > 1.3 * sharpness(plain)


def test_blinking_mode_gives_sparse_emitters_with_ground_truth(backend, core):
    core.setProperty("Camera", "FluorophoreMode", "Blinking")
    backend.set_channel("Membrane")
    backend.set_exposure_ms(20)
    frames = [backend.snap() for _ in range(3)]
    emitters = [f.extra["emitters_xy_um_photons"] for f in frames]
    assert all(len(e) > 0 for e in emitters)
    assert emitters[0] != emitters[1]  # different molecules blink each frame
    img = frames[0].data.astype(float) - float(core.getProperty("Camera", "Offset"))
    px = backend.pixel_size_um()
    x0, y0, _ = backend.position_um()
    h, w = img.shape
    for ex, ey, n in emitters[0][:5]:
        c, r = int(round((ex - x0) / px + w / 2 - 0.5)), int(round((ey - y0) / px + h / 2 - 0.5))
        if 2 <= r < h - 2 and 2 <= c < w - 2 and n > 500:
            assert img[r - 1: r + 2, c - 1: c + 2].sum() > 0.2 * n * 0.8 * 0.5  # QE × gain


def test_blinking_emitters_follow_the_objective_and_the_focus(backend, core):
    """A single molecule gives NA⁴ photons like the ensemble (excitation ∝ NA², collection ∝ NA²), and
    20 µm out of focus its light spreads far beyond the in-focus spot."""
    core.setProperty("Camera", "FluorophoreMode", "Blinking")
    core.setProperty("Camera", "Noise", "Off")
    backend.set_channel("Membrane")
    offset = float(core.getProperty("Camera", "Offset"))

    def emitters(objective, z=0.0, frames=6):
        core.setConfig("Objective", objective)
        backend.move_um(z=z)
        out = []
        for _ in range(frames):
            f = backend.snap(None, 20)
            out.append((f.data.astype(float) - offset, f.extra["emitters_xy_um_photons"]))
        return out

    def photons(objective):
        return np.exp(np.mean([np.log(n) for _, em in emitters(objective) for _, _, n in em]))

    assert photons("20x") / photons("10x") == pytest.approx((0.40 / 0.25) ** 4, rel=0.25)

    def spot_fraction(z):
        frames = emitters("20x", z, frames=12)
        px, (x0, y0, _) = backend.pixel_size_um(), backend.position_um()
        fractions = []
        for img, em in frames:
            h, w = img.shape
            for ex, ey, n in em:
                c, r = int(round((ex - x0) / px + w / 2 - 0.5)), int(round((ey - y0) / px + h / 2 - 0.5))
                if 2 <= r < h - 2 and 2 <= c < w - 2:
                    fractions.append(img[r - 1: r + 2, c - 1: c + 2].sum() / (n * 0.8 * 0.5))  # QE × gain
        assert fractions
        return float(np.median(fractions))

    try:
        assert spot_fraction(0.0) > 0.3
        assert spot_fraction(20.0) < 0.05
    finally:
        backend.move_um(z=0.0)
        core.setProperty("Camera", "FluorophoreMode", "Ensemble")


def test_photobleaching_dims_repeated_exposures(backend, core):
    core.setProperty("Scope", "Photobleaching", "On")
    first = _snap(backend, "Nuclei", 500).mean()
    for _ in range(5):
        last = _snap(backend, "Nuclei", 500).mean()
    assert last < 0.9 * first
    core.setProperty("Scope", "Photobleaching", "Off")


def test_photobleaching_follows_the_excitation_irradiance(backend, core):
    """Epi excitation at the sample ∝ NA² (half of the NA⁴/M² rule): the same exposure bleaches
    (0.65/0.25)² = 6.8x as much under the 40x/0.65 objective as under the 10x/0.25 one."""
    core.setProperty("Camera", "Noise", "Off")
    core.setProperty("Scope", "Photobleaching", "On")
    offset = float(core.getProperty("Camera", "Offset"))
    rates = {}
    try:
        for objective, x in (("10x", 0.0), ("40x", 5000.0)):  # a fresh position each
            core.setConfig("Objective", objective)
            backend.move_um(x, 0.0)
            first = (_snap(backend, "Membrane", 20) - offset).sum()
            second = (_snap(backend, "Membrane", 20) - offset).sum()
            rates[objective] = -np.log(second / first)
    finally:
        core.setProperty("Scope", "Photobleaching", "Off")
    assert rates["10x"] > 0
    assert rates["40x"] / rates["10x"] == pytest.approx((0.65 / 0.25) ** 2, rel=0.05)


def test_noise_off_gives_the_expected_counts(backend, core):
    noisy = [_snap(backend, "BF", 10) for _ in range(2)]
    core.setProperty("Camera", "Noise", "Off")
    clean = [_snap(backend, "BF", 10) for _ in range(2)]
    assert np.array_equal(clean[0], clean[1]) and not np.array_equal(noisy[0], noisy[1])
    assert clean[0].mean() == pytest.approx(noisy[0].mean(), rel=1e-3)
    # shot noise: variance of the difference of two noisy frames ≈ 2 × mean electrons × gain²
    offset, gain = float(core.getProperty("Camera", "Offset")), float(core.getProperty("Camera", "Gain"))
    electrons = (clean[0] - offset) / gain
    var_adu = np.var(noisy[0] - noisy[1]) / 2
    assert var_adu == pytest.approx(electrons.mean() * gain**2, rel=0.1)


def test_noise_off_frames_are_kept_and_exactly_the_rendered_ones(backend, core):
    """Without noise the camera copies a frame it made for the same photon maps and settings; every state
    change (pattern, position, exposure, gain, photobleaching) still gives the frame rendered anew."""
    core.setProperty("Camera", "Noise", "Off")
    camera = core._pydevices["Camera"]  # its kept frames, to render the reference anew

    def snap_and_fresh(channel, exposure=10):
        kept = _snap(backend, channel, exposure)
        camera._frames.clear()
        return kept, _snap(backend, channel, exposure)

    cycle = ["BF", "DF", "DPC-Left", "DPC-Right"]
    first = {c: _snap(backend, c, 10) for c in cycle}
    for c in cycle:  # a second cycle copies the kept frames: the same as rendering them
        kept, fresh = snap_and_fresh(c)
        assert np.array_equal(kept, first[c]) and np.array_equal(kept, fresh)
    assert len({first[c].tobytes() for c in cycle}) == len(cycle)
    x, y, z = backend.position_um()
    backend.move_um(x + 40.0, y)  # another field
    moved, fresh = snap_and_fresh("BF")
    assert not np.array_equal(moved, first["BF"]) and np.array_equal(moved, fresh)
    backend.move_um(x, y)
    assert np.array_equal(_snap(backend, "BF", 10), first["BF"])
    longer, fresh = snap_and_fresh("BF", 20)
    assert np.array_equal(longer, fresh) and longer.mean() > first["BF"].mean() + 100
    assert np.array_equal(_snap(backend, "BF", 10), first["BF"])  # kept again
    gain = float(core.getProperty("Camera", "Gain"))
    core.setProperty("Camera", "Gain", gain * 2)
    doubled, fresh = snap_and_fresh("BF")
    assert np.array_equal(doubled, fresh) and doubled.mean() > first["BF"].mean() + 100
    core.setProperty("Camera", "Gain", gain)
    core.setProperty("Scope", "Photobleaching", "On")
    try:
        dims = [_snap(backend, "Nuclei", 500).mean() for _ in range(4)]
    finally:
        core.setProperty("Scope", "Photobleaching", "Off")
    assert dims[-1] < 0.95 * dims[0]  # each exposure bleaches: never a kept frame


def test_led_array_distance_follows_the_inverse_square_law(backend, core):
    """Each LED lights the sample as 1/distance²: an array twice as far lights ~4x the LEDs inside the NA,
    each at a quarter of the irradiance, so bright-field stays about as bright (it was 4x brighter)."""
    core.setProperty("Camera", "Noise", "Off")
    core.setProperty("Scope", "Sample", "blank")
    offset = float(core.getProperty("Camera", "Offset"))
    signal, leds = {}, {}
    try:
        for d in (50.0, 100.0):
            core.setProperty("LED", "ArrayDistanceFromSample", d)
            signal[d] = (_snap(backend, "BF", 2) - offset).mean()
            leds[d] = int(core.getProperty("LED", "LitLedCount"))
    finally:
        core.setProperty("LED", "ArrayDistanceFromSample", 50.0)
    assert leds[100.0] > 3 * leds[50.0]
    assert signal[100.0] / signal[50.0] == pytest.approx(leds[100.0] / leds[50.0] * (50 / 100) ** 2, rel=0.01)


def test_brightness_follows_the_objective_and_the_binning(backend, core):
    """Bright-field per pixel ∝ (pixel at the sample)² × LEDs lit inside the NA; epi-fluorescence ∝ NA⁴/M²
    (the same region of the slide gives NA⁴ times the photons); 2×2 binning sums four pixels."""
    from scopecast.daemon.illumination import LedArrayGeometry, compute_pattern

    core.setProperty("Camera", "Noise", "Off")
    offset = float(core.getProperty("Camera", "Offset"))

    def signal(channel, objective, exposure, binning="1"):
        core.setConfig("Objective", objective)
        core.setProperty("Camera", "Binning", binning)
        return _snap(backend, channel, exposure) - offset

    core.setProperty("Scope", "Sample", "blank")
    bf10, bf20 = signal("BF", "10x", 2).mean(), signal("BF", "20x", 2).mean()
    leds = {na: compute_pattern("Brightfield", LedArrayGeometry(), na).weights.sum() for na in (0.25, 0.40)}
    assert bf20 / bf10 == pytest.approx(leds[0.40] / leds[0.25] * (10 / 20) ** 2, rel=0.01)
    assert signal("BF", "10x", 2, "2").mean() / bf10 == pytest.approx(4.0, rel=0.01)
    assert signal("BF", "20x", 10).max() < 0.5 * float(core.getProperty("Camera", "FullWellElectrons")) * 0.5
    assert signal("BF", "4x", 10).min() >= float(core.getProperty("Camera", "FullWellElectrons")) * 0.5  # 6x the area

    core.setProperty("Scope", "Sample", "beads")
    wide, narrow = signal("Nuclei", "10x", 1), signal("Nuclei", "20x", 1)
    h, w = wide.shape
    same_region = wide[h // 4: h - h // 4, w // 4: w - w // 4]  # the field of view of the 20x objective
    ceiling = float(core.getProperty("Camera", "FullWellElectrons")) * 0.5 * 0.9  # no bead near the full well
    assert 0 < same_region.max() < ceiling and 0 < narrow.max() < ceiling
    assert narrow.sum() / same_region.sum() == pytest.approx((0.40 / 0.25) ** 4, rel=0.05)


@pytest.mark.parametrize("objective", ["10x", "4x"])
@pytest.mark.parametrize(("channel", "exposure"), [("DF", 5), ("BF", 1), ("DPC-Left", 2), ("Nuclei", 5)])
def test_a_binned_frame_is_the_sum_of_the_unbinned_pixels(core, objective, channel, exposure):
    """On-chip binning sums the charge of binning² pixels: the optics were re-imaged on the coarse grid instead,
    which dropped the light of every LED needing sample detail finer than a binned pixel (dark-field kept 0.78
    of it at 10x, 0.48 at 4x) and made every label-free binned frame another image."""
    core.setProperty("Camera", "Noise", "Off")
    offset = float(core.getProperty("Camera", "Offset"))
    core.setConfig("Objective", objective)
    core.setConfig("Channel", channel)
    core.setExposure(exposure)

    def snap(binning):
        core.setProperty("Camera", "Binning", binning)
        core.snapImage()
        return core.getImage().astype(float) - offset

    try:
        full, binned = snap("1"), snap("2")
    finally:
        core.setProperty("Camera", "Binning", "1")
    full_well_adu = float(core.getProperty("Camera", "FullWellElectrons")) * float(core.getProperty("Camera",
                                                                                                     "Gain"))
    assert 0 < full.max() and 4 * full.max() < full_well_adu  # nothing clipped in either frame
    h, w = binned.shape
    summed = full[: 2 * h, : 2 * w].reshape(h, 2, w, 2).sum(axis=(1, 3))
    # before the fix: DF kept 0.78 (10x) / 0.48 (4x) of its light, and pixel correlations were 0.25-0.97
    assert binned.mean() == pytest.approx(summed.mean(), rel=0.01)
    assert np.corrcoef(summed.ravel(), binned.ravel())[0, 1] > 0.99
    assert np.abs(binned - summed).max() <= 0.01 * summed.max() + 3  # rounding of four pixels vs one


@pytest.mark.parametrize(("gain", "read_noise"), [(0.5, 1.6), (2.0, 1.6), (1.0, 6.0)])
def test_dark_frames_show_the_offset_and_the_read_noise(core, gain, read_noise):
    core.setProperty("Scope", "Sample", "blank")
    core.setConfig("Channel", "DF")  # a blank slide in dark-field: no photon reaches the camera
    core.setExposure(10)
    core.setProperty("Camera", "Gain", gain)
    core.setProperty("Camera", "ReadNoiseElectrons", read_noise)
    offset = float(core.getProperty("Camera", "Offset"))
    frames = []
    for _ in range(4):
        core.snapImage()
        frames.append(core.getImage().astype(float))
    dark = np.stack(frames)
    expected_sd = np.sqrt((gain * read_noise) ** 2 + 1 / 12)  # read noise + ADC rounding
    # before the fix: mean 100.30 / 101.28 / 102.39 ADU, sd 0.52 / 1.88 / 3.51 ADU, no pixel below the offset
    assert dark.mean() == pytest.approx(offset, abs=0.05 * expected_sd + 0.02)
    assert dark.std() == pytest.approx(expected_sd, rel=0.05)
    assert (dark < offset).mean() > 0.2
