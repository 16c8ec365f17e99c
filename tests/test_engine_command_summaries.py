"""Every engine command has a summary in ``scopecast ctl --help`` (``status`` showed "-", ``set_policy``
only its arguments)."""

from __future__ import annotations

from helpers import engine_beside_a_bare_stream

from scopecast.models import packages_root


def test_ctl_help_summarises_every_engine_command(cli):
    with engine_beside_a_bare_stream(packages_root() / "virtual-staining") as engine:
        rc, out, err = cli("ctl", "--control", engine.control.address, "--help")
    assert rc == 0, err
    listing = out.split("commands of the server at", 1)[1]
    for line in listing.splitlines()[1:]:
        assert line.split() != ["status", "-"], listing
    flat = " ".join(listing.split())
    assert "status The engine stats" in flat, listing
    assert "set_policy Set how bundles wait for a worker: `live`" in flat, listing
    assert "set_policy Arguments:" not in flat
