"""The viewer's spot-check fidelity label says what the running daemon says (it polls ``spot_checks``): a daemon that
died (no event said so) and came back without its spot checks left the label showing the old daemon's ALARM as
current, for ever, since only stream events reached it."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.models.synthetic import write_package  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def _daemon(sim_cfg, tmp_path, control: str = "tcp://127.0.0.1:*", stream: str = "tcp://127.0.0.1:*"):
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon

    return Daemon(lambda: load_mmcore_backend(sim_cfg), tmp_path / "data", control, stream,
                  trigger_dirs=[tmp_path / "data", ROOT / "docs"]).start()


def test_fidelity_label_follows_a_restarted_daemon(app, sim_cfg, tmp_path):
    from scopecast.daemon.control import ControlClient

    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    first = _daemon(sim_cfg, tmp_path)
    again, closed = None, False
    try:
        with window_on_engine(app, first, vs) as (e, w), ControlClient(first.control_address, timeout_s=120) as c:
            assert spin(app, lambda: first.publisher.subscriptions.of("event") >= 1, 60)
            c.request("start_spot_checks", model="vs", results=e.results_address, period_s=0.2, min_psnr_db=99.0,
                      record=False, channels={"nuclei": "Nuclei"})
            assert spin(app, lambda: e.subscriptions.of("result", "shm") >= 2, 60)  # the spot checker joined
            c.request("start_live", channels=CYCLE, interval_ms=50)
            assert spin(app, lambda: w.fidelity_alarm and "vs: ALARM" in w.fidelity_label.text(), 120)
            c.request("stop")
            first.publisher.publish_event = lambda event: None  # a crash: no event tells the viewer
            first.close()
            closed = True
            assert spin(app, lambda: "no reply from the daemon" in w.fidelity_label.text(), 60), \
                w.fidelity_label.text()
            again = _daemon(sim_cfg, tmp_path, first.control_address, first.stream_address)  # no spot checks
            assert spin(app, lambda: "vs: not checked by the daemon now" in w.fidelity_label.text(), 60), \
                w.fidelity_label.text()
            assert not w.fidelity_alarm and "ALARM" not in w.fidelity_label.text()
    finally:
        for d in ([] if closed else [first]) + ([] if again is None else [again]):
            d.close()
