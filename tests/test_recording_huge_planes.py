"""A recording whose array metadata declares enormous planes (crafted or corrupt: a few KB on disk) made
``scopecast engine --offline`` and ``scopecast replay`` allocate the plane (a traceback with "Unable to allocate
74.5 GiB", or the machine's memory until the OOM killer, where the allocation is granted lazily); a pixel type of
megabytes did the same from a 256² plane. Both now refuse from the metadata, before a pixel is read, naming the size
and the limit. The commands run in a child whose address space is capped (8 GiB), so the old behaviour fails the
test instead of exhausting the machine."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.recorder import Recorder, SeriesSpec
from scopecast.models.synthetic import write_package

CAP_BYTES = 8 << 30


def _recording(path: Path, channel: str, dtype: str, model: str | None, ngff: str) -> Path:
    """A one-frame 16×16 recording (``model``: shaped like 'engine --offline' results, else a raw one)."""
    rec = Recorder(path, "r", {"kind": "inference" if model else "live"}, ngff=ngff)
    s = rec.add_series(SeriesSpec("pos000", (channel,), ("inferred" if model else "label-free",), (16, 16), dtype,
                                  0.65, (0.0, 0.0, 0.0)))
    extra = {"model": model, "trust": {"ok": True}} if model else {}
    h = FrameHeader(acquisition_id="r", seq=0, bundle_id=1, bundle_index=0, bundle_size=1, channel=channel,
                    modality="inferred" if model else "label-free", pattern="", detector="Camera", stage_x_um=0.0,
                    stage_y_um=0.0, stage_z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, dtype=dtype,
                    shape=(16, 16), position_index=0, t_exposure_start_ns=1, t_acquired_ns=2, extra=extra)
    rec.write(Frame(h, np.full((16, 16), 300, dtype)), s, 0, 0)
    rec.close()
    return path


def _declare(path: Path, **fields) -> None:
    """Rewrite the first series' array metadata (NGFF 0.4: ``.zarray``, 0.5: ``zarr.json``)."""
    meta = next(p for p in (path / "0" / "0" / ".zarray", path / "0" / "0" / "zarr.json") if p.exists())
    m = json.loads(meta.read_text())
    for key, value in fields.items():
        if key == "yx":
            m["shape"][-2:] = value
        else:
            m[key] = value
    meta.write_text(json.dumps(m))


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))


def _scopecast(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, preexec_fn=_capped)


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_offline_and_replay_refuse_enormous_planes_before_reading(tmp_path, ngff):
    pkg = write_package(tmp_path / "m", ["BF"], ["nuclei"], name="tiny", width=4, layers=2, tile=64)
    raw = _recording(tmp_path / "raw.ome.zarr", "BF", "uint16", None, ngff)
    ok = _scopecast("engine", "--model", pkg, "--offline", raw, "--runtime", "ort-cpu")
    assert ok.returncode == 0 and "1/1 bundles inferred" in ok.stdout, ok.stderr  # the control: it reads
    shutil.rmtree(tmp_path / "raw.tiny.ome.zarr")  # its results, so the rerun is not refused as "already exists"
    _declare(raw, yx=[200_000, 200_000])  # 74.5 GiB of uint16 per plane
    run = _scopecast("engine", "--model", pkg, "--offline", raw, "--runtime", "ort-cpu")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "200000x200000-pixel planes" in run.stderr and "at most 268435456 pixels" in run.stderr, run.stderr

    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "mean",
                               "channel": "nuclei"}, "condition": {"above": 0.5, "rearm_below": -1},
                               "cooldown_s": 0, "actions": []}]}))
    results = _recording(tmp_path / "res.m.ome.zarr", "nuclei", "float32", "m", ngff)
    assert _scopecast("replay", "--triggers", cfg, "--results", results).returncode == 0  # the control
    _declare(results, yx=[300_000, 300_000])
    run = _scopecast("replay", "--triggers", cfg, "--results", results)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "300000x300000-pixel planes" in run.stderr and "268435456" in run.stderr, run.stderr


def test_offline_refuses_pixels_of_megabytes(tmp_path):
    pkg = write_package(tmp_path / "m", ["BF"], ["nuclei"], name="tiny", width=4, layers=2, tile=64)
    raw = _recording(tmp_path / "raw.ome.zarr", "BF", "uint16", None, "0.4")
    _declare(raw, dtype="|V4000000", fill_value=None, compressor=None)  # a 16² plane of 4 MB "pixels": 1 GB
    _declare(raw, yx=[256, 256])  # 244 GiB
    run = _scopecast("engine", "--model", pkg, "--offline", raw, "--runtime", "ort-cpu")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "4000000 bytes each" in run.stderr and "at most 8 bytes" in run.stderr, run.stderr
