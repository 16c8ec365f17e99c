"""A control client cannot grow the daemon without bound by sending requests faster than they run: ZeroMQ reads
few requests of a client ahead of the socket thread, and the worker pool takes a bounded queue (one more request
is refused at once with ``BusyError``). An error message that quotes a huge request (4 MiB may be sent) is cut,
in the reply and in the daemon's log: each refused request wrote all of it to the log (200 requests: 800 MB)."""

from __future__ import annotations

import collections
import json
import logging

import zmq
from helpers import wait_until

from scopecast.daemon.control import MAX_ERROR_CHARS, MAX_QUEUED_BYTES, MAX_QUEUED_REQUESTS

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


def test_an_error_quoting_a_huge_request_is_cut_in_the_reply_and_the_log(client, caplog):
    caplog.set_level(logging.INFO, "scopecast.daemon.control")
    s = _dealer(client.address)
    try:
        s.send_multipart([b"", json.dumps({"cmd": "set_channel", "args": {"channel": "x" * BIG}}).encode()])
        assert s.poll(60_000)
        reply = json.loads(s.recv_multipart()[1])
    finally:
        s.close(0)
    message = reply["error"]["message"]
    assert reply["error"]["type"] == "ValueError" and message.startswith("unknown channel 'xxx"), message[:80]
    assert len(message) < MAX_ERROR_CHARS + 100 and "more characters cut" in message, len(message)
    logged = [r.getMessage() for r in caplog.records if "control command failed" in r.getMessage()]
    assert logged and all(len(m) < MAX_ERROR_CHARS + 200 for m in logged), [len(m) for m in logged]
