"""Shared fixtures: a real UniMMCore on the simulated scope, a real daemon on loopback."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CFG = ROOT / "hardware_configs" / "sim-ledarray.cfg"


def small_cfg(directory: Path, size: int = 256) -> Path:
    """The shipped simulator config with a smaller sensor (keeps the suite fast)."""
    from scopecast.daemon.sim import sized_config

    return sized_config(directory, size, SHIPPED_CFG)


def small_demo_cfg(directory: Path, size: int) -> Path:
    """The shipped DemoCamera config (compiled test adapters) with a ``size``² sensor."""
    text = (ROOT / "hardware_configs" / "demo-camera.cfg").read_text().replace(
        "Property,Camera,Exposure,10.0000",
        f"Property,Camera,Exposure,10.0000\nProperty,Camera,OnCameraCCDXSize,{size}\n"
        f"Property,Camera,OnCameraCCDYSize,{size}",
    )
    path = directory / "demo-small.cfg"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def sim_cfg(tmp_path_factory) -> Path:
    return small_cfg(tmp_path_factory.mktemp("cfg"))


@pytest.fixture
def backend(sim_cfg):
    from scopecast.daemon.backend import load_mmcore_backend

    b = load_mmcore_backend(sim_cfg)
    yield b
    b.close()


@pytest.fixture
def core(backend):
    return backend.core


@pytest.fixture
def daemon(sim_cfg, tmp_path):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
               trigger_dirs=[tmp_path / "data", ROOT / "docs"]).start()
    yield d
    d.close()


@pytest.fixture
def client(daemon):
    from scopecast.daemon.control import ControlClient

    with ControlClient(daemon.control_address, timeout_s=120) as c:
        yield c


PYMM_ENV = ("PYMM_STDERR_LOG", "PYMM_DEBUG_LOG")


@pytest.fixture
def restore_logging():
    """Take back what ``configure_logging`` did (its handler, levels, -v's environment)."""
    root = logging.getLogger()
    level, env = root.level, {k: os.environ.get(k) for k in PYMM_ENV}
    yield
    for h in [h for h in root.handlers if getattr(h, "scopecast", False)]:
        root.removeHandler(h)
    root.setLevel(level)
    logging.getLogger("scopecast").setLevel(logging.NOTSET)
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cli(capsys, restore_logging):
    """``run(*argv) -> (exit status, stdout, stderr)`` of the real ``scopecast`` main, in this process."""

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        from scopecast.daemon.cli import main

        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def disk_fills_at_close(monkeypatch):
    """Every recording's writer fails (a full disk) once the recording is closing, after every frame was
    accepted: a short job's frames all fit in the queue, so only close() then knows."""
    import errno

    from scopecast.daemon.recording import writer

    def submit_fails_once_closing(self, item):
        while not self.closed:  # every frame accepted first
            time.sleep(0.01)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer.Recorder, "_submit", submit_fails_once_closing)
