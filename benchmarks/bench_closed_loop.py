"""Closed-loop latency of smart acquisition on the simulated scope, beside the model's own latency.

The closed loop runs from the exposure start of the deciding frame — the last
frame of the bundle the deciding result was computed from, whose timestamps the
result header carries (docs/protocol.md) — to the moment the first action holds
the microscope (here the confirmation snap), as the daemon logs it for every
firing (``closed_loop_latency_ms``). The acquisition of the bundle's earlier
frames is reported beside it (from the first frame's exposure start), never
folded in silently.

*Model latency* is what the same model costs a user who runs it in-process on
the same bundle: the engine's own :class:`InferenceWorker.process` (input
guards, normalization, inference, output scaling and guards) on an in-memory
bundle of the same size, on the engine's core with the engine's thread count.
The loop adds everything else: the deciding frame's exposure and readout,
publish, transport, waiting for the engine, result publish, delivery to the
trigger, the decision, the hand-off to the action thread and the wait for the
microscope.

Because the isolated model and the loop run at different moments of a shared
machine, the loop is also given against its own ``model`` stage (per firing,
from the result header): what the loop adds, independent of how fast the model
happened to run.

Live runs in three modes (docs/smart-acquisition.md, "The closed loop"):
free-running (the camera as fast as it goes, the engine takes the newest
bundle) and lockstep (live waits for each cycle's decision, as a model run in
the camera callback makes it); ``paced`` is free-running triggers with live
paced by the engine (``start_live pace_from``: each cycle acquired just in time
for the model, daemon/pacing.py). Rounds alternate (ABAB...): the isolated model
while the scope is idle, then a batch of firings in each mode, so the machine's
load drifts evenly over all figures. The stage alternates between ordinary
cells and the dense colony so the trigger re-arms and fires again; each firing
starts with the action thread idle; the shipped virtual-staining model decides.
Daemon and engine run as in deployment (separate processes, separate cores).

Run: python benchmarks/bench_closed_loop.py [--events 20] [--rounds 2] [--size 256]
     [--camera-timing Realistic] [--modes free-running,lockstep,paced]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VS = ROOT / "models" / "packages" / "virtual-staining"
CYCLE = ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
COLONY = (40000.0, 0.0)
TRIGGER = "colony"


def _port() -> str:
    from scopecast.daemon.supervisor import free_port

    return f"tcp://127.0.0.1:{free_port()}"


def _pct(a, q: float) -> float:
    a = [x for x in a if x is not None]
    return float(np.percentile(a, q)) if a else float("nan")


# --------------------------------------------------------- the isolated model
def isolated(bundle: Path, n: int, threads: int, cpus: str) -> dict[str, list[float]]:
    """``n`` runs of the engine's InferenceWorker on the saved bundle (in this process, pinned to ``cpus``)."""
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    z = np.load(bundle)
    headers = json.loads(str(z["headers"]))
    frames = [StreamFrame(h, z[f"f{i}"]) for i, h in enumerate(headers)]
    pkg = load_package(VS)
    w = InferenceWorker(pkg, open_runtime(pkg, "auto", threads=threads), batch=4)
    w.warm_up(frames[0].data.shape)
    out: dict[str, list[float]] = {"process": [], "guards_normalize": [], "infer": [], "postprocess": []}
    for i in range(n + 2):
        t0 = time.time_ns()
        h = w.process(frames, t0).header
        if i < 2:  # the first runs at this size settle allocations
            continue
        out["process"].append((h["t_postprocessed_ns"] - t0) / 1e6)
        out["guards_normalize"].append((h["t_preprocessed_ns"] - t0) / 1e6)
        out["infer"].append((h["t_inferred_ns"] - h["t_preprocessed_ns"]) / 1e6)
        out["postprocess"].append((h["t_postprocessed_ns"] - h["t_inferred_ns"]) / 1e6)
    out["trusted"] = [bool(h["trust"]["ok"])]
    return out


