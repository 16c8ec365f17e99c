"""A local engine on ``ipc://`` sockets: the fast transport (benchmarks/bench_transport.py) works end to end."""

import time

import numpy as np

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.control import ControlClient
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
