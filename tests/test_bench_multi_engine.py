"""benchmarks/bench_multi_engine.py runs from a clone: a daemon and two engines as processes, every mode, its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scopecast.models.synthetic import write_package

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_prints_every_mode_for_every_engine(tmp_path):
    a = write_package(tmp_path / "a", ["BF", "DF"], ["nuclei"], name="a", width=4, layers=2, tile=256)
    b = write_package(tmp_path / "b", ["Membrane"], ["membrane-sr"], name="b", width=4, layers=2, tile=256)
    scratch = tmp_path / "tmp"  # the benchmark's temporary folder: removed after a run that succeeded
    scratch.mkdir()
    # the window is fixed (the benchmark's): 6 s, not 2, so a starved engine still has results in it (~26 s in all)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_multi_engine.py"), "--rounds", "1",
                        "--seconds", "6", "--size", "256", "--package", str(a), "--package", str(b)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(scratch)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(scratch.glob("bench-multi-*")), "the benchmark left its daemon's data and logs behind"
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| mode | a results/s") and "b results/s" in rows[0]
    modes = {line.split(" | ")[0].lstrip("| "): line for line in rows[1:]}
    assert set(modes) == {"free-running (as fast as the camera goes)", "paced by the first engine",
                          "paced by all engines (the slowest model)"}, modes
    for line in modes.values():  # each engine delivered results in each mode
        cells = line.strip("| ").split(" | ")
        assert float(cells[1].split()[0]) > 0 and float(cells[5].split()[0]) > 0, line
    assert "ratios within each round, against free-running" in r.stdout
