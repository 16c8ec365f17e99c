"""A scan whose first channel has a useq ``z_offset``: the series' NGFF z translation (where napari and
ome-zarr-py place every plane of every channel) is the z plan's lowest plane, not that channel's offset plane.
It was the first frame's z, so the whole series, every channel, sat ``z_offset`` µm off, and two scans of the
same plan with the channels in another order disagreed. Real daemon on the simulated scope."""

from __future__ import annotations

import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from scopecast.daemon.recording import open_recording

Z_OFFSET = 5.0


def _z_translation(path: str) -> float:
    """The series' z translation as ome-zarr-py reads it."""
    node = next(iter(Reader(parse_url(f"{path}/0"))()))
    return next(t["translation"] for t in node.metadata["coordinateTransformations"][0]
                if t["type"] == "translation")[2]


@pytest.mark.parametrize("z_plan", [{"range": 2.0, "step": 1.0}, {"relative": [0.0, 3.0]}])
def test_a_channels_z_offset_does_not_move_the_series(client, z_plan):
    client.request("move_stage", x=0, y=0, z=10)
    zs = []
    for channels in ([{"config": "BF", "exposure": 1.0, "z_offset": Z_OFFSET}, {"config": "DF", "exposure": 1.0}],
                     [{"config": "DF", "exposure": 1.0}, {"config": "BF", "exposure": 1.0, "z_offset": Z_OFFSET}]):
        seq = {"channels": channels, "z_plan": z_plan}
        done = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=120)
        assert done["status"] == "done"
        s = open_recording(done["path"]).series[0]
        df = [h.stage_z_um for h in s.frames if h.channel == "DF"]  # the plan's planes (DF has no offset)
        assert [h.stage_z_um for h in s.frames if h.channel == "BF"] == pytest.approx([z + Z_OFFSET for z in df])
        zs.append(_z_translation(done["path"]))
        assert zs[-1] == pytest.approx(min(df)), channels  # was min(df) + 5 with BF first
    assert zs[0] == pytest.approx(zs[1])
