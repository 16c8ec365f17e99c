"""Confirmed defects, fixed: what a client or a package may name on disk, and what trigger recordings hold.

- A spot-check ``model`` name is part of a recording name: one that could leave the data directory is refused
  at the request, and the daemon builds recording paths with :func:`scopecast.daemon.confine.inside`.
- A model package names only files inside its own directory (``model_file``, variants, ``plan_file``).
- Trigger and spot-check recordings store the acquisition id of their name (no ``.ome`` left over).
- A ``save_window`` recording has one time point per bundle (a live cycle, or a snap).

A real daemon on the simulated scope and real sockets; a stand-in engine answers every live bundle with a
result (no model needed to test what the daemon does with it).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from helpers import StandInEngine, wait_subscribed, wait_until
from scopecast.daemon.confine import OutsideAllowedDirectories, inside, safe_name
from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.offline import run_offline
from scopecast.daemon.inference.package import PackageError, load_package
from scopecast.daemon.recorder import open_recording
from scopecast.models.synthetic import write_package

CYCLE = ["DPC-Left", "DPC-Right", "BF"]
SAFETY = {"dose_per_position": 1e6, "dose_per_session": 1e6, "max_actions_per_minute": 100}


def _trigger(actions: list[dict]) -> dict:
    """One trigger on model ``m`` that fires once, on the first result, and runs ``actions``."""
    return {"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "nuclei"},
                          "condition": {"above": 0.5, "rearm_below": -1}, "cooldown_s": 0, "actions": actions}],
            "safety": SAFETY}


def _stand_in(daemon) -> StandInEngine:
    """A trusted virtual-staining result of model ``m`` (``nuclei``, the camera's shape) for each live bundle."""
    return StandInEngine(daemon.stream_address, value=1000.0, channel="nuclei", task="virtual-staining",
                         full_frame=True)


def _fire_once(client, engine: StandInEngine, actions: list[dict]) -> dict:
    """Load the trigger, run live until it fired and its actions are done; the outcome line of its log."""
    client.request("load_triggers", config=_trigger(actions), sources={"m": engine.address})
    try:
        client.request("start_live", channels=CYCLE, interval_ms=0)
        st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"] and s,
                        120, "the trigger to fire and finish its actions")
        client.request("stop")
    finally:
        client.request("unload_triggers")
    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
    return next(x for x in lines if "outcome_of" in x)


# --------------------------------------------------------------------------- 1: spot-check model names
def test_spot_check_model_that_could_leave_the_data_directory_is_refused(daemon, client, tmp_path):
    data = daemon.engine.data_dir
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(data)}
    entries = set(data.iterdir()) if data.exists() else set()
    for model in ("x/../../escape", "../escape", "/tmp/escape", "..", "ok\n", ""):
        with pytest.raises(DaemonError, match=re.escape(f"model {model!r} is not allowed")):
            client.request("start_spot_checks", model=model, results="tcp://127.0.0.1:1",
                           channels={"nuclei": "Nuclei"})
    assert client.request("spot_checks") == {"models": {}}  # nothing started ...
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(data)} == before  # ... nothing written outside
    assert (set(data.iterdir()) if data.exists() else set()) == entries  # ... nor in the data directory


