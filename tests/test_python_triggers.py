"""A user's Python triggers (docs/smart-acquisition.md), as a developer writes them: one that hangs is disabled
and the others go on; one that writes into its input cannot change what the others measure; a combination that
could only fail is refused at load; replay gives them the header live does. Real daemon on the simulator, real
sockets; a stand-in engine supplies results, or the shipped virtual-staining package live and offline."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.service import Daemon
from scopecast.daemon.triggers import replay

from helpers import StandInEngine, wait_subscribed, wait_until

ROOT = Path(__file__).resolve().parents[1]
VS = ROOT / "models" / "packages" / "virtual-staining"
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
NOWHERE = "tcp://127.0.0.1:6222"  # a result stream nobody publishes on: loading only subscribes to it
RELEASE = threading.Event()  # set at the end of the hang test: the hung measure() returns, its thread ends
#: what only a live engine knows: which runtime and worker, when each of its stages ran, its shared memory
RUN_TIME = {"runtime", "worker", "shm", "t_frame_published_ns", "t_received_ns", "t_dequeued_ns", "t_checked_ns",
            "t_preprocessed_ns", "t_inferred_ns", "t_postprocessed_ns", "t_published_ns"}
SEEN: list[set[str]] = []  # the header keys UsesTheHeader was given, per result


class Hangs:
    """A user's trigger that never returns (until the test releases it)."""

    def measure(self, header: dict, data) -> float:
        RELEASE.wait()
        return 0.0


class Normalizes:
    """A user's trigger that scales the result in place (a common numpy idiom)."""

    def measure(self, header: dict, data) -> float:
        img = data[0]
        img /= img.max() * 1e6
        return float(img.mean())


class Constant:
    """A user's trigger."""

    def measure(self, header: dict, data) -> float:
        return 1.0


class UsesTheHeader:
    """A user's trigger that reads documented result-header fields."""

    def measure(self, header: dict, data) -> float:
        SEEN.append(set(header))
        h, w = header["shape"][1:]
        return float(header["t_exposure_start_ns"] > 0) * header["scale_factor"] * h * w / data[0].size


def _daemon(sim_cfg, tmp_path, allowed: str) -> Daemon:
    return Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                  trigger_modules=[allowed]).start()


def _beside_a_mean_trigger(sim_cfg, tmp_path, python: str, wait_for, what: str) -> dict:
    """Live on the simulator with the user's trigger ``python`` first and a declarative ``mean`` trigger (fires
    once on a result of 1.0) after it; the triggers' status once ``wait_for(status)``."""
    allowed = f"{__name__}:{python}"
    d = _daemon(sim_cfg, tmp_path, allowed)
    config = {"triggers": [
        {"name": "mine", "model": "m", "python": allowed, "condition": {"above": 1e9}},
        {"name": "mean", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
         "condition": {"above": 0.5, "rearm_below": 0.3}, "cooldown_s": 600, "actions": [{"kind": "notify"}]}]}
    try:
        with ControlClient(d.control_address, timeout_s=120) as client, \
                StandInEngine(d.stream_address, value=1.0) as engine:
            wait_subscribed(d.publisher, "frame")
            client.request("load_triggers", config=config, sources={"m": engine.address})
            engine.wait_subscriber()
            client.request("start_live", channels=["BF"], interval_ms=50)
            st = wait_until(lambda: s if wait_for(s := client.request("triggers")) else None, 60, what)
            client.request("stop")
            client.request("unload_triggers")
    finally:
        RELEASE.set()
        d.close()
    return st


def _events(st: dict) -> list[dict]:
    return [json.loads(x) for x in Path(st["log"]).read_text().splitlines() if '"event"' in x]


def test_a_hanging_python_trigger_is_disabled_and_the_others_go_on(sim_cfg, tmp_path):
    """It held the one trigger thread: no trigger decided again, nothing was logged, unload waited 30 s."""
    st = _beside_a_mean_trigger(sim_cfg, tmp_path, "Hangs",
                                lambda s: s["triggers"]["mine"]["disabled"] and s["fired"] >= 1 and s["results"] >= 3,
                                "the hanging trigger disabled and the other one deciding")
    assert st["triggers"]["mine"]["disabled"] == "TimeoutError: measure() did not return within 5 s"
    assert [(x["trigger"], x["event"]) for x in _events(st)][:2] == [("mine", "disabled"), ("mean", "fire")]


def test_a_trigger_writing_into_its_input_does_not_change_the_others(sim_cfg, tmp_path):
    """The result is read-only: the writer raises and is disabled; the trigger after it measured the zeroed
    result and never fired."""
    st = _beside_a_mean_trigger(sim_cfg, tmp_path, "Normalizes", lambda s: s["results"] >= 3, "3 decided results")
    assert st["fired"] == 1
    assert "read-only" in st["triggers"]["mine"]["disabled"]
    lines = _events(st)
    assert [(x["trigger"], x["event"]) for x in lines][:2] == [("mine", "disabled"), ("mean", "fire")]
    assert lines[1]["measurement"] == 1.0


def test_center_object_on_a_python_trigger_is_refused_at_load(sim_cfg, tmp_path):
    """The action centres an object of the measured channel, which a Python trigger does not name: it was
    accepted and failed at every firing."""
    allowed = f"{__name__}:Constant"
    d = _daemon(sim_cfg, tmp_path, allowed)
    config = {"triggers": [{"name": "mine", "model": "m", "python": allowed, "condition": {"above": 0.5},
                            "actions": [{"kind": "notify"}, {"kind": "center_object", "threshold": 2000}]}]}
    try:
        with ControlClient(d.control_address, timeout_s=120) as client:
            with pytest.raises(DaemonError) as e:
                client.request("load_triggers", config=config, sources={"m": NOWHERE})
            assert e.value.type == "ValueError"
            assert "'mine'" in e.value.message and "actions[1] (center_object)" in e.value.message
            assert client.request("triggers") == {"loaded": False}
    finally:
        d.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_replay_gives_a_python_trigger_the_live_result_header(sim_cfg, tmp_path):
    """A trigger reading e.g. ``shape`` fired live and was disabled in replay (KeyError)."""
    allowed = f"{__name__}:UsesTheHeader"
    cfg = {"triggers": [{"name": "mine", "model": "virtual-staining", "python": allowed,
                         "condition": {"above": 0.5, "rearm_below": 0.5}, "cooldown_s": 0}]}
    d = _daemon(sim_cfg, tmp_path, allowed)
    engine = InferenceEngine(VS, d.stream_address, "tcp://127.0.0.1:*", None, policy="all",
                             warmup_shape=(256, 256)).start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as client:
            wait_subscribed(d.publisher, "frame")
            client.request("load_triggers", config=cfg, sources={"virtual-staining": engine.results_address})
            wait_subscribed(engine, "result")
            job = client.request("start_live", channels=CYCLE, record=True, max_cycles=3, interval_ms=200)
            job = client.wait(job["id"], timeout_s=300)
            st = wait_until(lambda: (s := client.request("triggers"))["results"] >= 3 and s, 120, "3 decided results")
            client.request("unload_triggers")
    finally:
        engine.close()
        d.close()
    live = _events(st)
    live_keys = SEEN[0]
    SEEN.clear()
    res = run_offline(VS, job["path"], runtime="ort-cpu")
    replayed = [x.key() for x in replay(cfg, res.output)]
    assert [(x["event"], x["reason"]) for x in replayed] == [(x["event"], x["reason"]) for x in live]
    assert replayed == live
    assert SEEN and live_keys - RUN_TIME <= SEEN[0], live_keys - RUN_TIME - SEEN[0]
