"""Spot checks skipped (the light budget at this position spent) say so under the viewer's fidelity figure: the figure
just got no point, and the label read 'spot checks: none yet (start_spot_checks on the daemon)'. Spot checks stopped
on request (``stop_spot_checks``) say so too: no event told the viewer, so its label kept the last figures (or an
ALARM in red) as if the checks still ran; only checks stopped by the light budget were said to be stopped."""

import contextlib

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


@contextlib.contextmanager
def skipping_checks(app, daemon, client, tmp_path):
    """A viewer on an engine whose spot checks are all skipped (one costs 20 ms at full power and this position
    may take 10), live running; yields the viewer once its label says a check was skipped."""
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and daemon.publisher.subscriptions.of("event") >= 1
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        client.request("start_spot_checks", model="vs", results=e.results_address, period_s=0.2, record=False,
                       channels={"nuclei": "Nuclei"}, exposure_ms=20, dose_per_position=10)
        try:
            assert spin(app, lambda: e.subscriptions.of("result", "shm") >= 2, 60)  # the spot checker joined
            client.request("start_live", channels=CYCLE, interval_ms=50)
            assert spin(app, lambda: client.request("spot_checks")["models"]["vs"]["skipped"], 120)
            assert spin(app, lambda: "last check skipped" in w.fidelity_label.text(), 60), w.fidelity_label.text()
            yield w
        finally:
            client.request("stop")
            client.request("stop_spot_checks")


def test_a_check_skipped_for_the_light_budget_says_why(app, daemon, client, tmp_path):
    with skipping_checks(app, daemon, client, tmp_path) as w:
        text = w.fidelity_label.text()
        assert "vs: no check compared yet" in text
        assert "light budget at this position: 0 + 20 &gt; 10" in text
        assert not w.fidelity_curves and not w.fidelity_alarm


def test_spot_checks_stopped_on_request_say_so_in_the_viewer(app, daemon, client, tmp_path):
    with skipping_checks(app, daemon, client, tmp_path) as w:
        client.request("stop_spot_checks")
        assert spin(app, lambda: "vs: spot checks stopped" in w.fidelity_label.text(), 60), w.fidelity_label.text()
