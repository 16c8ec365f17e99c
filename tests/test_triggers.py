"""Smart acquisition: decisions, safeguards, actions on the simulated scope, and replay."""

import collections
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from scopecast.daemon.control import DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.stream import StreamSubscriber
from scopecast.daemon.triggers import Decider, load_trigger_config, replay

from helpers import wait_subscribed, wait_until

ROOT = Path(__file__).resolve().parents[1]
VS = ROOT / "models" / "packages" / "virtual-staining"
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
COLONY = (40000.0, 0.0)
COOLDOWN_S = 12  # the colony test's (the shipped configuration says 5)


def _cfg(**over):
    t = {"name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
         "condition": {"above": 0.5, "rearm_below": 0.3}, "cooldown_s": 0,
         "actions": [{"kind": "notify"}]}
    t.update(over.pop("trigger", {}))
    return load_trigger_config({"triggers": [t], **over})


def _result(value, t_s, x=0.0, trust=None):
    """A synthetic result; trusted unless ``trust`` (a trust object, or False for none) says otherwise."""
    header = {"model": "m", "channels": ["c"], "t_acquired_ns": int(t_s * 1e9), "bundle_id": int(t_s * 10),
              "acquisition_id": "a", "source_seqs": [], "stage_x_um": x, "stage_y_um": 0.0,
              "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}} if trust is None else trust}
    if trust is False:
        del header["trust"]
    return header, np.full((1, 4, 4), value, np.float32)


def _events(decider, values, dt=1.0):
    out = []
    for i, v in enumerate(values):
        out += [d.event for d in decider.decide(*_result(v, i * dt))]
    return out


def test_hysteresis_prevents_chatter():
    d = Decider(_cfg())
    # hovering around the threshold fires once; only a drop below 0.3 re-arms
    assert _events(d, [0.4, 0.55, 0.45, 0.6, 0.49, 0.52, 0.2, 0.7]) == ["fire", "rearm", "fire"]
    plain = Decider(_cfg(trigger={"condition": {"above": 0.5}}))
    assert _events(plain, [0.55, 0.45, 0.6, 0.49, 0.52]) == ["fire", "rearm", "fire", "rearm", "fire"]


def test_cooldown_suppresses_refires():
    d = Decider(_cfg(trigger={"cooldown_s": 5}))
    ev = _events(d, [0.6, 0.1, 0.6, 0.6, 0.1, 0.6, 0.6, 0.6], dt=1.0)
    assert ev == ["fire", "rearm", "suppressed", "suppressed", "fire"]


def test_light_budget_and_rate_limit_stop_actions():
    confirm = [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 50}]
    d = Decider(_cfg(trigger={"actions": confirm}, safety={"dose_per_position": 120, "dose_per_session": 1000}))
    ev = [x.event for x in sum((d.decide(*_result(v, i, x=0.0)) for i, v in enumerate([0.9, 0.1, 0.9])), [])]
    assert ev == ["fire", "rearm", "fire"]  # 50 + 50 <= 120: the second still fits
    assert d.dose_position[(0, 0)] == 100
    blocked = d.decide(*_result(0.1, 3)) + d.decide(*_result(0.9, 4))
    assert blocked[-1].event == "suppressed" and blocked[-1].reason.startswith("light budget at this position: 100 + 50")
    elsewhere = d.decide(*_result(0.9, 5, x=5000.0))
    assert elsewhere[-1].event == "fire" and d.dose_session == 150  # another position has its own budget
    rate = Decider(_cfg(safety={"max_actions_per_minute": 2}))
    assert _events(rate, [0.9, 0.1, 0.9, 0.1, 0.9]) == ["fire", "rearm", "fire", "rearm", "suppressed"]


class BrokenTrigger:
    def measure(self, header, data):
        raise RuntimeError("sensor exploded")


class MaxTrigger:
    def measure(self, header, data):
        return float(data.max())


def test_python_triggers_and_a_failing_trigger_is_disabled():
    cfg = load_trigger_config({"triggers": [
        {"name": "broken", "model": "m", "python": "tests.test_triggers:BrokenTrigger", "condition": {"above": 1}},
        {"name": "max", "model": "m", "python": "tests.test_triggers:MaxTrigger", "condition": {"above": 0.5}},
    ]})
    d = Decider(cfg)
    first = d.decide(*_result(0.9, 0))
    assert [(x.trigger, x.event) for x in first] == [("broken", "disabled"), ("max", "fire")]
    assert "sensor exploded" in first[0].reason
    assert [(x.trigger, x.event) for x in d.decide(*_result(0.1, 1))] == [("max", "rearm")]
    assert d.status()["triggers"]["broken"]["disabled"].startswith("RuntimeError")


