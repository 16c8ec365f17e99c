"""A recording's series share one time axis: each series' NGFF time translation is when it began (after the
recording's first exposure), and offline results sit on their source's time axis, time point for time point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_recording import _began_s, _time_axis

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.recording import Recorder, SeriesSpec, open_recording
from scopecast.models.synthetic import write_package

T0_NS = 1_790_000_000_000_000_000
SIZE = 64
CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def _source(path: Path, starts_s: list[list[float]]) -> Path:
    """A recording of live cycles whose channels began at ``starts_s[t][c]`` (s): a slow first cycle."""
    rec = Recorder(path, "src", {"kind": "live"})
    s = rec.add_series(SeriesSpec("pos000 Camera", tuple(CYCLE), ("label-free",) * len(CYCLE), (SIZE, SIZE),
                                  "uint16", 0.65, (0.0, 0.0, 0.0)))
    rng = np.random.default_rng(0)
    for t, starts in enumerate(starts_s):
        for c, start in enumerate(starts):
            t_ns = T0_NS + int(start * 1e9)
            h = FrameHeader(acquisition_id="src", seq=t * len(CYCLE) + c, bundle_id=t, bundle_index=c,
                            bundle_size=len(CYCLE), channel=CYCLE[c], modality="label-free", pattern="",
                            detector="Camera", stage_x_um=0.0, stage_y_um=0.0, stage_z_um=0.0, exposure_ms=10.0,
                            pixel_size_um=0.65, dtype="uint16", shape=(SIZE, SIZE), t_exposure_start_ns=t_ns,
                            t_acquired_ns=t_ns + 10_000_000)
            rec.write(Frame(h, (2000 + rng.integers(0, 2000, (SIZE, SIZE))).astype(np.uint16)), s, t, c)
    rec.close()
    return path


def test_offline_results_sit_on_their_source_time_axis(tmp_path):
    """Each result's time point shows where its source cycle does (in napari, the same slider position shows
    the stain of the cycle on screen), and its OME-XML DeltaT counts from the source's first exposure. Before,
    a result's time was its bundle's last frame and its own first result time 0: with a slow first cycle the
    results' time step was 0.8 s against the source's 1.0 s, and napari paired cycle 3 with result 2."""
    from ome_types import from_xml

    starts = [[0.0, 0.3, 0.6]] + [[t + 0.01 * c for c in range(len(CYCLE))] for t in range(1, 4)]
    src_path = _source(tmp_path / "src.ome.zarr", starts)
    model = write_package(tmp_path / "m", CYCLE, ["nuclei", "membrane"], name="tiny", width=8, layers=3, tile=128)
    report = run_offline(model, src_path, runtime="ort-cpu")
    assert report.inferred == report.bundles == 4, report
    src, out = open_recording(src_path).series[0], open_recording(report.output).series[0]
    (src_scale, src_shift), (out_scale, out_shift) = _time_axis(src), _time_axis(out)
    for t, began in _began_s(src, T0_NS).items():
        assert src_shift + t * src_scale == pytest.approx(began, abs=0.02)
        assert out_shift + t * out_scale == pytest.approx(src_shift + t * src_scale, abs=1e-6), t
    ome = from_xml((Path(report.output) / "OME" / "METADATA.ome.xml").read_text(encoding="utf-8"))
    by_t = {h.index["t"]: h.t_exposure_start_ns for h in out.frames}
    for plane in ome.images[0].pixels.planes:
        assert plane.delta_t == pytest.approx((by_t[plane.the_t] - T0_NS) / 1e9)
