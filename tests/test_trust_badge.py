"""The viewer's trust badge says whether the engine's uncertainty check has judged the scene shown (issue 11).

The formatting is pure (``gui/trust_badge.py``), tested on every state of ``trust.uncertainty.check``
(docs/protocol.md) and on malformed input; one test drives the real window (Qt offscreen) against a real
daemon and two real engines, one checking every bundle, one at the default budget (still pending).
"""

from __future__ import annotations

import math
import os

import pytest

from scopecast.gui.trust_badge import badge_text, check_line
from tests.helpers import spin

CHECK = {"statistic": "signal", "tta": 2, "threshold": 0.131, "morphology": "cells", "budget": 0.025}


def test_check_line_says_each_state():
    assert check_line({**CHECK, "state": "off", "ok": None}) == "uncertainty check: off"
    assert check_line({**CHECK, "state": "pending", "ok": None}) == \
        "uncertainty check: pending (new scene, guards only)"
    judged = {**CHECK, "value": 0.041, "ok": True, "checked_bundle": 7, "ms": 3.2}
    assert check_line({**judged, "state": "checked", "age": 0}) == \
        "uncertainty check: ok 0.041 ≤ 0.131 (cells), this bundle"
    assert check_line({**judged, "state": "carried", "age": 12}) == \
        "uncertainty check: ok 0.041 ≤ 0.131 (cells), 12 bundles ago"
    assert check_line({**judged, "state": "carried", "age": 1}).endswith(", 1 bundle ago")
    failed = {**judged, "value": 0.31, "ok": False, "threshold": 0.131, "morphology": "ceiling"}
    assert check_line({**failed, "state": "carried", "age": 3}) == "uncertainty check: failed 0.31 > 0.131 (ceiling)"
    info = {**judged, "state": "checked (informational: the package records no validated uncertainty threshold)",
            "threshold": None, "ok": None, "morphology": "no validated threshold", "age": 0}
    assert check_line(info) == "uncertainty check: informational (no validated threshold), signal 0.041, this bundle"
    assert check_line({**info, "state": "carried (informational: …)", "age": 5, "value": None}) == \
        "uncertainty check: informational (no validated threshold), 5 bundles ago"
    # a state a newer engine may send is shown as sent, on one line
    assert check_line({"state": "skipped\n(tiles)"}) == "uncertainty check: skipped (tiles)"


@pytest.mark.parametrize("check", [
    None, {}, [], "checked", 3, {"state": None}, {"state": ""}, {"state": 7},
    {"state": "checked", "value": "0.04", "threshold": 0.1, "ok": True},  # a figure of the wrong type
    {"state": "checked", "value": 0.04, "threshold": 0.1, "ok": "yes"},
    {"state": "carried", "value": math.nan, "threshold": 0.1, "ok": True},
    {"state": "checked", "value": True, "threshold": 0.1, "ok": True},
])
def test_check_line_of_an_older_or_malformed_engine_is_no_line(check):
    assert check_line(check) is None


def test_check_line_keeps_what_it_can_read():
    c = {"state": "checked", "value": 0.04, "threshold": 0.1, "ok": True, "age": "0", "morphology": 5}
    assert check_line(c) == "uncertainty check: ok 0.04 ≤ 0.1"  # no age, no morphology: left out


def test_badge_text_puts_the_check_under_the_verdict():
    check = {**CHECK, "state": "checked", "value": 0.041, "ok": True, "age": 0}
    text, ok = badge_text({"ok": True, "score": 0.93, "reasons": [], "uncertainty": {"p99": 0.02, "check": check}})
    assert ok and text.splitlines() == ["trusted · score 0.93 · uncertainty p99 0.02",
                                        "uncertainty check: ok 0.041 ≤ 0.131 (cells), this bundle"]
    reasons = ["saturated: BF", "uncertainty: signal 0.31 > validated 0.131 (cells, x2)"]
    text, ok = badge_text({"ok": False, "score": 0.0, "reasons": reasons,
                           "uncertainty": {"check": {**check, "value": 0.31, "ok": False}}})
    assert not ok and text.splitlines() == ["NOT TRUSTED", "uncertainty check: failed 0.31 > 0.131 (cells)", *reasons]
    # an older engine: no check, the badge as before; garbage never raises
    assert badge_text({"ok": True, "score": 1.0, "reasons": []}) == ("trusted · score 1.00", True)
    assert badge_text({"ok": True, "score": 1, "uncertainty": {"check": "on"}}) == ("trusted · score 1.00", True)
    assert badge_text({"ok": "yes", "reasons": "x", "uncertainty": [1]}) == ("NOT TRUSTED\nuntrusted", False)
    assert badge_text(None) == ("NOT TRUSTED\nno trust verdict in the result", False)