def test_bad_configs_name_the_problem():
    with pytest.raises(Exception, match="exactly one of 'measurement' or 'python'"):
        load_trigger_config({"triggers": [{"name": "x", "model": "m", "condition": {"above": 1}}]})
    with pytest.raises(Exception, match="rearm_below"):
        _cfg(trigger={"condition": {"above": 0.5, "rearm_below": 0.9}})
    with pytest.raises(Exception, match="teleport"):
        _cfg(trigger={"actions": [{"kind": "teleport"}]})
    with pytest.raises(ValueError, match="cannot load trigger class"):
        Decider(load_trigger_config({"triggers": [{"name": "x", "model": "m", "python": "nowhere:Nope",
                                                   "condition": {"above": 1}}]}))


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped yet")
def test_colony_fires_confirms_and_replay_reproduces_the_log(daemon, client, tmp_path):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None, policy="all",
                             warmup_shape=(256, 256)).start()
    events = StreamSubscriber(daemon.stream_address, ("event",))
    results = StreamSubscriber(engine.results_address, ("result",))
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(daemon.publisher, "event")
        wait_subscribed(engine, "result")
        # the shipped configuration, with a cooldown and a ring a loaded machine cannot outrun: the cooldown
        # counts acquisition time (the return below must come within it), and the ring must cover the time a
        # result takes to be decided on plus save_window's 3 s before the event
        cfg = yaml.safe_load((ROOT / "docs" / "triggers-colony.yaml").read_text())
        cfg["triggers"][0]["cooldown_s"], cfg["ring_buffer_s"] = COOLDOWN_S, 30
        with pytest.raises(DaemonError, match="no result stream given for model"):
            client.request("load_triggers", config=cfg, sources={})
        client.request("load_triggers", config=cfg, sources={"virtual-staining": engine.results_address})
        wait_subscribed(engine, "result", 2)  # the trigger runner has joined the result stream
        client.request("start_live", channels=CYCLE, record=True, interval_ms=300)

        def results_at(x, n, timeout=60):
            """Wait for ``n`` results acquired at stage x. Results lag acquisition, and the first
            bundle after a move may straddle both positions, so it is not counted."""
            got, t_end = -1, time.monotonic() + timeout
            while got < n and time.monotonic() < t_end:
                m = results.recv(0.5)
                if m is not None and abs(m[1]["stage_x_um"] - x) < 1:
                    got += 1
            assert got >= n, f"only {got} results at x={x}"

        def fired():
            return client.request("triggers")["fired"]

        results_at(0.0, 3)                            # ordinary cells: nothing happens
        assert fired() == 0
        client.request("move_stage", x=COLONY[0], y=COLONY[1])
        results_at(COLONY[0], 4)                      # the colony: fires once, no chatter
        wait_until(lambda: fired() >= 1, 60, "the trigger runner to decide on the colony")  # its own socket
        assert fired() == 1
        client.request("move_stage", x=0.0, y=0.0)    # re-arm on ordinary cells
        results_at(0.0, 2)
        client.request("move_stage", x=COLONY[0], y=COLONY[1])
        results_at(COLONY[0], 2)                      # back within the cooldown: suppressed
        assert fired() == 1

        log_path = Path(client.request("triggers")["log"])

        def suppressed(why):
            log = log_path.read_text().splitlines()
            return any(x.get("reason", "").startswith(why) for x in map(json.loads, log) if x.get("event"))

        # the trigger thread decides on the results the test has seen on its own socket, however late it runs
        wait_until(lambda: suppressed("cooldown"), 120, "the return within the cooldown to be suppressed")
        wait_until(lambda: suppressed("light budget"), 120,  # cooldown over: the light budget refuses
                   f"the light budget to refuse once the {COOLDOWN_S} s cooldown is over")
        stopped = client.request("stop")["stopped"]
        stopped = client.wait(stopped["id"], timeout_s=300)  # stop replies within 30 s; the writer may lag
        frames = open_recording(stopped["path"]).frames
        complete = sum(n == len(CYCLE) for n in collections.Counter(f.bundle_id for f in frames).values())
        # every complete bundle got a result (policy "all"), decided on, and every action finished
        st = wait_until(lambda: (s := client.request("triggers"))["results"] >= complete
                        and s["actions_pending"] == 0 and s, 120, f"decisions on {complete} results")
        lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
        log = [x for x in lines if "event" in x]
        fire = next(x for x in log if x["event"] == "fire")
        assert fire["measurement"] > 0.25 and abs(fire["position_um"][0] - COLONY[0]) < 1
        outcome = next(x for x in lines if x.get("outcome_of", {}).get("t_ns") == fire["t_ns"])
        assert outcome["closed_loop_latency_ms"] > 0
        confirm, window, note = outcome["actions"]
        assert confirm["ok"] and confirm["channels"] == CYCLE + ["Nuclei"]
        pair = open_recording(confirm["recording"])
        assert pair.series[0].channels == CYCLE + ["Nuclei"]
        assert pair.attrs["scopecast"]["decision"]["bundle_id"] == fire["bundle_id"]
        assert pair.series[0].image("Nuclei").mean() > pair.series[0].image("DF").mean()
        assert window["ok"] and window["frames_before_event"] > 0 and window["frames"] > window["frames_before_event"]
        assert note["ok"] and note["published"]
        ev = wait_until(lambda: (m := events.recv(0.5)) is not None and m[0] == "event"
                        and m[1].get("decision", {}).get("trigger") == "dense-colony" and m, 60, "the notify event")
        assert ev[1]["message"] == "dense colony found", ev
        reasons = [x["reason"] for x in log if x["event"] == "suppressed"]
        assert any(r.startswith("cooldown") for r in reasons)
        assert any(r.startswith("light budget at this position: 100 + 100 > 150") for r in reasons)
        assert sum(x["event"] == "fire" for x in log) == 1
        # replay: offline inference over the live recording, then the same triggers
        res = run_offline(VS, stopped["path"], runtime="ort-cpu")
        replayed = [d.key() for d in replay(cfg, res.output)]
        assert replayed == log
    finally:
        events.close()
        results.close()
        client.request("unload_triggers")
        engine.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped yet")
