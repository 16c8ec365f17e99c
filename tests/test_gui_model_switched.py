"""After ``load_model``, an engine's pane never passes the previous model's last result off as the new model's: it
names whose result it shows and dims it until the new model's first result."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def test_the_previous_models_result_is_not_shown_as_the_new_ones(app, daemon, client, tmp_path):
    """Live virtual staining, then the engine switched to a super-resolution model whose input (Membrane) the cycle
    lacks: the pane kept the stain at full opacity, 'trusted', with '(showing its last result)' as if it were the new
    model's; once live stopped it said nothing at all."""
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    sr = write_package(tmp_path / "sr", ["Membrane"], ["membrane-sr"], name="sr", task="super-resolution",
                       scale=2, width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        pane = w.panes[e.results_address]
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        client.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: pane.values is not None and pane.message_text == "", 120)
        with ControlClient(e.control.address, timeout_s=120) as engine:
            engine.request("load_model", path=str(sr))
        assert spin(app, lambda: "(showing the last result of vs, which the engine no longer serves)"
                    in pane.message_text, 60), pane.message_text
        assert pane.message_text.startswith("no frames of channel Membrane in the live cycle")
        assert pane.image.opacity() < 1
        client.request("stop")
        assert spin(app, lambda: pane.message_text == "the engine now serves sr, no result of it yet:\n"
                    "showing the last result of vs, not the current field", 60), pane.message_text
        assert pane.image.opacity() < 1
        client.request("start_live", channels=["Membrane"], interval_ms=50)  # sr's own results replace it
        assert spin(app, lambda: (w.results_shown.get(e.results_address) or {}).get("model") == "sr"
                    and pane.message_text == "", 120), pane.message_text
        client.request("stop")
