import numpy as np
import pytest

from scopecast.daemon.illumination import (
    FIRMWARE_COMMANDS, LABEL_FREE_PATTERNS, PATTERN_NAMES, LedArrayGeometry, LedArrayState, PatternError,
    compute_pattern, parse_led_list,
)

GEOM = LedArrayGeometry(32, 32, 4.0, 50.0)

# IlluminateLedArray's IlluminationPattern values (mmCoreAndDevices DeviceAdapters/IlluminateLEDArray)
ADAPTER_PATTERNS = {
    "Brightfield", "Darkfield", "DPC Top", "DPC Bottom", "DPC Left", "DPC Right",
    *(f"DPC {a:03d} Deg." for a in range(0, 360, 30)), "Color DPC", "Color Darkfield",
    "Manual LED Indicies", "Annulus", "Half Annulus Top", "Half Annulus Bottom", "Half Annulus Left",
    "Half Annulus Right", "Center LED", "Clear",
}


def test_pattern_names_are_the_adapters():
    assert set(PATTERN_NAMES) == ADAPTER_PATTERNS and len(PATTERN_NAMES) == len(ADAPTER_PATTERNS)
    assert LABEL_FREE_PATTERNS == ADAPTER_PATTERNS - {"Clear"}
    assert set(FIRMWARE_COMMANDS.values()) <= ADAPTER_PATTERNS
    assert FIRMWARE_COMMANDS["dpc.l"] == "DPC Left" and FIRMWARE_COMMANDS["dpc.330"] == "DPC 330 Deg."


def test_led_na_follows_geometry_and_led_0_is_the_centre():
    # sin θ = r / sqrt(r² + d²) for every LED
    r = np.hypot(*GEOM.positions_mm.T)
    np.testing.assert_allclose(GEOM.na, r / np.sqrt(r**2 + 50.0**2), rtol=1e-12)
    assert GEOM.na.min() < 0.06  # the centre LEDs are near the axis
    assert np.all(np.diff(GEOM.na) >= -1e-12)  # numbered outwards, like illuminate hardware
    assert GEOM.na[0] == GEOM.na.min()
    # the grid itself is unchanged: 32x32 positions at 4 mm pitch, symmetric about the axis
    assert sorted(set(GEOM.positions_mm[:, 0].tolist())) == [(i - 15.5) * 4.0 for i in range(32)]


@pytest.mark.parametrize("na", [0.1, 0.25, 0.4])
def test_bf_df_split_at_objective_na(na):
    bf = compute_pattern("Brightfield", GEOM, na).weights > 0
    df = compute_pattern("Darkfield", GEOM, na).weights > 0
    assert bf.any() and df.any()
    assert np.all(GEOM.na[bf] < na) and np.all(GEOM.na[df] > na)
    assert not (bf & df).any() and (bf | df).all()  # together: every LED (dark-field reaches NA 1)
    # moving the array closer raises every LED's NA: fewer LEDs stay bright-field
    closer = LedArrayGeometry(32, 32, 4.0, 30.0)
    n_closer = compute_pattern("Brightfield", closer, na).n_lit
    assert n_closer < bf.sum() if na >= 0.25 else n_closer <= bf.sum()


def test_inner_na_hollows_brightfield_and_dpc():
    bf = compute_pattern("Brightfield", GEOM, 0.4, inner_na=0.2)
    assert bf.n_lit and np.all((GEOM.na[bf.lit] >= 0.2) & (GEOM.na[bf.lit] < 0.4))
    dpc = compute_pattern("DPC Top", GEOM, 0.4, inner_na=0.2)
    assert set(dpc.lit) < set(bf.lit)


def test_dpc_halves_partition_brightfield():
    bf = compute_pattern("Brightfield", GEOM, 0.4).weights > 0
    halves = {s: compute_pattern(f"DPC {s}", GEOM, 0.4).weights > 0 for s in ("Left", "Right", "Top", "Bottom")}
    assert not (halves["Left"] & halves["Right"]).any() and not (halves["Top"] & halves["Bottom"]).any()
    assert ((halves["Left"] | halves["Right"]) == bf).all()
    for h in halves.values():
        assert (h <= bf).all() and h.sum() == halves["Left"].sum()  # symmetric array
    nx, ny = GEOM.na_xy.T
    assert np.all(nx[halves["Left"]] < 0) and np.all(ny[halves["Top"]] > 0)


def test_dpc_angles_rotate_the_half_disc():
    nx, ny = GEOM.na_xy.T
    for a in range(0, 360, 30):
        p = compute_pattern(f"DPC {a:03d} Deg.", GEOM, 0.4)
        t = np.deg2rad(a)
        assert p.n_lit and np.all(nx[p.lit] * np.cos(t) + ny[p.lit] * np.sin(t) > 0)
    # counter-clockwise from +x: 0° is the right half, 90° the top, 180° left, 270° bottom
    for a, side in ((0, "Right"), (90, "Top"), (180, "Left"), (270, "Bottom")):
        assert set(compute_pattern(f"DPC {a:03d} Deg.", GEOM, 0.4).lit) == set(compute_pattern(f"DPC {side}", GEOM, 0.4).lit)


