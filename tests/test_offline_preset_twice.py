"""Offline inference over a scan that takes one channel preset twice (BF at 1 and 8 ms, each recorded in a column of
its own) reads each frame from its own column and gives the model the frame live operation gave it: the frames in
acquisition order up to the one that completes the model's inputs. It looked channels up by name, so both BF frames
read the first column (the 8 ms frame was never seen) while the result's header named the 8 ms frame: a result
unlike live's, from pixels other than those its ``source_seqs`` name. Real daemon on the simulated scope."""

from __future__ import annotations

import numpy as np
import pytest

from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.daemon.recording import open_recording
from scopecast.models.synthetic import write_package


@pytest.mark.parametrize(("channels", "live_bf_ms"), [
    ([{"config": "BF", "exposure": 1.0}, {"config": "BF", "exposure": 8.0}, {"config": "DF", "exposure": 1.0}], 8.0),
    ([{"config": "BF", "exposure": 1.0}, {"config": "DF", "exposure": 1.0}, {"config": "BF", "exposure": 8.0}], 1.0),
])
def test_offline_reads_each_frame_of_a_preset_taken_twice_from_its_own_column(client, tmp_path, channels,
                                                                               live_bf_ms):
    done = client.wait(client.request("run_scan", sequence={"channels": channels})["id"], timeout_s=120)
    assert done["status"] == "done", done["error"]
    model = write_package(tmp_path / "m", ["BF", "DF"], ["nuclei"], name="tiny", width=8, layers=3, tile=128)
    report = run_offline(model, done["path"], runtime="ort-cpu")
    assert report.inferred == report.bundles == 1, report
    src = open_recording(done["path"]).series[0]
    result = open_recording(report.output).series[0]
    seqs = result.frames[0].extra["source_seqs"]
    used = {h.seq: h for h in src.frames if h.seq in seqs}
    # the BF frame live takes: the last before the plane is complete (the engine releases it at DF)
    assert sorted(h.exposure_ms for h in used.values() if h.channel == "BF") == [live_bf_ms], seqs
    pkg = load_package(model)
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu", threads=1))
    expected = worker.process([StreamFrame(used[s].to_dict(), np.asarray(src.data[0, used[s].index["c"], 0]))
                               for s in seqs]).data
    np.testing.assert_array_equal(np.asarray(result.data[0, :, 0]), expected)  # the pixels its header names
    with pytest.raises(ValueError, match="columns"):  # a name two columns share is not silently the first
        src.image("BF")
