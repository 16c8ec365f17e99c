"""Spot checks: the real fluorescence beside the virtual stain, during live, within a light budget."""

from __future__ import annotations

import contextlib
from pathlib import Path

import json
import time

import numpy as np
import pytest

from helpers import StandInEngine, wait_subscribed, wait_until
from scopecast.daemon.control import DaemonError
from scopecast.daemon.dose import DoseBudget
from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.spot_checks import capture_differs, fidelity, validated_psnr
from scopecast.daemon.stream import StreamSubscriber
from scopecast.daemon.triggers import Decider, load_trigger_config
from scopecast.models.manifest import ModelManifest

ROOT = Path(__file__).resolve().parents[1]
VS = ROOT / "models" / "packages" / "virtual-staining"
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]


def test_fidelity_figures_and_sampling():
    rng = np.random.default_rng(0)
    real = rng.uniform(100, 1000, (64, 64)).astype(np.float32)
    same = fidelity(real, real)
    assert same["pearson"] == 1.0 and same["psnr_db"] > 60
    noisy = fidelity(real + rng.normal(0, 90, real.shape).astype(np.float32), real)
    assert 15 < noisy["psnr_db"] < 25 and 0.8 < noisy["pearson"] < 1.0  # range 900, noise 90: ~20 dB
    fine = np.kron(real, np.ones((2, 2), np.float32))  # a 2x-sampled output against a camera-sampled capture
    assert fidelity(fine, real)["psnr_db"] > 60
    with pytest.raises(ValueError, match="no integer factor"):
        fidelity(real[:50], real)
    assert fidelity(np.zeros_like(real), real)["pearson"] is None  # undefined r is null, never NaN


def test_dose_budget_semantics():
    b = DoseBudget(per_position=100, per_session=150, grid_um=100)
    assert b.request(60, 0, 0, "a") is None
    assert b.refusal(60, 20, 0).scope == "position"  # within the grid: the same position
    assert b.request(60, 20, 0, "a").scope == "position" and b.session == 60  # refused: nothing charged
    assert b.request(60, 5000, 0, "b") is None
    r = b.refusal(60, 9000, 0)
    assert r.scope == "session" and r.reason == "session light budget: 120 + 60 > 150" and r.source == ""
    # a source's own caps count its own share only
    own = (100.0, 70.0, 100.0)
    assert b.refusal(10, 9000, 0, "a", own) is None  # a has 60 of its 70
    r = b.refusal(20, 9000, 0, "a", own)
    assert r.scope == "session" and r.reason == "a session light budget: 60 + 20 > 70" and r.source == "a"
    assert b.status()["dose_by_source"] == {"a": 60.0, "b": 60.0}


