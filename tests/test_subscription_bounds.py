"""A client cannot grow the daemon with subscriptions: ZeroMQ keeps every subscription on the frame stream in a
trie (~47 bytes per byte of topic) for as long as its subscriber is connected, so one sending many or long
subscriptions is disconnected, logged with the reason and counted (``status.stream.subscribers_cut``), and
every other subscriber keeps its frames."""

from __future__ import annotations

import logging

import zmq
from helpers import wait_subscribed, wait_until

from scopecast.daemon.stream import MAX_SUBSCRIPTIONS, MAX_TOPIC_BYTES, StreamSubscriber


def _abuser(address: str, topics: list[bytes]) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)  # every subscription is sent, however fast
    s.connect(address)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    return s


def _cut(client, reason: str) -> int:
    return client.request("status")["stream"].get("subscribers_cut", {}).get(reason, 0)


def _frames(sub: StreamSubscriber, n: int) -> int:
    got = 0
    while got < n:
        msg = sub.recv(60)
        assert msg is not None, f"the legitimate subscriber got {got} of {n} frames"
        got += msg[0] == "frame"
    return got


def test_many_or_long_subscriptions_cut_their_subscriber_only(daemon, client, caplog):
    caplog.set_level(logging.WARNING, "scopecast.daemon.stream")
    pub = daemon.publisher
    with StreamSubscriber(daemon.stream_address, topics=("frame",)) as viewer:
        wait_subscribed(pub, "frame")
        legit = pub.subscriptions.count
        for reason, topics in (("too_many", [b"%06d" % i + b"m" * 194 for i in range(20 * MAX_SUBSCRIPTIONS)]),
                               ("too_long", [b"L" * (8 * MAX_TOPIC_BYTES)])):
            abuser = _abuser(daemon.stream_address, topics)
            try:
                wait_until(lambda: _cut(client, reason) >= 1, what=f"the subscriber to be cut ({reason})")
            finally:
                abuser.close(0)
            # ZeroMQ dropped all of its subscriptions: the daemon holds only the viewer's
            wait_until(lambda: pub.subscriptions.count == legit, what="the cut subscriber's subscriptions to go")
            assert all(len(t) <= MAX_TOPIC_BYTES for t in pub.subscriptions.by_topic), "a long topic is kept"
            client.request("start_live", channels=["BF"], max_cycles=3)
            assert _frames(viewer, 3) == 3  # the viewer is served as before
            wait_until(lambda: client.request("status")["state"] == "idle", what="live to end")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"more than the {MAX_SUBSCRIPTIONS} subscriptions one subscriber may hold" in said, said
    assert f"a subscription of {8 * MAX_TOPIC_BYTES} bytes, longer than the {MAX_TOPIC_BYTES} allowed" in said, said
