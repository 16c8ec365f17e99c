"""A trigger's ``roi`` that extends past the model's output is refused at the first result (the trigger disabled,
the reason in the log), as one wholly outside it is: numpy clipped it, so a configuration written for another
output size (``[256, 256, 768, 768]``, the centre of a 1024² output, on a 512² one) measured the bottom-right
quadrant instead, fired on it, and said nothing."""

from __future__ import annotations

from helpers import live_under_triggers, log_lines, wait_until


def test_an_roi_past_the_output_disables_its_trigger_and_says_why(daemon, client):
    config = {"triggers": [{
        "name": "centre", "model": "m", "cooldown_s": 1000, "condition": {"above": 0.5},
        "measurement": {"kind": "mean", "channel": "c", "roi": [4, 4, 12, 12]},  # the stand-in's output: 8 x 8
        "actions": [{"kind": "notify"}]}]}
    with live_under_triggers(daemon, client, config, value=1.0) as log:
        line = wait_until(lambda: next((x for x in log_lines(log) if x.get("trigger") == "centre"), None), 60,
                          "the trigger's first decision")
    assert line["event"] == "disabled", line
    assert "extends past the output, 8 x 8" in line["reason"], line
