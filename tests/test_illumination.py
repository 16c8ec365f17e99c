import numpy as np
import pytest

from scopecast.daemon.illumination import (
    PATTERN_NAMES, LedArrayGeometry, PatternError, compute_pattern, parse_led_list,
)

GEOM = LedArrayGeometry(32, 32, 4.0, 50.0)


def test_led_na_follows_geometry():
    # sin θ = r / sqrt(r² + d²) for every LED
    r = np.hypot(*GEOM.positions_mm.T)
    np.testing.assert_allclose(GEOM.na, r / np.sqrt(r**2 + 50.0**2), rtol=1e-12)
    assert GEOM.na.min() < 0.06  # the centre LEDs are near the axis


@pytest.mark.parametrize("na", [0.1, 0.25, 0.4])
def test_bf_df_split_at_objective_na(na):
    bf = compute_pattern("bf", GEOM, na).weights > 0
    df = compute_pattern("df", GEOM, na).weights > 0
    assert bf.any() and df.any()
    assert np.all(GEOM.na[bf] < na) and np.all(GEOM.na[df] > na)
    assert not (bf & df).any()
    # moving the array closer raises every LED's NA: fewer LEDs stay bright-field
    closer = LedArrayGeometry(32, 32, 4.0, 30.0)
    n_closer = compute_pattern("bf", closer, na).n_lit
    assert n_closer < bf.sum() if na >= 0.25 else n_closer <= bf.sum()


def test_dpc_halves_partition_brightfield():
    bf = compute_pattern("bf", GEOM, 0.4).weights > 0
    halves = {s: compute_pattern(f"dpc.{s}", GEOM, 0.4).weights > 0 for s in "lrtb"}
    assert not (halves["l"] & halves["r"]).any() and not (halves["t"] & halves["b"]).any()
    for h in halves.values():
        assert (h <= bf).all() and h.sum() == halves["l"].sum()  # symmetric array
    nx, ny = GEOM.na_xy.T
    assert np.all(nx[halves["l"]] < 0) and np.all(ny[halves["t"]] > 0)


def test_annulus_and_centre_and_brightness():
    an = compute_pattern("an", GEOM, 0.25, inner_na=0.3, outer_na=0.5)
    assert np.all((GEOM.na[an.lit] >= 0.3) & (GEOM.na[an.lit] <= 0.5))
    ha = compute_pattern("ha.r", GEOM, 0.25, inner_na=0.3, outer_na=0.5)
    assert set(ha.lit) < set(an.lit) and np.all(GEOM.na_xy[ha.lit, 0] > 0)
    cen = compute_pattern("cen", GEOM, 0.25)
    assert cen.n_lit == 1 and GEOM.na[cen.lit[0]] == GEOM.na.min()
    half = compute_pattern("bf", GEOM, 0.25, brightness=0.5)
    assert np.allclose(half.weights[half.lit], 0.5)
    assert compute_pattern("x", GEOM, 0.25).n_lit == 0


def test_unknown_pattern_lists_valid_ones():
    with pytest.raises(PatternError) as e:
        compute_pattern("dpc.x", GEOM, 0.25)
    for name in PATTERN_NAMES:
        assert name in str(e.value)


def test_manual_led_lists():
    assert parse_led_list("l.15.16, 3 l.0.0", GEOM) == [15 * 32 + 16, 3, 0]
    p = compute_pattern("manual", GEOM, 0.25, manual_leds="l.1.1,l.1.2")
    assert p.n_lit == 2
    with pytest.raises(PatternError, match="outside the 32x32 array"):
        parse_led_list("l.40.1", GEOM)
    with pytest.raises(PatternError, match="cannot read LED"):
        parse_led_list("l.a.b", GEOM)
    with pytest.raises(PatternError, match="empty"):
        compute_pattern("manual", GEOM, 0.25, manual_leds="")


def test_pattern_lighting_nothing_is_an_error():
    tiny = LedArrayGeometry(2, 2, 10.0, 20.0)  # every LED far outside NA 0.1
    with pytest.raises(PatternError, match="lights no LED"):
        compute_pattern("bf", tiny, 0.1)
