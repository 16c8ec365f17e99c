"""Hardware configs and the scopecast command line, run as a user would."""

import subprocess
import sys
import time

import pytest

from scopecast.daemon.backend import BackendError, load_mmcore_backend
from scopecast.daemon.control import ControlClient
from tests.conftest import SHIPPED_CFG


def test_shipped_config_loads_every_device(backend, core):
    assert set(core.getLoadedDevices()) >= {"Scope", "LED", "Fluo", "Shutter", "Emission", "Objective", "XY", "Z", "Camera", "STED"}
    assert core.getCameraDevice() == "Camera" and core.getShutterDevice() == "Shutter"
    assert backend.pixel_size_um() == pytest.approx(0.65)
    core.setConfig("Objective", "20x")
    assert backend.pixel_size_um() == pytest.approx(0.325)
    # every way of turning the nosepiece through the core changes the pixel size (the state, the label, the
    # property); the core's cached match, getPixelSizeUm(True), would not: UniMMCore's cache keeps the old Label
    # after setState until something reads it uncached
    turns = ((lambda: core.setState("Objective", 0), 1.625),
             (lambda: core.setStateLabel("Objective", "40x/0.65"), 0.1625),
             (lambda: core.setProperty("Objective", "Label", "20x/0.40"), 0.325))
    for turn, px in turns:
        turn()
        assert backend.pixel_size_um() == pytest.approx(px) == core.getPixelSizeUm()
    assert float(core.getProperty("LED", "NumericalAperture")) == pytest.approx(0.4)
    # properties have limits and allowed values like real adapters
    with pytest.raises(Exception, match="not within the allowed range"):
        core.setProperty("LED", "Brightness", 300)
    with pytest.raises(Exception, match="not allowed"):
        core.setProperty("LED", "IlluminationPattern", "rainbow")
    core.setProperty("LED", "SerialCommand", "l.0")
    assert core.getProperty("LED", "IlluminationPattern") == "Center LED" and int(core.getProperty("LED", "LitLedCount")) == 1


def test_malformed_config_names_the_line(tmp_path):
    lines = SHIPPED_CFG.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("#py Property,LED,ArrayDistanceFromSample"))
    lines[i] = "#py Property,LED,ArrayDistanceFromSample,far"
    bad = tmp_path / "bad.cfg"
    bad.write_text("\n".join(lines))
    with pytest.raises(BackendError) as e:
        load_mmcore_backend(bad)
    msg = str(e.value)
    assert f"line {i + 1}" in msg and "ArrayDistanceFromSample" in msg and "far" in msg


def test_unknown_device_class_is_named(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("#py pyDevice,Cam,scopecast.daemon.sim.devices,NoSuchCamera\n")
    with pytest.raises(BackendError, match="line 1.*NoSuchCamera"):
        load_mmcore_backend(bad)


def test_missing_config_is_named():
    with pytest.raises(BackendError, match="not found: nowhere.cfg"):
        load_mmcore_backend("nowhere.cfg")


def _free_port() -> int:
    from scopecast.daemon.supervisor import free_port

    return free_port()


def test_daemon_command_serves_and_shuts_down(sim_cfg, tmp_path):
    addr = f"tcp://127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(sim_cfg),
         "--data-dir", str(tmp_path / "data"), "--control", addr,
         "--stream", f"tcp://127.0.0.1:{_free_port()}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with ControlClient(addr, timeout_s=60) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    st = c.request("status", timeout_s=2)
                    break
                except TimeoutError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            assert st["state"] == "idle"
            header, img = c.snap(channel="DF")
            assert header["pattern"] == "Darkfield" and img.shape == (256, 256)
            assert c.request("shutdown") == {"shutting_down": True}
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read()
        assert "control socket" in out and "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_daemon_command_reports_bad_config(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text("Property,Core,Initialize,0\nGarbageCommand,1,2\n")
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "line 2" in r.stderr and "GarbageCommand" in r.stderr


def test_help_reads_well():
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for sub in ("daemon", "ctl", "demo"):
        assert sub in r.stdout


def test_main_job_runs_headless_with_the_shipped_models(tmp_path):
    """What `make demo` runs, without a display: live inference, figures, snapshot, pairs."""
    from scopecast.daemon.demo import shipped_packages

    if len(shipped_packages()) < 2:
        pytest.skip("the trained packages are not in models/packages yet")
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "demo", "--headless", "--seconds", "4",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "engine virtual-staining" in out and "engine super-resolution" in out
    assert "exposure->result p50" in out
    assert "engine:error" not in out, out[-3000:]  # every bundle the engines took gave a result
    # every model's output is reported with its trust verdict, and on the demo's cells, each input at an
    # exposure its model was trained on, that verdict is "trusted" (the demo once ran the super-resolution
    # input at 100 ms against its 5-25 ms training fields: untrusted on every result)
    for m in ("virtual-staining", "super-resolution"):
        assert f"{m}: last result trusted" in out, out[-3000:]
    assert "recorded 32 frames in 4 series" in out
    png = (tmp_path / "snapshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_daemon_command_reports_an_unusable_data_directory_in_one_line(tmp_path, where):
    """A data directory that cannot be made (a file there, a file above it, a read-only disk) is refused like a
    bad address: one line naming it, exit 2, before the hardware is loaded; not a traceback."""
    (tmp_path / "file").write_text("x")
    data = tmp_path / "file" if where == "file" else tmp_path / "file" / "data"
    r = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--data-dir", str(data),
                        "--control", "tcp://127.0.0.1:0", "--stream", "tcp://127.0.0.1:0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith(f"scopecast daemon: cannot use data directory {data}: ")
    assert "the hardware config was not loaded" in r.stderr and r.stderr.count("\n") == 1
