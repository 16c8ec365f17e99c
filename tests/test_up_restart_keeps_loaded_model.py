"""``scopecast up``: an engine restarted after a crash serves the package ``load_model`` had switched it to.

Before, the supervisor restarted every engine with its start-up arguments: after a crash an engine switched to
another package (the viewer's model loading, ``scopecast ctl load_model``) silently served its start-up package
again, while clients are told they need no notice of a restart (docs/protocol.md, ``scopecast up``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

from faultprocs import free_address, listener_pid, scopecast, wait_status
from helpers import wait_until
from scopecast.daemon.control import ControlClient
from scopecast.models.synthetic import write_package

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def test_a_restarted_engine_serves_the_package_load_model_switched_it_to(sim_cfg, tmp_path):
    first = write_package(tmp_path / "models" / "first", CYCLE, ["nuclei"], name="first", width=4, layers=2, tile=128)
    second = write_package(tmp_path / "models" / "second", CYCLE, ["nuclei"], name="second", width=4, layers=2,
                           tile=128)
    ctl, stream, results, ectl = (free_address() for _ in range(4))
    up = scopecast("up", "--config", str(sim_cfg), "--data-dir", str(tmp_path / "data"), "--control", ctl,
                   "--stream", stream, "--engine", f"{first},{results},{ectl}", "--no-spares", cwd=tmp_path,
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_status(ectl, up)
        with ControlClient(ectl, timeout_s=120) as ec:
            assert ec.request("load_model", path=str(second))["name"] == "second"
        wait_until(lambda: any("(load_model): a restart loads it" in x for x in lines), 60,
                   "the supervisor to see the switch")
        old = listener_pid(ectl, up.pid)
        os.kill(old, signal.SIGKILL)
        listener_pid(ectl, up.pid, not_pid=old)  # its replacement listens
        assert wait_status(ectl, up)["model"]["name"] == "second"
        with ControlClient(ectl, timeout_s=120) as ec:  # it may still load from the same directories
            assert ec.request("load_model", path=str(first))["name"] == "first"
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        reader.join(10)
    out = "".join(lines)
    assert "engine first restarted" in out and f"on {second.resolve()} (loaded with load_model)" in out, out
