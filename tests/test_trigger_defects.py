"""Confirmed trigger defects, fixed: load_triggers refuses actions that could only fail when they fire; a spent light
budget does not flood the decision log; ``gui --screenshot`` saves once. Real daemon, real sockets, offscreen Qt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.triggers import Decider, load_trigger_config
from scopecast.daemon.wire import dumps_strict

from conftest import ROOT
from helpers import StandInEngine, live_under_triggers, log_lines, wait_subscribed, wait_until

NOWHERE = "tcp://127.0.0.1:6222"  # a result stream nobody publishes on: loading only subscribes to it


def _trigger(name: str = "bad", **over) -> dict:
    t = {"name": name, "model": "m", "measurement": {"kind": "mean", "channel": "c"},
         "condition": {"above": 0.5, "rearm_below": 0.3}, "cooldown_s": 0, "actions": [{"kind": "notify"}]}
    t.update(over)
    return t


# (config, what the error must name: the trigger, the field, the value)
REFUSED = [
    ({"triggers": [_trigger(actions=[{"kind": "confirm_fluorescence", "channels": ["Nope"]}])]},
     ["'bad'", "channels", "Nope"]),
    ({"triggers": [_trigger(actions=[{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 1e9}])]},
     ["'bad'", "exposure_ms = 1e+09", "range [0.01, 60000] ms"]),
    ({"triggers": [_trigger(actions=[{"kind": "switch_live", "live_channels": ["BF", "Nope"]}])]},
     ["'bad'", "live_channels", "Nope"]),
    ({"triggers": [_trigger(actions=[{"kind": "z_stack", "channels": ["Nuclei"], "z_range_um": 1e9,
                                      "z_step_um": 1e-9}])]}, ["'bad'", "z_range_um = 1000000000.0", "2000"]),
    ({"triggers": [_trigger(actions=[{"kind": "z_stack", "channels": ["Nuclei"], "z_range_um": 100,
                                      "z_step_um": 1e-3}])]}, ["'bad'", "z_step_um 0.001", "100001 planes"]),
    ({"triggers": [_trigger(actions=[{"kind": "tile_scan", "channels": ["BF"], "rows": 1_000_000,
                                      "columns": 1_000_000}])]}, ["'bad'", "rows = 1000000", "100"]),
    ({"triggers": [_trigger(actions=[{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "power": 0.1}])]},
     ["'bad'", "power 0.1", "does not set the excitation power"]),
    ({"triggers": [_trigger(measurement={"kind": "mean", "channel": "c", "roi": [100, 100, -5, -5]})]},
     ["'bad'", "roi", "[100, 100, -5, -5]"]),
    ({"triggers": [_trigger()], "ring_buffer_s": 1e12}, ["ring_buffer_s = 1000000000000.0", "600"]),
    ({"triggers": [_trigger(), _trigger(condition={"above": 0.9})]}, ["names must be unique", "'bad'"]),
    ({"triggers": [_trigger(actions=[{"kind": "save_window", "before_s": 3}])], "ring_buffer_s": 2},
     ["ring_buffer_s = 2", "'bad'", "actions[0] save_window before_s = 3", "raise ring_buffer_s"]),
]


@pytest.mark.parametrize(("config", "named"), REFUSED, ids=[
    "unknown-channel", "exposure-out-of-range", "unknown-live-channel", "z-range", "z-planes", "tile-grid", "power",
    "inverted-roi", "ring-buffer", "duplicate-names", "ring-shorter-than-window"])
def test_load_triggers_refuses_actions_that_cannot_run(daemon, client, config, named):
    loaded = client.request("load_triggers", config={"triggers": [_trigger("good")]}, sources={"m": NOWHERE})
    with pytest.raises(DaemonError) as e:
        client.request("load_triggers", config=config, sources={"m": NOWHERE})
    assert e.value.type == "ValueError", e.value
    msg = e.value.message
    assert all(n in msg for n in named), msg
    st = client.request("triggers")  # the refused load changed nothing
    assert st["loaded"] and st["session"] == loaded["session"] and list(st["triggers"]) == ["good"]


def test_refused_sources_leave_the_loaded_triggers(daemon, client):
    loaded = client.request("load_triggers", config={"triggers": [_trigger("good")]}, sources={"m": NOWHERE})
    with pytest.raises(DaemonError, match="no result stream given for model"):
        client.request("load_triggers", config={"triggers": [_trigger("other", model="x")]}, sources={"m": NOWHERE})
    with pytest.raises(DaemonError, match=r"sources\['m'\] = 'nowhere': not a ZeroMQ address"):
        client.request("load_triggers", config={"triggers": [_trigger("other")]}, sources={"m": "nowhere"})
    st = client.request("triggers")
    assert st["session"] == loaded["session"] and list(st["triggers"]) == ["good"]


def _result(value: float, t_s: float, x: float = 0.0) -> tuple[dict, np.ndarray]:
    data = np.full((1, 4, 4), value, np.float32)
    header = {"model": "m", "channels": ["c"], "t_acquired_ns": int(t_s * 1e9), "bundle_id": int(t_s),
              "acquisition_id": "a", "source_seqs": [int(t_s)], "stage_x_um": x, "stage_y_um": 0.0, "stage_z_um": 0.0,
              "pixel_size_um": 0.65, "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}},
              "dtype": "float32", "shape": list(data.shape)}
    return header, data


def test_spent_light_budget_logs_one_suppression_per_reason(daemon, client):
    """After the one firing the position's budget is spent: the next 69 results above the threshold give one
    ``suppressed`` line, one count every 60 s of acquisition time, and one when the stretch ends (the firing
    elsewhere) — not 69 lines. The decisions equal the Decider's on the same results (replay)."""
    config = {"triggers": [_trigger("t", actions=[{"kind": "confirm_fluorescence", "channels": ["Nuclei"],
                                                   "exposure_ms": 100, "power": 1}])],
              "safety": {"dose_per_position": 150, "dose_per_session": 1000}}
    results = [_result(0.9, 0), _result(0.1, 1)] + [_result(0.9, t) for t in range(2, 71)] + [_result(0.9, 71, 5000.0)]
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)  # tells when the trigger runner has subscribed
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        st = client.request("load_triggers", config=config, sources={"m": f"tcp://127.0.0.1:{port}"})
        assert pub.poll(60_000), "the trigger runner did not subscribe to the result stream"
        assert pub.recv().startswith(b"\x01")
        for i, (header, data) in enumerate(results):  # one at a time: the runner's queue is short
            pub.send_multipart([b"result", dumps_strict(header), data.tobytes()])
            wait_until(lambda i=i: client.request("triggers")["results"] > i, 60, f"the decision on result {i}")
        st = wait_until(lambda: (s := client.request("triggers"))["actions_pending"] == 0 and s, 120,
                        "the firings' actions to finish")
    finally:
        pub.close()
    log = [x for x in map(json.loads, Path(st["log"]).read_text().splitlines()) if "event" in x]
    assert [(x["event"], x.get("repeats", 0)) for x in log] == [
        ("fire", 0), ("rearm", 0), ("suppressed", 0), ("suppressed", 60), ("suppressed", 8), ("fire", 0)]
    assert log[2]["reason"] == "light budget at this position: 100 + 100 > 150" and log[2]["bundle_id"] == 2
    assert [x["bundle_id"] for x in log[3:]] == [62, 70, 71]
    assert st["triggers"]["t"]["suppressed"] == 69 and st["triggers"]["t"]["suppressed_unlogged"] == 0
    decider = Decider(load_trigger_config(config))
    assert [d.key() for h, data in results for d in decider.decide(h, data)] == log


