"""A control client cannot grow the daemon without bound by sending requests faster than they run: ZeroMQ reads
few requests of a client ahead of the socket thread, and the worker pool takes a bounded queue (one more request
is refused at once with ``BusyError``)."""

from __future__ import annotations

import collections
import json

import zmq
from helpers import wait_until

from scopecast.daemon.control import MAX_QUEUED_BYTES, MAX_QUEUED_REQUESTS

BIG = 1 << 20  # a channel name of 1 MiB: the request is valid JSON well within the 4 MiB request limit


def _dealer(address: str) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    return s


def _take(s: zmq.Socket, kinds: collections.Counter) -> collections.Counter:
    while s.poll(0):
        reply = json.loads(s.recv_multipart()[1])
        kinds["ok" if reply["ok"] else reply["error"]["type"]] += 1
    return kinds


def test_requests_beyond_the_queue_are_refused_while_every_worker_waits(daemon, client):
    s = _dealer(daemon.control_address)
    kinds: collections.Counter = collections.Counter()
    small = json.dumps({"cmd": "set_channel", "args": {"channel": "BF"}}).encode()
    big = json.dumps({"cmd": "set_channel", "args": {"channel": "x" * BIG}}).encode()
    try:
        with daemon.backend.lock:  # as during a long exposure: every set_channel waits for the microscope
            for _ in range(20):  # more than the worker threads: they all wait, the rest queue
                s.send_multipart([b"", small])
            for _ in range(200):
                s.send_multipart([b"", big])
            wait_until(lambda: _take(s, kinds)["BusyError"], what="a request refused while the queue is full")
            control = client.request("status")["control"]
            assert control["queued_requests"] <= MAX_QUEUED_REQUESTS, control
            assert control["queued_bytes"] <= MAX_QUEUED_BYTES + len(big), control
        wait_until(lambda: sum(_take(s, kinds).values()) == 220, what="every request answered")
        assert kinds["ok"] == 20 and kinds["ValueError"] + kinds["BusyError"] == 200, kinds
        assert client.request("status")["control"]["queued_requests"] == 0
    finally:
        s.close(0)
