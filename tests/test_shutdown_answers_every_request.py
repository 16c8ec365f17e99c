"""A daemon that shuts down answers every request it took: a ``wait`` on the job the shutdown stops gets the job
(stopped), a request still running when the socket closes gets a ``ShuttingDown`` error, and one sent once the
shutdown began is refused naming it. (The socket thread stopped first and the replies were dropped: a client's
``wait`` hung for its whole timeout, then read 'connected, but the server did not answer'.) Real daemon on the
simulator, real sockets."""

from __future__ import annotations

import json
import threading


from helpers import wait_until
from tests.test_control_defects import _dealer
from scopecast.daemon.control import ControlClient, ControlServer

#: Clients waiting on the job at once (whether one reply was lost was a race: about 2 in 3 here)
WAITERS = 4


def test_waits_on_the_job_a_shutdown_stops_get_their_replies(daemon, client):
    job = client.request("start_live", channels=["BF", "DF"], exposure_ms=1.0, record=True)
    wait_until(lambda: client.request("job", job=job["id"])["frames"] >= 2, what="live frames")
    got: list[object] = []

    def waiter() -> None:  # another client, as `scopecast ctl wait` in another terminal
        with ControlClient(daemon.control_address, timeout_s=30) as c:
            try:
                got.append(c.wait(job["id"], timeout_s=20))
            except Exception as e:  # noqa: BLE001 - checked below
                got.append(e)

    before = daemon.server.counters()["requests"]
    for _ in range(WAITERS):
        threading.Thread(target=waiter, daemon=True).start()
    wait_until(lambda: daemon.server.counters()["requests"] >= before + WAITERS, what="the wait requests to arrive")
    daemon.close()  # what `scopecast ctl shutdown` and SIGTERM make the daemon do
    wait_until(lambda: len(got) == WAITERS, 60, "every waiting client's reply")
    assert all(isinstance(r, dict) and r["status"] == "stopped" for r in got), got


def test_a_request_still_running_when_the_server_stops_is_answered():
    started, release = threading.Event(), threading.Event()

    def describe() -> dict:
        """Block until released (as a request waiting for the microscope)."""
        started.set()
        release.wait(120)
        return {"late": True}

    server = ControlServer({"describe": describe}, "tcp://127.0.0.1:*")
    server.start()
    sock = _dealer(server.address, {"cmd": "describe", "id": 1})
    try:
        assert started.wait(60), "the request did not start"
        server.stop()
        assert sock.poll(30_000), "no reply to a request the server took before it stopped"
        reply = json.loads(sock.recv_multipart()[-1])
        assert reply["id"] == 1 and reply["ok"] is False, reply
        assert reply["error"]["type"] == "ShuttingDown", reply
        assert "did not end before the server stopped" in reply["error"]["message"], reply
    finally:
        release.set()
        sock.close(linger=0)
