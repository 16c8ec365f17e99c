"""Every engine command has a summary in ``scopecast ctl --help`` (``status`` showed "-", ``set_policy``
only its arguments)."""

from __future__ import annotations

import zmq

from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.models import packages_root


def test_ctl_help_summarises_every_engine_command(cli):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    engine = InferenceEngine(packages_root() / "virtual-staining", pub.getsockopt_string(zmq.LAST_ENDPOINT),
                             "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", warmup_shape=None).start()
    try:
        rc, out, err = cli("ctl", "--control", engine.control.address, "--help")
        assert rc == 0, err
        listing = out.split("commands of the server at", 1)[1]
        for line in listing.splitlines()[1:]:
            assert line.split() != ["status", "-"], listing
        flat = " ".join(listing.split())
        assert "status The engine stats" in flat, listing
        assert "set_policy Set how bundles wait for a worker: `live`" in flat, listing
        assert "set_policy Arguments:" not in flat
    finally:
        engine.close()
        pub.close(linger=0)
