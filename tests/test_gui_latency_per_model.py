"""The viewer's latency table names the model an engine serves now: its figures must be that model's, not those of
the model the engine served before ``load_model`` (choosing between the live and the accurate tier is read there).
That holds for the engine's rows and for the viewer's own (the display row, the exposure → display plot)."""

import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from scopecast.daemon.control import ControlClient  # noqa: E402
from scopecast.models.synthetic import write_package  # noqa: E402
from tests.helpers import spin  # noqa: E402
from tests.test_gui import CYCLE, app, window_on_engine  # noqa: E402, F401 - app: the offscreen app fixture


def test_latency_table_after_load_model_shows_only_the_new_models_figures(app, daemon, client, tmp_path):
    """Live virtual staining, then the engine's model switched to one whose input (Membrane) the cycle lacks: the
    table, titled with the new model, kept showing the old model's infer and end-to-end figures as its own, and
    its display row and plot (the legend renamed 'sr') vs's."""
    vs = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                       width=4, layers=2, tile=256)
    sr = write_package(tmp_path / "sr", ["Membrane"], ["membrane-sr"], name="sr", task="super-resolution",
                       scale=2, width=4, layers=2, tile=256)
    with window_on_engine(app, daemon, vs) as (e, w):
        table, curve = w.latency.table(e.results_address), w.latency_curves[e.results_address]
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 2
                    and e.subscriptions.of("result", "shm") >= 1, 60)
        client.request("start_live", channels=CYCLE, interval_ms=50)
        assert spin(app, lambda: table.model == "vs" and table.cell("infer") != "–" and table.cell("display") != "–",
                    120)
        with ControlClient(e.control.address, timeout_s=120) as engine:
            engine.request("load_model", path=str(sr))
        assert spin(app, lambda: table.model == "sr", 60)
        st = e.status()
        assert st["model"]["name"] == "sr" and "infer" not in st["latency_ms"], st["latency_ms"]  # none of its own
        # the table the user reads under "latency · sr": no figure of vs's, and no point of vs's in the plot
        rows = ("infer", "end_to_end", "display")
        assert spin(app, lambda: all(table.cell(s, c) == "–" for s in rows for c in (0, 1)), 30), \
            [table.cell(s) for s in rows]
        assert curve.yData is None or len(curve.yData) == 0
        client.request("stop")
        client.request("start_live", channels=["Membrane"], interval_ms=50)  # sr's own figures come
        assert spin(app, lambda: table.cell("display") != "–" and curve.yData is not None and len(curve.yData), 120)
        client.request("stop")
