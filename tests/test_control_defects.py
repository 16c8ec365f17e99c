"""Control-socket defects, fixed: huge integers get their one reply (daemon, engine, stream), ``ctl --args``
is strict JSON, long requests (``wait``, ``stop``, ``snap``) cannot starve the other commands, and ``ctl`` says when
no daemon answers and how long a job ran."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import zmq

from scopecast.daemon.control import ControlClient, ControlServer, DaemonError, ServerUnreachable
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.progress import format_duration
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.wire import WireError, loads_strict
from scopecast.models.synthetic import write_package

from conftest import small_cfg
from helpers import wait_until

HUGE = "1" * 5000  # more digits than Python converts to an int (4300)
CYCLE = ["DPC-Left", "DPC-Right", "BF"]


def _dealer(address: str, request: dict) -> zmq.Socket:
    """A DEALER socket that has sent ``request`` (its reply, when it comes, is ``[b"", reply, *parts]``)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send_multipart([b"", json.dumps(request).encode()])
    return sock


def _raw(address: str, body: bytes, timeout_s: float = 60.0) -> dict | None:
    """Send one raw request on a fresh REQ socket; the decoded reply, or None if none came in ``timeout_s``."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        sock.send(body)
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return json.loads(sock.recv_multipart()[0])
    finally:
        sock.close(linger=0)


# ------------------------------------------------------------- D4: huge integers
def test_loads_strict_names_an_integer_too_large():
    for text in (HUGE, '{"id": -' + HUGE + "}", "[[" + HUGE + "]]"):
        with pytest.raises(WireError, match="number too large"):
            loads_strict(text)
    assert loads_strict("1" * 4000) > 0  # long, but Python converts it


def test_a_huge_integer_gets_its_bad_request_reply_from_the_daemon(daemon, client):
    for body in ('{"cmd": "status", "id": ' + HUGE + "}",
                 '{"cmd": "move_stage", "args": {"x": ' + HUGE + '}, "id": 3}'):
        reply = _raw(daemon.control_address, body.encode())
        assert reply is not None, "no reply to a request with a 5000-digit integer"
        assert reply["ok"] is False and reply["error"]["type"] == "BadRequest"
        assert "number too large" in reply["error"]["message"], reply
    assert client.request("status")["state"] == "idle"
    assert client.request("describe")["position_um"] == {"x": 0.0, "y": 0.0, "z": 0.0}  # nothing moved


def test_the_engine_replies_to_and_counts_huge_integers_as_undecodable(tmp_path):
    pkg = write_package(tmp_path / "m", CYCLE, ["nuclei"], name="tiny", width=4, layers=2, tile=128)
    pub = zmq.Context.instance().socket(zmq.XPUB)  # XPUB: the engine's subscription is visible
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    engine = InferenceEngine(pkg, pub.getsockopt_string(zmq.LAST_ENDPOINT), "tcp://127.0.0.1:*",
                             "tcp://127.0.0.1:*", warmup_shape=None).start()
    try:
        assert engine.control is not None
        reply = _raw(engine.control.address, ('{"cmd": "status", "id": ' + HUGE + "}").encode())
        assert reply is not None, "the engine's control socket sent no reply"
        assert reply["error"]["type"] == "BadRequest" and "number too large" in reply["error"]["message"]
        assert pub.poll(60_000) and pub.recv() == b"\x01frame"
        header = '{"dtype": "uint16", "shape": [4, 4], "seq": ' + HUGE + "}"
        pub.send_multipart([b"frame", header.encode(), np.zeros((4, 4), np.uint16).tobytes()])
        wait_until(lambda: sum(engine.status()["dropped"].values()) >= 1, what="the bad frame counted")
        dropped = engine.status()["dropped"]
        assert dropped.get("receive:undecodable") == 1 and "receive:error" not in dropped, dropped
    finally:
        engine.close()
        pub.close(linger=0)


# ------------------------------------------------------------- D6: ctl --args is strict JSON
def test_ctl_args_refuses_non_finite_and_huge_numbers(daemon, client, cli):
    ctl = ("ctl", "--control", daemon.control_address)
    cases = [
        (("start_live", "--args", '{"max_cycles": NaN, "channels": ["BF"]}'), "NaN"),
        (("move_stage", "--args", '{"x": NaN, "y": 500}'), "NaN"),
        (("move_stage", "--args", '{"x": -Infinity}'), "Infinity"),
        (("snap", "--args", '{"exposure_ms": 1e999}'), "1e999"),
        (("move_stage", "--args", '{"x": ' + HUGE + "}"), "number too large"),
        (("capture_pairs", "--grid", '{"rows": NaN}'), "NaN"),  # an object option given as JSON
        (("capture_pairs", "--positions", "[[1e999, 0]]"), "1e999"),  # an array option given as JSON
    ]
    for argv, named in cases:
        rc, out, err = cli(*ctl, *argv)
        assert rc == 2 and out == "", (argv, rc, out, err)
        assert named in err and "not valid JSON" in err, (argv, err)
    st = client.request("status")
    assert st["state"] == "idle" and st["job"] is None, "a refused command ran"
    assert client.request("describe")["position_um"] == {"x": 0.0, "y": 0.0, "z": 0.0}


# ------------------------------------------------------------- D3: long requests do not starve the others
def test_sixteen_waits_delay_neither_stop_nor_describe_nor_snap(daemon, client):
    job = client.request("start_live", channels=["BF"], interval_ms=100)
    ctx = zmq.Context.instance()
    waiters = []
    served = daemon.server.requests_served
    for i in range(16):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(daemon.control_address)
        request = {"cmd": "wait", "args": {"job": job["id"], "wait_s": 300}, "id": i}
        s.send_multipart([b"", json.dumps(request).encode()])
        waiters.append(s)
    try:
        wait_until(lambda: daemon.server.requests_served >= served + 16, what="the 16 waits to arrive")
        # each bound is generous for a loaded machine; before the fix each took the whole wait (300 s)
        assert "image_shape" in client.request("describe", timeout_s=60)
        header, _ = client.snap()
        assert header["channel"]
        stopped = client.request("stop", timeout_s=60)["stopped"]
        assert stopped["id"] == job["id"] and stopped["status"] == "stopped"
        for s in waiters:  # the job ended: every wait is answered with it
            assert s.poll(60_000), "a wait was not answered when its job ended"
            reply = json.loads(s.recv_multipart()[-1])
            assert reply["ok"] and reply["result"]["status"] == "stopped"
    finally:
        for s in waiters:
            s.close(linger=0)


def test_a_long_command_beyond_its_limit_is_refused_with_busy_error():
    release = threading.Event()
    started = threading.Semaphore(0)

    def wait(wait_s: float = 1.0) -> dict:
        """Block until released (as the daemon's wait blocks until a job ends)."""
        started.release()
        release.wait(120)
        return {"waited": True}

    def ping() -> dict:
        """Answer at once (off the socket thread, like describe)."""
        return {"pong": True}

    server = ControlServer({"wait": wait, "ping": ping}, "tcp://127.0.0.1:*", long_limit=2)
    server.start()
    socks = []
    try:
        for i in range(2):
            socks.append(_dealer(server.address, {"cmd": "wait", "id": i}))
        for _ in range(2):
            assert started.acquire(timeout=60), "a wait did not start"
        with ControlClient(server.address, timeout_s=60) as c:
            assert c.request("ping") == {"pong": True}
            reply = _raw(server.address, b'{"cmd": "wait", "id": "third"}')
            assert reply is not None and reply["id"] == "third"
            assert reply["error"]["type"] == "BusyError", reply
            assert "2 'wait' requests are already in progress" in reply["error"]["message"]
            release.set()
            for s in socks:
                assert s.poll(60_000)
                assert json.loads(s.recv_multipart()[-1])["result"] == {"waited": True}
            assert c.request("wait") == {"waited": True}  # the lane is free again
    finally:
        release.set()
        for s in socks:
            s.close(linger=0)
        server.stop()


def test_many_long_snaps_leave_the_other_commands_free(daemon, client):
    """Snaps take the microscope one after another: 16 of 300 ms each hold their lane for ~5 s, a 17th is
    refused at once, and describe is answered meanwhile (on the general workers, which the snaps no longer
    fill). The microscope is held while the 17 arrive, as during a long exposure: the first snap cannot end
    before the 17th is read, however slowly a loaded machine delivers them (300 ms of margin was ~3x what
    it took here under load)."""
    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")  # a snap lasts its exposure
    socks = []
    replies: dict[int, dict] = {}

    def busy_reply() -> bool:
        for s in socks:
            while s.poll(0):
                r = json.loads(s.recv_multipart()[1])  # [empty, reply, pixels...]
                replies[r["id"]] = r
        return any("error" in r for r in replies.values())

    try:
        with daemon.backend.lock:  # every snap waits for the microscope, in its lane's slot
            for i in range(17):
                socks.append(_dealer(daemon.control_address,
                                     {"cmd": "snap", "args": {"channel": "BF", "exposure_ms": 300}, "id": i}))
            wait_until(busy_reply, 60, "the snap beyond the lane's 16 to be refused")
        busy = [r for r in replies.values() if "error" in r]
        assert len(busy) == 1 and busy[0]["error"]["type"] == "BusyError", busy
        assert "16 'snap' requests are already in progress" in busy[0]["error"]["message"]
        assert "snap" in client.request("describe", timeout_s=120)["commands"]
        wait_until(lambda: busy_reply() and len(replies) == 17, 300, "every snap answered")
        assert sum("result" in r for r in replies.values()) == 16
    finally:
        for s in socks:
            s.close(linger=0)


# ------------------------------------------------------------- cosmetic: no daemon; how long a job ran
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ctl_says_at_once_when_no_daemon_answers(cli):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc, out, err = cli("ctl", "--control", address, "--timeout", "60", "status")
    took = time.monotonic() - t0
    assert rc == 1 and out == ""
    assert f"no daemon (or engine) answered at {address} within 5 s" in err and "Is it running" in err
    assert "--control" in err
    assert took < 45, f"ctl waited {took:.0f} s for a daemon that is not there"  # bound; it tries for 5 s
    with ControlClient(address, timeout_s=60, connect_timeout_s=0.5) as c, pytest.raises(ServerUnreachable):
        c.request("status")


def test_ctl_wait_reports_how_long_the_job_ran(daemon, client, cli):
    daemon.engine.backend.core.setProperty("Camera", "TimingModel", "Realistic")  # a snap takes its exposure
    job = client.request("capture_pairs", positions=[[0, 0], [50, 0]], label_free=["BF"], fluorescence=["Nuclei"],
                         exposure_ms=100)
    done = client.wait(job["id"], timeout_s=120)
    ran = done["finished"] - done["started"]
    assert ran >= 0.2, done  # two 100 ms exposures and two 20 ms: long enough to tell from the instant ctl watches
    rc, out, err = cli("ctl", "--control", daemon.control_address, "wait", job["id"])
    assert rc == 0, err
    last = err.strip().splitlines()[-1]
    assert f"in {format_duration(ran)}" in last and "done" in last, last


def test_an_unknown_job_is_named_without_a_repr_and_a_closed_pipe_is_no_error(daemon, client):
    """``KeyError``'s str() is its repr: the reply's message was ``"no job 'nope'"`` with the quotes. And
    ``scopecast ctl describe | head`` (a reader that stops early) ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    from scopecast.daemon.control import DaemonError

    with pytest.raises(DaemonError) as e:
        client.request("job", job="nope")
    assert e.value.type == "KeyError" and e.value.message == "no job 'nope'"
    proc = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "ctl", "--control",
                             daemon.control_address, "describe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the reply is printed
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


REPLACE_ROUNDS = 20
NOWHERE_RESULTS = "tcp://127.0.0.1:1"  # the results address is only connected to (nothing needs to publish there)


def _alive(prefix: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


def _at_once(address: str, cmd: str, **args) -> None:
    """Send ``cmd`` from two clients at the same moment; both must be answered ok."""
    barrier = threading.Barrier(2)
    replies: list[object] = []

    def one() -> None:
        with ControlClient(address, timeout_s=60) as c:
            barrier.wait()
            replies.append(c.request(cmd, **args))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(replies) == 2, replies


def test_concurrent_start_spot_checks_leave_nothing_running_after_stop(daemon, client):
    """Two clients replacing a model's spot checks at once: both started one and the second overwrote the first,
    which kept capturing fluorescence unseen after stop_spot_checks (one lock now makes replacing atomic)."""
    for _ in range(REPLACE_ROUNDS):
        _at_once(daemon.control_address, "start_spot_checks", model="m", results=NOWHERE_RESULTS, record=False)
        client.request("stop_spot_checks")
        assert client.request("spot_checks") == {"models": {}}
        wait_until(lambda: not _alive("spot-checks-m"), 15, "no spot checker left running after stop_spot_checks")


def test_concurrent_load_triggers_leave_nothing_running_after_unload(daemon, client):
    """The same for load_triggers: a leaked runner kept deciding and firing after unload_triggers."""
    config = {"triggers": [{
        "name": "t", "model": "m", "measurement": {"kind": "mean", "channel": "c"},
        "condition": {"above": 0.5}, "actions": [{"kind": "notify", "message": "x"}]}]}
    for _ in range(REPLACE_ROUNDS):
        _at_once(daemon.control_address, "load_triggers", config=config, sources={"m": NOWHERE_RESULTS})
        client.request("unload_triggers")
        assert client.request("triggers") == {"loaded": False}
        wait_until(lambda: not _alive("trigger"), 15, "no trigger runner left running after unload_triggers")


def test_a_request_with_an_unknown_key_gets_its_id_back():
    """A DEALER client with several requests in flight matches replies by id: one refused for an unknown key was
    answered with "id": null, so that client never learned which request it was."""
    server = ControlServer({"status": lambda: {"state": "idle"}}, "tcp://127.0.0.1:*")
    server.start()
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.address)
    try:
        requests = {"a": {"cmd": "status", "id": "a", "timeout": 5},  # a key the protocol does not have
                    "b": {"cmd": "status", "id": "b"},
                    7: {"cmd": "status", "id": 7, "args": {}, "extra": True}}
        for r in requests.values():
            dealer.send_multipart([b"", json.dumps(r).encode()])
        received = []
        while len(received) < len(requests):  # one reply per request, whatever it says
            assert dealer.poll(60_000), f"only {len(received)} of {len(requests)} replies within 60 s"
            _, body, *_ = dealer.recv_multipart()
            received.append(json.loads(body))
        replies = {r["id"]: r for r in received}
        assert sorted(map(str, replies)) == sorted(map(str, requests)), [r["id"] for r in received]
        assert replies["b"]["ok"] is True
        for rid in ("a", 7):
            assert replies[rid]["ok"] is False
            assert replies[rid]["error"]["type"] == "BadRequest"
            assert "unknown request keys" in replies[rid]["error"]["message"]
    finally:
        dealer.close(linger=0)
        server.stop()


@pytest.fixture
def client_no_40x(tmp_path):
    """A daemon on the simulator whose config calibrates no pixel size for 40x."""
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    cfg = small_cfg(tmp_path, 64)
    cfg.write_text("".join(line for line in cfg.read_text().splitlines(keepends=True) if "Res40x" not in line))
    d = Daemon(lambda: load_mmcore_backend(cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        with ControlClient(d.control_address, timeout_s=120) as c:
            yield c
    finally:
        d.close()


def test_switch_to_an_uncalibrated_objective_during_a_recorded_live_is_refused(client_no_40x):
    c = client_no_40x
    job = c.request("start_live", channels=["BF"], record=True)
    wait_until(lambda: c.request("job", job=job["id"])["frames"] >= 2, what="live frames")
    with pytest.raises(DaemonError, match=r"cannot switch to objective '40x' while live job .* records: no pixel "
                                          r"size is calibrated for it.*the objective was not changed"):
        c.request("set_objective", objective="40x")
    assert c.request("describe")["objective"] == "10x"
    assert c.request("set_objective", objective="20x")["pixel_size_um"] > 0  # a calibrated one still switches
    n = c.request("job", job=job["id"])["frames"]
    wait_until(lambda: c.request("job", job=job["id"])["frames"] > n + 2, what="live going on after the switches")
    status = c.request("status")
    assert status["state"] == "live" and status["last_error"] is None
    stopped = c.request("stop")["stopped"]
    assert stopped["status"] == "stopped" and stopped["error"] is None
    rec = open_recording(stopped["path"])
    assert len(rec.frames) == stopped["frames"]
    assert {s.attrs["scopecast"]["pixel_size_um"] for s in rec.series} == {0.65, 0.325}
    assert c.request("set_objective", objective="40x")["pixel_size_um"] == 0  # idle: allowed, as before


def test_capture_pairs_with_no_positions_is_refused(client):
    """``positions: []`` (a client's empty selection) quietly captured at the current position."""
    with pytest.raises(DaemonError, match="positions"):
        client.request("capture_pairs", positions=[])
    assert client.request("jobs") == []



class _SlowRelease(threading.BoundedSemaphore):
    """A lane's slots whose release takes a while: widens the moment between a reply and its slot's release."""

    def release(self, n: int = 1) -> None:
        time.sleep(0.5)
        super().release(n)


def test_a_long_commands_slot_is_free_when_its_reply_arrives():
    """A client that read a long command's reply may send the next at once: the slot is released before the reply
    leaves (it was released after it, and under load the next request got a BusyError: 'try again when one has
    been answered' for one that had been)."""
    server = ControlServer({"wait": lambda wait_s=0.0: {"waited": True}}, "tcp://127.0.0.1:*", long_limit=1)
    server._lanes["wait"].slots = _SlowRelease(1)
    server.start()
    try:
        with ControlClient(server.address, timeout_s=60) as c:
            for _ in range(3):
                assert c.request("wait") == {"waited": True}
    finally:
        server.stop()
