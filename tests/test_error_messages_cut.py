"""An error message that quotes a huge request (4 MiB may be sent) is cut, in the reply and in the daemon's log:
each refused request wrote all of it to the log (200 requests: 800 MB)."""

from __future__ import annotations

import json
import logging

import zmq

from scopecast.daemon.control import MAX_ERROR_CHARS

BIG = 1 << 20  # a channel name of 1 MiB: the request is valid JSON well within the 4 MiB request limit


def _dealer(address: str) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    return s


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
