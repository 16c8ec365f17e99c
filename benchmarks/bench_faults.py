"""Fault and fuzz figures: malformed messages on every socket, engine and daemon killed mid-stream.

Real processes on the simulated scope (256x256 camera by default), started the
way a user would: ``scopecast up`` supervises one daemon and one engine (the
shipped virtual-staining package, or a small synthetic one), with live
acquisition recording throughout. Then:

1. *control fuzz*: ``--messages`` malformed requests to the daemon's and the
   engine's control sockets (random bytes, invalid or truncated UTF-8 and JSON,
   JSON that is not an object, wrong types for ``cmd``/``args``/``id``, huge
   numbers, ``NaN``/``Infinity``, 100k-deep nesting, unknown commands, valid
   commands with wrong-typed arguments, hostile paths in every string argument,
   extra message parts, 1 MiB strings) plus oversized (> 4 MiB) ones. Every
   request must get exactly one reply, strict JSON, of the expected kind
   (``BadRequest`` for what is malformed);
2. *stream fuzz*: ``--messages`` garbage upstream messages (subscriptions and
   noise) to the daemon's frame stream and the engine's result stream, and
   ``--messages`` malformed frames (bundles with one field broken: header,
   dtype, shape, ids, timestamps, parts) to a second engine through a fake
   frame stream, after which valid bundles must still give results;
3. *kills*: the supervised engine ``SIGKILL``-ed ``--kills`` times while live,
   alone and under control-socket load -> seconds from the kill to the first
   result published by its replacement; then the daemon ``SIGKILL``-ed while
   recording -> what the interrupted recording holds;

while a prober measures ``status`` latency on the daemon. Afterwards: were
processes lost (pids that changed without a kill), do all services still work
(status answers, frames flow, results flow), did any file appear outside the
data directory, and does every recording hold every frame the daemon counted.

Targets: 0 crashes, 0 hangs, 0 dead threads, 0 writes outside the data
directory, ``status`` p99 <= 50 ms under every load, engine back <= 2 s after
SIGKILL, 0 recorded frames lost in every fault.

Run: python benchmarks/bench_faults.py [--messages 10000] [--kills 10] [--size 256]

The functions above ``main`` are also the short fault suite's tools (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from faultkit import DAEMON_COMMANDS, ENGINE_COMMANDS, control_cases, FuzzReport, fuzz_control, stream_garbage, valid_bundle, frame_fuzz, FakeStream  # noqa: E402
from faultprocs import free_address, small_config, scopecast, wait_status, children_of, running, listener_pid, ResultWatch, StatusProbe, tree_snapshot, writes_outside, escapes_found, recording_check, _package  # noqa: E402


def main() -> int:  # noqa: C901 - one linear script
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000, help="malformed messages per socket")
    ap.add_argument("--kills", type=int, default=10, help="engine SIGKILLs (half of them under control load)")
    ap.add_argument("--size", type=int, default=256, help="simulated camera size")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="live cycle interval (0: as fast as it goes)")
    ap.add_argument("--synthetic", action="store_true", help="a small synthetic model instead of the shipped one")
    ap.add_argument("--no-spares", action="store_true", help="scopecast up --no-spares: engines restart cold")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from scopecast.daemon.control import ControlClient

    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="scopecast-faults-"))
    run = tmp / "a" / "b" / "run"  # the processes' working directory: '../../x' still lands inside tmp
    data = run / "data"
    run.mkdir(parents=True)
    cfg = small_config(run, a.size)
    pkg = _package(run, a.synthetic)
    channels = json.loads((pkg / "manifest.json").read_text())["inputs"]
    ctl, stream, results, ectl = free_address(), free_address(), free_address(), free_address()
    before = tree_snapshot(tmp, [data])
    figures: dict[str, Any] = {"crashes": 0, "hangs": 0, "dead": [], "lost": 0}
    up_log = open(tmp / "up.log", "w")  # noqa: SIM115
    up = scopecast("up", "--config", str(cfg), "--data-dir", str(data), "--control", ctl, "--stream", stream,
                   "--engine", f"{pkg},{results},{ectl}", *(["--no-spares"] if a.no_spares else []), cwd=run,
                   stdout=up_log, stderr=subprocess.STDOUT)
    probe = None
    try:
        wait_status(ctl, up)
        wait_status(ectl, up)
        daemon_pid, engine_pid = listener_pid(ctl, up.pid), listener_pid(ectl, up.pid)
        c = ControlClient(ctl, timeout_s=60)
        watch = ResultWatch(results)
        job = c.request("start_live", channels=channels, exposure_ms=10.0, interval_ms=a.interval_ms, record=True)
        print(f"scopecast up (pid {up.pid}): daemon {daemon_pid}, engine {engine_pid}; live {job['id']} recording")
        if watch.first_after(0, 120) is None:
            raise RuntimeError("no results from the engine")
        probe = StatusProbe(ctl).start()

        def phase(name: str, seconds: float = 0.0) -> None:
            probe.phase = name
            if seconds:
                time.sleep(seconds)

        def alive(where: str) -> None:
            """Crashes (pids that changed) and dead services, after a fuzz phase."""
            nonlocal daemon_pid, engine_pid
            now = children_of(up.pid)
            for name, pid in (("daemon", daemon_pid), ("engine", engine_pid)):
                if pid not in now:
                    figures["crashes"] += 1
                    print(f"  CRASH: the {name} died during {where}")
            daemon_pid, engine_pid = listener_pid(ctl, up.pid), listener_pid(ectl, up.pid)
            st1 = wait_status(ctl, up, 30)
            t = time.time_ns()
            if watch.first_after(t, 30) is None:
                figures["dead"].append(f"engine results after {where}")
            st2 = wait_status(ctl, up, 30)
            if st2["frames_acquired"] <= st1["frames_acquired"]:
                figures["dead"].append(f"daemon acquisition after {where}")
            if st2["stream"]["frames_published"] <= st1["stream"]["frames_published"]:
                figures["dead"].append(f"daemon frame stream after {where}")
            wait_status(ectl, up, 30)

        phase("live + recording", 3.0)
        fuzz: dict[str, FuzzReport] = {}
        phase("daemon control fuzz")
        fuzz["daemon control"] = fuzz_control(ctl, control_cases(rng, a.messages, DAEMON_COMMANDS))
        alive("the daemon control fuzz")
        phase("engine control fuzz")
        fuzz["engine control"] = fuzz_control(ectl, control_cases(rng, a.messages, ENGINE_COMMANDS))
        alive("the engine control fuzz")
        phase("stream fuzz")
        t0 = time.monotonic()
        n_stream = stream_garbage(stream, a.messages, rng)
        n_results = stream_garbage(results, a.messages, rng)
        t_stream = time.monotonic() - t0
        alive("the stream fuzz")

        # malformed frames to a second engine on a fake stream
        phase("frame fuzz")
        fake = FakeStream()
        f_ctl, f_res = free_address(), free_address()
        eng2 = scopecast("engine", "--model", str(pkg), "--stream", fake.address, "--results", f_res, "--control", f_ctl,
                         "--policy", "all", cwd=run)  # every bundle reaches the worker
        wait_status(f_ctl, eng2)
        fake.wait_subscriber()
        groups = frame_fuzz(channels, a.messages, rng)
        t0 = time.monotonic()
        n_frames = 0
        for g in groups:
            for parts in g:
                fake.send(parts)
                n_frames += 1
        t_frames = time.monotonic() - t0
        fwatch = ResultWatch(f_res)
        ok_result = None
        t_valid = time.time_ns()
        for b in range(1, 120):  # a minute of valid bundles at most
            for parts in valid_bundle(channels, "after-fuzz", 10_000_000 + b, (a.size, a.size)):
                fake.send(parts)
            ok_result = fwatch.first_after(t_valid, 0.5, {"acquisition_id": "after-fuzz"})
            if ok_result is not None or eng2.poll() is not None:
                break
        f_status = None
        if eng2.poll() is not None:
            figures["crashes"] += 1
            print(f"  CRASH: the frame-fuzzed engine exited with {eng2.returncode}")
        else:
            try:
                f_status = wait_status(f_ctl, eng2, 10)
            except (TimeoutError, RuntimeError):
                figures["dead"].append("frame-fuzzed engine control")
            if ok_result is None:
                figures["dead"].append("frame-fuzzed engine results")
        eng2.send_signal(signal.SIGTERM)
        eng2.wait(30)
        fwatch.close()
        fake.close()

        # engine SIGKILLs: alone, then with the daemon's control socket under fuzz
        backs: dict[str, list[float]] = {"engine back, live": [], "engine back, live + control fuzz": []}
        for k in range(a.kills):
            label = "engine back, live" if k < (a.kills + 1) // 2 else "engine back, live + control fuzz"
            phase(label)
            stop_load = threading.Event()
            loader = None
            if "fuzz" in label:
                def load(stop=stop_load) -> None:
                    while not stop.is_set():
                        fuzz_control(ctl, control_cases(rng, 200, DAEMON_COMMANDS), oversized=0)
                loader = threading.Thread(target=load, daemon=True)
                loader.start()
                time.sleep(0.5)
            pid = listener_pid(ectl, up.pid)
            t_kill = time.time_ns()
            m0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            r = watch.first_after(t_kill, 60)
            back = time.monotonic() - m0
            backs[label].append(back if r is not None else math.inf)
            stop_load.set()
            if loader is not None:
                loader.join(60)
            wait_status(ectl, up, 60)  # let it settle before the next kill
            time.sleep(1.0)
        phase("after kills", 1.0)

        # stop live: the recording must hold every frame counted, through fuzz and engine kills
        c.request("stop")
        st = c.request("status")
        j = c.request("job", job=job["id"])
        rec = recording_check(j["path"], st["frames_recorded"])
        figures["lost"] += rec["lost"] + max(j["frames"] - rec["journalled"], 0)
        print(f"recording through fuzz and engine kills: {rec['journalled']} frames journalled, job counted "
              f"{j['frames']}, unreadable {rec['unreadable']}, complete {rec['complete']}")

        # the daemon SIGKILLed mid-recording; the supervisor restarts it
        base = c.request("status")["frames_recorded"]
        job2 = c.request("start_live", channels=channels, exposure_ms=10.0, interval_ms=a.interval_ms, record=True)
        counted = 0
        while counted < 60:
            counted = c.request("status")["frames_recorded"] - base
        probe.paused.set()
        dpid = listener_pid(ctl, up.pid)
        m0 = time.monotonic()
        os.kill(dpid, signal.SIGKILL)
        c.close()
        wait_status(ctl, up, 120)
        daemon_back = time.monotonic() - m0
        probe.paused.clear()
        phase("after daemon restart", 2.0)
        rec2 = recording_check(job2["path"], counted)
        figures["lost"] += rec2["lost"]
        print(f"daemon SIGKILLed mid-recording: {rec2['journalled']} frames journalled (>= {counted} counted before "
              f"the kill), unreadable {rec2['unreadable']}, complete {rec2['complete']}; daemon answering again "
              f"{daemon_back:.2f} s after the kill")
        c = ControlClient(ctl, timeout_s=60)
        t = time.time_ns()
        c.request("start_live", channels=channels, exposure_ms=10.0, interval_ms=a.interval_ms)
        r = watch.first_after(t, 60)
        if r is None:
            figures["dead"].append("engine results after the daemon restart")
        c.request("stop")
        c.close()
        watch.close()
    finally:
        if probe is not None:
            probe.stop()
        kids = list(children_of(up.pid))
        up.send_signal(signal.SIGTERM)
        try:
            rc = up.wait(90)
        except subprocess.TimeoutExpired:
            up.kill()
            rc = -9
        up_log.close()
    left = [k for k in kids if running(k)]
    after = tree_snapshot(tmp, [data])
    outside = [p for p in writes_outside(before, after) if not p.endswith("up.log")]
    escapes = escapes_found(tmp, Path(tempfile.gettempdir()), run)

    # ------------------------------------------------------------ figures
    total = FuzzReport()
    print(f"\nfuzz ({a.messages} per socket; camera {a.size}x{a.size}; model "
          f"{json.loads((pkg / 'manifest.json').read_text())['name']})")
    for name, rep in fuzz.items():
        total.merge(rep)
        print(f"  {name:<16} {rep.sent:6d} sent in {rep.seconds:5.1f} s: {rep.replies} replies, {rep.hangs} without, "
              f"{rep.extra_replies} extra, {rep.not_strict} not strict JSON, {rep.wrong_total} of the wrong kind, "
              f"{rep.leaks} leaks; oversized {rep.oversized_sent} sent, {rep.oversized_replies} answered")
        for cat, k in rep.wrong.most_common():
            print(f"      {k:5d} {cat}: {rep.examples.get(cat, '')[:150]}")
        for cat, ex in rep.examples.items():
            if cat.startswith(("not strict", "hang", "leak")):
                print(f"      {cat}: {ex[:150]}")
    print(f"  frame stream     {n_stream:6d} garbage upstream messages; result stream {n_results} ({t_stream:.1f} s)")
    print(f"  engine frames    {n_frames:6d} malformed frames in {len(groups)} bundles ({t_frames:.1f} s); valid bundle "
          f"inferred afterwards: {ok_result is not None}; engine drops {f_status and f_status['dropped']}")
    print("\nstatus round trip on the daemon (ms)")
    worst = 0.0
    for p, s in (probe.summary() if probe else {}).items():
        worst = max(worst, s["p99"]) if s["timeouts"] == 0 else math.inf
        print(f"  {p:<34} n {s['n']:5d}  p50 {s['p50']:6.2f}  p99 {s['p99']:7.2f}  max {s['max']:7.2f}  "
              f"timeouts {s['timeouts']}")
    print(f"\nengine back after SIGKILL (kill -> first result of its replacement, s; "
          f"{'cold restarts' if a.no_spares else 'restarts from a warm spare'})")
    all_backs = []
    for label, v in backs.items():
        all_backs += v
        if v:
            each = ", ".join(f"{x:.2f}" for x in v)
            print(f"  {label:<34} n {len(v):3d}  p50 {np.median(v):5.2f}  max {max(v):5.2f}  ({each})")
    figures["hangs"] = total.hangs + sum(s["timeouts"] for s in (probe.summary() if probe else {}).values())
    rows = [
        ("crashes", figures["crashes"], "0", figures["crashes"] == 0),
        ("hangs (requests without reply, status timeouts)", figures["hangs"], "0", figures["hangs"] == 0),
        ("dead threads (services that stopped working)", len(figures["dead"]), "0", not figures["dead"]),
        ("writes outside the data directory", len(outside) + len(escapes), "0", not outside and not escapes),
        ("replies not strict JSON / of the wrong kind / extra", f"{total.not_strict} / {total.wrong_total} / "
         f"{total.extra_replies}", "0 / 0 / 0", total.not_strict == total.wrong_total == total.extra_replies == 0),
        ("status p99 under every load (ms)", f"{worst:.1f}", "<= 50", worst <= 50),
        ("engine back after SIGKILL, max (s)", f"{max(all_backs):.2f}" if all_backs else "-", "<= 2",
         bool(all_backs) and max(all_backs) <= 2.0),
        ("recorded frames lost", figures["lost"], "0", figures["lost"] == 0),
        ("scopecast up: clean exit, no process left", f"exit {rc}, {len(left)} left", "exit 0, 0 left",
         rc == 0 and not left),
    ]
    print("\nfigure                                              measured          target")
    for name, value, target, ok in rows:
        print(f"  {name:<50} {str(value):<17} {target:<10} {'ok' if ok else 'MISSED'}")
    for d in figures["dead"]:
        print(f"  dead: {d}")
    for p in outside + escapes:
        print(f"  written outside the data directory: {p}")
    print(f"\nsupervisor log: {tmp / 'up.log'}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