def test_cooldown_suppressions_are_logged_once_with_their_count():
    d = Decider(load_trigger_config({"triggers": [_trigger("t", cooldown_s=8)]}))
    out = [x for i, v in enumerate([0.9, 0.1] + [0.9] * 6 + [0.1, 0.9]) for x in d.decide(*_result(v, i))]
    assert [(x.event, x.repeats) for x in out] == [("fire", 0), ("rearm", 0), ("suppressed", 0), ("suppressed", 5),
                                                  ("fire", 0)]
    assert out[2].reason == "cooldown: 2.00 s of 8 s" and out[3].reason == "cooldown: 7.00 s of 8 s"


def _outcomes(client, engine: StandInEngine, config: dict, fired: int, model_s: float = 0.0,
              channels: list | None = None, source: str = "m") -> dict[str, dict]:
    """Live ``channels`` (BF) until ~3 s of frames are in the ring, then results above every threshold (each
    ``model_s`` after its bundle) until ``fired`` firings are decided and their actions done: each trigger's
    outcome line, by trigger name. The engine's results are the source named ``source``."""
    client.request("load_triggers", config=config, sources={source: engine.address})
    try:
        engine.wait_subscriber()
        client.request("start_live", channels=channels or ["BF"], interval_ms=100)
        first = wait_until(lambda: engine.frames and engine.frames[0]["t_acquired_ns"], 60, "a live frame")
        wait_until(lambda: engine.frames[-1]["t_acquired_ns"] - first > 3e9, 120, "3 s of live frames")
        engine.model_s, engine.value = model_s, 0.9  # from now on every result is above the thresholds
        st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= fired and not s["actions_pending"]
                        and s, 120, "the firings and their actions")
        client.request("stop")
    finally:
        client.request("unload_triggers")
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
    return {x["outcome_of"]["trigger"]: x for x in lines if "outcome_of" in x}


