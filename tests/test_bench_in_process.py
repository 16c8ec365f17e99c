"""benchmarks/bench_in_process.py runs: its in-process row and a scopecast row, a few bundles at 128².

Both sides must run the same model on the same frames: the simulator with noise
off at one position makes identical bundles, so the in-process callback and the
engine must give the same output (same ONNX Runtime, one thread each).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = 3


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_in_process", ROOT / "benchmarks" / "bench_in_process.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _row(bench, key):
    return next(r for r in bench.ROWS if r.key == key)


@pytest.mark.parametrize("name, shape", [("virtual-staining", (2, 128, 128)), ("super-resolution", (1, 256, 256))])
def test_in_process_and_scopecast_rows_give_the_same_results(bench, tmp_path, name, shape):
    """Each task's own live cycle (six LED-array channels; Membrane alone), both sides the same output."""
    cfg = bench.camera_cfg(128, tmp_path)
    model = bench.live_tier_of(bench.ACCURATE.with_name(name))  # the cheap tier: the test takes seconds
    cycle = bench.cycle_of(model)
    assert len(cycle) == {"virtual-staining": 6, "super-resolution": 1}[name]
    got, runs = {}, {}
    for key in ("inproc-1", "sc-split"):
        out = tmp_path / f"{key}.npy"
        r = bench.run_row(_row(bench, key), model, cfg, 1.0, tmp_path, save=str(out), bundles=BUNDLES)
        assert r["results"] == BUNDLES, (key, r)
        assert r["rate"] > 0, (key, r)
        assert 0 < r["p50"] < 60_000 and math.isfinite(r["p95"]), (key, r)  # exposure of the first frame -> result
        got[key], runs[key] = np.load(out), r
    sc = runs["sc-split"]  # the profile columns: the daemon made every bundle the engine used
    assert sc["frames_per_result"] >= len(cycle)
    assert sc["daemon_cpu_per_result_ms"] > 0 and sc["engine_cpu_per_result_ms"] > 0
    a, b = got["inproc-1"], got["sc-split"]
    assert a.shape == b.shape == shape
    assert np.abs(a).max() > 0  # a real stain, not a withheld (blank) result
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)

