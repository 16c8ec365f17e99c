"""The command line as a user types it: ``scopecast ctl`` options derived from the daemon's own
command signatures, actionable busy errors, progress of long work and what is logged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from scopecast.daemon.cli_logging import configure_logging
from scopecast.daemon.control import ControlClient, ControlServer, DaemonError, ServerUnreachable
from scopecast.daemon.progress import Progress
from scopecast.daemon.service import Daemon
from scopecast.daemon.supervisor import free_port
from tests.conftest import ROOT, SHIPPED_CFG

def test_ctl_takes_the_command_arguments_as_options(daemon, cli, tmp_path):
    ctl = ("ctl", "--control", daemon.control_address)
    rc, out, err = cli(*ctl, "snap", "--channel", "DF", "--exposure", "50")
    assert rc == 0, err
    h = json.loads(out)["frame"]
    assert (h["channel"], h["exposure_ms"]) == ("DF", 50.0)
    # JSON --args still works; an option overrides its key; --save writes the PNG
    rc, out, err = cli(*ctl, "snap", "--args", '{"channel": "BF", "exposure_ms": 5}', "--exposure-ms", "7",
                       "--save", tmp_path / "bf.png")
    assert rc == 0, err
    h = json.loads(out)["frame"]
    assert (h["channel"], h["exposure_ms"]) == ("BF", 7.0)
    assert (tmp_path / "bf.png").read_bytes()[:4] == b"\x89PNG"
    # negative numbers, booleans as flags, a required argument given positionally
    rc, out, err = cli(*ctl, "move_stage", "--x", "-120.5", "--y", "40")
    assert rc == 0 and json.loads(out)["position_um"] == {"x": -120.5, "y": 40.0, "z": 0.0}, err
    rc, out, err = cli(*ctl, "move_stage", "--x", "20", "--relative")
    assert rc == 0 and json.loads(out)["position_um"]["x"] == pytest.approx(-100.5), err
    rc, out, err = cli(*ctl, "set_channel", "DF")
    assert rc == 0 and json.loads(out) == {"channel": "DF"}, err
    # lists of pairs and KEY=VALUE objects, checked by the daemon's own validation
    rc, out, err = cli(*ctl, "capture_pairs", "--positions", "0,0", "--grid", "rows=1", "columns=2",
                       "--label-free", "BF,DF", "--fluorescence", "Nuclei", "--exposure", "2")
    assert rc == 0, err
    job = json.loads(out)
    assert job["kind"] == "pairs" and job["total"] == 2 * 3  # 2 grid tiles x (BF, DF, Nuclei)
    rc, out, err = cli(*ctl, "wait", job["id"])
    assert rc == 0 and json.loads(out)["status"] == "done", err
    # what cannot become a request is refused, naming the option, before anything is sent
    frames = daemon.engine.frames_acquired
    for argv, says in [(("snap", "--exposure", "fifty"), "--exposure-ms: 'fifty' is not a number"),
                       (("snap", "--colour", "DF"), "unrecognized arguments: --colour DF"),
                       (("capture_pairs", "--positions", "0,0,5"), "is not [number, number]"),
                       (("capture_pairs", "--grid", "rows"), "'rows' is not KEY=VALUE"),
                       (("snapp", "--channel", "DF"), "unknown command 'snapp'")]:
        rc, out, err = cli(*ctl, *argv)
        assert rc == 2 and says in err and not out, (argv, err)
    assert daemon.engine.frames_acquired == frames


def test_options_and_help_come_from_the_server(daemon, cli):
    """Any control server describes its commands; the CLI invents none of its options."""

    def focus(z_um: float, fast: bool = False, labels: list[str] | None = None) -> dict:
        """Move the focus."""
        return {"z_um": z_um, "fast": fast, "labels": labels}

    server = ControlServer({"focus": focus}, "tcp://127.0.0.1:*")
    server.start()
    try:
        rc, out, err = cli("ctl", "--control", server.address, "focus", "3", "--fast", "--labels", "a", "b,c")
        assert rc == 0 and json.loads(out) == {"z_um": 3.0, "fast": True, "labels": ["a", "b", "c"]}, err
        # --timeout: how long help waits for a server that is there (a starved one may be slow to answer)
        rc, out, _ = cli("ctl", "--control", server.address, "--timeout", "120", "focus", "--help")
        assert rc == 0 and "Move the focus." in out
        assert "--z-um NUMBER, --z NUMBER" in out and "--fast, --no-fast" in out and "list of string" in out
    finally:
        server.stop()
    # the daemon's: every command listed with its arguments and their types
    rc, out, _ = cli("ctl", "--control", daemon.control_address, "--timeout", "120", "--help")
    assert rc == 0 and f"commands of the server at {daemon.control_address}" in out
    for name in Daemon.COMMANDS:
        assert f"\n  {name} " in out, name
    words = " ".join(out.split())  # wrapped to the terminal's width
    assert "Arguments: JOB: string [--wait-s number]." in words and "[--exposure-ms number]" in words
    rc, out, _ = cli("ctl", "--control", daemon.control_address, "--timeout", "120", "snap", "--help")
    assert rc == 0 and "--exposure-ms NUMBER, --exposure NUMBER" in out and "--record, --no-record" in out


def test_commands_reply_is_the_schema_requests_are_validated_with(client):
    described = client.request("commands")["commands"]
    assert set(described) == {*Daemon.COMMANDS, "commands"}
    assert described["status"]["inline"] and not described["snap"]["inline"]
    snap = described["snap"]["arguments"]
    assert set(snap["properties"]) == {"channel", "exposure_ms", "detector", "record"} and not snap.get("required")
    assert described["wait"]["arguments"]["required"] == ["job"]
    assert described["wait"]["summary"].startswith("Block until `job` ends")
    with pytest.raises(DaemonError, match="BadRequest.*exposure"):  # a name the schema does not list
        client.request("snap", exposure=5.0)


def test_busy_errors_say_what_runs_and_how_to_go_on(daemon, cli):
    ctl = ("ctl", "--control", daemon.control_address)
    rc, out, err = cli(*ctl, "live", "--channels", "BF", "DF")
    assert rc == 0, err
    live = json.loads(out)["id"]
    rc, out, err = cli(*ctl, "capture_pairs", "--positions", "0,0")
    assert rc == 1 and not out
    assert f"live job {live} is running" in err and "runs until stopped" in err and "scopecast ctl stop" in err
    rc, out, err = cli(*ctl, "stop")
    assert rc == 0 and json.loads(out)["stopped"]["status"] == "stopped", err
    # a job that ends by itself: also how to wait for it
    rc, out, err = cli(*ctl, "start_live", "--channels", "BF", "--max-cycles", "100000")
    bounded = json.loads(out)["id"]
    rc, out, err = cli(*ctl, "run_scan", "--sequence", '{"channels": [{"config": "BF"}]}')
    assert rc == 1 and f"scopecast ctl wait {bounded}" in err and "scopecast ctl stop" in err
    rc, out, err = cli(*ctl, "wait", "--wait", "0")  # a bounded wait returns the job as it is
    assert rc == 0 and json.loads(out)["status"] == "running" and "still running" in err, err
    assert cli(*ctl, "stop")[0] == 0
    # triggers only act on live results: loading them while idle says so
    rc, out, err = cli(*ctl, "load_triggers", ROOT / "docs" / "triggers-colony.yaml",
                       "--sources", "virtual-staining=tcp://127.0.0.1:1")
    try:
        assert rc == 0, err
        assert "the daemon is idle" in err and "scopecast ctl start_live" in err
    finally:
        cli(*ctl, "unload_triggers")


def test_ctl_wait_shows_the_running_jobs_progress(daemon, cli):
    ctl = ("ctl", "--control", daemon.control_address)
    rc, out, err = cli(*ctl, "capture_pairs", "--positions", "0,0", "50,0", "--label-free", "BF", "--fluorescence",
                       "Nuclei", "--exposure", "2")
    job = json.loads(out)
    rc, out, err = cli(*ctl, "wait")  # no job named: the running one (or, if it already ended, the latest)
    assert rc == 0, err
    done = json.loads(out)
    assert done["id"] == job["id"] and done["status"] == "done" and done["frames"] == done["total"] == job["total"]
    last = err.strip().splitlines()[-1]
    assert f"pairs job {job['id']}: {job['total']}/{job['total']} frames (100 %)" in last and "done" in last
    rc, out, err = cli(*ctl, "wait")  # ended: the latest job again, at once
    assert rc == 0 and json.loads(out)["id"] == job["id"], err


def test_ctl_wait_without_any_job_says_so(daemon, cli):
    rc, out, err = cli("ctl", "--control", daemon.control_address, "wait")  # a fresh daemon
    assert rc == 2 and "this daemon has run no job yet" in err and out == ""


def test_progress_lines_are_rate_limited_with_rate_and_time_left(caplog):
    t = [0.0]
    p = Progress("gather", 10, "fields", logging.getLogger("scopecast.test"), every_s=5.0, clock=lambda: t[0])
    with caplog.at_level(logging.INFO, logger="scopecast.test"):
        for _ in range(10):
            t[0] += 1.0
            p.update()
        p.finish()
    assert [r.getMessage() for r in caplog.records] == [
        "gather: 1/10 fields (10 %), 1 fields/s, 9.0 s left",
        "gather: 6/10 fields (60 %), 1 fields/s, 4.0 s left",
        "gather: 10/10 fields (100 %), 1 fields/s, in 10 s",
    ]
    # a job first seen under way: its rate counts from there, not from zero
    t[0] = 0.0
    job = Progress("pairs job x", 40, "frames", logging.getLogger("scopecast.test"), clock=lambda: t[0], done=30)
    t[0] = 2.0
    job.update(done=34, emit=False)
    assert job.line() == "pairs job x: 34/40 frames (85 %), 2 frames/s, 3.0 s left"


def test_gather_and_the_offline_engine_report_progress(cli, tmp_path, monkeypatch):
    from scopecast.models.synthetic import write_package

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what gather leaves in the temporary folder
    rc, out, err = cli("gather", "--task", "virtual-staining", "--out", tmp_path / "ds", "--train", "2", "--val", "1",
                       "--size", "64", "--samples", "cells")
    assert rc == 0, err
    assert not list(tmp_path.glob("scopecast-gather-*")), "gather left its simulator configuration behind"
    assert "gather virtual-staining: 1/3 fields (33 %)" in err and "3/3 fields (100 %)" in err
    index = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    rec = tmp_path / "ds" / index["splits"]["train"]["recordings"][0]  # relative to the dataset folder
    pkg = write_package(tmp_path / "m", ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"], ["nuclei"],
                        name="tiny", width=4, layers=2, tile=64)
    rc, out, err = cli("engine", "--model", pkg, "--offline", rec, "--runtime", "ort-cpu")
    assert rc == 0 and "1/1 bundles inferred" in out, err
    assert f"offline tiny on {Path(rec).name}: 1/1 bundles (100 %)" in err and "1/1 bundles inferred (" in err
    rc, out, err = cli("engine", "--model", pkg, "--offline", rec, "--runtime", "ort-cpu")
    assert rc == 2 and "already exists" in err and "Traceback" not in err  # never overwritten
    rec = tmp_path / "ds" / index["splits"]["val"]["recordings"][0]
    rc, out, err = cli("-q", "engine", "--model", pkg, "--offline", rec, "--runtime", "ort-cpu")
    assert rc == 0 and "1/1 bundles inferred" in out and "bundles (100 %)" not in err  # -q: warnings only


def test_logging_one_line_runtime_summary_and_pymmcore_plus_only_with_v(capsys, caplog, tmp_path,
                                                                         restore_logging):
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.models.synthetic import write_package

    pkg = load_package(write_package(tmp_path / "m", ["BF"], ["nuclei"], name="tiny", width=4, layers=2, tile=64))
    with caplog.at_level(logging.DEBUG, logger="scopecast.daemon.inference.runtimes"):
        open_runtime(pkg, "auto")
    records = [r for r in caplog.records if r.name == "scopecast.daemon.inference.runtimes"]
    infos = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    assert len(infos) == 1 and infos[0].startswith("model tiny runs on ") and len(infos[0]) < 120, infos
    assert records[-1].levelno == logging.INFO  # the reasons, if any, came before it at DEBUG

    mm, sc, other = (logging.getLogger(n) for n in ("pymmcore-plus", "scopecast.test", "otherlib"))
    for verbose, quiet in ((False, False), (False, True), (True, False)):
        configure_logging(verbose, quiet)
        capsys.readouterr()
        mm.info("adapter says hi")
        sc.info("progress line")
        sc.debug("detail")
        other.info("library chatter")
        other.warning("library warning")
        err = capsys.readouterr().err
        assert err.count("adapter says hi") == (1 if verbose else 0), err  # once: its own handler is gone
        assert ("progress line" in err) == (not quiet) and ("detail" in err) == verbose
        assert ("library chatter" in err) == verbose and "library warning" in err
    assert os.environ.get("PYMM_STDERR_LOG") == "1"  # -v: the Micro-Manager core logs to stderr too


def test_ctl_wait_exits_1_when_the_job_failed(daemon, cli, monkeypatch):
    """``ctl wait && next-step`` must not go on after a job that failed (a scan position beyond the travel of an
    XY stage that declares none, as most real adapters, fails the job when reached): the job is printed, one line
    on stderr says it failed, exit 1. It exited 0."""
    monkeypatch.setattr(daemon.backend, "travel_um", lambda: {})  # the simulator's stage declares its travel
    ctl = ("ctl", "--control", daemon.control_address)
    rc, out, err = cli(*ctl, "run_scan", "--sequence",
                       '{"channels": ["BF"], "stage_positions": [{"x": 0, "y": 0}, {"x": 90000, "y": 0}]}')
    assert rc == 0, err
    rc, out, err = cli(*ctl, "wait")
    job = json.loads(out)
    assert job["status"] == "failed" and "outside the stage travel" in job["error"]
    assert rc == 1 and f"job {job['id']} failed" in err and "outside the stage travel" in err
    cli(*ctl, "capture_pairs", "--positions", "0,0", "--label-free", "BF", "--fluorescence", "Nuclei")
    rc, out, err = cli(*ctl, "wait")  # a job that ends well: 0, as before
    assert rc == 0 and json.loads(out)["status"] == "done", err


def test_a_gathered_dataset_folder_can_be_moved(cli, tmp_path):
    """dataset.json listed its recordings by absolute path: a dataset folder copied to another machine (to train
    where there is a GPU) or renamed could not be trained on."""
    import shutil

    from scopecast.models.dataset import load_pairs

    rc, _, err = cli("gather", "--task", "virtual-staining", "--out", tmp_path / "ds", "--train", "1", "--val", "1",
                     "--size", "64", "--samples", "cells")
    assert rc == 0, err
    index = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert not any(Path(r).is_absolute() for split in index["splits"].values() for r in split["recordings"])
    shutil.move(tmp_path / "ds", tmp_path / "elsewhere")
    assert load_pairs(tmp_path / "elsewhere", "train").inputs.shape[0] == 1


def test_the_offline_engine_says_how_many_bundles_it_withheld(daemon, client, cli):
    """On a blank slide every bundle is withheld by the input guards; 'N/N bundles inferred' said nothing of it."""
    from scopecast.models import packages_root

    daemon.engine.backend.core.setProperty("Scope", "Sample", "blank")
    job = client.request("start_live", record=True, max_cycles=2, exposure_ms=10)
    rec = client.wait(job["id"], timeout_s=120)["path"]
    rc, out, err = cli("engine", "--model", packages_root() / "virtual-staining", "--offline", rec)
    assert rc == 0 and "2/2 bundles inferred (2 withheld by the input guards, 2 untrusted)" in out, (out, err)


def test_the_offline_engine_runs_the_precision_it_is_given(client, cli):
    """``engine --precision int8 --offline REC`` ran the FP32 model (identical results, exit 0), and a package
    without an INT8 variant gave FP32 results too; the live engine refuses it. Now the variant runs and says so."""
    import shutil

    import numpy as np

    from scopecast.daemon.recording import open_recording
    from scopecast.models import packages_root

    job = client.request("start_live", record=True, max_cycles=2, exposure_ms=10)
    rec = client.wait(job["id"], timeout_s=120)["path"]
    out = rec.replace(".ome.zarr", ".virtual-staining.ome.zarr")
    got = {}
    for precision in ("fp32", "int8"):
        rc, _, err = cli("engine", "--model", packages_root() / "virtual-staining", "--precision", precision,
                         "--offline", rec)
        assert rc == 0, err
        results = open_recording(out)
        assert results.attrs["scopecast"]["precision"] == precision
        s = results.series[0]
        got[precision] = np.stack([s.image(h.channel, h.index.get("t", 0)) for h in s.frames]).astype(np.float64)
        shutil.rmtree(out)
    assert np.abs(got["int8"] - got["fp32"]).max() > 0
    rc, _, err = cli("engine", "--model", packages_root() / "virtual-staining-live", "--precision", "int8",
                     "--offline", rec)
    assert rc == 2 and "no int8 variant" in err, err


def test_gather_with_no_validation_fields_captures_none_and_train_says_it_needs_them(cli, tmp_path):
    """``gather --val 0`` captured one "validation" field at the current position, the last training field's, so
    ``train`` reported held-out figures measured on a training field; now it captures none and ``train`` says why
    it cannot train on the dataset (one line, exit 2)."""
    from helpers import gather_small

    from scopecast.models.dataset import load_pairs

    gather_small(tmp_path / "ds", "virtual-staining", 64, n_train=2, n_val=0, seed=1)
    index = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert index["splits"]["val"] == {"recordings": [], "fields": 0}
    assert len(load_pairs(tmp_path / "ds", "train").inputs) == 2
    with pytest.raises(ValueError, match=r"no complete pairs in split 'val' of .* \(it was gathered with --val 0\)"):
        load_pairs(tmp_path / "ds", "val")
    pytest.importorskip("torch")
    rc, _, err = cli("train", "--task", "virtual-staining", "--data", tmp_path / "ds", "--out", tmp_path / "run",
                     "--steps", "2", "--batch", "2", "--crop", "32", "--depth", "2", "--width", "4", "--threads", "1")
    assert rc == 2 and "training needs held-out validation fields" in err and "Traceback" not in err, err


@pytest.mark.parametrize("timeout", ["-1", "nan", "inf", "0"])
def test_a_ctl_timeout_that_is_not_a_positive_number_is_a_usage_error(timeout):
    """A negative --timeout waited for ever when no daemon answered (ZeroMQ reads a negative poll timeout as
    infinite); 0 always failed; nan and inf ended in a traceback."""
    nobody = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        p = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "ctl", "--timeout", timeout,
                            "--control", nobody, "status"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"scopecast ctl --timeout {timeout} was still waiting after 60 s")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "--timeout" in p.stderr and "Traceback" not in p.stderr


def test_the_client_never_reads_a_negative_timeout_as_forever():
    nobody = f"tcp://127.0.0.1:{free_port()}"
    outcome: list[BaseException] = []

    def ask() -> None:
        with ControlClient(nobody, timeout_s=60) as c:
            try:
                c.request("status", timeout_s=-1)  # used to block forever
            except BaseException as e:  # noqa: BLE001 - handed to the test
                outcome.append(e)

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "a request with a negative timeout was still waiting after 60 s"
    assert isinstance(outcome[0], ServerUnreachable), outcome


@pytest.mark.parametrize("where", ["missing-dir/frame.png", "."])
def test_an_unwritable_save_path_is_refused_before_the_snap(daemon, client, cli, tmp_path, where):
    """``snap --save`` to a path that cannot be written exposed the specimen, then threw the frame away with a
    traceback; now refused before the request (one line, exit 2)."""
    target = tmp_path / where
    before = client.request("status")["frames_acquired"]
    rc, out, err = cli("ctl", "--control", daemon.control_address, "snap", "--channel", "BF", "--save", target)
    assert rc == 2, (out, err)
    assert "--save" in err and "Traceback" not in err
    assert client.request("status")["frames_acquired"] == before  # no light spent on a frame nobody gets


def test_a_writable_save_path_still_saves(daemon, cli, tmp_path):
    target = tmp_path / "frame.png"
    rc, out, err = cli("ctl", "--control", daemon.control_address, "snap", "--channel", "BF", "--save", target)
    assert rc == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '"saved"' in out


def test_an_unknown_sample_kind_is_named_with_the_kinds_there_are(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what gather leaves in the temporary folder
    rc, _, err = cli("gather", "--out", tmp_path / "ds", "--train", "2", "--val", "1", "--size", "64",
                     "--samples", "cells,fibroblast")
    assert rc == 2 and "Traceback" not in err, err
    assert "--samples: unknown sample kind(s) fibroblast; the simulator has cells, epithelium, fibroblasts" in err, err
    assert not (tmp_path / "ds" / "dataset.json").exists()
    assert not list(tmp_path.glob("scopecast-gather-*")), "gather left its simulator configuration behind"


@pytest.mark.parametrize("value", ["5", "15,5", "a,b", "0,5", "5,inf"])
def test_an_exposure_range_that_is_not_lo_hi_is_a_usage_error(cli, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        cli("gather", "--out", tmp_path / "ds", "--train", "2", "--val", "1", "--size", "64", "--samples", "cells",
            "--exposure-range", value)
    assert e.value.code == 2
    assert "argument --exposure-range" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()  # refused before the microscope started


TINY_TRAIN = ("--steps", "2", "--batch", "2", "--crop", "32", "--depth", "2", "--width", "4", "--threads", "1")


def test_train_refuses_an_out_holding_a_run_unless_overwrite(cli, tmp_path):
    """A second run into the same folder replaced the checkpoint without a word; export and keys refuse."""
    pytest.importorskip("torch")
    from helpers import gather_small

    ds = gather_small(tmp_path / "ds", "virtual-staining", 64, n_train=2, n_val=1, seed=1)
    run = tmp_path / "run"
    rc, _, err = cli("train", "--data", ds, "--out", run, *TINY_TRAIN)
    assert rc in (0, 3), err  # 3: a two-step model does not beat its baselines
    first = (run / "checkpoint.pt").read_bytes()
    rc, _, err = cli("train", "--data", ds, "--out", run, *TINY_TRAIN, "--seed", "7")
    assert rc == 2 and "already holds a training run (checkpoint.pt, log.jsonl, card.md)" in err, err
    assert "--overwrite" in err and (run / "checkpoint.pt").read_bytes() == first
    rc, _, err = cli("train", "--data", ds, "--out", run, *TINY_TRAIN, "--seed", "7", "--overwrite")
    assert rc in (0, 3), err
    assert (run / "checkpoint.pt").read_bytes() != first


def test_gather_refuses_an_out_holding_a_dataset_unless_overwrite(cli, tmp_path):
    """A second gather replaced dataset.json: the recordings it listed were listed nowhere."""
    args = ("gather", "--out", tmp_path / "ds", "--train", "1", "--val", "1", "--size", "64")
    rc, _, err = cli(*args)
    assert rc == 0, err
    index = (tmp_path / "ds" / "dataset.json").read_text()
    rc, _, err = cli(*args, "--seed", "3")
    assert rc == 2 and "dataset.json exists" in err and "--overwrite" in err, err
    assert (tmp_path / "ds" / "dataset.json").read_text() == index
    rc, _, err = cli(*args, "--seed", "3", "--overwrite")
    assert rc == 0, err
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["seed"] == 3


@pytest.mark.parametrize("kind", ["cells", "sparse"])
def test_gather_of_the_loaded_slide_records_its_sample_kind(cli, tmp_path, kind):
    """Training counted its fields as kind '?', so evaluate took the task's morphologies for the training ones."""
    from scopecast.models.dataset import load_pairs

    cfg = tmp_path / "sim.cfg"
    text = SHIPPED_CFG.read_text()
    cfg.write_text(text.replace("#py Property,Scope,Sample,cells", f"#py Property,Scope,Sample,{kind}"))
    rc, _, err = cli("gather", "--out", tmp_path / "ds", "--train", "2", "--val", "1", "--size", "64",
                     "--config", cfg)
    assert rc == 0, err
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["sample"] == kind
    assert load_pairs(tmp_path / "ds", "train").kinds == [kind, kind]
    assert load_pairs(tmp_path / "ds", "val").kinds == [kind]