def test_stage_scan_and_live_actions(daemon, client):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None, warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        cfg = {"triggers": [{
            "name": "colony", "model": "virtual-staining",
            "measurement": {"kind": "area_fraction", "channel": "nuclei", "threshold": 2000},
            "condition": {"above": 0.25, "rearm_below": 0.18}, "cooldown_s": 60,
            "actions": [
                {"kind": "center_object"},
                {"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 20, "z_range_um": 2, "z_step_um": 1},
                {"kind": "tile_scan", "channels": ["BF"], "exposure_ms": 5, "rows": 1, "columns": 2},
                {"kind": "switch_live", "interval_ms": 25, "live_channels": CYCLE},
            ]}],
            "safety": {"dose_per_position": 1000, "dose_per_session": 1000}}
        client.request("load_triggers", config=cfg, sources={"virtual-staining": engine.results_address})
        wait_subscribed(engine, "result")  # the trigger runner has joined the result stream
        client.request("move_stage", x=COLONY[0], y=COLONY[1])
        first = client.request("start_live", channels=CYCLE, interval_ms=100)
        st = wait_until(lambda: (s := client.request("triggers"))["fired"] and s["actions_pending"] == 0 and s,
                        120, "the trigger to fire and its actions to finish")
        lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
        outcome = next(x for x in lines if "outcome_of" in x)
        center, zstack, tiles, switch = outcome["actions"]
        assert all(a["ok"] for a in outcome["actions"]), outcome
        # the stage moved by the offset that centres the largest nucleus
        assert center["moved"] and max(abs(v) for v in center["offset_um"]) < 256 * 0.65 / 2
        pos = client.request("status")["position_um"]
        assert pos["x"] == pytest.approx(COLONY[0] + center["offset_um"][0], abs=1e-3)
        # z stack: 3 planes of the real fluorescence, recorded
        z = open_recording(zstack["recording"]).series[0]
        assert z.data.shape[2] == 3 and [round(f.stage_z_um, 3) for f in z.frames] == [-1.0, 0.0, 1.0]
        assert len(open_recording(tiles["recording"]).series) == 2
        # live was paused for the scans, resumed, then switched to the faster interval
        st = wait_until(lambda: (s := client.request("status"))["state"] == "live" and s, 60, "live to resume")
        assert st["state"] == "live" and st["job"]["id"] != first["id"] and st["job"]["plan"]["interval_ms"] == 25
        assert st["job"]["id"] == switch["live_job"]
        client.request("stop")
    finally:
        client.request("unload_triggers")
        engine.close()


def _results(path: Path, model: str | None) -> Path:
    """A one-result recording shaped like 'scopecast engine --offline' output (``model`` None: a raw recording)."""
    from scopecast.daemon.frames import Frame, FrameHeader
    from scopecast.daemon.recorder import Recorder, SeriesSpec

    rec = Recorder(path, "r", {"kind": "inference"})
    s = rec.add_series(SeriesSpec("pos000 m", ("nuclei",), ("inferred",), (8, 8), "float32", 0.65, (0.0, 0.0, 0.0)))
    extra = {"model": model, "trust": {"trusted": True}} if model else {}
    h = FrameHeader(acquisition_id="r", seq=0, bundle_id=1, bundle_index=0, bundle_size=1, channel="nuclei",
                    modality="inferred", pattern="", detector="m", stage_x_um=0.0, stage_y_um=0.0, stage_z_um=0.0,
                    exposure_ms=0.0, pixel_size_um=0.65, dtype="float32", shape=(8, 8), position_index=0,
                    t_exposure_start_ns=1, t_acquired_ns=2, extra=extra)
    rec.write(Frame(h, np.ones((8, 8), np.float32)), s, 0, 0)
    rec.close()
    return path


def test_replay_says_when_it_was_given_nothing_its_triggers_watch(tmp_path, capsys):
    """'0 decisions' must mean the triggers never fired: a raw recording, or results of a model no trigger
    watches, are refused naming the problem; the CLI says it in one line (exit 2), a missing file too."""
    from scopecast.daemon.cli import main

    cfg = {"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "nuclei"},
                         "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0, "actions": []}]}
    assert replay(cfg, _results(tmp_path / "ok.ome.zarr", "m"))  # the control: it decides
    with pytest.raises(ValueError, match="holds no inference results .*engine --offline"):
        replay(cfg, _results(tmp_path / "raw.ome.zarr", None))
    with pytest.raises(ValueError, match="the triggers watch m; .* holds results of other-model"):
        replay(cfg, _results(tmp_path / "other.ome.zarr", "other-model"))
    config = tmp_path / "t.json"
    config.write_text(json.dumps(cfg))
    for results in (tmp_path / "raw.ome.zarr", tmp_path / "missing.ome.zarr"):
        assert main(["replay", "--triggers", str(config), "--results", str(results)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scopecast replay: ") and err.count("\n") == 1, err


def test_replay_decides_on_every_plane_of_a_z_stack(tmp_path):
    """Offline inference writes each plane of a scan's z-stack as a result, and the live engine infers each
    plane; replay read plane 0 of each bundle only, so a colony in focus on another plane never fired."""
    from scopecast.daemon.frames import Frame, FrameHeader
    from scopecast.daemon.recorder import Recorder, SeriesSpec

    path = tmp_path / "stack.m.ome.zarr"
    rec = Recorder(path, "r", {"kind": "inference"})
    s = rec.add_series(SeriesSpec("pos000 m", ("nuclei",), ("inferred",), (8, 8), "float32", 0.65, (0.0, 0.0, -2.0),
                                  n_z=3, z_step_um=2.0))
    for z, value in enumerate((0.0, 1.0, 0.0)):  # in focus (stained) on the middle plane only
        h = FrameHeader(acquisition_id="r", seq=z, bundle_id=1, bundle_index=0, bundle_size=1, channel="nuclei",
                        modality="inferred", pattern="", detector="m", stage_x_um=0.0, stage_y_um=0.0,
                        stage_z_um=2.0 * z - 2.0, exposure_ms=0.0, pixel_size_um=0.65, dtype="float32", shape=(8, 8),
                        position_index=0, t_exposure_start_ns=1 + z, t_acquired_ns=2 + z,
                        extra={"model": "m", "trust": {"ok": True, "score": 1.0, "reasons": []}})
        rec.write(Frame(h, np.full((8, 8), value, np.float32)), s, 0, 0, z)
    rec.close()
    cfg = {"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "nuclei"},
                         "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0, "actions": []}]}
    decisions = replay(cfg, path)
    assert [(d.event, d.position_um[2]) for d in decisions if d.event == "fire"] == [("fire", 0.0)], decisions


def test_the_documented_configuration_loads_as_written():
    """docs/smart-acquisition.md's configuration block held ``actions: [...]``: copied, it was refused."""
    doc = (ROOT / "docs" / "smart-acquisition.md").read_text(encoding="utf-8")
    block = doc.split("## Configuration (YAML or JSON)", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    cfg = load_trigger_config(yaml.safe_load(block))
    assert [a.kind for a in cfg.triggers[0].actions] == ["confirm_fluorescence", "notify"]

