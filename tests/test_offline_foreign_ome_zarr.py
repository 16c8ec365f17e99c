"""``scopecast engine --offline`` ("run over this OME-Zarr recording") given an OME-Zarr another tool wrote (here
ome-zarr-py's writer) died with a ``KeyError: 'scopecast'`` traceback; replay said it "holds no inference results".
Both now say in one line that it is not a scopecast recording (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest

from scopecast.models import packages_root


def test_offline_and_replay_name_an_ome_zarr_that_is_not_a_recording(cli, tmp_path):
    zarr = pytest.importorskip("zarr")
    ome_writer = pytest.importorskip("ome_zarr.writer")
    path = tmp_path / "cells.ome.zarr"
    ome_writer.write_image(np.zeros((6, 64, 64), np.uint16), zarr.open_group(str(path), mode="w"), axes="cyx")
    rc, out, err = cli("engine", "--model", packages_root() / "virtual-staining", "--offline", path,
                       "--runtime", "ort-cpu")
    assert rc == 2 and "Traceback" not in err, err
    assert f"scopecast engine: {path} is not a scopecast recording" in err, err
    assert not (tmp_path / "cells.virtual-staining.ome.zarr").exists()  # nothing left beside it
    rc, out, err = cli("replay", "--triggers", packages_root().parents[1] / "docs" / "triggers-colony.yaml",
                       "--results", path)
    assert rc == 2 and f"scopecast replay: {path} is not a scopecast recording" in err, err


def test_offline_names_a_tiff_given_for_a_recording(cli, tmp_path):
    """An OME-TIFF given where an OME-Zarr recording is expected: zarr's 'No group found in store' said nothing
    of what was wanted."""
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, np.zeros((6, 64, 64), np.uint16))
    rc, out, err = cli("engine", "--model", packages_root() / "virtual-staining", "--offline", path,
                       "--runtime", "ort-cpu")
    assert rc == 2 and "Traceback" not in err, err
    assert f"{path} is not an OME-Zarr store" in err and "OME-Zarr recordings scopecast writes" in err, err