def test_a_queued_save_window_keeps_the_frames_before_its_event(daemon, client):
    """Two triggers fire on the same result; the second's save_window runs only after the first's has waited
    4 s for frames after the event, by which time a 3.5 s ring has dropped every frame before the event. The
    frames before it are taken from the ring when the firing is decided, so the window still has them."""
    t = _trigger(cooldown_s=600, condition={"above": 0.5, "rearm_below": -1})
    config = {"triggers": [{**t, "name": "first", "actions": [{"kind": "save_window", "before_s": 0, "after_s": 4}]},
                           {**t, "name": "second", "actions": [{"kind": "save_window", "before_s": 1.5,
                                                                "after_s": 0}]}],
              "ring_buffer_s": 3.5}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        out = _outcomes(client, engine, config, 2)
    first, second = out["first"]["actions"][0], out["second"]["actions"][0]
    assert first["ok"] and first["frames"] > 0 and first["frames_before_event"] == 0
    assert second["ok"] and second["frames_before_event"] > 0, second


def test_a_window_decided_later_than_the_ring_holds_says_so(daemon, client):
    """A model that takes 3 s: by the decision a 4 s ring holds only the last ~1 s of a 2 s window before the
    event. The outcome says so, and what to change."""
    config = {"triggers": [_trigger("late", cooldown_s=600, condition={"above": 0.5, "rearm_below": -1},
                                    actions=[{"kind": "save_window", "before_s": 2, "after_s": 0}])],
              "ring_buffer_s": 4}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        window = _outcomes(client, engine, config, 1, model_s=3.0)["late"]["actions"][0]
    assert window["ok"]
    assert window["warning"].startswith("decided ") and "the ring buffer (4 s) kept only the last" in window["warning"]
    assert window["warning"].endswith("of the 2 s before it; raise ring_buffer_s")