def _run_isolated(bundle: Path, n: int, threads: int, cpus: str) -> dict[str, list[float]]:
    r = subprocess.run([sys.executable, __file__, "--isolated", str(bundle), "--n", str(n), "--threads",
                        str(threads), "--engine-cpus", cpus], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _save_bundle(stream: str, client, path: Path) -> None:
    """One complete live bundle at the colony, as the engine receives it, saved for the isolated runs."""
    from scopecast.daemon.stream import StreamSubscriber

    with StreamSubscriber(stream, ("frame",)) as sub:
        time.sleep(0.5)  # slow joiner: the subscription reaches the publisher
        client.request("start_live", channels=CYCLE, interval_ms=0, max_cycles=5)
        by_bundle: dict[int, list] = {}
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            m = sub.recv(1.0)
            if m is None:
                continue
            h, data = m[1], np.array(m[2], copy=True)
            got = by_bundle.setdefault(h["bundle_id"], [])
            got.append((h, data))
            if len(got) == len(CYCLE):
                np.savez(path, headers=json.dumps([g[0] for g in got]), **{f"f{i}": g[1] for i, g in enumerate(got)})
                break
        else:
            raise RuntimeError("no complete bundle came from the stream in 60 s")
    while client.request("status")["state"] != "idle":
        time.sleep(0.05)


# ------------------------------------------------------------------ the loop
def _fire(c, n: int, deadline: float) -> None:
    """Move between ordinary cells and the colony until ``n`` more firings; each firing starts armed, with
    the action thread idle (the previous firing's actions, snap and recording, have finished)."""
    target = c.request("triggers")["fired"] + n
    while c.request("triggers")["fired"] < target and time.monotonic() < deadline:
        c.request("move_stage", x=0.0, y=0.0)
        while time.monotonic() < deadline:  # re-armed on ordinary cells, nothing left to do
            st = c.request("triggers")
            if st["triggers"][TRIGGER]["armed"] and not st["actions_pending"]:
                break
            time.sleep(0.02)
        fired = st["fired"]
        c.request("move_stage", x=COLONY[0], y=COLONY[1])
        while c.request("triggers")["fired"] == fired and time.monotonic() < deadline:
            time.sleep(0.02)


def _summary(outs: list[dict], model: dict[str, list[float]]) -> dict[str, float]:
    """The loop's figures over some firings' outcome lines (ms)."""
    loop = [x["closed_loop_latency_ms"] for x in outs]
    rest = [x["closed_loop_latency_ms"] - (x["closed_loop_ms"]["model"] or 0) for x in outs]
    whole = [x["closed_loop_latency_ms"] + x["bundle_before_deciding_frame_ms"] for x in outs
             if x.get("bundle_before_deciding_frame_ms") is not None]
    out = {"firings": len(outs), "loop p50": _pct(loop, 50), "loop p99": _pct(loop, 99),
           "loop - model latency, p50": _pct(loop, 50) - _pct(model["process"], 50),
           "loop - model latency, p99": _pct(loop, 99) - _pct(model["process"], 99),
           "loop - its own model stage, p50": _pct(rest, 50), "loop - its own model stage, p99": _pct(rest, 99),
           "from the bundle's first exposure, p50": _pct(whole, 50),
           "from the bundle's first exposure, p99": _pct(whole, 99)}
    for name in (outs[0]["closed_loop_ms"] if outs else []):
        v = [x["closed_loop_ms"][name] for x in outs]
        out[f"{name} p50"], out[f"{name} p99"] = _pct(v, 50), _pct(v, 99)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20, help="firings per live mode, in all")
    ap.add_argument("--rounds", type=int, default=2, help="ABAB rounds of (isolated model, firings per mode)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--exposure-ms", type=float, default=10.0)
    ap.add_argument("--camera-timing", choices=("Instant", "Realistic"), default="Instant",
                    help="the simulated camera's TimingModel: Realistic takes exposure + readout per frame")
    ap.add_argument("--threads", type=int, default=1, help="engine intra-op threads (and the isolated model's)")
    ap.add_argument("--daemon-cpus", default="0")
    ap.add_argument("--engine-cpus", default="1")
    ap.add_argument("--uncertainty-budget", type=float, default=None,
                    help="the engine's uncertainty-check budget (default: the engine's; 0: no check)")
    ap.add_argument("--modes", default="free-running,lockstep", help="live modes to measure, in each round")
    ap.add_argument("--n", type=int, default=30, help="isolated model runs per round")
    ap.add_argument("--isolated", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    if args.isolated:
        print(json.dumps(isolated(args.isolated, args.n, args.threads, args.engine_cpus)))
        return
    from scopecast.daemon.control import ControlClient

    cpus = os.cpu_count() or 1
    engine_cpus = args.engine_cpus if cpus > 1 else "0"
    tmp = Path(tempfile.mkdtemp(prefix="scopecast-loop-"))
    cfg = (ROOT / "hardware_configs" / "sim-ledarray.cfg").read_text()
    cfg = cfg.replace("Width,512", f"Width,{args.size}").replace("Height,512", f"Height,{args.size}")
    (tmp / "sim.cfg").write_text(cfg + f"#py Property,Camera,TimingModel,{args.camera_timing}\n")
    triggers = {
        "triggers": [{"name": TRIGGER, "model": "virtual-staining",
                      "measurement": {"kind": "area_fraction", "channel": "nuclei", "threshold": 2000},
                      "condition": {"above": 0.25, "rearm_below": 0.18}, "cooldown_s": 0,
                      "actions": [{"kind": "confirm_fluorescence", "channels": ["Nuclei"], "exposure_ms": 50}]}],
        "safety": {"dose_per_position": 1e9, "dose_per_session": 1e9, "max_actions_per_minute": 1000},
    }
    ctl, stream, results = _port(), _port(), _port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    load_start = os.getloadavg()
    daemon = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "daemon", "--config", str(tmp / "sim.cfg"),
                               "--control", ctl, "--stream", stream, "--data-dir", str(tmp / "data"),
                               "--cpus", args.daemon_cpus], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp / "daemon.log", "w"))
    engine = subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", "engine", "--model", str(VS),
                               "--stream", stream, "--results", results, "--control", _port(),
                               "--threads", str(args.threads), "--cpus", engine_cpus,
                               *(["--uncertainty-budget", str(args.uncertainty_budget)]
                                 if args.uncertainty_budget is not None else [])],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "engine.log", "w"))
    model: dict[str, list[float]] = {}
    modes: dict[str, list[dict]] = {m: [] for m in args.modes.split(",")}  # outcome lines per live mode
    if set(modes) - {"free-running", "lockstep", "paced"}:
        raise SystemExit(f"unknown live mode in --modes {args.modes!r}: use free-running, lockstep and/or paced")
    try:
        with ControlClient(ctl, timeout_s=120) as c:
            while True:
                try:
                    c.request("status", timeout_s=1)
                    break
                except TimeoutError:
                    pass
            # visit both fields once so the simulator's optics are cached (the figure is the loop, not rendering)
            for x, y in (COLONY, (0.0, 0.0)):
                c.request("move_stage", x=x, y=y)
                for ch in [*CYCLE, "Nuclei"]:
                    c.request("snap", channel=ch)
            c.request("set_exposure", exposure_ms=args.exposure_ms)
            c.request("move_stage", x=COLONY[0], y=COLONY[1])
            _save_bundle(stream, c, tmp / "bundle.npz")
            c.request("move_stage", x=0.0, y=0.0)
            deadline = time.monotonic() + 60 * args.events + 120
            per_round = [args.events // args.rounds + (r < args.events % args.rounds) for r in range(args.rounds)]
            for n in per_round:
                for k, v in _run_isolated(tmp / "bundle.npz", args.n, args.threads, engine_cpus).items():
                    model.setdefault(k, []).extend(v)
                for mode in modes:
                    lockstep = {"lockstep": True} if mode == "lockstep" else {}
                    c.request("load_triggers", config={**triggers, **lockstep},
                              sources={"virtual-staining": results})
                    c.request("start_live", channels=CYCLE, interval_ms=0,
                              **({"pace_from": [results]} if mode == "paced" else {}))
                    _fire(c, n, deadline)
                    c.request("stop")
                    while c.request("status")["state"] != "idle" or c.request("triggers")["actions_pending"]:
                        time.sleep(0.05)
                    st = c.request("triggers")
                    lines = [json.loads(x) for x in Path(st["log"]).read_text().splitlines()]
                    modes[mode] += [x for x in lines if "closed_loop_ms" in x]
                    timeouts = st.get("lockstep", {}).get("timeouts")
                    if timeouts:
                        print(f"note: {timeouts} lockstep cycle(s) went on without a decision", file=sys.stderr)
            c.request("unload_triggers")
    finally:
        for p in (engine, daemon):
            p.terminate()
            p.wait(timeout=30)
    load_end = os.getloadavg()
    figures = {m: _summary(o, model) for m, o in modes.items()}

    print(f"machine: {platform.machine()}, {cpus} cores, python {platform.python_version()}; load average "
          f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end; {args.size}x{args.size} frames, exposure "
          f"{args.exposure_ms:g} ms ({args.camera_timing} camera timing), virtual-staining, engine on core(s) {engine_cpus} with {args.threads} "
          f"thread(s), daemon on {args.daemon_cpus}; {args.rounds} ABAB rounds (isolated model, "
          + ", ".join(f"{m} live" for m in modes) + ")")
    print(f"model latency (InferenceWorker.process on an in-memory bundle, same size/threads/core; "
          f"{len(model['process'])} runs): p50 {_pct(model['process'], 50):.1f} ms, p99 "
          f"{_pct(model['process'], 99):.1f} ms (inference alone p50 {_pct(model['infer'], 50):.1f} ms; guards + "
          f"normalization {_pct(model['guards_normalize'], 50):.2f} ms; output scaling "
          f"{_pct(model['postprocess'], 50):.2f} ms; trusted: {all(model['trusted'])})")
    print("closed loop: from the exposure start of the deciding (last) frame of the bundle to the moment the "
          "action holds the microscope; target: loop - model latency <= +5 ms\n")
    print("| figure (ms) | " + " | ".join(f"{m} live" for m in modes) + " |\n| --- |" + " ---: |" * len(modes))
    for key in next(iter(figures.values())):
        row = [figures[m].get(key, float("nan")) for m in modes]
        fmt = "{:.0f}" if key == "firings" else ("{:+.2f}" if " - " in key else "{:.2f}")
        print(f"| {key} | " + " | ".join(fmt.format(v) for v in row) + " |")
    if args.json:
        args.json.write_text(json.dumps({"model": model, "figures": figures, "outcomes": modes,
                                         "load": [load_start, load_end]}, indent=1))


if __name__ == "__main__":
    main()
