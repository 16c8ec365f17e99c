"""A ``save_window``'s frames after its event are bounded in bytes, as the ring's before it: they were held in memory
without any bound until the window ended (``after_s`` up to 600 s), so a minute's window of a free-running 512² live
(~0.2-0.5 GB of frames a second) took 12-30 GB of RAM. The window now stops at the ring's byte cap and says so."""

from __future__ import annotations

from pathlib import Path

from helpers import StandInEngine, log_lines, wait_subscribed, wait_until
from tests.test_spot_check_pins import SMALL_RING_FRAMES, small_rings  # noqa: F401 - rings of twelve 256² frames


def test_the_frames_after_the_event_stop_at_the_byte_cap_and_say_so(daemon, client, small_rings):  # noqa: F811
    config = {"triggers": [{
        "name": "w", "model": "m", "measurement": {"kind": "mean", "channel": "c"}, "cooldown_s": 600,
        "condition": {"above": 0.5, "rearm_below": -1},
        "actions": [{"kind": "save_window", "before_s": 0, "after_s": 10}]}], "ring_buffer_s": 10}
    with StandInEngine(daemon.stream_address, value=1.0) as engine:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=config, sources={"m": engine.address})["log"])
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}], interval_ms=10)
            outcome = wait_until(lambda: next((x for x in log_lines(log) if "outcome_of" in x), None), 120,
                                 "the window's outcome")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    window = outcome["actions"][0]
    assert window["ok"] and "held in memory" in window.get("warning", ""), window
    # the frames after the decision at most the cap; those between the event and the decision come from the ring
    assert window["frames"] <= 2 * SMALL_RING_FRAMES, window
