"""A result of a scan says which stage position and which plane of the z-stack it is of (``position_index``,
``series``, ``index`` {t, z}), as its source frames' headers do: every plane of a scan's bundle gets a result of
its own under the same ``bundle_id``, and a client of the results alone could not tell them apart. Real daemon
on the simulated scope, a real engine."""

from __future__ import annotations

from helpers import wait_subscribed, wait_until

from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.recording import open_recording
from scopecast.daemon.stream import StreamSubscriber
from scopecast.models.synthetic import write_package

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def test_each_result_of_a_scan_names_its_position_and_plane(daemon, client, tmp_path):
    package = write_package(tmp_path / "tiny", CYCLE, ["nuclei"], name="tiny", width=4, layers=2, tile=128)
    engine = InferenceEngine(package, daemon.stream_address, "tcp://127.0.0.1:*", None, policy="all",
                             warmup_shape=(256, 256)).start()
    results = StreamSubscriber(engine.results_address, ("result",))
    got: list[dict] = []
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(engine, "result")
        seq = {"channels": [{"config": c, "exposure": 1.0} for c in CYCLE], "z_plan": {"range": 2, "step": 2},
               "stage_positions": [{"x": 0, "y": 0, "z": 0}, {"x": 500, "y": 0, "z": 0}]}
        rec = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=300)["path"]

        def all_published() -> bool:
            if (m := results.recv(0.1)) is not None:
                got.append(m[1])
            st = engine.status()
            return st["frames_received"] == 12 and not st["queued"] and len(got) == st["results_published"] == 4

        wait_until(all_published, 300, "the engine's four results")
    finally:
        results.close()
        engine.close()
    frames = {h.seq: h for h in open_recording(rec).frames}
    for r in got:
        src = frames[r["source_seqs"][-1]]
        assert r.get("position_index") == src.position_index, r.keys()
        assert r.get("series") == src.series and r.get("index") == {"t": src.index["t"], "z": src.index["z"]}
    assert sorted((r["position_index"], r["index"]["z"]) for r in got) == [(0, 0), (0, 1), (1, 0), (1, 1)]