def test_a_pair_decided_later_than_the_ring_holds_says_it_lacks_the_bundle(daemon, client):
    """A model that takes 3 s, a 2 s ring: by the decision the deciding label-free bundle is gone, so the pair
    has only the fluorescence. Its outcome says so and what to change (it used to report a complete pair)."""
    config = {"triggers": [_trigger("late", cooldown_s=600, condition={"above": 0.5, "rearm_below": -1},
                                    actions=[{"kind": "confirm_fluorescence", "channels": ["Nuclei"]}])],
              "ring_buffer_s": 2}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        pair = _outcomes(client, engine, config, 1, model_s=3.0)["late"]["actions"][0]
    assert pair["ok"] and pair["channels"] == ["Nuclei"], pair
    assert pair["warning"].startswith("the ring buffer (2 s) no longer held 1 of the 1 frames of the deciding bundle")
    assert pair["warning"].endswith("the pair lacks them; raise ring_buffer_s")


def test_a_fast_model_finds_its_bundle_in_the_ring_behind_a_slow_sink(daemon, client):
    """The ring is a frame sink ahead of the publisher: an instant model's result cannot be decided on before
    its frame is in the ring, however long the sinks after the publisher take (here 0.4 s a frame, as a loaded
    machine can). The ring used to be the last sink, so the pair lacked the deciding frame."""
    daemon.engine.sinks.append(lambda frame: time.sleep(0.4))
    config = {"triggers": [_trigger("fast", cooldown_s=600, condition={"above": 0.5, "rearm_below": -1},
                                    actions=[{"kind": "confirm_fluorescence", "channels": ["Nuclei"]}])]}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        pair = _outcomes(client, engine, config, 1)["fast"]["actions"][0]
    assert pair["ok"] and pair["channels"] == ["BF", "Nuclei"] and "warning" not in pair, pair


def test_no_action_exposes_or_moves_the_sample_after_the_user_stopped_live(daemon, client):
    """A model (3 s) slower than the user's stop: its result is still decided on and logged, but confirm_fluorescence
    and switch_live are skipped with the reason, and live stays stopped. switch_live used to start live again
    (with a cycle the user never chose) and the fluorescence was exposed while the user may be at the slide."""
    config = {"triggers": [_trigger("late", cooldown_s=600, condition={"above": 0.5, "rearm_below": -1}, actions=[
        {"kind": "confirm_fluorescence", "channels": ["Nuclei"]}, {"kind": "notify"},
        {"kind": "switch_live", "interval_ms": 50, "live_channels": ["BF"]}])]}
    with StandInEngine(daemon.stream_address, model_s=3.0, value=0.9) as engine:
        client.request("load_triggers", config=config, sources={"m": engine.address})
        try:
            engine.wait_subscriber()
            job = client.request("start_live", channels=["BF"], interval_ms=200)
            wait_until(lambda: engine.frames, 60, "a live frame on the stream")
            client.request("stop")  # before the model has answered
            st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"]
                            and s, 120, "the late result's firing and its actions")
        finally:
            client.request("unload_triggers")
    assert client.request("status")["state"] == "idle" and client.request("job", job=job["id"])["status"] == "stopped"
    outcome = next(x for x in map(json.loads, Path(st["log"]).read_text().splitlines()) if "outcome_of" in x)
    pair, notify, switch = outcome["actions"]
    why = f"live acquisition {job['acquisition_id']} was stopped before this action ran, and no live runs"
    assert pair == {"action": "confirm_fluorescence", "ok": False, "skipped": why}
    assert switch == {"action": "switch_live", "ok": False, "skipped": why}
    assert notify["ok"]  # what does not touch the sample still runs
    assert not any(Path(st["log"]).parent.glob("*-pair-*.ome.zarr"))


