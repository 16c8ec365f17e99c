"""A model's one output (the super-resolved membrane) is drawn in its stain's colour, as a recording of it shows in
napari (membrane red; daemon/stain_colors.py), in the viewer and in the headless snapshot: not grey, which reads as
a camera frame."""

import numpy as np
import pytest

pg = pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.stain_colors import output_rgb  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import app, window_on_engine  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def _drawn(pane) -> np.ndarray:
    """The pane's image as Qt draws it (RGB uint8, H×W×3): its values through its LUT."""
    pane.image.render()
    rgb = pane.image.qimage.convertToFormat(pg.QtGui.QImage.Format.Format_RGB888)  # indexed (a LUT) or not
    return pg.functions.ndarray_from_qimage(rgb)[..., :3].astype(float)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """The mean colour of the brightest drawn pixels, scaled to a peak of 1."""
    bright = rgb[rgb.sum(axis=-1) >= np.percentile(rgb.sum(axis=-1), 99)]
    mean = bright.mean(axis=0)
    return mean / max(mean.max(), 1e-9)


def test_the_super_resolved_membrane_is_drawn_red(app, daemon, client, tmp_path):
    sr = write_package(tmp_path / "sr", ["Membrane"], ["membrane-sr"], name="sr", task="super-resolution", scale=2,
                       width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, sr) as (engine, window):
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and engine.subscriptions.of("result", "shm") >= 1)
        client.request("start_live", channels=[{"name": "Membrane", "exposure_ms": 20}], max_cycles=50)
        pane = window.panes[engine.results_address]
        assert spin(app, lambda: pane.values is not None, 90), "no super-resolved result shown"
        client.request("stop")
        assert pane.channel_names == ["membrane-sr"]
        np.testing.assert_allclose(_hue(_drawn(pane)), output_rgb(["membrane-sr"])[0], atol=0.02)


def test_the_headless_snapshot_draws_one_output_in_its_colour():
    from scopecast.daemon.snapshot import snapshot

    y = np.zeros((1, 32, 32), np.float32)
    y[0, 8:24, 8:24] = 1.0
    header = {"model": "sr", "task": "super-resolution", "channels": ["membrane-sr"], "scale_factor": 2,
              "pixel_size_um": 0.325, "trust": {"ok": True, "score": 1.0, "reasons": []}}
    img = snapshot({}, [(header, y)]).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 30) & (img[..., 2] < 30)  # the square, not the labels' text
    assert output_rgb(["membrane-sr"])[0] == (1.0, 0.0, 0.0)
    assert red.sum() >= 0.9 * 16 * 16, "the super-resolved membrane is not drawn red"