def test_recording_paths_the_daemon_builds_stay_inside_their_directory(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    assert inside(data, "s-m-spotcheck-1.ome.zarr") == data / "s-m-spotcheck-1.ome.zarr"
    (data / "link.ome.zarr").symlink_to(outside, target_is_directory=True)
    for name in ("x/../../escape.ome.zarr", "../escape.ome.zarr", str(outside / "a.ome.zarr"), "..", ".", "",
                 "a\0b", "link.ome.zarr"):
        with pytest.raises(OutsideAllowedDirectories, match="is not a plain entry of"):
            inside(data, name, "recording")
    assert safe_name("virtual-staining") == "virtual-staining"
    with pytest.raises(ValueError, match="is not allowed"):
        safe_name("ok\n")  # a trailing newline is no plain name ("^...$" let it through)


# --------------------------------------------------------------------------- 2: package files
def test_package_files_outside_the_package_are_refused_without_saying_whether_they_exist(daemon, tmp_path):
    models = tmp_path / "models"
    good = write_package(models / "good", CYCLE, ["nuclei"], name="tiny", width=4, layers=2, tile=128)
    secret = tmp_path / "secret.onnx"
    shutil.copy(good / "model.onnx", secret)  # the same bytes as a real model: it would load
    manifest = json.loads((good / "manifest.json").read_text())

    def package(name: str, **fields) -> Path:
        p = models / name
        shutil.copytree(good, p, symlinks=True)
        (p / "manifest.json").write_text(json.dumps({**manifest, **fields}))
        return p

    (models / "good" / "link.onnx").symlink_to(secret)
    cases = {
        "model_file": [str(secret), "../../secret.onnx", "link.onnx/..", str(tmp_path / "absent.onnx"),
                       "../../absent.onnx"],
        "plan_file": [str(secret), "../../absent.plan"],
    }
    messages = []
    for field, values in cases.items():
        for i, value in enumerate(values):
            p = package(f"{field}-{i}", **{field: value})
            with pytest.raises(PackageError) as e:
                load_package(p)
            assert str(e.value) == (f"{p}: {field} {value!r} is outside the package directory; a package may only "
                                    "name files inside it")
            messages.append(str(e.value).replace(str(p), "P").replace(repr(value), "V"))
    assert len(set(messages)) == 2  # one message per field: an existing outside file reads as an absent one
    # a symbolic link inside the package that points outside
    linked = package("linked", model_file="link.onnx")
    with pytest.raises(PackageError, match="model_file 'link.onnx' is outside the package directory"):
        load_package(linked)
    # variants: checked before the variant's sha256 (which would tell the outside file's hash)
    variant = {"file": str(secret), "sha256": "0" * 64, "precision": "int8", "loss_db": {}, "speedup": 1.0}
    with pytest.raises(PackageError, match=re.escape(f"variants.int8.file {str(secret)!r} is outside")):
        load_package(package("variant", variants={"int8": variant}), "int8")
    # the manifest itself: a link out is not read (its keys were in the reply, and existing vs absent told apart)
    (tmp_path / "credentials.json").write_text('{"db_password": "hunter2"}')
    refusals = []
    for target in ("credentials.json", "absent.json"):
        p = models / f"manifest-{target}"
        p.mkdir()
        (p / "manifest.json").symlink_to(tmp_path / target)
        with pytest.raises(PackageError) as e:
            load_package(p)
        assert str(e.value) == (f"{p}: manifest 'manifest.json' is outside the package directory; a package may "
                                "only name files inside it")
        refusals.append(str(e.value).replace(str(p), "P"))
    assert refusals[0] == refusals[1]
    inner = package("inner-link")  # a manifest linking to a file inside its package loads
    (inner / "manifest.json").rename(inner / "manifest-v2.json")
    (inner / "manifest.json").symlink_to("manifest-v2.json")
    assert load_package(inner).manifest.name == "tiny"
    assert load_package(good).model_path == good / "model.onnx"  # a package's own files load as before

    # through the engine's load_model: refused, and the engine keeps serving its model
    engine = InferenceEngine(good, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                             warmup_shape=None, model_dirs=[models]).start()
    try:
        with ControlClient(engine.control.address, timeout_s=120) as ec:
            outside = package("outside", model_file=str(secret))
            with pytest.raises(DaemonError, match=re.escape(f"model_file {str(secret)!r} is outside the package")):
                ec.request("load_model", path=str(outside))
            assert ec.request("status")["model"]["name"] == "tiny"
    finally:
        engine.close()


# --------------------------------------------------------------------------- 3: acquisition ids
def test_trigger_and_spot_check_recordings_store_the_acquisition_id_of_their_name(daemon, client):
    with _stand_in(daemon) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("start_spot_checks", model="m", results=engine.address, channels={"nuclei": "Nuclei"},
                       period_s=0.1, exposure_ms=5.0)
        try:
            out = _fire_once(client, engine, [{"kind": "confirm_fluorescence", "channels": ["Nuclei"],
                                               "exposure_ms": 5}])
            client.request("start_live", channels=CYCLE, interval_ms=0)
            st = wait_until(lambda: (s := client.request("spot_checks")["models"]["m"])["recordings_written"] and s,
                            120, "a spot-check recording")
            client.request("stop")
        finally:
            client.request("stop_spot_checks")
    paths = [out["actions"][0]["recording"], st["recordings"][0]]
    assert "-t-pair-" in paths[0] and "-m-spotcheck-1" in paths[1]
    for p in paths:
        acquisition_id = open_recording(p).attrs["scopecast"]["acquisition_id"]
        assert acquisition_id == Path(p).name.removesuffix(".ome.zarr"), p  # was "<name>.ome"
        assert Path(p).parent == daemon.engine.data_dir


# --------------------------------------------------------------------------- 4: save_window time points
def test_save_window_has_one_time_point_per_bundle(daemon, client, tmp_path):
    with _stand_in(daemon) as engine:
        wait_subscribed(daemon.publisher, "frame")
        # the confirmation's snap lands inside the window: a bundle of its own
        out = _fire_once(client, engine, [
            {"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 5},
            {"kind": "save_window", "before_s": 0.5, "after_s": 1.0}])
    window = out["actions"][1]
    assert window["ok"], out
    rec = open_recording(window["recording"])
    series = rec.series[0]
    frames = sorted(series.frames, key=lambda h: h.seq)
    assert len(frames) == window["frames"]
    by_t: dict[int, list] = defaultdict(list)
    for h in frames:
        by_t[h.index["t"]].append(h)
    bundles = [{(h.acquisition_id, h.bundle_id) for h in by_t[t]} for t in sorted(by_t)]
    assert all(len(b) == 1 for b in bundles), bundles  # one bundle per time point (was: frames of two cycles)
    assert sorted(by_t) == list(range(series.data.shape[0])) == list(range(window["time_points"]))
    assert series.channels == CYCLE + ["Nuclei"] == window["channels"]  # a full cycle's order, then the snap
    assert all(series.channels[h.index["c"]] == h.channel for h in frames)
    assert rec.attrs["scopecast"]["acquisition_id"] == Path(window["recording"]).name.removesuffix(".ome.zarr")
    firsts = [min(h.seq for h in by_t[t]) for t in sorted(by_t)]
    assert firsts == sorted(firsts)  # in the order the bundles began
    snaps = [t for t in by_t if "-snap-" in by_t[t][0].acquisition_id]
    assert len(snaps) == 1 and [h.channel for h in by_t[snaps[0]]] == ["Nuclei"]
    live = [t for t in by_t if t not in snaps]
    assert all([h.channel for h in by_t[t]] == CYCLE for t in live[1:-1])  # whole cycles between the ends
    # a channel a bundle lacks is unwritten: its plane reads 0 (the snap's time point has no label-free frame)
    assert not np.asarray(series.data[snaps[0], 0, 0]).any()
    assert np.asarray(series.data[live[1], 0, 0]).any()

    # the offline engine reads it bundle by bundle: every whole cycle inferred, the rest skipped with a reason
    model = write_package(tmp_path / "tiny", CYCLE, ["nuclei"], name="tiny", width=4, layers=2, tile=128)
    report = run_offline(model, window["recording"], output=tmp_path / "offline.ome.zarr")
    whole = sum(sorted(h.channel for h in by_t[t]) == sorted(CYCLE) for t in live)
    assert report.bundles == len(by_t) and report.inferred == whole, report
    assert len(report.skipped) == len(by_t) - whole


def test_paths_the_daemon_reports_are_absolute_when_started_with_a_relative_data_dir(sim_cfg, tmp_path, monkeypatch):
    """Started with ``--data-dir data`` (the default), the daemon reported 'data/...' in job paths and
    describe's data_dir: relative to its own working directory, which a client elsewhere cannot open."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    monkeypatch.chdir(tmp_path)
    d = Daemon(lambda: load_mmcore_backend(sim_cfg), "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as c:
            assert c.request("describe")["data_dir"] == str(tmp_path / "data")
            job = c.request("run_scan", sequence={"channels": [{"config": "BF"}]})
            path = c.wait(job["id"], timeout_s=300)["path"]
    finally:
        d.close()
    assert Path(path).is_absolute() and Path(path).parent == tmp_path / "data", path
    monkeypatch.chdir("/")  # a client in another directory opens what it was told
    assert open_recording(path).series[0].channels == ["BF"]