def test_a_window_of_a_cycle_with_a_sted_channel_records_each_detector_in_its_series(daemon, client):
    """A live cycle of BF on the camera and Membrane on the STED detector (twice the camera's sampling):
    save_window and confirm_fluorescence put each detector's frames in a series of its own, in the daemon's
    OME-Zarr version. The window used to fail at its first STED frame ("frame shape (512, 512) does not match
    series 0") and leave a recording that said it was complete; the pair mixed both shapes the same way."""
    from scopecast.daemon.recording import open_recording

    daemon.engine.ngff = "0.5"  # as 'scopecast daemon --ngff 0.5': trigger recordings follow it
    config = {"triggers": [_trigger("both", cooldown_s=600, condition={"above": 0.5, "rearm_below": -1}, actions=[
        {"kind": "save_window", "before_s": 1, "after_s": 0},
        {"kind": "confirm_fluorescence", "channels": ["Nuclei"]}])]}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        out = _outcomes(client, engine, config, 1, model_s=0.2,  # a model: the cycle reached the ring first
                        channels=["BF", {"name": "Membrane", "detector": "STED"}])
    window, pair = out["both"]["actions"]
    assert window["ok"] and pair["ok"], out
    for action in (window, pair):
        rec = open_recording(action["recording"])
        assert rec.attrs["scopecast"]["complete"] is True and (Path(action["recording"]) / "zarr.json").is_file()
        by_detector = {s.attrs["scopecast"]["detector"]: s for s in rec.series}
        assert set(by_detector) == {"Camera", "STED"}, action
        cam, sted = by_detector["Camera"], by_detector["STED"]
        assert sted.data.shape[-1] == 2 * cam.data.shape[-1]
        assert sted.channels == ["Membrane"] and sted.attrs["scopecast"]["modalities"] == ["super-resolution"]
        assert all(f.detector == "STED" for f in sted.frames) and all(f.detector == "Camera" for f in cam.frames)
    assert window["frames"] == sum(len(s.frames) for s in open_recording(window["recording"]).series)


def test_a_trigger_names_its_model_by_its_key_in_sources(daemon, client):
    """docs/smart-acquisition.md: a trigger's ``model`` is a key of ``sources``. Keyed ``live-vs`` on an
    engine whose package is ``m``, it fires; it used to compare the key with the package name and decide
    nothing, silently."""
    config = {"triggers": [_trigger("aliased", model="live-vs", cooldown_s=600,
                                    condition={"above": 0.5, "rearm_below": -1})]}
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        out = _outcomes(client, engine, config, 1, source="live-vs")
    assert out["aliased"]["actions"][0]["ok"], out


#: Runs ``scopecast gui`` with ``QApplication.processEvents`` slowed down, as on a loaded machine where the pending
#: events take longer than the screenshot timer's period (the timer is then due inside the screenshot's own
#: ``processEvents``: before the fix it ran the screenshot a second time).
SLOW_EVENTS_GUI = """
import runpy, sys, time
from pyqtgraph.Qt import QtWidgets
process_events = QtWidgets.QApplication.processEvents
def slow(*args, **kwargs):
    time.sleep(0.5)
    return process_events(*args, **kwargs)
QtWidgets.QApplication.processEvents = staticmethod(slow)
sys.argv = ["scopecast", *sys.argv[1:]]
runpy.run_module("scopecast.daemon.cli", run_name="__main__")
"""


def test_headless_screenshot_saves_once(daemon, client, tmp_path):
    client.request("start_live", channels=["BF"], interval_ms=50)
    out = tmp_path / "shot.png"
    args = [sys.executable, "-c", SLOW_EVENTS_GUI, "gui", "--control", daemon.control_address,
            "--stream", daemon.stream_address, "--screenshot", str(out), "--frames", "2", "--timeout", "120"]
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    finally:
        client.request("stop")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("scopecast gui: screenshot") == 1, r.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


COLONY_SOURCES = {"virtual-staining": "tcp://127.0.0.1:5557"}


