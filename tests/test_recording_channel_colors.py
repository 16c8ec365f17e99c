"""Channel colours of recordings as napari (omero metadata) and OME-XML readers see them: each stain in the
colour of its emission, a virtual stain like the real one, label-free grey, unknown stains told apart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.recording import Recorder, SeriesSpec

SIZE = 32
CHANNELS = ("BF", "Nuclei", "Membrane", "Tubulin-X", "Actin-Y", "nuclei", "membrane", "membrane-sr")
MODALITIES = ("label-free", "fluorescence", "fluorescence", "fluorescence", "fluorescence", "inferred",
              "inferred", "inferred")


def _recording(path: Path) -> Path:
    rec = Recorder(path, "colors", {"kind": "test"})
    s = rec.add_series(SeriesSpec("pos000 Camera", CHANNELS, MODALITIES, (SIZE, SIZE), "uint16", 0.65,
                                  (0.0, 0.0, 0.0)))
    for c, (name, modality) in enumerate(zip(CHANNELS, MODALITIES, strict=True)):
        h = FrameHeader(acquisition_id="colors", seq=c, bundle_id=0, bundle_index=c, bundle_size=len(CHANNELS),
                        channel=name, modality=modality, pattern="", detector="Camera", stage_x_um=0.0,
                        stage_y_um=0.0, stage_z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, dtype="uint16",
                        shape=(SIZE, SIZE), t_exposure_start_ns=1_790_000_000_000_000_000 + c)
        rec.write(Frame(h, np.full((SIZE, SIZE), 1000 + 100 * c, np.uint16)), s, 0, c)
    rec.close()
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(importlib.util.find_spec("napari_ome_zarr") is None, reason="napari-ome-zarr is not installed")
def test_napari_shows_each_stain_in_its_own_colour(tmp_path):
    """Hoechst-like Nuclei blue, CellMask-orange-like Membrane red (both were green), the virtual stains in
    their stain's colour (they were grey), two stains of unknown emission in two colours."""
    from napari_ome_zarr import napari_get_reader

    path = str(_recording(tmp_path / "r.ome.zarr"))
    (_, kw, _), = napari_get_reader(path)(path)
    cmaps = dict(zip([n.split(": ")[1] for n in kw["name"]], kw["colormap"], strict=True))
    rgb = {name: tuple(np.round(np.asarray(cm.colors)[-1][:3], 3)) for name, cm in cmaps.items()}
    assert rgb["BF"] == (1.0, 1.0, 1.0)
    assert rgb["Nuclei"] == (0.0, 0.0, 1.0) and rgb["Membrane"] == (1.0, 0.0, 0.0)
    assert rgb["nuclei"] == rgb["Nuclei"] and rgb["membrane"] == rgb["membrane-sr"] == rgb["Membrane"]
    assert len({rgb["Tubulin-X"], rgb["Actin-Y"]}) == 2


def test_ome_xml_channels_carry_the_same_colours(tmp_path):
    from ome_types import from_xml

    path = _recording(tmp_path / "r.ome.zarr")
    ome = from_xml((path / "OME" / "METADATA.ome.xml").read_text(encoding="utf-8"))
    colors = {c.name: c.color.as_hex().upper() if c.color is not None else None for c in ome.images[0].pixels.channels}
    assert colors["Nuclei"] == colors["nuclei"] == "#00F"
    assert colors["Membrane"] == colors["membrane"] == "#F00"
    assert colors["BF"] == "#FFF"
