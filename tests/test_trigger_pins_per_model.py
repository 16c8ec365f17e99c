"""Triggers on two models keep each model's deciding bundles: the triggers' ring pins, on each result, the bundles
the engine's next result can be of, and released every pin of a bundle older than the result, whichever model's it
was. So a fast model's results (of the newest bundles) released the bundle a slow model was computing, and the slow
model's confirmation pairs held the fluorescence alone (measured at 512² free-running with the shipped
virtual-staining and virtual-staining-live engines: 9 of 13 pairs lacked their label-free bundle, against 2 of 13
with the slow model's triggers alone). Each model now pins for itself (daemon/spot_check_pins.py owners)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.control import ControlClient
from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.service import Daemon

from helpers import StandInEngine, log_lines, wait_subscribed, wait_until
from tests.test_spot_check_pins import small_rings  # noqa: F401 - a fixture: rings of two 256² bundles
from tests.test_spot_checks import CYCLE, VS
from tests.test_trigger_ring_pins import FIRINGS, EveryOther

def _pairs(log: Path) -> list[dict]:
    """The confirm_fluorescence outcomes logged so far."""
    return [a for x in log_lines(log) if "outcome_of" in x for a in x["actions"]
            if a["action"] == "confirm_fluorescence"]


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_a_fast_models_results_leave_the_slow_models_pairs_whole(sim_cfg, tmp_path, small_rings):  # noqa: F811
    allowed = f"{EveryOther.__module__}:EveryOther"  # the ring pins test's trigger
    d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
               trigger_modules=[allowed]).start()
    slow = InferenceEngine(VS, d.stream_address, "tcp://127.0.0.1:*", None, warmup_shape=(256, 256)).start()
    config = {"triggers": [
        {"name": "slow", "model": "virtual-staining", "python": allowed, "act_on_untrusted": True,
         "condition": {"above": 0.5, "rearm_below": 0.5}, "cooldown_s": 0,
         "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 1}]},
        {"name": "fast", "model": "fast", "measurement": {"kind": "mean", "channel": "c"},  # watches, never fires
         "condition": {"above": 1.0}, "actions": [{"kind": "notify"}]}],
        "safety": {"dose_per_position": 1e9, "dose_per_session": 1e9, "max_actions_per_minute": 10_000}}
    try:
        with StandInEngine(d.stream_address) as fast, ControlClient(d.control_address, timeout_s=120) as client:
            wait_subscribed(d.publisher, "frame", 2)
            log = Path(client.request("load_triggers", config=config, sources={
                "virtual-staining": slow.results_address, "fast": fast.address})["log"])
            wait_subscribed(slow, "result")
            fast.wait_subscriber()
            client.request("start_live", channels=CYCLE)  # free-running: the ring holds a few ms
            wait_until(lambda: len(_pairs(log)) >= FIRINGS, 300, "the slow model's firings' actions")
            client.request("stop")
            wait_until(lambda: not client.request("triggers")["actions_pending"], 300, "their actions")
            client.request("unload_triggers")
    finally:
        slow.close()
        d.close()
    pairs = _pairs(log)[:FIRINGS]  # those after may have been skipped at the stop
    whole = [p for p in pairs if p["ok"] and p["channels"] == [*CYCLE, "Nuclei"] and "warning" not in p]
    # the engine's first result is of a bundle nothing pinned (nor may a rare late result be): most, not all
    assert len(whole) >= len(pairs) - 2, [p.get("warning") or p["channels"] for p in pairs]


def _frame(bundle: int, index: int) -> Frame:
    h = FrameHeader(acquisition_id="live", seq=bundle * 2 + index, bundle_id=bundle, bundle_index=index,
                    bundle_size=2, channel=f"c{index}", modality="label-free", pattern="", detector="Camera",
                    stage_x_um=0.0, stage_y_um=0.0, stage_z_um=0.0, exposure_ms=1.0, pixel_size_um=1.0,
                    dtype="uint16", shape=(4, 4), position_index=0, t_exposure_start_ns=bundle,
                    t_acquired_ns=bundle * 10 + index)
    return Frame(h, np.zeros((4, 4), np.uint16))


def test_one_owners_result_releases_only_its_own_pins():
    from scopecast.daemon.spot_check_pins import PinningRing

    ring = PinningRing(10.0, 2 * 32, candidates=2, max_pinned=3)  # the ring: two frames, one bundle
    for b in range(3):
        for i in range(2):
            ring(_frame(b, i))
    ring.repin("live", 0, keep=None, owner="slow")  # the slow model's result of bundle 0: 1 and 2 may be next
    for b in range(3, 6):
        for i in range(2):
            ring(_frame(b, i))
    ring.repin("live", 4, keep=None, owner="fast")  # the fast model went past bundles 1 and 2
    assert [f.header.seq for f in ring.bundle("live", 1)] == [2, 3]  # still the slow model's
    assert ring.pins()["bundles"] == 3  # 1 and 2 (slow), 5 (fast)
    ring.repin("live", 2, keep=None, owner="slow")  # the slow model's next result was of bundle 2
    assert ring.bundle("live", 1) == [] and ring.pins()["bundles"] == 3  # 2, 4 (slow); 5 (both) counted once
    ring.release(owner="fast")
    assert [f.header.seq for f in ring.bundle("live", 5)] == [10, 11]  # the slow model's pin of it stays
