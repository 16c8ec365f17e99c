"""A scan that takes one channel preset twice (useq channels may repeat a config: e.g. BF at two exposures, or
at two z offsets) records each in its own column, as useq indexes them (``index.c``) and pymmcore-plus's
writers store them. Both went to the preset's first column: the first frame was overwritten by the second
while the journal listed both there, and the second column stayed zeros. Real daemon on the simulated scope."""

from __future__ import annotations

import numpy as np
import pytest

from scopecast.daemon.recording import open_recording


@pytest.mark.parametrize("z_plan", [None, {"range": 2.0, "step": 2.0}])
def test_each_of_two_channels_with_one_preset_keeps_its_frames(client, z_plan):
    seq = {"channels": [{"config": "BF", "exposure": 1.0}, {"config": "DF", "exposure": 1.0},
                        {"config": "BF", "exposure": 8.0}], **({"z_plan": z_plan} if z_plan else {})}
    done = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=120)
    assert done["status"] == "done", done["error"]
    s = open_recording(done["path"]).series[0]
    n_z = s.data.shape[2]
    assert s.channels == ["BF", "DF", "BF"] and len(s.frames) == 3 * n_z
    assert sorted((h.index["c"], h.exposure_ms) for h in s.frames) == [
        (0, 1.0)] * n_z + [(1, 1.0)] * n_z + [(2, 8.0)] * n_z  # was c 0 for both BF exposures, nothing at 2
    for z in range(n_z):
        short, long = (float(np.asarray(s.data[0, c, z], dtype=float).mean()) for c in (0, 2))
        assert 0 < 2 * short < long  # each column holds its own exposure (was: the 8 ms frame at c 0, c 2 zeros)