def test_annulus_half_annulus_centre_and_brightness():
    an = compute_pattern("Annulus", GEOM, 0.25, annulus_start_na=0.3, annulus_width_na=0.2)
    assert an.n_lit and np.all((GEOM.na[an.lit] >= 0.3) & (GEOM.na[an.lit] <= 0.5))
    default = compute_pattern("Annulus", GEOM, 0.25)  # starts at the objective NA, 0.2 wide
    assert np.all((GEOM.na[default.lit] >= 0.25) & (GEOM.na[default.lit] <= 0.45))
    ha = compute_pattern("Half Annulus Right", GEOM, 0.25, annulus_start_na=0.3, annulus_width_na=0.2)
    assert set(ha.lit) < set(an.lit) and np.all(GEOM.na_xy[ha.lit, 0] > 0)
    cen = compute_pattern("Center LED", GEOM, 0.25)
    assert cen.n_lit == 1 and cen.lit[0] == 0 and GEOM.na[0] == GEOM.na.min()
    half = compute_pattern("Brightfield", GEOM, 0.25, brightness=0.5)
    assert np.allclose(half.weights[half.lit], 0.5)
    assert compute_pattern("Clear", GEOM, 0.25).n_lit == 0


def test_colour_balance_and_colour_patterns():
    white = compute_pattern("Brightfield", GEOM, 0.25, color=(1.0, 1.0, 1.0))
    green = compute_pattern("Brightfield", GEOM, 0.25)  # default: the green emitters only
    assert np.allclose(white.weights[white.lit], 3.0) and np.allclose(green.weights[green.lit], 1.0)
    assert green.mean_wavelength_nm() == 530.0 and 470.0 < white.mean_wavelength_nm() < 630.0
    red = compute_pattern("Brightfield", GEOM, 0.25, color=(1.0, 0.0, 0.0))
    assert red.mean_wavelength_nm() == 630.0
    cdpc = compute_pattern("Color DPC", GEOM, 0.4)
    assert set(cdpc.lit) == set(compute_pattern("Brightfield", GEOM, 0.4).lit)
    nx, ny = GEOM.na_xy.T
    top_left = cdpc.lit[(nx[cdpc.lit] < 0) & (ny[cdpc.lit] > 0)]
    bottom_left = cdpc.lit[(nx[cdpc.lit] < 0) & (ny[cdpc.lit] < 0)]
    assert np.allclose(cdpc.rgb[top_left], [127 / 255, 0, 0]) and np.allclose(cdpc.rgb[bottom_left], [0, 127 / 255, 0])
    cdf = compute_pattern("Color Darkfield", GEOM, 0.25)
    assert cdf.n_lit and np.all((GEOM.na[cdf.lit] > 0.25) & (GEOM.na[cdf.lit] <= 0.45))


def test_unknown_pattern_lists_valid_ones():
    with pytest.raises(PatternError) as e:
        compute_pattern("dpc.l", GEOM, 0.25)  # a firmware command is not a pattern value
    for name in PATTERN_NAMES:
        assert name in str(e.value)


def test_manual_led_lists():
    assert parse_led_list("0.1.2", GEOM) == [0, 1, 2]  # the adapter's ManualLedList form
    assert parse_led_list("l.5.6", GEOM) == [5, 6]  # the firmware command
    assert parse_led_list("12, 13 44", GEOM) == [12, 13, 44]
    p = compute_pattern("Manual LED Indicies", GEOM, 0.25, manual_leds="0.1.2.3")
    assert p.n_lit == 4 and np.allclose(np.sort(GEOM.na[p.lit]), GEOM.na[0])  # the innermost ring
    with pytest.raises(PatternError, match="LED 1024 is outside 0..1023"):
        parse_led_list("0.1024", GEOM)
    with pytest.raises(PatternError, match="cannot read LED"):
        parse_led_list("a.b", GEOM)
    with pytest.raises(PatternError, match="empty"):
        compute_pattern("Manual LED Indicies", GEOM, 0.25, manual_leds="")


def test_pattern_lighting_nothing_is_an_error():
    tiny = LedArrayGeometry(2, 2, 10.0, 20.0)  # every LED far outside NA 0.1
    with pytest.raises(PatternError, match="lights no LED"):
        compute_pattern("Brightfield", tiny, 0.1)


def test_state_emits_only_with_both_shutters_open():
    s = LedArrayState(pattern_name="Brightfield")
    assert s.emitting  # no path shutter: the transmitted path is open; gs defaults to open
    s.global_shutter = False
    assert not s.emitting
    s.global_shutter, s.is_open = True, False
    assert not s.emitting
    s.color_balance = (255, 0, 0)
    assert s.wavelength_nm == 630.0


def test_a_pattern_is_computed_once_and_read_only():
    bf = compute_pattern("Brightfield", GEOM, 0.4)
    assert compute_pattern("Brightfield", GEOM, 0.4) is bf  # a live cycle's patterns come from the cache
    narrower = compute_pattern("Brightfield", GEOM, 0.3)
    assert narrower is not bf and narrower.n_lit < bf.n_lit
    with pytest.raises(ValueError):
        bf.rgb[0] = 1.0  # shared by every caller: nobody may change it
    with pytest.raises(ValueError):
        bf.lit[0] = 5
