"""An OME-TIFF specimen's channel names say which map each channel is (docs/specimens.md), as an OME-Zarr's
``omero`` labels do: a stack named (nuclei, opd) was read in the plain TIFF order (opd, absorption), so the user's
nuclear stain became a 100 µm phase object and the Nuclei channel imaged nothing. Real UniMMCore, a file written
with tifffile."""

from __future__ import annotations

import numpy as np
import tifffile

from scopecast.daemon.sim.specimens_file import load_specimen


def _stained_cell(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei, opd) maps of one round cell with a nucleus, in the simulator's units."""
    yy, xx = np.mgrid[:n, :n]
    r2 = (yy - n // 2) ** 2 + (xx - n // 2) ** 2
    return (100.0 * (r2 < 30**2)).astype(np.float32), (0.1 * (r2 < 80**2)).astype(np.float32)


def test_ome_tiff_channels_are_read_by_their_names(backend, core, tmp_path):
    nuclei, opd = _stained_cell()
    path = tmp_path / "cell.ome.tif"
    tifffile.imwrite(path, np.stack([nuclei, opd]), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": ["nuclei", "opd"]}})
    spec = load_specimen(path, 0.2)
    assert sorted(spec.maps) == ["nuclei", "opd"]
    np.testing.assert_array_equal(spec.maps["nuclei"], nuclei)
    np.testing.assert_array_equal(spec.maps["opd"], opd)

    core.setProperty("Scope", "SpecimenPixelSizeUm", 0.2)
    core.setProperty("Scope", "SpecimenFile", str(path))
    backend.set_channel("Nuclei")
    img = backend.snap(None, 50).data.astype(float)
    h, w = img.shape
    centre, corner = img[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].mean(), img[:16, :16].mean()
    assert centre > corner + 1000, (centre, corner)  # the stained nucleus fluoresces


def test_ome_tiff_without_map_names_keeps_the_tiff_order(tmp_path):
    nuclei, opd = _stained_cell(64)
    path = tmp_path / "plain.ome.tif"
    tifffile.imwrite(path, np.stack([opd, nuclei]), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "phase"]}})
    spec = load_specimen(path, 0.2)
    np.testing.assert_array_equal(spec.maps["opd"], opd)
    np.testing.assert_array_equal(spec.maps["absorption"], nuclei)  # the documented order: opd, absorption, ...