def _firing(value=0.9, x=0.0, t_s=1.0):
    header = {"model": "m", "channels": ["c"], "t_acquired_ns": int(t_s * 1e9), "bundle_id": int(t_s),
              "acquisition_id": "a", "source_seqs": [], "stage_x_um": x, "stage_y_um": 0.0,
              "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}}}
    return header, np.full((1, 4, 4), value, np.float32)


def test_triggers_and_spot_checks_draw_from_one_budget():
    """Spot checks stop when the triggers have spent the shared budget, and triggers are suppressed when the
    spot checks have (the spot checker asks exactly this: ``request(dose, x, y, 'spot_checks', own caps)``)."""
    cfg = load_trigger_config({"triggers": [{
        "name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5, "rearm_below": 0.3}, "cooldown_s": 0,
        "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]}],
        "safety": {"dose_per_position": 1000, "dose_per_session": 150}})
    own = (500.0, 5000.0, 100.0)  # the spot checks' default caps: not what stops them here
    shared = DoseBudget(cfg.safety.dose_per_position, cfg.safety.dose_per_session, cfg.safety.position_grid_um)
    d = Decider(cfg, shared)
    assert [x.event for x in d.decide(*_firing())] == ["fire"] and shared.session == 100
    assert shared.request(40, 0, 0, "spot_checks", own) is None
    r = shared.request(40, 0, 0, "spot_checks", own)
    assert r.scope == "session" and r.reason == "session light budget: 140 + 40 > 150"  # the spot checks stop
    assert d.status()["dose_by_source"] == {"triggers": 100.0, "spot_checks": 40.0}
    # vice versa: the spot checks spent it first; the trigger's firing is suppressed
    shared = DoseBudget(cfg.safety.dose_per_position, cfg.safety.dose_per_session, cfg.safety.position_grid_um)
    d = Decider(cfg, shared)
    for _ in range(2):
        assert shared.request(40, 0, 0, "spot_checks", own) is None
    (dec,) = d.decide(*_firing())
    assert dec.event == "suppressed" and dec.reason == "session light budget: 80 + 100 > 150"
    assert shared.status()["dose_by_source"] == {"spot_checks": 80.0}
    # a Decider without a budget keeps its own (replay): it sees none of the spot checks' light
    assert [x.event for x in Decider(cfg).decide(*_firing())] == ["fire"]


def test_comparator_is_the_validated_floor_or_the_morphology():
    m = ModelManifest.model_validate(json.loads((VS / "manifest.json").read_text()))
    assert m.validated is not None
    floor = {k: f.psnr_db for k, f in m.validated.floor.items()}
    figs, how = validated_psnr(m, ["nuclei", "membrane"], None)
    assert figs == floor and how.startswith("validated floor")
    # the floor is the weakest training morphology, well below the card's mean over all of them (the old
    # comparator, which raised the alarm on ordinary cells)
    card = m.provenance["metrics"]["model"]["nuclei"]["psnr"]
    assert floor["nuclei"] == min(v["nuclei"].psnr_db for v in m.validated.morphologies.values()) < card - 3
    figs, how = validated_psnr(m, ["nuclei"], "debris")
    assert figs == {"nuclei": m.validated.morphologies["debris"]["nuclei"].psnr_db} and how.startswith("validated debris")
    figs, how = validated_psnr(m, ["nuclei"], "fibroblasts")  # held out of training: not validated
    assert figs == {"nuclei": floor["nuclei"]} and "'fibroblasts' is not among the validated" in how
    figs, how = validated_psnr(m.model_copy(update={"validated": None}), ["nuclei"], None)
    assert figs == {"nuclei": card} and how.startswith("card validation mean")
    # an INT8 engine's results (header precision) are judged by the variant's own figures, as the engine judges them
    from scopecast.daemon.spot_checks import _package_manifest

    assert m.variants["int8"].validated is not None and m.variants["int8"].validated != m.validated
    assert _package_manifest("virtual-staining", m.sha256, "int8").validated == m.variants["int8"].validated
    assert _package_manifest("virtual-staining", m.sha256, "fp32").validated == m.validated


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_spot_checks_during_live_record_pairs_and_stop_at_the_budget(daemon, client):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    events = StreamSubscriber(daemon.stream_address, ("event",))
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(daemon.publisher, "event")
        with pytest.raises(DaemonError, match="unknown channel 'Nope'"):
            client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                           channels={"nuclei": "Nope"})
        # 2 channels x 20 ms per check: a session budget of 130 allows three checks
        st = client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                            period_s=0.5, exposure_ms=20.0, dose_per_session=130.0)
        assert st["running"] and st["checks"] == 0
        wait_subscribed(engine, "result")  # the spot checker has joined the result stream
        live = client.request("start_live", channels=CYCLE, interval_ms=50)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["virtual-staining"])
                        ["stopped_reason"] and not s["running"] and s, 180, "the light budget to stop the spot checks")
        client.request("stop")
        assert st["checks"] == 3 and st["dose_session"] == 120.0 and not st["running"]
        assert st["stopped_reason"] == "spot_checks session light budget: 120 + 40 > 130"
        assert st["shared_budget"]["dose_by_source"] == {"spot_checks": 120.0}
        fid = st["fidelity"]
        assert set(fid) == {"nuclei", "membrane"} and fid["nuclei"]["n"] == 3
        last = st["last"]
        assert last["acquisition_id"] == live["acquisition_id"]
        assert last["real"]["nuclei"] == {"channel": "Nuclei", "detector": "Camera", "exposure_ms": 20.0,
                                          "scale": 5.0}  # counts at 20 ms -> the outputs' 100 ms units
        assert st["comparator"].startswith("validated floor") and set(st["alarm_below_db"]) == {"nuclei", "membrane"}
        floor = json.loads((VS / "manifest.json").read_text())["validated"]["floor"]
        assert st["card_psnr_db"] == {k: v["psnr_db"] for k, v in floor.items()}
        for name in ("nuclei", "membrane"):
            assert fid[name]["pearson"] > 0.5, fid  # the virtual stain follows the real one on cells
        print(f"\nspot-check fidelity on cells (3 checks): {fid}; validated floor {st['card_psnr_db']}; "
              f"alarm {st['alarm']} {st['alarm_reasons']}")
        assert not st["alarm"], st["alarm_reasons"]  # ordinary cells: no false alarm against the floor
        # each check is a training pair: the label-free bundle and the real capture
        assert st["recordings_written"] == 3
        pair = open_recording(last["recording"])
        assert pair.series[0].channels == CYCLE + ["Nuclei", "Membrane"]
        assert pair.attrs["scopecast"]["spot_check"]["bundle_id"] == last["bundle_id"]
        # the fidelity is published on the frame stream
        ev = wait_until(lambda: (m := events.recv(1)) and m[1].get("kind") == "fidelity" and m, 120,
                        "a fidelity event")
        assert ev[1]["source"] == "spot_checks" and ev[1]["fidelity"]["nuclei"]["n"] >= 1
        assert client.request("stop_spot_checks")["stopped"]["virtual-staining"]["checks"] == 3
        assert client.request("spot_checks") == {"models": {}}
    finally:
        events.close()
        client.request("stop_spot_checks")
        engine.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_spot_checks_stop_when_triggers_have_spent_the_shared_budget(daemon, client):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        # fires once on the first trusted result (never re-arms) and confirms with 100 ms of Nuclei
        cfg = {"triggers": [{"name": "once", "model": "virtual-staining",
                             "measurement": {"kind": "max", "channel": "nuclei"},
                             "condition": {"above": 0, "rearm_below": -1}, "cooldown_s": 0,
                             "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 100}]}],
               "safety": {"dose_per_position": 1000, "dose_per_session": 200}}
        client.request("load_triggers", config=cfg, sources={"virtual-staining": engine.results_address})
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        wait_until(lambda: (s := client.request("triggers"))["fired"] and s["actions_pending"] == 0, 120,
                   "the trigger to fire and confirm")
        # 2 channels x 20 ms per check: 100 (trigger) + 40 + 40 = 180; the third would pass the shared 200
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       period_s=0.2, record=False)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["virtual-staining"])
                        ["stopped_reason"] and s, 180, "the shared light budget to stop the spot checks")
        client.request("stop")
        assert st["stopped_reason"] == "session light budget: 180 + 40 > 200"
        assert st["shared_budget"]["dose_by_source"] == {"triggers": 100.0, "spot_checks": 80.0}
        assert st["dose_session"] == 80.0 and client.request("triggers")["dose_session"] == 180.0
    finally:
        client.request("stop_spot_checks")
        client.request("unload_triggers")
        engine.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_spot_check_alarm_below_the_threshold(daemon, client):
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       period_s=0.2, min_psnr_db=99.0, record=False, channels={"nuclei": "Nuclei"})
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["virtual-staining"])["alarm"] and s,
                        180, "the alarm")
        client.request("stop")
        assert st["alarm_reasons"][0].startswith("spot-check fidelity nuclei ")
        assert st["alarm_reasons"][0].endswith("dB < threshold 99.0 dB") and st["alarms_raised"] == 1
        assert st["recordings_written"] == 0 and set(st["fidelity"]) == {"nuclei"}
    finally:
        client.request("stop_spot_checks")
        engine.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_a_spot_check_whose_recording_fails_keeps_its_figures_and_says_so(daemon, client, disk_fills_at_close):
    """On a full disk the comparison stands (it is in memory) but its pair is not counted as written: the
    check carries the recording's error."""
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       period_s=0.2, record=True, channels={"nuclei": "Nuclei"})
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["virtual-staining"])["checks"] and s,
                        180, "a spot check")
        client.request("stop")
        last = st["last"]
        assert "recording" not in last and "No space left" in last["recording_error"], last
        assert "incomplete" in last["recording_error"] and st["recordings_written"] == 0
        assert set(last["channels"]) == {"nuclei"}  # the figures of the comparison
    finally:
        client.request("stop_spot_checks")
        engine.close()