def test_badge_text_adds_the_consistency_check_where_it_applies():
    """``trust.consistency`` (super-resolution) gets its own line under the uncertainty check's; off (the
    virtual-staining packages, where no forward model applies) gives no line."""
    unc = {**CHECK, "state": "checked", "value": 0.041, "ok": True, "age": 0}
    cons = {"state": "checked", "value": 1.9, "threshold": 5.7, "ok": True, "morphology": "ceiling", "age": 0}
    text, ok = badge_text({"ok": True, "score": 0.9, "reasons": [], "uncertainty": {"check": unc},
                           "consistency": cons})
    assert ok and text.splitlines()[1:] == ["uncertainty check: ok 0.041 ≤ 0.131 (cells), this bundle",
                                            "consistency check: ok 1.9 ≤ 5.7 (ceiling), this bundle"]
    reason = "inconsistent with the input: residual 9.1 x noise > validated 5.7 (ceiling): ..."
    text, ok = badge_text({"ok": False, "score": 0.0, "reasons": [reason], "uncertainty": {"check": unc},
                           "consistency": {**cons, "state": "carried", "value": 9.1, "ok": False, "age": 4}})
    assert not ok and text.splitlines()[2:] == ["consistency check: failed 9.1 > 5.7 (ceiling)", reason]
    pending = badge_text({"ok": True, "score": 1.0, "consistency": {"state": "pending", "ok": None}})[0]
    assert pending.splitlines()[1:] == ["consistency check: pending (new scene, guards only)"]
    off = {"state": "off: not a super-resolution package with one output per input", "ok": None}
    assert badge_text({"ok": True, "score": 1.0, "consistency": off}) == ("trusted · score 1.00", True)
    assert check_line(off) == "uncertainty check: off"  # the default label still shows an off check


# ------------------------------------------------------------------ the real window
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]


def test_the_window_badge_says_whether_the_check_judged_the_scene(daemon, client, tmp_path):
    """Two engines on one stream: one checks every bundle (``checked``, this bundle), the other runs at the
    default 2.5 % budget, whose credit covers its first check only after ~60 bundles (``pending``)."""
    pg = pytest.importorskip("pyqtgraph", reason="the 'gui' extra is not installed")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from scopecast.daemon.inference.engine import InferenceEngine
    from scopecast.gui.window import EngineEndpoint, ScopeWindow
    from scopecast.models.synthetic import write_package

    app = pg.mkQApp("scopecast-tests")
    floor = {o: {"psnr_db": 30.0} for o in ("nuclei", "membrane")}
    validated = {"morphologies": {"cells": floor}, "floor": floor, "uncertainty": {
        "statistic": "signal", "tta": 2, "ceiling": 1e6, "method": "test",
        "morphologies": {"cells": {"threshold": 1e6, "median": 1.0, "max": 2.0, "fields": 4}}}}
    pkg = write_package(tmp_path / "vs", CYCLE, ["nuclei", "membrane"], name="vs", task="virtual-staining",
                        width=4, layers=2, tile=256, validated=validated)
    every, default = (InferenceEngine(pkg, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                                      warmup_shape=(256, 256), uncertainty_budget=b,
                                      uncertainty_morphology="cells").start() for b in (math.inf, 0.025))
    w = ScopeWindow(daemon.control_address, daemon.stream_address,
                    [EngineEndpoint(e.results_address, e.control.address) for e in (every, default)])

    def badge(e):
        return w.panes[e.results_address].badge.textItem.toPlainText()

    try:
        w.show()
        assert spin(app, lambda: daemon.publisher.subscriptions.of("frame") >= 3
                    and all(e.subscriptions.of("result", "shm") >= 1 for e in (every, default)))
        client.request("start_live", channels=CYCLE, interval_ms=50)
        checked = "uncertainty check: ok "
        assert spin(app, lambda: checked in badge(every) and "pending" in badge(default), 120), \
            (badge(every), badge(default))
        client.request("stop")
        for e, line in ((every, checked), (default, "uncertainty check: pending (new scene, guards only)")):
            text = badge(e)
            assert text.splitlines()[0].startswith(("trusted", "NOT TRUSTED")), text
            assert line in text.splitlines()[1], text
        assert badge(every).splitlines()[1].endswith("≤ 1e+06 (cells), this bundle"), badge(every)
    finally:
        w.close()
        app.processEvents()
        for e in (every, default):
            e.close()
