"""The light budget charges what an action takes, where it takes it: a trigger's tile scan charges each tile to the
budget cell it lands in (all of it went to the deciding position's cell, so a later firing at a tile's cell could
take that cell past ``dose_per_position``); a z_stack is charged for the planes its useq plan acquires (it was
charged ``round(range / step) + 1``: range 3, step 2 acquires 2, charged 3; range 2.85, step 0.1 acquires 30,
charged 29). Decider and real daemon on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import useq

from scopecast.daemon.dose import DoseBudget
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.triggers import ActionSpec, Decider, load_trigger_config

from helpers import StandInEngine, wait_subscribed, wait_until

FOV_UM = 256 * 0.65  # the test sensor (256²) at the simulator's 10x pixel size


def _trigger(name: str, above: float, action: dict) -> dict:
    """Fires once (never re-armed) when the mean of channel ``c`` reaches ``above``."""
    return {"name": name, "model": "m", "measurement": {"kind": "mean", "channel": "c"},
            "condition": {"above": above, "rearm_below": -1}, "cooldown_s": 0, "actions": [action]}


SCAN = {"kind": "tile_scan", "channels": ["BF"], "exposure_ms": 100, "rows": 2, "columns": 2}
CONFIRM = {"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 450}
SAFETY = {"dose_per_position": 500, "dose_per_session": 100_000, "max_actions_per_minute": 100,
          "position_grid_um": 100}


def _result(value: float, t_s: float, x: float, y: float) -> tuple[dict, np.ndarray]:
    """A trusted 256² result at stage ``(x, y)`` µm, 0.65 µm pixels."""
    header = {"model": "m", "channels": ["c"], "t_acquired_ns": int(t_s * 1e9), "bundle_id": int(t_s),
              "acquisition_id": "a", "source_seqs": [], "stage_x_um": x, "stage_y_um": y, "stage_z_um": 0.0,
              "pixel_size_um": 0.65, "shape": [1, 256, 256], "dtype": "float32",
              "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}}}
    return header, np.full((1, 256, 256), value, np.float32)


def test_the_decider_charges_each_tile_to_its_own_cell():
    d = Decider(load_trigger_config({"triggers": [_trigger("scan", 0.5, SCAN), _trigger("confirm", 5, CONFIRM)],
                                     "safety": SAFETY}))
    assert [x.event for x in d.decide(*_result(1, 0, 0, 0))] == ["fire"]
    assert d.dose_position == {(-1, 1): 100, (1, 1): 100, (1, -1): 100, (-1, -1): 100}  # was {(0, 0): 400}
    # a tile's cell took 100 already: a 450 confirmation there would make 550 > 500
    there = d.decide(*_result(10, 1, FOV_UM / 2, FOV_UM / 2))
    assert [x.event for x in there] == ["suppressed"]
    assert there[0].reason == "light budget at this position: 100 + 450 > 500"
    assert d.decide(*_result(10, 2, 5000, 0))[0].event == "fire"  # an unexposed cell has its whole budget


def test_a_scan_whose_tile_would_exceed_its_cell_is_refused_whole():
    """Two sources of one budget: a confirmation took 450 in cell (1, 1); a scan around (0, 0) would add a tile's
    100 there, so none of it runs (and nothing of it is charged)."""
    budget = DoseBudget(SAFETY["dose_per_position"], SAFETY["dose_per_session"], SAFETY["position_grid_um"])
    confirm = Decider(load_trigger_config({"triggers": [_trigger("confirm", 5, CONFIRM)], "safety": SAFETY}), budget)
    scan = Decider(load_trigger_config({"triggers": [_trigger("scan", 0.5, SCAN)], "safety": SAFETY}), budget)
    assert confirm.decide(*_result(10, 0, FOV_UM / 2, FOV_UM / 2))[0].event == "fire"
    out = scan.decide(*_result(1, 1, 0, 0))
    assert [x.event for x in out] == ["suppressed"]
    assert out[0].reason == "light budget at 83.2, 83.2 µm (a field of this request): 450 + 100 > 500"
    assert budget.by_position() == {(1, 1): 450}


def test_a_tile_scan_charges_the_cells_its_tiles_were_taken_in(daemon, client):
    """Live on the simulator: the trigger's 2×2 scan around (0, 0) takes its tiles in four other cells, which
    the budget charges; a 450 ms confirmation at one of them (100 taken already) is then refused."""
    config = {"triggers": [_trigger("scan", 0.5, SCAN), _trigger("confirm", 5, CONFIRM)], "safety": SAFETY}
    with StandInEngine(daemon.stream_address, value=1.0, full_frame=True) as engine:
        wait_subscribed(daemon.publisher, "frame")
        client.request("load_triggers", config=config, sources={"m": engine.address})
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])
            st = wait_until(lambda: (s := client.request("triggers"))["fired"] >= 1 and not s["actions_pending"]
                            and s, 120, "the scan to fire and run")
            scan = next(j for j in client.request("jobs") if j["kind"] == "scan")
            tiles = [(s.frames[0].stage_x_um, s.frames[0].stage_y_um) for s in open_recording(scan["path"]).series]
            cells = {f"{round(x / 100)},{round(y / 100)}" for x, y in tiles}
            assert len(cells) == 4 and st["dose_by_position"] == {c: 100.0 for c in cells}, (tiles, st)
            wait_until(lambda: client.request("status")["state"] == "live", 60, "live to resume")
            x, y = tiles[0]
            client.request("move_stage", x=x, y=y)
            n = len(engine.frames)
            wait_until(lambda: any(abs(f["stage_x_um"] - x) < 0.01 for f in engine.frames[n:]), 60,
                       "live frames at the tile")
            engine.value = 10.0

            def confirm_decided() -> list[dict]:
                lines = [json.loads(t) for t in Path(st["log"]).read_text().splitlines()]
                return [t for t in lines if t.get("trigger") == "confirm" and abs(t["position_um"][0] - x) < 0.01]

            decided = wait_until(confirm_decided, 120, "the confirmation's decision at the tile")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    assert decided[0]["event"] == "suppressed", decided
    assert decided[0]["reason"] == "light budget at this position: 100 + 450 > 500"


def _config(rng: float, step: float, exposure_ms: float = 10.0, per_position: float = 1e6) -> dict:
    z_stack = {"kind": "z_stack", "channels": ["Nuclei"], "exposure_ms": exposure_ms, "z_range_um": rng,
               "z_step_um": step}
    return {"triggers": [_trigger("z", 0.5, z_stack)],
            "safety": {"dose_per_position": per_position, "dose_per_session": 1e6, "max_actions_per_minute": 100}}


@pytest.mark.parametrize(("rng", "step"), [(3, 2), (2.85, 0.1), (7, 2), (1.95, 0.3), (2, 1), (6, 2), (0.5, 1)])
def test_a_z_stack_is_charged_for_the_planes_it_acquires(rng, step):
    acquired = len(list(useq.ZRangeAround(range=rng, step=step)))  # the planes the action's scan takes
    d = Decider(load_trigger_config(_config(rng, step)))
    assert d.decide(*_result(1, 0, 0, 0))[0].event == "fire"
    assert d.dose_session == pytest.approx(10.0 * acquired)
    assert ActionSpec(kind="z_stack", z_range_um=rng, z_step_um=step).z_planes() == acquired


def test_a_z_stack_that_fits_the_budget_runs_and_charges_its_frames(daemon, client):
    """Live on the simulator: range 3, step 2 at 100 ms takes 2 frames (200) within a 250 position budget; it
    was refused as 300."""
    with StandInEngine(daemon.stream_address, value=1.0, full_frame=True) as engine:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=_config(3, 2, 100, 250),
                                  sources={"m": engine.address})["log"])
        try:
            engine.wait_subscriber()
            client.request("start_live", channels=[{"name": "BF", "exposure_ms": 5}])

            def decided() -> dict | None:
                """The status once the decision is logged (read after the log: a status read first may predate
                the decision, its dose and its pending action) and its action done."""
                lines = [json.loads(t) for t in log.read_text().splitlines()] if log.exists() else []
                if not any(t.get("event") in ("fire", "suppressed") for t in lines):
                    return None
                s = client.request("triggers")
                return not s["actions_pending"] and s

            st = wait_until(decided, 120, "the z_stack trigger's decision and its action")
            client.request("stop")
        finally:
            client.request("unload_triggers")
    first = next(t for t in map(json.loads, Path(st["log"]).read_text().splitlines()) if "event" in t)
    assert first["event"] == "fire", first
    scan = next(j for j in client.request("jobs") if j["kind"] == "scan")
    assert scan["frames"] == 2 and st["dose_session"] == 200.0
