"""A scan's frames say how many frames their bundle really gets: a channel without ``do_stack`` takes one plane
of the z-stack and one with ``acquire_every`` > 1 skips time points, so such bundles are smaller than channels
x planes. They claimed channels x planes, so the engine never saw those bundles end: the planes that lack a
channel the model needs stayed open, uncounted and unexplained (or were counted as ``engine:incomplete``,
frames lost upstream, once a later bundle completed). Real daemon on the simulated scope, real engine."""

from __future__ import annotations

import collections

import pytest

from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.recording import open_recording
from scopecast.models.synthetic import write_package

from helpers import wait_subscribed, wait_until

CYCLE = ["DPC-Left", "DPC-Right", "BF"]
PLANES = {"range": 2.0, "step": 1.0}  # 3 planes


def _scan(client, sequence: dict) -> dict:
    done = client.wait(client.request("run_scan", sequence=sequence)["id"], timeout_s=120)
    assert done["status"] == "done", done
    return done


@pytest.mark.parametrize("sequence", [
    {"channels": ["DPC-Left", {"config": "BF", "do_stack": False}], "z_plan": PLANES},
    {"channels": ["DPC-Left", {"config": "BF", "acquire_every": 2}], "time_plan": {"interval": 0, "loops": 3}},
    {"channels": [{"config": "BF", "do_stack": False, "acquire_every": 2}, "DF"], "z_plan": PLANES,
     "time_plan": {"interval": 0, "loops": 2}, "stage_positions": [{"x": 0, "y": 0}, {"x": 50, "y": 0}]},
])
def test_each_frame_gives_the_size_its_bundle_really_has(client, sequence):
    frames = open_recording(_scan(client, sequence)["path"]).frames
    per_bundle = collections.Counter(f.bundle_id for f in frames)
    assert {(f.bundle_id, f.bundle_size) for f in frames} == set(per_bundle.items())


@pytest.fixture
def engine(daemon, tmp_path):
    package = write_package(tmp_path / "m", CYCLE, ["nuclei"], name="tiny", width=8, layers=3, tile=128)
    joined = daemon.publisher.subscriptions.of("frame")
    e = InferenceEngine(package, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                        warmup_shape=(256, 256), policy="all").start()
    wait_subscribed(daemon.publisher, "frame", joined + 1)
    yield e
    e.close()


@pytest.mark.parametrize("after", [[], [{"config": "Nuclei", "do_stack": False}]])
def test_planes_a_scan_leaves_without_a_model_channel_are_counted_and_named(client, engine, after):
    """The z-stack has BF at its middle plane only: that plane is inferred, the two others are dropped as
    mismatches at the end of their bundle, with an error naming the missing channel (also when the bundle ends
    with a channel the model does not use, after the inferred plane left)."""
    done = _scan(client, {"channels": ["DPC-Left", "DPC-Right", {"config": "BF", "do_stack": False}, *after],
                          "z_plan": PLANES})
    assert done["frames"] == 7 + len(after)

    def settled():
        st = engine.status()
        return (st["frames_received"] == done["frames"] and st["results_published"] == 1 and st["queued"] == 0
                and st)

    st = wait_until(settled, 60, "the engine to take every frame and infer the middle plane")
    assert wait_until(lambda: engine.status()["dropped"].get("engine:mismatch") == 4, 60,
                      "the planes without BF to be counted")
    st = engine.status()
    assert "engine:incomplete" not in st["dropped"], st["dropped"]
    assert any("the model needs ['BF', 'DPC-Left', 'DPC-Right']" in e for e in st["errors"]), st["errors"]


def test_time_points_a_channel_skips_are_mismatches_not_frames_lost_upstream(client, engine):
    """BF every other time point: the time points without it are counted as mismatches (a bundle lacks the
    channels the model needs), not as ``engine:incomplete`` (frames lost upstream), the last one too."""
    done = _scan(client, {"channels": ["DPC-Left", "DPC-Right", {"config": "BF", "acquire_every": 2}],
                          "time_plan": {"interval": 0, "loops": 4}})
    assert done["frames"] == 10  # t 0 and 2: 3 frames; t 1 and 3: 2

    def settled():
        st = engine.status()
        return (st["frames_received"] == 10 and st["results_published"] == 2
                and st["dropped"].get("engine:mismatch") == 4 and st)

    st = wait_until(settled, 60, "2 results and the 4 frames of the time points without BF counted")
    assert "engine:incomplete" not in st["dropped"], st["dropped"]
