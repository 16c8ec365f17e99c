"""A ``save_window`` whose frames before the event the ring could not hold says so, and what to change: the ring
keeps ``ring_buffer_s`` but at most 512 MiB, about a second of a free-running live at 512², and the warning only
compared seconds, so a window of a few seconds came out shorter than asked, without a word. A pair or window short
because of the byte cap no longer advises raising ring_buffer_s, which would not help."""

from __future__ import annotations

from pathlib import Path

from helpers import StandInEngine, log_lines, wait_subscribed, wait_until
from tests.test_spot_check_pins import small_rings  # noqa: F401 - a fixture: rings of twelve 256² frames


def test_a_window_the_byte_cap_cut_short_says_so(daemon, client, small_rings):  # noqa: F811
    config = {"triggers": [{
        "name": "w", "model": "m", "measurement": {"kind": "mean", "channel": "c"}, "cooldown_s": 600,
        "condition": {"above": 0.5, "rearm_below": -1},
        "actions": [{"kind": "save_window", "before_s": 1.0, "after_s": 0}]}], "ring_buffer_s": 10}
    with StandInEngine(daemon.stream_address) as engine:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=config, sources={"m": engine.address})["log"])
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])  # free-running
            wait_until(lambda: len(engine.frames) > 24, 60, "the ring full twice over")  # it holds 12 frames
            engine.value = 0.9  # from now on results fire
            wait_until(lambda: any("outcome_of" in x for x in log_lines(log)), 120, "the window's outcome")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    window = next(x for x in log_lines(log) if "outcome_of" in x)["actions"][0]
    assert window["ok"] and window["frames"] >= 1, window
    warning = window.get("warning", "")
    assert "kept only the last" in warning and "of the 1 s before it" in warning, window
    assert "MiB held only the last" in warning and "interval_ms or pace_from" in warning, warning
    assert "raise ring_buffer_s" not in warning, warning