@pytest.mark.parametrize("argv, says", [
    (("bogus",), "unknown command 'bogus'"),
    (("bogus", "--x", "1"), "unknown command 'bogus'"),
    (("snap", "--args", '{"exposure_ms": "abc"}'), "exposure_ms: Input should be a valid number"),
    (("snap", "--exposure-ms", "abc"), "'abc' is not a number"),
    (("snap", "--args", '{"colour": "DF"}'), "colour: Extra inputs are not permitted"),
    (("job",), "job: Field required"),
])
def test_usage_errors_exit_2_from_either_side(daemon, cli, argv, says):
    frames = daemon.engine.frames_acquired
    rc, out, err = cli("ctl", "--control", daemon.control_address, *argv)
    assert rc == 2 and says in err and not out, (argv, rc, err)
    assert err.startswith("scopecast ctl ") and "BadRequest:" not in err, err
    assert daemon.engine.frames_acquired == frames


def test_a_refused_well_formed_request_exits_1(daemon, cli):
    rc, out, err = cli("ctl", "--control", daemon.control_address, "snap", "--channel", "Nope")
    assert rc == 1 and "unknown channel 'Nope'" in err and not out, err


def test_the_help_documents_the_exit_statuses(cli):
    rc, out, _ = cli("ctl", "--help", "--control", "tcp://127.0.0.1:9", "--timeout", "0.5")
    assert rc == 0 and "exit status: 0 done; 1 the server refused" in out and "2 a usage error" in out
