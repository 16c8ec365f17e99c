"""An engine runs the model file it loaded and verified, whatever happens to the package folder afterwards.

Before, each CPU session specialized to a new input shape (the first frame of a camera size other than the
warm-up's, a new tile batch) was built from the package's path again: once the package had been replaced on
disk (``scopecast export --overwrite`` renames a new folder into place; ``reexport`` rewrites ``model.onnx``),
the engine computed with the new, never verified file while its status and every result still named the
loaded model's sha256.
"""

from __future__ import annotations

import shutil

from helpers import wait_subscribed, wait_until
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.stream import StreamSubscriber
from scopecast.models.synthetic import write_package

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def _replace_package(out, **kw) -> None:
    """Replace the package folder ``out`` as ``scopecast export --overwrite`` does: a new package written into a
    sibling folder, the old one removed, the new one renamed into place."""
    tmp = write_package(out.parent / f".{out.name}.partial", CYCLE, ["nuclei"], name=out.name, tile=512, **kw)
    shutil.rmtree(out)
    tmp.rename(out)


def test_a_package_replaced_on_disk_does_not_change_what_a_running_engine_computes(daemon, client, tmp_path):
    pkg = write_package(tmp_path / "models" / "vs", CYCLE, ["nuclei"], name="vs", tile=512, layers=2, width=4)
    # one 512² tile (as the shipped packages); warmed up at 512² (the default), and the simulated camera sends
    # 256² frames: a shape of its own, met once live starts
    engine = InferenceEngine(pkg, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        loaded = engine.describe_model()["sha256"]
        wait_subscribed(daemon.publisher, "frame")
        _replace_package(pkg, layers=2, width=4, nan_output=True)  # re-exported: another model (NaN: plain to see)
        sub = StreamSubscriber(engine.results_address, ("result",))
        try:
            wait_subscribed(engine, "result")
            client.request("start_live", channels=CYCLE, interval_ms=0)
            wait_until(lambda: engine.results_published >= 2 or engine.drops.snapshot().get("engine:nonfinite"),
                       120, "results (or the engine's NaN drops)")
            assert engine.drops.snapshot().get("engine:nonfinite", 0) == 0, list(engine.errors)
            msg = sub.recv(60)
        finally:
            client.request("stop")
            sub.close()
        assert msg is not None and msg[1]["weights_sha256"] == loaded  # the file that computed it
        assert engine.status()["model"]["sha256"] == loaded
    finally:
        engine.close()