@pytest.mark.parametrize("python, expected", [
    ("scopecast_test_failing_trigger:Dense", "RuntimeError: threshold file not found"),  # its __init__ raises
    ("scopecast_test_not_installed:Dense", "No module named"),
])
def test_a_python_trigger_that_cannot_load_leaves_the_running_triggers(sim_cfg, tmp_path, monkeypatch, python,
                                                                      expected):
    """The running triggers stay, with their light limits, when an allowed Python trigger fails to import or to
    construct: they were unloaded first, and the refused file's limits applied, before the class was tried."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    (tmp_path / "scopecast_test_failing_trigger.py").write_text(
        "class Dense:\n"
        "    def __init__(self):\n"
        "        raise RuntimeError('threshold file not found')\n"
        "    def measure(self, header, data):\n"
        "        return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
               trigger_dirs=[ROOT / "docs"], trigger_modules=[python]).start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as c:
            c.request("load_triggers", config=str(ROOT / "docs" / "triggers-colony.yaml"), sources=COLONY_SOURCES)
            before = c.request("triggers")
            with pytest.raises(DaemonError) as e:
                c.request("load_triggers", sources=COLONY_SOURCES, config={
                    "triggers": [{"name": "mine", "model": "virtual-staining", "python": python,
                                  "condition": {"above": 1}}],
                    "safety": {"dose_per_position": 1, "dose_per_session": 1}})
            assert e.value.type == "ValueError" and python in e.value.message and expected in e.value.message
            after = c.request("triggers")
            assert after["loaded"] and after["session"] == before["session"]
            assert list(after["triggers"]) == ["dense-colony"]
            assert after["dose_per_position_budget"] == 150  # the running triggers' limits, not the refused ones
    finally:
        d.close()


COLONY = (ROOT / "docs" / "triggers-colony.yaml").read_text()


@pytest.mark.parametrize("name, write, expected", [
    ("indent.yaml", lambda p: p.write_text(COLONY.replace("    cooldown_s: 5", "   cooldown_s: 5")),
     "is not valid YAML at line 10"),
    ("editor.yaml", lambda p: p.write_text(COLONY, encoding="utf-16"), "is not UTF-8 text"),
    ("comma.json", lambda p: p.write_text('{"triggers": [}'), "is not valid JSON at line 1"),
    # parsed, but a threshold YAML writes as .nan was accepted: that trigger could never fire
    ("nan.yaml", lambda p: p.write_text(COLONY.replace("above: 0.25", "above: .nan")),
     "trigger 'dense-colony' (triggers[0]) condition.above = nan: Input should be a finite number"),
])
def test_a_trigger_file_it_cannot_use_is_refused_naming_it_and_where(daemon, client, tmp_path, name, write, expected):
    """A YAML indentation slip, a file saved as UTF-16, a stray JSON comma, a .nan threshold: one ValueError line
    naming the file (or the trigger) and where, from load_triggers and from replay (exit 2). It was the parser's
    own error without the file name, and a traceback from replay."""
    path = daemon.engine.data_dir / name
    write(path)
    with pytest.raises(DaemonError) as e:
        client.request("load_triggers", config=str(path), sources=COLONY_SOURCES)
    assert e.value.type == "ValueError" and name in e.value.message and expected in e.value.message
    # replay says the same in one line, exit status 2, no traceback
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "replay", "--triggers", str(path),
                        "--results", str(tmp_path / "none.ome.zarr")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr and expected in r.stderr


LIVE_CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def _fires_once(action: dict) -> dict:
    """Fires once, on the first result of model ``m``; lockstep, so live waits for that decision."""
    return {"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "nuclei"},
                          "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0, "actions": [action]}],
            "safety": {"dose_per_position": 1e6, "dose_per_session": 1e6, "max_actions_per_minute": 100},
            "lockstep": True, "lockstep_timeout_s": 60}


def _continued(daemon, client, action: dict, **live) -> tuple[dict, dict]:
    """Start ``live``; once the trigger fired and its action restarted live: (the first job, the new one)."""
    with StandInEngine(daemon.stream_address, value=1000.0, channel="nuclei", full_frame=True) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=_fires_once(action), sources={"m": engine.address})
        try:
            first = client.request("start_live", channels=LIVE_CYCLE, **live)
            wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"], 120,
                       "the trigger to fire and its action to finish")

            def restarted() -> dict | None:
                """The live the action started, once running (a recorded one: with its recording's figures)."""
                later = [j for j in client.request("jobs") if j["kind"] == "live" and j["id"] != first["id"]]
                return later and (later[0]["recording"] or not live.get("record")) and later[0]

            again = wait_until(restarted, 120, "the action to restart live")
        finally:
            client.request("unload_triggers")
    return client.request("job", job=first["id"]), again


def test_a_live_resumed_after_a_z_stack_keeps_what_its_recording_cap_has_left(daemon, client):
    first, resumed = _continued(daemon, client, {"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": 5,
                                                 "z_range_um": 1, "z_step_um": 1},
                                record=True, record_max_frames=60)
    assert first["status"] == "stopped" and 0 < first["recording"]["frames"] < 60
    assert resumed["recording"]["max_frames"] == 60 - first["recording"]["frames"]  # was None: unbounded
    done = client.wait(resumed["id"], timeout_s=300)  # ends by itself at the cap
    assert done["stop_reason"].startswith("recording frame cap reached"), done
    assert first["recording"]["frames"] + done["recording"]["frames"] == 60


def test_switch_live_keeps_the_cycles_a_bounded_live_has_left(daemon, client):
    first, switched = _continued(daemon, client, {"kind": "switch_live", "interval_ms": 0, "live_channels": ["BF"]},
                                 max_cycles=40)
    done_cycles = first["frames"] // len(LIVE_CYCLE)
    assert 0 < done_cycles < 40
    assert switched["plan"]["max_cycles"] == 40 - done_cycles  # was 40 again
    assert switched["plan"]["channels"] == [{"name": "BF", "exposure_ms": first["plan"]["channels"][0]["exposure_ms"],
                                             "detector": None}]
    client.wait(switched["id"], timeout_s=300)
    client.request("stop")


def test_a_stop_during_a_trigger_z_stack_does_not_restart_live(daemon, client):
    """A user's ``stop`` while a trigger's z_stack runs stops the microscope: the action restarted live at once
    (with a new recording; at shutdown on a closing backend)."""
    config = {"triggers": [_trigger("zs", measurement={"kind": "mean", "channel": "nuclei"},
                                    condition={"above": 0.5, "rearm_below": -1}, cooldown_s=600, actions=[
        {"kind": "z_stack", "channels": ["BF"], "exposure_ms": 5, "z_range_um": 200, "z_step_um": 0.5}])],
        "safety": {"dose_per_position": 1e6, "dose_per_session": 1e6}}  # 401 planes: time to be stopped
    with StandInEngine(daemon.stream_address, value=1000.0, channel="nuclei", full_frame=True) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"m": engine.address})
        try:
            engine.wait_subscriber()
            live = client.request("start_live", channels=["DPC-Left", "BF"], record=True)
            wait_until(lambda: client.request("status")["state"] == "scan", 120, "the trigger's z_stack to start")
            assert client.request("stop")["stopped"]["kind"] == "scan"
            st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"]
                            and s, 120, "the z_stack action to end")
        finally:
            client.request("unload_triggers")
    assert client.request("status")["state"] == "idle"  # was "live": the action restarted it
    assert [j["id"] for j in client.request("jobs") if j["kind"] == "live"] == [live["id"]]
    outcome = [x for x in Path(st["log"]).read_text(encoding="utf-8").splitlines() if "outcome_of" in x]
    assert "live is not resumed" in outcome[-1]


