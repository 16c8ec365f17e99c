"""Spot checks: the real fluorescence beside the virtual stain, during live, within a light budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import wait_subscribed, wait_until
from scopecast.daemon.control import DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.spot_checks import DoseBudget, fidelity
from scopecast.daemon.stream import StreamSubscriber

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
    assert b.refusal(60, 0, 0) == ("", "")
    b.charge(60, 0, 0)
    assert b.refusal(60, 20, 0)[0] == "position"  # within the grid: the same position
    assert b.refusal(60, 5000, 0) == ("", "")
    b.charge(60, 5000, 0)
    scope, reason = b.refusal(60, 9000, 0)
    assert scope == "session" and reason == "session light budget: 120 + 60 > 150"


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
                        ["stopped_reason"] and s, 180, "the light budget to stop the spot checks")
        client.request("stop")
        assert st["checks"] == 3 and st["dose_session"] == 120.0 and not st["running"]
        assert st["stopped_reason"] == "session light budget: 120 + 40 > 130"
        fid = st["fidelity"]
        assert set(fid) == {"nuclei", "membrane"} and fid["nuclei"]["n"] == 3
        last = st["last"]
        assert last["acquisition_id"] == live["acquisition_id"]
        assert last["real"]["nuclei"] == {"channel": "Nuclei", "detector": "Camera", "exposure_ms": 20.0,
                                          "scale": 5.0}  # counts at 20 ms -> the outputs' 100 ms units
        assert st["card_psnr_db"]["nuclei"] > 20 and set(st["alarm_below_db"]) == {"nuclei", "membrane"}
        for name in ("nuclei", "membrane"):
            assert fid[name]["pearson"] > 0.5, fid  # the virtual stain follows the real one on cells
        print(f"\nspot-check fidelity on cells (3 checks): {fid}; card {st['card_psnr_db']}; "
              f"alarm {st['alarm']} {st['alarm_reasons']}")
        # each check is a training pair: the label-free bundle and the real capture
        assert st["recordings_written"] == 3
        pair = open_recording(last["recording"])
        assert pair.series[0].channels == CYCLE + ["Nuclei", "Membrane"]
        assert pair.attrs["scopecast"]["spot_check"]["bundle_id"] == last["bundle_id"]
        # the fidelity is published on the frame stream
        ev = wait_until(lambda: (m := events.recv(1)) and m[1].get("kind") == "fidelity" and m, 30,
                        "a fidelity event")
        assert ev[1]["source"] == "spot_checks" and ev[1]["fidelity"]["nuclei"]["n"] >= 1
        assert client.request("stop_spot_checks")["stopped"]["virtual-staining"]["checks"] == 3
        assert client.request("spot_checks") == {"models": {}}
    finally:
        events.close()
        client.request("stop_spot_checks")
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
        assert last["real"]["membrane-sr"]["detector"] == "STED" and last["real"]["membrane-sr"]["scale"] == 5.0
        # the STED snaps are 'Membrane' frames too (the model infers them); only live results are checked
        assert last["acquisition_id"] == live["acquisition_id"]
        print(f"\nsuper-resolution spot checks: {st['fidelity']}; card {st['card_psnr_db']}; last {last['channels']}")
        assert st["fidelity"]["membrane-sr"]["pearson"] > 0.5
        pair = open_recording(last["recording"])  # camera series (input) and STED series (ground truth)
        assert sorted(s.attrs["scopecast"]["detector"] for s in pair.series) == ["Camera", "STED"]
    finally:
        client.request("stop_spot_checks")
        engine.close()
