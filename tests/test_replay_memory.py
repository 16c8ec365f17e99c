"""``scopecast replay`` decides on one result at a time, as live triggers do: it read every result of the recording
into memory before deciding on the first (2 MiB per 512² two-channel result; an hour of live results is tens of
GB), so replaying a long session ended in a MemoryError or the OOM killer. Its peak memory no longer grows with
the recording's length. Real recordings (the Recorder) and the real Decider."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.recorder import Recorder, SeriesSpec
from scopecast.daemon.triggers import replay

SIZE = 256
CHANNELS = ("nuclei", "membrane")
RESULT_BYTES = len(CHANNELS) * SIZE * SIZE * 4


def _results(path: Path, n: int) -> Path:
    """``n`` results of model ``m`` shaped like 'scopecast engine --offline' output; every 10th is a dense field."""
    rec = Recorder(path, "r", {"kind": "inference"})
    s = rec.add_series(SeriesSpec("pos000 m", CHANNELS, ("inferred",) * 2, (SIZE, SIZE), "float32", 0.65,
                                  (0.0, 0.0, 0.0)))
    for t in range(n):
        img = np.full((SIZE, SIZE), 0.9 if t % 10 == 9 else 0.1, np.float32)
        for c, ch in enumerate(CHANNELS):
            h = FrameHeader(acquisition_id="r", seq=t, bundle_id=t, bundle_index=c, bundle_size=2, channel=ch,
                            modality="inferred", pattern="", detector="m", stage_x_um=0.0, stage_y_um=0.0,
                            stage_z_um=0.0, exposure_ms=0.0, pixel_size_um=0.65, dtype="float32", shape=(SIZE, SIZE),
                            position_index=0, t_exposure_start_ns=10**9 * (t + 1), t_acquired_ns=10**9 * (t + 1) + 1,
                            extra={"model": "m", "trust": {"ok": True, "reasons": []}})
            rec.write(Frame(h, img), s, t, c)
    rec.close()
    return path


def test_replay_holds_one_result_at_a_time(tmp_path):
    cfg = {"triggers": [{"name": "dense", "model": "m", "measurement": {"kind": "mean", "channel": "nuclei"},
                         "condition": {"above": 0.5, "rearm_below": 0.3}, "cooldown_s": 0, "actions": []}]}
    path = _results(tmp_path / "long.m.ome.zarr", 120)
    tracemalloc.start()
    try:
        decisions = replay(cfg, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(d.event == "fire" for d in decisions) == 12  # every dense field, in order: it still decides
    assert [d.bundle_id for d in decisions if d.event == "fire"] == list(range(9, 120, 10))
    assert peak < 20 * RESULT_BYTES, f"peak {peak / 2**20:.1f} MiB for 120 results of {RESULT_BYTES / 2**20:.1f} MiB"