SR = ROOT / "models" / "packages" / "super-resolution"


@pytest.mark.skipif(not (SR / "manifest.json").exists(), reason="the super-resolution package is not shipped")
def test_super_resolution_spot_checks_use_the_sted_detector(daemon, client):
    engine = InferenceEngine(SR, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_spot_checks", model="super-resolution", results=engine.results_address,
                       period_s=0.2, exposure_ms=20.0, record=True)
        wait_subscribed(engine, "result")
        live = client.request("start_live", channels=[{"name": "Membrane", "exposure_ms": 20.0}], interval_ms=50)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["super-resolution"])["checks"] >= 2
                        and s, 180, "two super-resolution spot checks")
        client.request("stop")
        last = st["last"]
        # its STED targets were taken at the input's exposure: a 20 ms capture beside a 20 ms input is unscaled
        assert last["real"]["membrane-sr"]["detector"] == "STED" and last["real"]["membrane-sr"]["scale"] == 1.0
        assert last["units"]["reference_exposure_ms"] == 20.0
        # the STED snaps are 'Membrane' frames too (the model infers them); only live results are checked
        assert last["acquisition_id"] == live["acquisition_id"]
        print(f"\nsuper-resolution spot checks: {st['fidelity']}; card {st['card_psnr_db']}; last {last['channels']}")
        assert st["fidelity"]["membrane-sr"]["pearson"] > 0.5
        assert st["comparator"].startswith("validated floor") and not st["alarm"], st["alarm_reasons"]
        pair = open_recording(last["recording"])  # camera series (input) and STED series (ground truth)
        assert sorted(s.attrs["scopecast"]["detector"] for s in pair.series) == ["Camera", "STED"]
    finally:
        client.request("stop_spot_checks")
        engine.close()


