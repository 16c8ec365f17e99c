"""The viewer's own latency figures (the table's display row, the exposure → display plot) are of the model the
engine serves now: after ``load_model`` they hold none of the previous model's, like the engine's own rows."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def test_display_latency_after_load_model_is_only_the_new_models(app, daemon, client, tmp_path):
    """Live virtual staining, then the engine switched to a model whose input (Membrane) the cycle lacks: the table
    titled 'latency · sr' showed vs's display p50/p99, and the plot, its legend renamed 'sr', vs's points."""
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    sr = write_package(tmp_path / "sr", ["Membrane"], ["membrane-sr"], name="sr", task="super-resolution",
                       scale=2, width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        table, curve = w.latency.table(e.results_address), w.latency_curves[e.results_address]
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        client.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: table.model == "vs" and table.cell("display") != "–", 120)
        with ControlClient(e.control.address, timeout_s=120) as engine:
            engine.request("load_model", path=str(sr))
        assert spin(app, lambda: table.model == "sr" and table.cell("infer") == "–", 60)
        # no result of sr yet: no display figure and no point of sr's either
        assert spin(app, lambda: table.cell("display") == "–" and table.cell("display", 1) == "–", 30), \
            table.cell("display")
        assert curve.yData is None or len(curve.yData) == 0
        client.request("stop")
        client.request("start_live", channels=["Membrane"], interval_ms=50)  # sr's own figures come
        assert spin(app, lambda: table.cell("display") != "–" and curve.yData is not None and len(curve.yData), 120)
        client.request("stop")
