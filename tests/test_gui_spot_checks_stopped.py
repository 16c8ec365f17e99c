"""Spot checks stopped on request (``stop_spot_checks``, e.g. ``scopecast ctl stop_spot_checks``) say so under the
viewer's fidelity figure: no event told the viewer, so its label kept the last figures (or an ALARM in red) as if
the checks still ran, and only spot checks stopped by the light budget were said to be stopped."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def test_spot_checks_stopped_on_request_say_so_in_the_viewer(app, daemon, client, tmp_path):
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and daemon.publisher.subscriptions.of("event") >= 1
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        # every check is skipped (20 ms of light where 10 may go): the label shows the checks' state at once
        client.request("start_spot_checks", model="vs", results=e.results_address, period_s=0.2, record=False,
                       channels={"nuclei": "Nuclei"}, exposure_ms=20, dose_per_position=10)
        try:
            assert spin(app, lambda: e.subscriptions.of("result", "shm") >= 2, 60)  # the spot checker joined
            client.request("start_live", channels=CYCLE, interval_ms=50)
            assert spin(app, lambda: "last check skipped" in w.fidelity_label.text(), 120), w.fidelity_label.text()
            client.request("stop_spot_checks")
            assert spin(app, lambda: "vs: spot checks stopped" in w.fidelity_label.text(), 60), \
                w.fidelity_label.text()
        finally:
            client.request("stop")
            client.request("stop_spot_checks")