def three_checks_on_live(daemon, client, timeout_s: float, live: dict, **spot) -> dict:
    """Spot checks of the shipped virtual-staining model (``spot``: ``start_spot_checks`` arguments, period
    0.3 s, 5 ms captures) during live (``live``: ``start_live`` arguments beside the six-channel cycle) until three
    checks are made or skipped; returns the spot checks' status then. Live, the checks and the engine end."""
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None, warmup_shape=(256, 256)).start()
    try:
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       **{"period_s": 0.3, "exposure_ms": 5.0, **spot})
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, **live)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"]["virtual-staining"])["checks"]
                        + sum(s["skipped"].values()) >= 3 and s, timeout_s, "three spot checks made or skipped")
        client.request("stop")
        return st
    finally:
        client.request("stop_spot_checks")
        engine.close()


@contextlib.contextmanager
def _vs_live(daemon, client):
    """Live on the 6-channel cycle into the shipped virtual-staining model: yields the engine and its first
    result; stops live and any spot checks after."""
    engine = InferenceEngine(VS, daemon.stream_address, "tcp://127.0.0.1:*", None,
                             warmup_shape=(256, 256)).start()
    results = StreamSubscriber(engine.results_address, ("result",))
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(engine, "result")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        yield engine, wait_until(lambda: results.recv(1), 180, "live results")
    finally:
        results.close()
        client.request("stop_spot_checks")
        client.request("stop")
        engine.close()


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_spot_checks_started_during_live_record_whole_pairs(daemon, client):
    """Started while live runs, the first check used a result of frames taken before its ring buffer existed:
    its training pair held the real capture alone. Now only results acquired since the start are checked, every
    pair has its label-free bundle, in the daemon's OME-Zarr version. A spot check that names the model by
    anything but its package's name says so in ``skipped`` instead of waiting for ever."""
    daemon.engine.ngff = "0.5"
    with _vs_live(daemon, client) as (engine, _):
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       period_s=0.5, exposure_ms=20.0)
        client.request("start_spot_checks", model="vs", results=engine.results_address, period_s=0.5)
        st = wait_until(lambda: (s := client.request("spot_checks")["models"])["virtual-staining"]["checks"] >= 2
                        and s["vs"]["skipped"].get("other model") and s, 180, "two spot checks")
        client.request("stop")
    assert "these results are of 'virtual-staining'" in st["vs"]["last_skip"] and st["vs"]["checks"] == 0
    pairs = sorted(Path(daemon.engine.data_dir).glob("*-virtual-staining-spotcheck-*.ome.zarr"))
    assert len(pairs) >= 2 and pairs[0].name.endswith("spotcheck-1.ome.zarr"), pairs
    for path in pairs:
        pair = open_recording(path)
        assert pair.series[0].channels == CYCLE + ["Nuclei", "Membrane"], path.name  # input and capture
        assert (path / "zarr.json").is_file(), path.name


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_a_result_whose_bundle_the_ring_lacks_is_skipped_before_any_light(daemon, client):
    """A check of a result whose label-free frames are not (all) in the ring (taken before it existed, or dropped
    from it by a result more than 10 s late on a starved machine) recorded a pair without its inputs; it
    happened to the first check of a suite run under load. Now it is skipped and costs no light."""
    with _vs_live(daemon, client) as (_, early):  # the first result: its frames predate the ring
        # results from nowhere: the checker's own loop checks nothing; this test hands it the early result
        client.request("start_spot_checks", model="virtual-staining", results="tcp://127.0.0.1:9", period_s=3600)
        checker = daemon.spot_checkers["virtual-staining"]
        checker._check(early[1], early[2])
        st = client.request("spot_checks")["models"]["virtual-staining"]
        client.request("stop")
    assert st["checks"] == 0 and st["recordings_written"] == 0 and st["dose_session"] == 0, st
    assert st["skipped"] == {"label-free frames gone": 1}, st


