"""The README's main job: the daemon on the simulated scope with the shipped models live.

With a display it opens the GUI (``scopecast gui``) on the running pipeline;
without one (a server, CI) it prints live throughput and latency figures and
writes ``snapshot.png`` with the raw channels and the models' outputs. Both
then capture dual-modality pairs and read them back.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BackendError, load_mmcore_backend
from .control import ControlClient
from .recorder import open_recording
from .service import Daemon
from .snapshot import snapshot, write_png
from .stream import StreamSubscriber

__all__ = ["run_demo", "shipped_packages"]

_FLUO_EXPOSURE_MS = 100.0  # a channel no model takes (the models' inputs use their training exposure)


def shipped_packages(tier: str = "accurate") -> list[Path]:
    """The trained packages that ship in ``models/packages`` (virtual staining first) of one tier:
    ``accurate`` (the default models) or ``live`` (the real-time tier, named ``*-live``)."""
    if tier not in ("accurate", "live"):
        raise ValueError(f"unknown tier {tier!r}; use 'accurate' or 'live'")
    root = Path(str(files("scopecast.models").joinpath("packages")))
    suffix = "-live" if tier == "live" else ""
    order = [f"virtual-staining{suffix}", f"super-resolution{suffix}"]
    found = [root / n for n in order if (root / n / "manifest.json").is_file()]
    rest = (p for p in root.glob("*") if (p / "manifest.json").is_file() and p not in found
            and p.name.endswith("-live") == (tier == "live"))
    return found + sorted(rest)


def _default_exposure(info: dict[str, Any], channel: str) -> float:
    return _FLUO_EXPOSURE_MS if info["channels"][channel]["modality"] == "fluorescence" else 10.0


def run_demo(config: str, out_dir: Path, seconds: float = 10.0, headless: bool | None = None) -> int:
    from .inference.engine import InferenceEngine

    out_dir.mkdir(parents=True, exist_ok=True)
    if headless is None:
        headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    try:
        backend = load_mmcore_backend(config)
    except BackendError as e:
        print(f"scopecast demo: {e}")
        return 2
    daemon = Daemon(backend, out_dir / "recordings", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    packages = shipped_packages()
    engines = [InferenceEngine(p, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
               for p in packages]
    print(f"daemon on {config}: control {daemon.control_address}, frames {daemon.stream_address}")
    for e in engines:
        m = e.describe_model()
        print(f"engine {m['name']} ({m['task']}, {m['sha256'][:12]}) on {m['runtime']['runtime']}: "
              f"inputs {m['inputs']} -> {m['outputs']}, results {e.results_address}")
    if not engines:
        print("no trained packages found in models/packages: running acquisition only")
    try:
        with ControlClient(daemon.control_address, timeout_s=120) as client:
            info = client.request("describe")
            exposure: dict[str, float] = {}  # each model's inputs at an exposure it was trained on (the first wins)
            for e in engines:
                for c in e.package.manifest.inputs:
                    exposure.setdefault(c, e.package.manifest.trained_exposure_ms or _default_exposure(info, c))
            cycle = list(exposure) or ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"]
            channels = [{"name": c, "exposure_ms": exposure.get(c) or _default_exposure(info, c)} for c in cycle]
            # paced by the engines: each cycle is acquired just in time for the slower model, instead of
            # free-running frames the engines would receive and drop (daemon/pacing.py)
            pace = {"pace_from": [e.results_address for e in engines]} if engines else {}
            job = client.request("start_live", channels=channels, **pace)
            print(f"live cycle {cycle} ({job['id']}){', paced by the engines' if engines else ''}")
            if headless:
                _headless(client, daemon, engines, cycle, seconds, out_dir)
            else:
                _gui(daemon, engines)
            client.request("stop")

            job = client.request("capture_pairs", grid={"rows": 2, "columns": 2})
            print(f"dual-modality pairs on a 2x2 grid ({job['total']} frames) ...")
            done = client.wait(job["id"], timeout_s=600)
            rec = open_recording(done["path"])
            print(f"recorded {len(rec.frames)} frames in {len(rec.series)} series: {done['path']}")
            for s in rec.series:
                f0 = s.frames[0]
                print(f"  {s.name}: {tuple(s.data.shape)} {s.channels} at ({f0.stage_x_um:.1f}, {f0.stage_y_um:.1f}) µm")
    finally:
        for e in engines:
            e.close()
        daemon.close()
        # destroy the core now, not during interpreter shutdown, where its C++ notification
        # thread would abort the process (see backend.load_mmcore_backend)
        del daemon
        gc.collect()
    return 0


def _gui(daemon: Daemon, engines: list) -> None:
    args = [sys.executable, "-m", "scopecast.daemon.cli", "gui", "--control", daemon.control_address,
            "--stream", daemon.stream_address]
    for e in engines:
        args += ["--engine", f"{e.results_address},{e.control.address}"]
    print("opening the viewer; close its window to finish the demo")
    subprocess.run(args, check=False)


def _verdict(header: dict, full: bool = False) -> str:
    """A result's trust verdict in words (no output is shown without it)."""
    trust = header.get("trust") or {"ok": False, "score": 0.0, "reasons": ["no trust verdict"]}
    if trust.get("ok"):
        return f"trusted (score {float(trust.get('score') or 0):.2f})"
    reasons = trust.get("reasons") or ["untrusted"]
    return "NOT TRUSTED: " + ("; ".join(reasons) if full else reasons[0])


