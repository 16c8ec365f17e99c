"""A scan's series are named after its positions' useq ``name`` (as pymmcore-plus's OME-Zarr / OME-TIFF writers
name them), with the grid tile when the scan has a grid; unnamed positions keep ``pos<index>``. The names were
dropped: every series read ``pos000 Camera``, ``pos001 Camera``, … in OME-XML, NGFF and so in napari and
ome-zarr-py, the names surviving only in the stored sequence JSON. Real daemon on the simulated scope."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scopecast.daemon.recording import open_recording


def _scan(client, sequence: dict) -> Path:
    done = client.wait(client.request("run_scan", sequence=sequence)["id"], timeout_s=120)
    assert done["status"] == "done", done
    return Path(done["path"])


def _ome_xml_names(path: Path) -> list[str]:
    from ome_types import from_xml

    return [im.name for im in from_xml((path / "OME" / "METADATA.ome.xml").read_text()).images]


def test_series_carry_the_names_of_the_scan_positions(client):
    from ome_zarr.utils import find_multiscales

    path = _scan(client, {"channels": [{"config": "BF", "exposure": 1.0}],
                          "stage_positions": [{"x": 0.0, "y": 0.0, "name": "well A1"}, {"x": 100.0, "y": 0.0},
                                              {"x": 200.0, "y": 0.0, "name": "B2"}]})
    names = ["well A1 Camera", "pos001 Camera", "B2 Camera"]
    assert _ome_xml_names(path) == names
    assert [name for _, name, _ in find_multiscales(path)] == names  # what ome-zarr-py users see
    rec = open_recording(path)
    assert [s.name for s in rec.series] == names
    assert [s.attrs["omero"]["name"] for s in rec.series] == names
    assert [s.frames[0].stage_x_um for s in rec.series] == [0.0, 100.0, 200.0]


def test_grid_tiles_of_a_named_position_are_named_by_tile(client):
    path = _scan(client, {"channels": [{"config": "BF", "exposure": 1.0}],
                          "grid_plan": {"rows": 1, "columns": 2, "fov_width": 50.0, "fov_height": 50.0},
                          "stage_positions": [{"x": 0.0, "y": 0.0, "name": "A1"}, {"x": 200.0, "y": 0.0}]})
    assert _ome_xml_names(path) == ["A1 g000 Camera", "A1 g001 Camera", "pos002 Camera", "pos003 Camera"]
    assert [s.frames[0].stage_x_um for s in open_recording(path).series] == [-25.0, 25.0, 175.0, 225.0]


@pytest.mark.skipif(importlib.util.find_spec("napari_ome_zarr") is None, reason="napari-ome-zarr is not installed")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_napari_layers_are_named_after_the_positions(client):
    from napari_ome_zarr import napari_get_reader

    path = _scan(client, {"channels": [{"config": "BF", "exposure": 1.0}, {"config": "DF", "exposure": 1.0}],
                          "stage_positions": [{"x": 0.0, "y": 0.0, "name": "control"},
                                              {"x": 100.0, "y": 0.0, "name": "treated"}]})
    layers = napari_get_reader(str(path))(str(path))
    assert [kw["name"] for _, kw, _ in layers] == [["control Camera: BF", "control Camera: DF"],
                                                   ["treated Camera: BF", "treated Camera: DF"]]
