"""Offline results show their trust where napari and OME-XML readers look: a ``trust`` label image beside each
series of results (napari-ome-zarr loads it as a Labels layer; hovering names the verdict and its reasons) and a
trust MapAnnotation on every result plane of OME/METADATA.ome.xml. Before, the verdict was only in the journal:
a withheld (blank) or untrusted result looked like any other."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.recording import Recorder, SeriesSpec, open_recording, repair_recording
from scopecast.models.synthetic import write_package

T0_NS = 1_790_000_000_000_000_000
SIZE = 64
CYCLE = ["DPC-Left", "DPC-Right", "BF"]
MOVED = 2  # the bundle during which the stage moved: the input guards withhold its result


def _source(path: Path, ngff: str, n_t: int = 4) -> Path:
    rec = Recorder(path, "src", {"kind": "live"}, ngff=ngff)
    s = rec.add_series(SeriesSpec("pos000 Camera", tuple(CYCLE), ("label-free",) * len(CYCLE), (SIZE, SIZE),
                                  "uint16", 0.65, (0.0, 0.0, 0.0)))
    rng = np.random.default_rng(0)
    for t in range(n_t):
        for c, name in enumerate(CYCLE):
            t_ns = T0_NS + t * 1_000_000_000 + c * 10_000_000
            x = 500.0 if t == MOVED and c == len(CYCLE) - 1 else 0.0
            h = FrameHeader(acquisition_id="src", seq=t * len(CYCLE) + c, bundle_id=t, bundle_index=c,
                            bundle_size=len(CYCLE), channel=name, modality="label-free", pattern="",
                            detector="Camera", stage_x_um=x, stage_y_um=0.0, stage_z_um=0.0, exposure_ms=10.0,
                            pixel_size_um=0.65, dtype="uint16", shape=(SIZE, SIZE), t_exposure_start_ns=t_ns,
                            t_acquired_ns=t_ns + 10_000_000)
            rec.write(Frame(h, (2000 + rng.integers(0, 2000, (SIZE, SIZE))).astype(np.uint16)), s, t, c)
    rec.close()
    return path


def _results(tmp_path: Path, ngff: str) -> Path:
    model = write_package(tmp_path / "m", CYCLE, ["nuclei", "membrane"], name="tiny", width=8, layers=3, tile=128)
    report = run_offline(model, _source(tmp_path / "src.ome.zarr", ngff), runtime="ort-cpu")
    assert report.inferred == 4 and report.withheld == 1, report
    return Path(report.output)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(importlib.util.find_spec("napari_ome_zarr") is None, reason="napari-ome-zarr is not installed")
@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_napari_shows_which_results_were_withheld_and_why(tmp_path, ngff):
    from napari_ome_zarr import napari_get_reader

    out = str(_results(tmp_path, ngff))
    layers = napari_get_reader(out)(out)
    labels = [(data, kw) for data, kw, kind in layers if kind == "labels"]
    assert len(labels) == 1, [(kw.get("name"), kind) for _, kw, kind in layers]
    data, kw = labels[0]
    values = np.asarray(data[0][:, 0, 0, 0])  # (t, z, y, x): one value per time point, the whole field
    assert [bool(v) for v in values] == [t == MOVED for t in range(4)]
    features = dict(zip(kw["properties"]["index"], kw["properties"]["trust"], strict=True))
    reasons = dict(zip(kw["properties"]["index"], kw["properties"]["reasons"], strict=True))
    assert features[int(values[MOVED])] == "withheld" and "moved" in reasons[int(values[MOVED])]
    image = next(kw_i for _, kw_i, kind in layers if kind == "image")
    assert kw["scale"] == pytest.approx([image["scale"][0], 1.0, 0.65, 0.65])  # on the results' own axes


def test_ome_xml_annotates_every_result_plane_with_its_trust(tmp_path):
    from ome_types import from_xml

    out = _results(tmp_path, "0.4")
    ome = from_xml((out / "OME" / "METADATA.ome.xml").read_text(encoding="utf-8"))
    annotations = {a.id: a for a in ome.structured_annotations.map_annotations}
    planes = ome.images[0].pixels.planes
    assert len(planes) == 8
    for plane in planes:
        (ref,), = [plane.annotation_refs]
        a = annotations[ref.id]
        assert a.namespace == "scopecast/trust"
        value = a.value.model_dump() if hasattr(a.value, "model_dump") else dict(a.value)
        kv = {m["k"]: m["value"] for m in value["ms"]} if "ms" in value else value
        assert kv["ok"] == ("false" if plane.the_t == MOVED else "true"), (plane.the_t, kv)
        if plane.the_t == MOVED:
            assert kv["action"] == "withheld" and "moved" in kv["reasons"]


def test_repair_rebuilds_the_trust_labels(tmp_path):
    """An interrupted results store (its labels never written) gets them from its journal."""
    import shutil

    out = _results(tmp_path, "0.4")
    shutil.rmtree(out / "0" / "labels")
    s = open_recording(out)
    scopecast = dict(s.attrs["scopecast"])
    scopecast.pop("complete")
    import zarr

    zarr.open_group(str(out), mode="r+").attrs["scopecast"] = scopecast
    assert repair_recording(out).repaired
    trust = zarr.open_array(str(out / "0" / "labels" / "trust" / "0"), mode="r")
    assert [bool(trust[t, 0, 0, 0]) for t in range(4)] == [t == MOVED for t in range(4)]