def _frame(z: float = 0.0, pixel: float = 0.65, size: int = 256, x: float = 0.0) -> Frame:
    h = FrameHeader(acquisition_id="a", seq=0, bundle_id=0, bundle_index=0, bundle_size=1, channel="c",
                    modality="fluorescence", pattern="", detector="Camera", stage_x_um=x, stage_y_um=0.0,
                    stage_z_um=z, exposure_ms=10.0, pixel_size_um=pixel, dtype="uint16", shape=(size, size),
                    position_index=0, t_exposure_start_ns=0, t_acquired_ns=0)
    return Frame(h, np.zeros((size, size), np.uint16))


def test_a_capture_of_another_focus_or_field_of_view_is_not_the_result_field():
    result = {"stage_x_um": 0.0, "stage_y_um": 0.0, "stage_z_um": 0.0}
    bundle = [_frame()]
    assert capture_differs(result, bundle, _frame(z=0.5)) is None
    assert capture_differs(result, bundle, _frame(pixel=0.325, size=512)) is None  # a finer detector, same field
    assert capture_differs(result, bundle, _frame(x=5.0)).startswith("stage moved: 5.0 µm")
    assert "focus 15.0 µm" in capture_differs(result, bundle, _frame(z=15.0))
    assert capture_differs(result, bundle, _frame(pixel=0.325)).startswith("field of view changed")  # 20x


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_spot_checks_do_not_compare_an_in_focus_result_with_a_defocused_or_20x_capture(daemon, client):
    with _vs_live(daemon, client) as (engine, _):
        client.request("start_spot_checks", model="virtual-staining", results=engine.results_address,
                       period_s=2.0, record=False, dose_per_session=1e6, dose_per_position=1e6)

        def status():
            return client.request("spot_checks")["models"]["virtual-staining"]

        for change, back in ((("move_stage", {"z": 15.0}), ("move_stage", {"z": 0.0})),
                             (("set_objective", {"objective": "20x"}), ("set_objective", {"objective": "10x"}))):
            st = wait_until(lambda: (s := status())["checks"] >= 2 and s, 180, "spot checks in focus at 10x")
            n0, alarms = st["checks"], st["alarms_raised"]
            trusted = st["results"] - st["untrusted_results"]  # a newer trusted result waits for the next check
            wait_until(lambda: (s := status())["results"] - s["untrusted_results"] >= trusted + 5, 180,
                       "trusted results after the last check")
            client.request(change[0], **change[1])  # the user focuses away / switches objective
            changed_ns = time.time_ns()  # a capture after this is of the new field (a check under way may end
            u0 = status()["untrusted_results"]  # before it, comparing the old field with itself)
            st = wait_until(lambda: (s := status())["untrusted_results"] >= u0 + 60 and s, 180,
                            "60 untrusted results after the change (several spot-check periods)")
            # no in-focus / 10x result against the new field
            assert st["checks"] == n0 or (st["checks"] == n0 + 1 and st["last"]["t_ns"] < changed_ns), st["last"]
            assert st["alarms_raised"] == alarms and not st["alarm"], st["alarm_reasons"]
            client.request(back[0], **back[1])
            wait_until(lambda: status()["checks"] > n0, 180, "spot checks again once the field is back")