def _headless(client: ControlClient, daemon: Daemon, engines: list, cycle: list[str], seconds: float,
              out_dir: Path) -> None:
    frames_sub = StreamSubscriber(daemon.stream_address, ("frame",))
    result_subs = [StreamSubscriber(e.results_address, ("result",)) for e in engines]
    latest_frames: dict[str, np.ndarray] = {}
    latest_results: dict[int, tuple[dict, np.ndarray]] = {}
    t_end = time.monotonic() + seconds
    next_print = time.monotonic() + 1.0
    last_n = client.request("status")["frames_acquired"]
    last_t = time.monotonic()
    while time.monotonic() < t_end or (engines and len(latest_results) < len(engines)
                                       and time.monotonic() < t_end + 60):
        m = frames_sub.recv(0.01)
        if m is not None:
            latest_frames[m[1]["channel"]] = m[2]
        for i, sub in enumerate(result_subs):
            r = sub.recv(0.0)
            if r is not None:
                latest_results[i] = (r[1], r[2])
        if time.monotonic() >= next_print:
            next_print += 1.0
            st = client.request("status")
            now = time.monotonic()
            line = f"  acquired {(st['frames_acquired'] - last_n) / (now - last_t):6.1f} frames/s"
            last_n, last_t = st["frames_acquired"], now
            for i, e in enumerate(engines):
                es = e.status()
                lat = es["latency_ms"].get("end_to_end")
                e2e = f"p50 {lat['p50']:6.1f} p99 {lat['p99']:6.1f} ms" if lat else "(warming up)"
                line += f" | {es['model']['name']}: {es['results_per_s']:5.1f}/s, exposure->result {e2e}"
                if i in latest_results:
                    line += f", {_verdict(latest_results[i][0])}"
            # frames of channels a model does not take (every engine receives the whole cycle) are not lost
            drops = {**st["stream"]["dropped"], **{f"{e.package.manifest.name} {k}": v for e in engines
                                                   for k, v in e.status()["dropped"].items()
                                                   if not k.endswith("unused_channel")}}
            print(line + (f" | dropped {drops}" if drops else ""), flush=True)
    for s in (frames_sub, *result_subs):
        s.close()
    for i, (header, _) in latest_results.items():
        print(f"{header['model']}: last result {_verdict(header, full=True)}")
    for e in engines:
        es = e.status()
        lat = es["latency_ms"].get("end_to_end", {})
        stages = ", ".join(f"{k} {v['p50']:.1f}" for k, v in es["latency_ms"].items() if k != "end_to_end")
        print(f"{es['model']['name']}: {es['results_published']} results, exposure->result p50 "
              f"{lat.get('p50', float('nan')):.1f} ms p99 {lat.get('p99', float('nan')):.1f} ms "
              f"(stage p50 ms: {stages}); dropped {es['dropped']}")
    # labelled tiles; outputs at their own sampling, untrusted ones dimmed (daemon/snapshot.py)
    results = [latest_results[i] for i in sorted(latest_results)]  # in engine order
    path = write_png(out_dir / "snapshot.png", snapshot(latest_frames, results, cycle))
    print(f"snapshot (raw {', '.join(c for c in cycle if c in latest_frames)}, then model outputs): {path}")
