"""An allowed Python trigger whose module hangs at import (it waits for a device that never answers): load_triggers
never answered, and the daemon, told to shut down, printed 'stopped' but never exited (the request's worker thread
was still importing, and the process waits for those at exit). Now the load is refused within
``IMPORT_TIMEOUT_S`` naming the limit, a second load of that module at once, and shutdown completes. Real daemon
process on the simulator, real control socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from faultprocs import free_address, wait_status
from scopecast.daemon.control import ControlClient, DaemonError

IMPORT_TIMEOUT_S = 10.0  # scopecast.daemon.trigger_timeout.IMPORT_TIMEOUT_S

MODULE = "waits_for_a_device"
CONFIG = {"triggers": [{"name": "mine", "model": "m", "python": f"{MODULE}:Colony", "condition": {"above": 1}}]}


def test_a_module_that_hangs_at_import_is_refused_and_the_daemon_still_exits(sim_cfg, tmp_path):
    (tmp_path / f"{MODULE}.py").write_text("import threading\n\nthreading.Event().wait()  # a device that never "
                                           "answers\n\n\nclass Colony:\n    def measure(self, header, data):\n"
                                           "        return 0.0\n")
    ctl = free_address()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(sim_cfg),
                             "--data-dir", str(tmp_path / "data"), "--control", ctl, "--stream", free_address(),
                             "--allow-trigger", f"{MODULE}:Colony"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_status(ctl, proc)
        with ControlClient(ctl, timeout_s=IMPORT_TIMEOUT_S + 60) as c:  # the bound, and a margin for a loaded machine
            with pytest.raises(DaemonError) as e:
                c.request("load_triggers", config=CONFIG, sources={"m": free_address()})
            assert e.value.type == "ValueError", e.value
            assert f"cannot load trigger class '{MODULE}:Colony': TimeoutError" in e.value.message
            assert f"did not finish within {IMPORT_TIMEOUT_S:g} s" in e.value.message
            t0 = time.monotonic()
            with pytest.raises(DaemonError, match="an earlier import of module 'waits_for_a_device'"):
                c.request("load_triggers", config=CONFIG, sources={"m": free_address()})
            assert time.monotonic() - t0 < IMPORT_TIMEOUT_S  # refused at once, not after another wait
            assert c.request("triggers") == {"loaded": False}
            assert c.request("shutdown") == {"shutting_down": True}
        assert proc.wait(120) == 0  # it never exited
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