def test_spot_checks_below_full_power_are_refused(daemon, client):
    """scopecast does not set the excitation power: ``power`` 0.1 charged a tenth of the light the source gave."""
    with pytest.raises(DaemonError, match="power 0.1: scopecast does not set the excitation power"):
        client.request("start_spot_checks", model="virtual-staining", results="tcp://127.0.0.1:6222", power=0.1)
    assert client.request("spot_checks")["models"] == {}


def test_spot_checks_restart_their_fidelity_and_comparator_for_other_weights(daemon, client):
    """Results of other weights under the same model name (a fine-tuned package, an INT8 engine) restart the running
    fidelity and re-read the comparator: the checker kept the first package's and averaged both models' checks."""
    vs_sha, other_sha = json.loads((VS / "manifest.json").read_text())["sha256"], "f" * 64
    with StandInEngine(daemon.stream_address, value=1000.0, channel="nuclei", task="virtual-staining",
                       full_frame=True) as engine:
        engine.extra = {"model": "virtual-staining", "model_sha256": vs_sha, "precision": "fp32"}
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
        try:
            client.request("start_spot_checks", model="virtual-staining", results=engine.address, period_s=0.1,
                           channels={"nuclei": "Nuclei"}, exposure_ms=1, window=100, record=False)
            engine.wait_subscriber()

            def spot() -> dict:
                return client.request("spot_checks")["models"]["virtual-staining"]

            first = wait_until(lambda: (s := spot())["checks"] >= 2 and s, 120, "2 checks of the first weights")
            assert first["comparator"].startswith("validated floor") and first["card_psnr_db"] == {"nuclei": 26.13}
            before = spot()["checks"]  # the checks after this one include every check of the other weights
            engine.extra = {**engine.extra, "model_sha256": other_sha}  # same name, other weights

            def checked_other() -> dict | None:
                """3 more checks, the last of the other weights (a check that names none: before the fix)."""
                s = spot()
                return s["checks"] >= before + 3 and s["last"].get("model_sha256", other_sha) == other_sha and s

            st = wait_until(checked_other, 120, "3 more checks, the last of the other weights")
        finally:
            client.request("stop_spot_checks")
            client.request("stop")
    assert 1 <= st["fidelity"]["nuclei"]["n"] <= st["checks"] - before, st["fidelity"]  # the new weights' checks
    assert first["weights"] == {"model_sha256": vs_sha, "precision": "fp32"}
    assert st["weights"] == {"model_sha256": other_sha, "precision": "fp32"}
    assert st["last"]["model_sha256"] == other_sha
    assert st["comparator"].startswith("none (no shipped package 'virtual-staining' has these weights, sha256 ffff")
    assert st["card_psnr_db"] == {} and not st["alarm"]
    change = st["weights_changes"][-1]
    assert change["from"]["model_sha256"] == vs_sha and change["to"]["model_sha256"] == other_sha


def test_spot_checks_ended_by_shutdown_say_so(daemon, client):
    """A daemon that closes ends its spot checks with the reason that it is shutting down (their stopped event said
    'on request (stop_spot_checks)', which nobody had asked for)."""
    with StandInEngine(daemon.stream_address) as engine:
        client.request("start_spot_checks", model="virtual-staining", results=engine.address, period_s=60.0)
        events: list[dict] = []
        publish = daemon.publisher.publish_event
        daemon.publisher.publish_event = lambda event: (events.append(event), publish(event))[1]
        daemon.close()
    assert [(e["kind"], e["reason"]) for e in events if e.get("source") == "spot_checks"] == [
        ("stopped", "the daemon is shutting down")]
