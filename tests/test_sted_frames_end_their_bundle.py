"""A ground-truth detector's frame (STED, ``modality: super-resolution``) is never a model input, but it is one
of its bundle's frames: the engine counts it towards the bundle's end. It did not, so a live cycle or scan with a
STED channel never reached its ``bundle_size`` at the engine: a bundle that lacks a channel the model needs was
never reported (no ``engine:mismatch``, no error naming the channel), only evicted later as
``engine:incomplete`` (frames lost upstream) or left open. Real daemon on the simulated scope, real engine."""

from __future__ import annotations

from helpers import wait_until
from test_scan_bundle_size import engine  # noqa: F401 - the fixture: a small model's engine on the daemon's stream

STED = {"name": "Membrane", "detector": "STED", "exposure_ms": 1.0}


def test_a_cycle_with_a_sted_channel_that_lacks_a_model_channel_is_reported(client, engine):
    job = client.request("start_live", channels=["DPC-Left", "DPC-Right", STED], max_cycles=3)
    done = client.wait(job["id"], timeout_s=120)
    assert done["frames"] == 9

    def reported():
        st = engine.status()
        return st["frames_received"] == 9 and st["dropped"].get("engine:mismatch") == 6 and st

    st = wait_until(reported, 60, "the 3 cycles without BF to be counted as mismatches")
    assert st["dropped"].get("engine:unused_channel") == 3 and "engine:incomplete" not in st["dropped"], st
    assert any("the model needs ['BF', 'DPC-Left', 'DPC-Right']" in e for e in st["errors"]), st["errors"]


def test_a_scan_plane_beside_sted_frames_is_counted_at_its_bundle_end(client, engine):
    """A z-stack with BF at its middle plane only and STED at every plane: the planes without BF are mismatches."""
    seq = {"channels": ["DPC-Left", "DPC-Right", {"config": "BF", "do_stack": False},
                        {"config": "Membrane", "camera": "STED", "exposure": 1.0}],
           "z_plan": {"range": 2.0, "step": 1.0}}
    done = client.wait(client.request("run_scan", sequence=seq)["id"], timeout_s=120)
    assert done["status"] == "done" and done["frames"] == 10

    def settled():
        st = engine.status()
        return (st["frames_received"] == 10 and st["results_published"] == 1
                and st["dropped"].get("engine:mismatch") == 4 and st)

    st = wait_until(settled, 60, "the middle plane inferred and the planes without BF counted")
    assert st["dropped"].get("engine:unused_channel") == 3 and "engine:incomplete" not in st["dropped"], st
