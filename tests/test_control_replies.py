"""The control socket's replies: a client that sends requests and never reads the replies (a ``snap``'s carries
a whole frame) has a bounded amount of them kept for it (at ZeroMQ's default send high-water mark the daemon kept
up to 1000 frames per such client: three took a daemon from 180 to 850 MiB), while a client that reads gets every
reply, even from a burst of requests sent before it reads any. Real daemon on the simulator, real sockets."""

from __future__ import annotations

import json
import logging
import time

import pytest
import zmq

from conftest import small_cfg
from helpers import wait_until
from scopecast.daemon.control import MAX_QUEUED_REQUESTS, ControlClient

#: Snaps from the client that does not read: at least SNAPS, then more until replies to it are dropped (how many
#: that takes depends on what the kernel's socket buffers take before the daemon holds any: a few MiB on one machine,
#: tens of MiB on a host tuned for fast networks), at most MOST_SNAPS (1 GB of replies: more than any buffers hold).
SNAPS, MOST_SNAPS = 200, 2000
BATCH = 16  # the snap lane's limit: a 17th snap at once is refused (BusyError)
SIZE = 512  # a snap's reply carries 512 KiB
HELD_MOST = 32 * 1024 * 1024  # what the daemon holds for one client beyond ZeroMQ's queue (docs/protocol.md)


@pytest.fixture
def daemon512(tmp_path):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    cfg = small_cfg(tmp_path, SIZE)
    d = Daemon(lambda: load_mmcore_backend(cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    yield d
    d.close()


def _dealer(address: str, reads: bool) -> zmq.Socket:
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    if not reads:  # as a client that does not read: its side holds next to nothing
        d.setsockopt(zmq.RCVHWM, 1)
        d.setsockopt(zmq.RCVBUF, 4096)
    d.connect(address)
    return d


def _request(cmd: str, req_id: int | None = None, **args) -> list[bytes]:
    return [b"", json.dumps({"cmd": cmd, "args": args, "id": req_id}).encode()]


def test_replies_a_client_never_reads_are_bounded_and_others_are_served(daemon512, caplog):
    """What the daemon holds for a client that does not read is bounded (its own counters, read while the client
    is not reading: what the kernel's socket buffers take on top differs between machines), every snap reply is
    either delivered or counted as dropped, and a client that reads is served meanwhile."""
    caplog.set_level(logging.WARNING, "scopecast.daemon.control")  # not a line per BusyError: a failure shows
    deaf = _dealer(daemon512.control_address, reads=False)
    try:
        with ControlClient(daemon512.control_address, timeout_s=120) as client:

            def control() -> dict:
                return client.request("status")["control"]

            def frames() -> int:
                return client.request("status")["frames_acquired"]

            first = frames()
            most_held = 0
            # a batch at a time (the lane refuses more at once: BusyError replies)
            while (n := frames()) < first + SNAPS or (not control()["replies_dropped"] and n < first + MOST_SNAPS):
                for _ in range(BATCH):
                    deaf.send_multipart(_request("snap", channel="BF", exposure_ms=1.0))
                wait_until(lambda n=n: frames() > n, 120, "the batch's snaps")
                most_held = max(most_held, control()["held_bytes"])
                assert most_held <= HELD_MOST, f"the daemon held {most_held} bytes for a client that did not read"
            t0 = time.monotonic()  # a client that reads is served (its snap after all of the deaf client's)
            header, image = client.snap(channel="BF")
            assert image.shape == (SIZE, SIZE), header
            served_s = time.monotonic() - t0
            snaps = frames() - first - 1  # the deaf client's, all answered before the reading client's
            dropped = control()["replies_dropped"]
            assert dropped > 0, f"nothing dropped: the daemon kept all {snaps} replies for a client that did not read"
            assert most_held > HELD_MOST // 2, f"the daemon never held much ({most_held} bytes): nothing was tested"
            got = 0
            while deaf.poll(5000):  # now read what the daemon kept for the deaf client: until nothing more comes
                got += json.loads(deaf.recv_multipart()[1])["ok"]  # a snap's reply (not a BusyError)
            assert got < snaps, f"the daemon kept all {got} snap replies (frames) for a client that did not read"
            counters = control()
            # every snap reply was delivered or counted (the count also has the BusyError replies dropped)
            assert got + counters["replies_dropped"] >= snaps, (got, snaps, counters)
            # once the client has read them, nothing is held for it any more
            wait_until(lambda: control()["held_bytes"] == 0, 60, "the held replies sent")
            assert served_s < 60, f"a reading client waited {served_s:.1f} s for its snap"
    finally:
        deaf.close(linger=0)


def test_a_client_that_reads_gets_every_reply_of_a_burst(daemon512):
    """Sent before any is read: more replies than ZeroMQ queues for a client, so the daemon holds the rest. The
    burst goes in waves of at most half the worker queue's bound (docs/protocol.md: beyond it a request is refused
    with BusyError), each sent once the daemon has answered the wave before (its own counter, whatever the machine's
    speed), so every request is accepted and none is read before the last is sent."""
    d = _dealer(daemon512.control_address, reads=True)
    try:
        wave = ["commands", "status", "describe"] * (MAX_QUEUED_REQUESTS // 2)  # one queued request in three
        cmds = wave * 4 + ["snap"] * BATCH
        with ControlClient(daemon512.control_address, timeout_s=60) as watcher:
            for i, cmd in enumerate(cmds):
                if i % len(wave) == 0:
                    wait_until(lambda: watcher.request("status")["control"]["queued_requests"] == 0, 120,
                               "the daemon answered the wave before")
                args = {"channel": "BF", "exposure_ms": 1.0} if cmd == "snap" else {}
                d.send_multipart(_request(cmd, i, **args))
        replies: dict[int, dict] = {}
        while len(replies) < len(cmds) and d.poll(60_000):
            reply = json.loads(d.recv_multipart()[1])
            assert reply["id"] not in replies, f"two replies to request {reply['id']}"
            replies[reply["id"]] = reply
        missing = sorted(set(range(len(cmds))) - set(replies))
        assert not missing, f"no reply to {len(missing)} of {len(cmds)} requests, e.g. {missing[:5]}"
        failed = {i: r["error"] for i, r in replies.items() if not r["ok"]}
        assert not failed, failed
        with ControlClient(daemon512.control_address, timeout_s=60) as client:
            assert client.request("status")["control"]["replies_dropped"] == 0
    finally:
        d.close(linger=0)
