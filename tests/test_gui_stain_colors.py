"""The viewer draws each model output in the colour napari shows for a recording of it (omero ``color``): nuclei
blue, membrane red, like the real stains; the headless snapshot too."""

import json
import re

import numpy as np
import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.frames import Frame, FrameHeader  # noqa: E402
from scopecast.daemon.recording import Recorder, SeriesSpec  # noqa: E402
from tests.test_gui import app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py

OUTPUTS = ("nuclei", "membrane")
SIZE = 16


def _recorded_colors(tmp_path) -> dict[str, tuple[float, float, float]]:
    """The omero colour (RGB 0-1) of each output in a recording of results, as napari reads it."""
    path = tmp_path / "r.ome.zarr"
    rec = Recorder(path, "colors", {"kind": "test"})
    s = rec.add_series(SeriesSpec("vs", OUTPUTS, ("inferred",) * 2, (SIZE, SIZE), "float32", 0.65, (0.0, 0.0, 0.0)))
    for c, name in enumerate(OUTPUTS):
        h = FrameHeader(acquisition_id="colors", seq=c, bundle_id=0, bundle_index=c, bundle_size=2, channel=name,
                        modality="inferred", pattern="", detector="vs", stage_x_um=0.0, stage_y_um=0.0,
                        stage_z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, dtype="float32", shape=(SIZE, SIZE),
                        t_exposure_start_ns=1_790_000_000_000_000_000 + c)
        rec.write(Frame(h, np.ones((SIZE, SIZE), np.float32)), s, 0, c)
    rec.close()
    channels = json.loads((path / "0" / ".zattrs").read_text())["omero"]["channels"]
    return {ch["label"]: tuple(int(ch["color"][i:i + 2], 16) / 255 for i in (0, 2, 4)) for ch in channels}


def _stains() -> np.ndarray:
    """Nuclei bright in the left half only, membrane in the right half only."""
    y = np.zeros((2, SIZE, SIZE), np.float32)
    y[0, :, : SIZE // 2] = 1.0
    y[1, :, SIZE // 2:] = 1.0
    y[:, 0, 0] = 0.5  # a range to stretch over in each channel
    return y


def _hue(rgb) -> np.ndarray:
    v = np.asarray(rgb, float)
    return v / max(v.max(), 1e-9)


def test_each_output_in_the_colour_of_its_recording(app, tmp_path):
    """The viewer drew nuclei (0.2, 0.5, 1) and membrane green (0.1, 1, 0.3) by position; napari shows the
    recording's nuclei blue and membrane red (by the stain's emission)."""
    from scopecast.gui.panes import ImagePane

    recorded = _recorded_colors(tmp_path)
    pane = ImagePane("model output")
    pane.show_composite(_stains(), list(OUTPUTS), 0.65)
    image = np.asarray(pane.image.image)
    np.testing.assert_allclose(_hue(image[SIZE // 2, 1]), recorded["nuclei"], atol=0.02)
    np.testing.assert_allclose(_hue(image[SIZE // 2, SIZE - 2]), recorded["membrane"], atol=0.02)
    swatches = re.findall(r"rgb\((\d+),(\d+),(\d+)\)'>&#9632;</span> (\w+)", pane.legend_text())
    assert {name: tuple(int(v) / 255 for v in rgb) for *rgb, name in swatches} == recorded


def test_the_headless_snapshot_uses_the_same_colours(tmp_path):
    from scopecast.daemon.snapshot import composite

    recorded = _recorded_colors(tmp_path)
    image = composite(_stains(), list(OUTPUTS))
    np.testing.assert_allclose(_hue(image[SIZE // 2, 1]), recorded["nuclei"], atol=0.02)
    np.testing.assert_allclose(_hue(image[SIZE // 2, SIZE - 2]), recorded["membrane"], atol=0.02)
