"""A local engine on ``ipc://`` sockets: the fast transport (benchmarks/bench_transport.py) works end to end."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zmq

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.cli import _unbindable
from scopecast.daemon.control import ControlClient, ControlServer
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.service import Daemon
from scopecast.daemon.stream import StreamSubscriber
from scopecast.models.synthetic import write_package

from helpers import wait_subscribed

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def test_daemon_and_engine_over_ipc(sim_cfg, tmp_path):
    stream, results = f"ipc://{tmp_path}/frames", f"ipc://{tmp_path}/results"
    d = Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", "tcp://127.0.0.1:*", stream).start()
    pkg = write_package(tmp_path / "m", CYCLE, ["nuclei"], name="tiny", width=8, layers=3, tile=128)
    e = InferenceEngine(load_package(pkg), d.stream_address, results, None, warmup_shape=(256, 256)).start()
    sub = StreamSubscriber(e.results_address, topics=("result",))
    try:
        assert d.stream_address == stream and e.results_address == results
        wait_subscribed(d.publisher, "frame", 1)
        wait_subscribed(e, "result")
        with ControlClient(d.control_address, timeout_s=120) as c:
            c.request("start_live", channels=CYCLE, interval_ms=20)
            got = []
            t_end = time.monotonic() + 120
            while not got and time.monotonic() < t_end:
                m = sub.recv(0.5)
                if m and m[0] == "result":
                    got.append(m)
            c.request("stop")
        assert got, "no result over ipc:// within 120 s"
        head, data = got[0][1], got[0][2]
        assert head["model"] == "tiny" and data.shape == (1, 256, 256) and np.isfinite(data).all()
    finally:
        sub.close()
        e.close()
        d.close()


def _listener_elsewhere(address: str) -> subprocess.Popen:
    """Another process (as another daemon would be) listening on ``address`` until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys, zmq
        s = zmq.Context().socket(zmq.REP)
        s.bind({address!r})
        print("bound", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "bound"
    return p


def test_a_second_control_server_on_a_live_ipc_path_is_refused(tmp_path):
    """ZeroMQ unlinks an ipc:// path before binding: a second daemon or engine took the address from the running
    one, which kept the microscope but could never be reached again. Now refused, before any hardware."""
    address = f"ipc://{tmp_path}/control.ipc"
    first = _listener_elsewhere(address)
    try:
        with pytest.raises(zmq.ZMQError, match="in use"):
            ControlServer({"status": lambda: {}}, address)
        assert "in use" in _unbindable(address)
    finally:
        first.stdin.close()
        first.kill()
        first.wait()


def test_a_stale_ipc_file_is_no_obstacle_and_one_path_twice_is_refused(tmp_path):
    address = f"ipc://{tmp_path}/stale.ipc"
    first = _listener_elsewhere(address)
    first.kill()  # dies without unlinking its socket file
    first.wait()
    assert (tmp_path / "stale.ipc").exists()
    assert _unbindable(address) == ""
    server = ControlServer({"status": lambda: {"me": True}}, address)
    server.start()
    try:
        with ControlClient(address, timeout_s=30) as c:
            assert c.request("status") == {"me": True}
    finally:
        server.stop()
    other = f"ipc://{tmp_path}/other.ipc"
    assert "two sockets" in _unbindable(other, other)
