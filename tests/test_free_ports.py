"""Ports picked for processes that start later (``scopecast up``, the fault suite, the CLI tests) lie outside the
kernel's ephemeral range: there, every outgoing connection and every ``bind(0)`` of any process may take a port
between its probe and the listen seconds later ("Address already in use"; a daemon of the trigger import test
exited 2 so in a suite run in two processes)."""

import socket

from scopecast.daemon.supervisor import _ephemeral_range, free_port


def test_free_ports_are_outside_the_ephemeral_range_free_and_never_repeated():
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert not [p for p in ports if low <= p <= high], (low, high)
    assert len(set(ports)) == len(ports)
    for p in ports[:20]:  # still free: a listener can take it
        with socket.create_server(("127.0.0.1", p)):
            pass


def test_a_port_in_use_is_not_handed_out():
    taken = []
    try:
        for _ in range(50):
            s = socket.create_server(("127.0.0.1", free_port()))
            taken.append(s)
        ports = {s.getsockname()[1] for s in taken}
        assert not ports & {free_port() for _ in range(200)}
    finally:
        for s in taken:
            s.close()
