""""stains over label-free": the stains of a result are drawn over the bright-field frame of the result's own
bundle, never over a newer frame (after a stage move, another field)."""

import numpy as np
import pytest

pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")

from tests.helpers import StandInEngine, spin, wait_subscribed  # noqa: E402
from tests.test_gui import CYCLE, app  # noqa: E402, F401 - the offscreen app fixture of tests/test_gui.py


def test_stains_are_drawn_over_their_own_bundles_bright_field(app, daemon, client):
    """A model that takes 0.3 s while live goes on: the viewer drew each result over the newest BF frame, taken
    one or more cycles after the result's bundle (while the stage moves, another field under the stains)."""
    from scopecast.daemon.snapshot import composite
    from scopecast.daemon.stream import StreamSubscriber
    from scopecast.gui.window import EngineEndpoint, ScopeWindow

    frames = StreamSubscriber(daemon.stream_address, ("frame",))
    bf: dict[int, np.ndarray] = {}  # seq -> the BF frames as the daemon streamed them

    def take_frames() -> None:
        while (m := frames.recv(0)) is not None:
            if m[1]["channel"] == "BF":
                bf[m[1]["seq"]] = np.array(m[2], np.float32)

    with StandInEngine(daemon.stream_address, model_s=0.3, value=1.0, channel="nuclei", task="virtual-staining",
                       full_frame=True) as engine:
        w = ScopeWindow(daemon.control_address, daemon.stream_address, [EngineEndpoint(engine.address)])
        shown: list[tuple[list[int], np.ndarray, np.ndarray]] = []  # (source seqs, stains, image) of each drawn
        show_result = w._show_result

        def spy(address, res):  # what the user sees for each result: read after the viewer drew it
            show_result(address, res)
            pane = w.panes[address]
            shown.append((list(res.header["source_seqs"]), np.array(pane.values), np.array(pane.image.image)))

        w._show_result = spy
        try:
            w.show()
            engine.wait_subscriber()
            wait_subscribed(daemon.publisher, "frame", 3)  # the engine, the window and this test
            w.overlay_box.setChecked(True)
            client.request("start_live", channels=CYCLE, interval_ms=20)
            assert spin(app, lambda: take_frames() or len(shown) >= 4, 120)
            client.request("stop")
            assert spin(app, lambda: take_frames() or client.request("status")["state"] == "idle", 60)
            take_frames()
        finally:
            w.close()
            app.processEvents()
            frames.close()
    assert len(bf) > len(shown)
    for seqs, stains, image in shown:
        own = next(s for s in seqs if s in bf)  # the bright-field frame of this result's bundle
        np.testing.assert_allclose(image, composite(stains, ["nuclei"], bf[own]), atol=1e-5,
                                   err_msg=f"result of frames {seqs} not drawn over its own BF frame {own}")