def _notifies(name: str, n_actions: int) -> dict:
    """Fires on the first result (every pixel 1.0), once, with ``n_actions`` notify actions."""
    return _trigger(name, condition={"above": 0.5, "rearm_below": -1}, cooldown_s=600,
                    actions=[{"kind": "notify", "message": f"{name} {i}"} for i in range(n_actions)])


def test_the_rate_limit_counts_each_action(daemon, client):
    """``max_actions_per_minute`` counted firings: a firing of 3 actions used 1 of the minute's allowance."""
    config = {"triggers": [_notifies("first", 3), _notifies("second", 3)], "safety": {"max_actions_per_minute": 3}}
    with StandInEngine(daemon.stream_address, value=1.0) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"m": engine.address})
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=["BF"], interval_ms=50)
            st = wait_until(lambda: (s := client.request("triggers"))["results"] >= 1 and not s["actions_pending"]
                            and s, 60, "the first result decided and its actions done")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines() if '"event"' in x]
    assert [(x["trigger"], x["event"]) for x in lines][:2] == [("first", "fire"), ("second", "suppressed")]
    assert lines[1]["reason"] == "rate limit: 3 actions in the last minute + 3 of this firing > 3"


def test_a_trigger_with_more_actions_than_the_rate_limit_is_refused_at_load(client):
    config = {"triggers": [_notifies("big", 4)], "safety": {"max_actions_per_minute": 3}}
    with pytest.raises(DaemonError, match="trigger 'big' has 4 actions, more than safety.max_actions_per_minute"):
        client.request("load_triggers", config=config, sources={"m": NOWHERE})


