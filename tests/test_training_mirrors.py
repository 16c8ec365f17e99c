"""Mirror augmentation in training (models/training.py ``mirror_table``, ``_crops``): every augmented crop is a
physical input, normalized as the engine would normalize it.

That a mirrored field's DPC-Left is the mirrored DPC-Right (the permutation itself) is checked on the simulated
scope by tests/test_uncertainty.py; here: which transforms qualify, the renormalization of permuted channels, and
that inputs and targets move together."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from scopecast.daemon.inference.uncertainty import DIHEDRAL, apply, channel_order  # noqa: E402
from scopecast.models.dataset import TASKS  # noqa: E402
from scopecast.models.manifest import Normalization, normalize  # noqa: E402
from scopecast.models.training import _crops, mirror_table  # noqa: E402

VS = TASKS["virtual-staining"]["inputs"]


def _norm(n: int) -> Normalization:
    """Calibrated constants that differ per channel (as the DPC halves' do, a little)."""
    return Normalization(kind="calibrated", offset=[100.0 + 7 * c for c in range(n)],
                         scale=[800.0 + 150 * c for c in range(n)])


def test_direction_specific_inputs_get_the_mirrors_and_isotropic_ones_all_eight():
    vs = mirror_table(VS, _norm(len(VS)))
    assert [t for t, *_ in vs] == [(0, False), (0, True), (2, True), (2, False)]
    for t, order, _, _ in vs:
        assert list(order) == channel_order(VS, t)
    lr = dict(zip(VS, (VS[i] for i in vs[1][1]), strict=True))
    assert lr["DPC-Left"] == "DPC-Right" and lr["DPC-Top"] == "DPC-Top" and lr["BF"] == "BF"
    sr = mirror_table(["Membrane"], _norm(1))
    assert [t for t, *_ in sr] == list(DIHEDRAL) and all(list(o) == [0] for _, o, _, _ in sr)


def test_a_permuted_channel_is_renormalized_to_its_new_channels_constants():
    rng = np.random.default_rng(1)
    raw = [rng.integers(100, 4000, (16, 16)).astype(np.uint16) for _ in VS]
    norm = _norm(len(VS))
    x = normalize(raw, norm)
    for t, order, a, b in mirror_table(VS, norm):
        got = apply(x, t)[order] * a[:, None, None] + b[:, None, None]
        want = normalize([np.ascontiguousarray(f) for f in apply(np.stack(raw), t)[order]], norm)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        if list(order) != list(range(len(VS))):  # without the renormalization a swapped channel is off
            assert np.abs(apply(x, t)[order] - want).max() > 1e-2
    flat = Normalization(kind="percentile", low=1.0, high=99.8)
    assert all(np.all(a == 1) and np.all(b == 0) for _, _, a, b in mirror_table(VS, flat))


def test_crops_move_inputs_and_targets_together_and_draw_every_transform():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, len(VS), 40, 40)).astype(np.float32)
    bf = VS.index("BF")
    y = np.repeat(x[:, bf:bf + 1], 2, axis=1) * 2.0  # an isotropic "target": twice the bright-field input
    table = mirror_table(VS, Normalization(kind="calibrated", offset=[0.0] * len(VS), scale=[1.0] * len(VS)))
    seen = set()
    draw = np.random.default_rng(3)
    for _ in range(8):
        xb, yb = _crops(x, y, 4, 24, 1, draw, table)
        np.testing.assert_allclose(yb.numpy()[:, 0], 2.0 * xb.numpy()[:, bf])
        np.testing.assert_allclose(yb.numpy()[:, 1], 2.0 * xb.numpy()[:, bf])
        for crop in xb.numpy():  # which transform: find it among the source fields' crops
            for t, order, _, _ in table:
                hits = [(k, r, c) for k in range(3) for r in range(17) for c in range(17)
                        if np.array_equal(apply(x[k, :, r:r + 24, c:c + 24], t)[order], crop)]
                if hits:
                    seen.add(t)
                    break
            else:
                raise AssertionError("a crop that is no transform of any field")
    assert seen == {t for t, *_ in table}
    xb, _ = _crops(x, y, 4, 24, 1, np.random.default_rng(3), None)  # off: plain crops
    assert any(np.array_equal(x[k, :, r:r + 24, c:c + 24], xb.numpy()[0])
               for k in range(3) for r in range(17) for c in range(17))
