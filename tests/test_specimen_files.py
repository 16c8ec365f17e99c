"""A user's own specimen files as the OME-Zarr tools write them (docs/specimens.md): a label image with a channel
axis of one (ome-zarr-py ``axes="cyx"``, bioformats2raw's 5-D ``tczyx``) is a label image, as the same image saved as
TIFF is (it was read as an optical-path map: label ids as µm, no cells); an integer channel stack is refused by
name; a label image where NGFF keeps it (``image.zarr/labels/cells``) and a bioformats2raw series load (they were
refused as "no suffix", and the image store itself was read as a label image). Real UniMMCore, files written with
ome-zarr-py and tifffile."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scopecast.daemon.sim.specimens_file import SpecimenFileError, load_specimen


def _cells() -> np.ndarray:
    lab = np.zeros((240, 240), np.uint16)
    lab[20:100, 20:100] = 1
    lab[130:220, 130:220] = 2
    return lab


def _nuclei_count(backend, core) -> int:
    """Nuclei in a Nuclei snap of the loaded specimen (blobs above half the brightest)."""
    backend.set_channel("Nuclei")
    nuc = backend.snap(None, 50).data.astype(float) - float(core.getProperty("Camera", "Offset"))
    return ndimage.label(nuc > 0.5 * nuc.max())[1]


def _grid_labels(n: int = 300, cells: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    lab = np.zeros((n, n), np.uint16)
    step = n // cells
    for i in range(cells):
        for j in range(cells):
            lab[np.hypot(yy - step // 2 - i * step, xx - step // 2 - j * step) < 0.4 * step] = 1 + i * cells + j
    return lab


@pytest.mark.parametrize("axes", ["cyx", "tczyx"])
def test_a_one_channel_ome_zarr_label_image_becomes_cells(backend, core, tmp_path, axes):
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    lab = _grid_labels()
    path = tmp_path / f"labels_{axes}.zarr"
    root = zarr.open_group(str(path), mode="w")
    ome_writer.write_image(lab.reshape((1,) * (len(axes) - 2) + lab.shape), root, axes=axes)
    core.setProperty("Scope", "SpecimenPixelSizeUm", 0.3)
    core.setProperty("Scope", "SpecimenFile", str(path))
    assert core.getProperty("Scope", "Sample") == "file"

    spec = load_specimen(path, 0.3)
    assert spec.labels is not None and int(spec.labels.max()) == lab.max()  # read as a label image
    assert float(spec.maps["opd"].max()) < 1.0  # a cell's optical path, not a label id in µm

    assert _nuclei_count(backend, core) == lab.max()  # one nucleus per labelled cell


def test_an_integer_channel_stack_is_refused_not_read_as_optical_path(core, tmp_path):
    """A two-colour fluorescence image (camera counts, uint16 CYX) is not a stack of maps: it used to load as
    opd = counts µm and absorption = counts (an opaque square, no nuclei), without a word."""
    tifffile = pytest.importorskip("tifffile")
    good = tmp_path / "labels.tif"
    tifffile.imwrite(good, _grid_labels())
    core.setProperty("Scope", "SpecimenFile", str(good))
    counts = tmp_path / "two_colours.tif"
    tifffile.imwrite(counts, np.full((2, 64, 64), 3000, np.uint16), metadata={"axes": "CYX"})
    with pytest.raises(SpecimenFileError, match=r"two_colours\.tif.*2 integer channels.*not camera counts"):
        core.setProperty("Scope", "SpecimenFile", str(counts))
    assert core.getProperty("Scope", "SpecimenFile") == str(good)  # the previous specimen stays


def test_an_ngff_label_image_inside_its_image_store_is_a_specimen(backend, core, tmp_path):
    zarr = pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    lab = _cells()
    store = tmp_path / "cells.zarr"
    root = zarr.open_group(str(store), mode="w")
    writer.write_image((1000 + 700 * (lab > 0)).astype(np.uint16), root, axes="yx")  # the raw image
    writer.write_labels(lab, root, name="cells", axes="yx", scaler=None)  # its segmentation, where NGFF keeps it
    core.setProperty("Scope", "SpecimenPixelSizeUm", 0.3)
    core.setProperty("Scope", "SpecimenFile", str(store / "labels" / "cells"))
    assert core.getProperty("Scope", "Sample") == "file"
    assert _nuclei_count(backend, core) == 2

    with pytest.raises(SpecimenFileError, match=r"cells\.zarr.*label images beside it.*labels/cells"):
        core.setProperty("Scope", "SpecimenFile", str(store))  # the raw image is not a label image
    assert core.getProperty("Scope", "SpecimenFile") == str(store / "labels" / "cells")  # the specimen stays


def test_a_bioformats2raw_series_is_a_specimen_and_its_root_names_it(backend, core, tmp_path):
    zarr = pytest.importorskip("zarr")
    writer = pytest.importorskip("ome_zarr.writer")
    store = tmp_path / "slide.zarr"
    root = zarr.open_group(str(store), mode="w")
    root.attrs["ome"] = {"version": "0.5", "bioformats2raw.layout": 3}
    writer.write_image(_cells(), root.create_group("0"), axes="yx")
    with pytest.raises(SpecimenFileError, match=r"slide\.zarr.*bioformats2raw.*slide\.zarr/0"):
        core.setProperty("Scope", "SpecimenFile", str(store))
    core.setProperty("Scope", "SpecimenPixelSizeUm", 0.3)
    core.setProperty("Scope", "SpecimenFile", str(store / "0"))
    assert core.getProperty("Scope", "Sample") == "file"
    assert _nuclei_count(backend, core) == 2