def test_trigger_recordings_keep_the_disk_reserve(daemon, client, monkeypatch):
    """A confirmation pair and a saved window wrote into the disk's reserve; refused now, the confirmation before
    any light, each outcome naming it."""
    import shutil

    from scopecast.daemon.recording import cap as cap_module

    t = _trigger(cooldown_s=600, condition={"above": 0.5, "rearm_below": -1})
    config = {"triggers": [{**t, "name": "pair", "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"],
                                                               "exposure_ms": 10}]},
                           {**t, "name": "window", "actions": [{"kind": "save_window", "before_s": 1,
                                                                "after_s": 0}]}]}
    monkeypatch.setattr(cap_module, "DISK_RESERVE_BYTES", shutil.disk_usage(daemon.engine.data_dir).free + 2**30)
    with StandInEngine(daemon.stream_address, value=0.0) as engine:
        out = _outcomes(client, engine, config, 2)
    for name in ("pair", "window"):
        action = out[name]["actions"][0]
        assert not action["ok"] and "cannot record: the data disk has" in action["error"], action
    assert not list(Path(daemon.engine.data_dir).glob("*.ome.zarr"))


def test_a_saved_window_holds_the_whole_bundle_the_decision_was_made_on(daemon, client):
    """``save_window``'s ``before_s`` counted back from the event, the deciding bundle's last frame: a bundle that took
    longer than ``before_s`` (slow channels; on a loaded GPU server the first dark-field frame at a new field took
    3.8 s) left its own first frames out of the window. Now it counts back from the bundle's first frame."""
    from scopecast.daemon.recorder import open_recording

    cycle = [{"name": c, "exposure_ms": 30} for c in ("DPC-Left", "DPC-Right", "BF", "DF")]
    config = {"triggers": [{"name": "w", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
                            "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0,
                            "actions": [{"kind": "save_window", "before_s": 0.01, "after_s": 0}]}]}
    with live_under_triggers(daemon, client, config, cycle, value=1.0) as log:
        done = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 120,
                          "the window's outcome")
    window = done["actions"][0]
    assert window["ok"], done
    fired = done["outcome_of"]["bundle_id"]
    got = [f.channel for f in open_recording(window["recording"]).frames if f.bundle_id == fired]
    assert sorted(got) == sorted(c["name"] for c in cycle), got  # was ['DF']: the bundle's last frame only
    assert window["frames_before_event"] >= len(cycle) - 1
