"""The closed loop of smart acquisition, timed in parts, ends when the action holds the microscope.

A real daemon on the simulated scope (realistic camera timing, so a live frame
takes its exposure), real ZeroMQ sockets, and a stand-in engine that answers
every live bundle at once with a result carrying the bundle's timestamps (the
closed loop of a zero-cost model): no model is needed to test what the loop adds.
"""

from __future__ import annotations

import json
from pathlib import Path

from scopecast.daemon.trigger_actions import LOOP_STAGES

from helpers import StandInEngine, wait_subscribed, wait_until

CYCLE = ["BF", "DF"]
FIRINGS = 5
EXPOSURE_MS = 30.0  # a live frame is long next to the hand-over: an action starting mid-frame is likely


def test_the_loop_is_timed_in_parts_and_ends_when_the_action_holds_the_microscope(daemon, client):
    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")
    config = {"triggers": [{
        "name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5}, "cooldown_s": 0,
        "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 5}]}],
        "safety": {"dose_per_position": 1e6, "dose_per_session": 1e6, "max_actions_per_minute": 100}}
    with StandInEngine(daemon.stream_address) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"m": engine.address})
        engine.wait_subscriber()
        client.request("start_live", channels=CYCLE, exposure_ms=EXPOSURE_MS, interval_ms=0)
        for n in range(1, FIRINGS + 1):  # several firings: each lands at another moment of a live frame
            engine.value = 0.0
            wait_until(lambda: (s := client.request("triggers"))["triggers"]["t"]["armed"]
                       and not s["actions_pending"], 60, "the trigger armed, no action running")
            engine.value = 1.0
            st = wait_until(lambda n=n: (s := client.request("triggers"))["fired"] >= n
                            and not s["actions_pending"] and s, 60, f"firing {n} and its action")
        # the confirmations' frames reach the stand-in engine through the publisher thread, after the action
        wait_until(lambda: sum("-snap-" in f["acquisition_id"] and f["channel"] == "Nuclei"
                               for f in list(engine.frames)) >= FIRINGS, 60, "every confirmation's frame at the engine")
        client.request("stop")
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
    fires = [x for x in lines if x.get("event") == "fire"]
    assert len(fires) == FIRINGS
    live = [f for f in engine.frames if "-live-" in f["acquisition_id"]]
    confirms = sorted(f["t_exposure_start_ns"] for f in engine.frames
                      if "-snap-" in f["acquisition_id"] and f["channel"] == "Nuclei")
    for fire in fires:
        out = next(x for x in lines if x.get("outcome_of", {}).get("t_ns") == fire["t_ns"])
        assert out["actions"][0]["ok"], out
        # the parts: every stage stamped, none negative, and together they are the loop
        parts = out["closed_loop_ms"]
        assert list(parts) == [name for name, _, _ in LOOP_STAGES]
        assert all(v is not None and v >= 0 for v in parts.values()), parts
        assert abs(sum(parts.values()) - out["closed_loop_latency_ms"]) < 0.05, out
        assert out["bundle_before_deciding_frame_ms"] >= EXPOSURE_MS  # the bundle's first frame: an exposure earlier

        deciding = next(f for f in live if f["seq"] == max(fire["source_seqs"]))
        t_end = deciding["t_exposure_start_ns"] + out["closed_loop_latency_ms"] * 1e6
        t_action = t_end - parts["hardware_wait"] * 1e6
        confirm = next(t for t in confirms if t >= t_action)
        # the loop ends when the action holds the microscope: no live frame is being exposed then (an action
        # stamped when it merely started, before waiting for the frame in progress, fails this) ...
        assert not [f for f in live if f["t_exposure_start_ns"] < t_end < f["t_acquired_ns"]]
        # ... and live takes no frame between then and the confirmation's exposure
        assert t_end <= confirm
        assert not [f for f in live if t_end <= f["t_exposure_start_ns"] <= confirm]
        # live yields the microscope to a waiting action: at most the frame it had begun starts meanwhile
        # (on the plain lock, live took it again for 2-3 more frames about every other firing)
        assert len([f for f in live if t_action <= f["t_exposure_start_ns"] <= t_end]) <= 1


def test_lockstep_live_waits_for_each_decision_and_leaves_the_microscope_free(daemon, client):
    """With ``lockstep``, live starts no cycle while the model decides on the last one, so a firing finds
    the microscope idle: no live frame between the deciding frame and the action."""
    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")
    model_s = 0.08
    config = {"lockstep": True, "lockstep_timeout_s": 60, "triggers": [{
        "name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5}, "cooldown_s": 0,
        "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 5}]}],
        "safety": {"dose_per_position": 1e6, "dose_per_session": 1e6, "max_actions_per_minute": 100}}
    with StandInEngine(daemon.stream_address, model_s) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"m": engine.address})
        engine.wait_subscriber()
        # 100 ms frames (not 10): the last assertion compares the action's wait for an idle microscope (thread
        # scheduling alone) with a frame's exposure and readout, which a starved process could otherwise exceed
        client.request("start_live", channels=CYCLE, exposure_ms=100, interval_ms=0)
        wait_until(lambda: client.request("triggers")["results"] >= 3, 60, "results below the threshold")
        engine.value = 1.0
        st = wait_until(lambda: (s := client.request("triggers"))["fired"] and not s["actions_pending"] and s,
                        60, "the firing and its action")
        client.request("stop")
    assert st["lockstep"] == {"enabled": True, "timeouts": 0}
    live = [f for f in engine.frames if "-live-" in f["acquisition_id"]]
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    for f in live:
        starts[f["bundle_id"]] = min(starts.get(f["bundle_id"], f["t_exposure_start_ns"]), f["t_exposure_start_ns"])
        ends[f["bundle_id"]] = max(ends.get(f["bundle_id"], 0), f["t_acquired_ns"])
    bundles = sorted(starts)
    # each cycle starts only after the model's time on the previous one (free-running: right away)
    gaps = [(starts[b] - ends[a]) / 1e6 for a, b in zip(bundles, bundles[1:], strict=False)]
    assert gaps and min(gaps) >= model_s * 1e3, gaps
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
    fire = next(x for x in lines if x.get("event") == "fire")
    out = next(x for x in lines if x.get("outcome_of", {}).get("t_ns") == fire["t_ns"])
    deciding = next(f for f in live if f["seq"] == max(fire["source_seqs"]))
    t_end = deciding["t_exposure_start_ns"] + out["closed_loop_latency_ms"] * 1e6
    assert not [f for f in live if deciding["t_acquired_ns"] < f["t_exposure_start_ns"] <= t_end]
    # the action found the microscope idle: it waited less than one (100 ms) live frame
    assert out["closed_loop_ms"]["hardware_wait"] < out["closed_loop_ms"]["exposure_readout"], out["closed_loop_ms"]
