"""scopecast against the in-process alternative, side by side, at equal cores.

The rows (issue 14 item 3), re-measured in one run and interleaved over
``--rounds`` so load drift hits all of them alike:

``ort-1``       the model alone (the engine's own :class:`InferenceWorker`: guards,
                normalization, ONNX Runtime, output scaling) on a bundle in memory,
                1 core, 1 intra-op thread -- the limit;
``sc-split``    ``scopecast daemon --cpus 0`` + ``scopecast engine --cpus 1 --threads 1``;
``inproc-1``    what a pymmcore-plus user writes instead: a ``UniMMCore`` on the
                same simulated config, ``core.mda.run`` of a ``useq.MDASequence``
                of the package's inputs (time points until stopped; one snap per
                frame), the same worker in ``core.mda.events.frameReady`` once
                the bundle is in; 1 core, 1 thread;
``sc-shared``   daemon and engine both on cores 0-1, engine with 2 threads;
``inproc-2``    the in-process alternative on 2 cores with 2 threads;
``ort-2``       the model alone with 2 threads on 2 cores;
``sc-shared-demand``  as ``sc-shared``, live paced by the engine (``start_live
                pace_from=<engine results>``, daemon/pacing.py): each cycle is
                acquired just in time for the model instead of free-running.

``--extra`` adds the live cycle paced at a fixed interval, a camera whose exposure
takes time instead of CPU (the simulator's ``TimingModel=Realistic``), and
``sc-shared-demand-ipc``: paced, with both streams over ``ipc://``, as the README
advises for an engine on the same machine (a 4 MiB super-resolution result takes
~2.3 ms over loopback TCP, ~1.2 ms over a Unix socket).

The live cycle is the package's inputs: the six LED-array channels for virtual
staining, ``Membrane`` alone for super-resolution.

Every row runs in its own processes pinned with ``sched_setaffinity`` as the
row says (the measuring client of the scopecast rows runs on the daemon's
cores). The camera is the simulator with ``Noise=Off`` (bench_pipeline's
config). Both sides do identical work per bundle: the engine's worker class.

Latency is the same for every row: from the exposure start of the bundle's
first frame to the result being available to the user (in-process: the
callback has the output; scopecast: the measuring client has received the
result message). For the model-alone rows it is the worker's own time.
Throughput is results/s over the measured window (the first results, start-up,
are skipped). Each scopecast row also reports the daemon's and the engine's CPU
time per result (``/proc/<pid>/stat``) and the frames the daemon acquired per
result (frames acquired and superseded are CPU the model does not get).

Run: python benchmarks/bench_in_process.py [--rounds 3] [--seconds 8] [--size 512]
     [--model models/packages/virtual-staining] [--live] [--interval-ms 0]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_pipeline import _cfg, _port  # noqa: E402  (the same simulator config as the pipeline benchmark)

def _packages() -> Path:
    """The shipped packages of the scopecast being measured (its manifests match its code)."""
    from scopecast.models import packages_root

    return Path(packages_root())


ACCURATE = _packages() / "virtual-staining"


def cycle_of(pkg_dir: Path) -> list[str]:
    """The live cycle every row acquires: the package's inputs (the six LED-array channels for
    virtual staining, ``Membrane`` for super-resolution)."""
    from scopecast.daemon.inference.package import load_package

    return list(load_package(pkg_dir).manifest.inputs)


def live_tier_of(pkg_dir: Path) -> Path:
    """The real-time tier shipped beside ``pkg_dir`` (``<name>-live``)."""
    live = pkg_dir.with_name(pkg_dir.name + "-live")
    if not (live / "manifest.json").is_file():
        raise SystemExit(f"--live: no live tier {live} beside {pkg_dir}")
    return live
WARMUP_RESULTS = 2  # results skipped before the measured window (start-up, caches)


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    kind: str  # "ort", "inproc", "scopecast"
    cores: str  # the model's cores ("1", "0-1")
    threads: int  # intra-op threads (scopecast: 0 = the engine's default)
    daemon_cores: str = ""  # scopecast only
    pace: str = ""  # scopecast: live interval = this (model-alone) row's p50 in the same round
    camera: str = "Instant"  # the simulator's TimingModel: "Realistic" exposes for the exposure time + readout
    demand: bool = False  # scopecast: live paced by the engine (start_live pace_from: daemon/pacing.py)
    ipc: bool = False  # scopecast: frame and result streams over ipc:// (a Unix socket), as for a local engine
    inline: bool = False  # scopecast: the client takes results inline (`result`), not by shared memory (`shm`)


ROWS = (
    Row("ort-1", "ONNX Runtime alone, 1 core, 1 thread (the limit)", "ort", "1", 1),
    Row("sc-split", "scopecast daemon (core 0) + engine (core 1, 1 thread)", "scopecast", "1", 1, "0"),
    Row("inproc-1", "in-process: `core.mda.run` + the model in `frameReady`, 1 core, 1 thread", "inproc", "1", 1),
    Row("sc-shared", "scopecast, daemon and engine (2 threads) on both cores", "scopecast", "0-1", 2, "0-1"),
    Row("inproc-2", "in-process, 2 cores, 2 threads", "inproc", "0-1", 2),
    Row("ort-2", "ONNX Runtime alone, 2 cores, 2 threads", "ort", "0-1", 2),
    Row("sc-shared-demand", "scopecast on both cores (2 threads), live paced by the engine (`pace_from`)",
        "scopecast", "0-1", 2, "0-1", demand=True),
)
# --extra: the live cycle paced at the model's rate, and a camera whose exposure takes time, not CPU
EXTRA_ROWS = (
    Row("sc-shared-paced", "scopecast on both cores, live cycle paced at the model alone's p50 (`interval_ms`)",
        "scopecast", "0-1", 2, "0-1", pace="ort-2"),
    Row("sc-split-demand", "scopecast, daemon (core 0) + engine (core 1, 1 thread), live paced by the engine "
        "(`pace_from`)", "scopecast", "1", 1, "0", demand=True),
    Row("sc-shared-default", "scopecast on both cores, the engine's default threads (no `--threads`)",
        "scopecast", "0-1", 0, "0-1"),
    Row("inproc-2-real", "in-process, 2 cores, camera with real timing (10 ms exposure + 5 ms readout)",
        "inproc", "0-1", 2, camera="Realistic"),
    Row("sc-shared-real", "scopecast on both cores, camera with real timing", "scopecast", "0-1", 2, "0-1",
        camera="Realistic"),
    Row("sc-shared-real-demand", "scopecast on both cores, camera with real timing, live paced by the engine "
        "(`pace_from`)", "scopecast", "0-1", 2, "0-1", camera="Realistic", demand=True),
    Row("sc-shared-demand-ipc", "scopecast on both cores, live paced by the engine, streams over `ipc://`",
        "scopecast", "0-1", 2, "0-1", demand=True, ipc=True),
    Row("sc-shared-demand-ipc-inline", "the same, results inline (`result`) instead of by shared memory",
        "scopecast", "0-1", 2, "0-1", demand=True, ipc=True, inline=True),
)


def _cores(spec: str) -> set[int]:
    n = os.cpu_count() or 1
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return {c % n for c in out}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(done_ns: list[int], lat_ms: list[float], **extra: Any) -> dict[str, Any]:
    """Rate over the measured window and latency percentiles (warm-up results already skipped)."""
    rate = (len(done_ns) - 1) / ((done_ns[-1] - done_ns[0]) / 1e9) if len(done_ns) > 1 else 0.0
    a = np.array(lat_ms) if lat_ms else np.array([np.nan])
    return {"rate": rate, "n": len(done_ns), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), **extra}


def _sim_bundle(cfg: Path, cycle: list[str]) -> list[np.ndarray]:
    """One bundle of real simulator frames (the model alone must see what the camera makes:
    random pixels could trip the input guards, which then skip the model)."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    core = UniMMCore()
    core.loadSystemConfiguration(str(cfg))
    frames = []
    for c in cycle:
        core.setConfig("Channel", c)
        core.snapImage()
        frames.append(np.array(core.getImage()))
    core.unloadAllDevices()
    return frames


# ------------------------------------------------------------------ children
def child_ort(pkg_dir: Path, cfg: Path, threads: int, seconds: float, precision: str = "fp32") -> dict[str, Any]:
    """The model alone: the engine's worker back to back on one in-memory bundle."""
    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    package = load_package(pkg_dir, precision)
    cycle = list(package.manifest.inputs)
    frames = _sim_bundle(cfg, cycle)
    w = InferenceWorker(package, open_runtime(package, "ort-cpu", threads=threads))
    bundle = [StreamFrame({"channel": c, "seq": i, "bundle_id": 0, "acquisition_id": "ort"}, f)
              for i, (c, f) in enumerate(zip(cycle, frames, strict=True))]
    done, lat = [], []
    cpu0, k = time.process_time(), 0
    t_end = None
    while True:
        t0 = time.time_ns()
        w.process(bundle)
        t1 = time.time_ns()
        k += 1
        if k <= WARMUP_RESULTS:
            cpu0 = time.process_time()
            continue
        t_end = t_end or time.monotonic() + seconds
        done.append(t1)
        lat.append((t1 - t0) / 1e6)
        if time.monotonic() > t_end and len(done) >= 3:
            break
    return _summary(done, lat, cpu_per_result_ms=(time.process_time() - cpu0) / len(done) * 1e3)


def child_inproc(pkg_dir: Path, cfg: Path, threads: int, seconds: float, save: str = "",
                 bundles: int = 0, precision: str = "fp32") -> dict[str, Any]:
    """What a pymmcore-plus user writes: ``core.mda.run`` with the model in ``frameReady``."""
    import useq
    from pymmcore_plus.experimental.unicore import UniMMCore

    from scopecast.daemon.inference.package import load_package
    from scopecast.daemon.inference.runtimes import open_runtime
    from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame

    package = load_package(pkg_dir, precision)
    cycle = list(package.manifest.inputs)
    worker = InferenceWorker(package, open_runtime(package, "ort-cpu", threads=threads))
    core = UniMMCore()
    core.loadSystemConfiguration(str(cfg))

    # instrumentation, not user code: the exposure start of each snap (the daemon stamps it
    # at the same place, just before snapImage)
    snap = core.snapImage
    t_exposure: list[int] = [0]

    def stamped_snap(*a: Any) -> None:
        t_exposure[0] = time.time_ns()
        snap(*a)

    core.snapImage = stamped_snap  # type: ignore[method-assign]

    state: dict[str, Any] = {"bundle": {}, "first": 0, "k": 0, "t_end": None, "last": None}
    done: list[int] = []
    lat: list[float] = []
    cpu0 = [time.process_time()]

    @core.mda.events.frameReady.connect
    def on_frame(img: np.ndarray, event: useq.MDAEvent, meta: dict) -> None:  # the user's callback
        ch = event.channel.config
        if ch == cycle[0]:
            state["first"] = t_exposure[0]
            state["bundle"] = {}
        state["bundle"][ch] = img
        if len(state["bundle"]) < len(cycle):
            return
        frames = [StreamFrame({"channel": c, "seq": i, "bundle_id": state["k"], "acquisition_id": "mda"},
                              state["bundle"][c]) for i, c in enumerate(cycle)]
        result = worker.process(frames)
        t1 = time.time_ns()
        state["k"] += 1
        state["last"] = result
        if bundles:  # a fixed number of bundles, every one counted (tests)
            done.append(t1)
            lat.append((t1 - state["first"]) / 1e6)
            if state["k"] >= bundles:
                core.mda.cancel()
            return
        if state["k"] <= WARMUP_RESULTS:
            cpu0[0] = time.process_time()
            return
        state["t_end"] = state["t_end"] or time.monotonic() + seconds
        done.append(t1)
        lat.append((t1 - state["first"]) / 1e6)
        if time.monotonic() > state["t_end"] and len(done) >= 3:
            core.mda.cancel()

    # one snap per frame, as the daemon acquires: a single-channel cycle (super-resolution) would
    # otherwise run as a hardware sequence, the camera free-running and rendering frames the model never
    # sees on the model's own cores (and no snap to stamp the exposure start on)
    core.mda.engine.use_hardware_sequencing = False  # type: ignore[union-attr]
    seq = useq.MDASequence(channels=[{"config": c, "group": "Channel"} for c in cycle],
                           time_plan={"interval": 0, "loops": 100_000}, axis_order="tc")
    core.mda.run(seq)
    if save and state["last"] is not None:
        np.save(save, state["last"].data)
    n = max(len(done), 1)
    out = _summary(done, lat, cpu_per_result_ms=(time.process_time() - cpu0[0]) / n * 1e3,
                   results=state["k"])
    core.unloadAllDevices()
    return out


# ------------------------------------------------------------------ scopecast
def _wait_ready(client: Any, proc: subprocess.Popen, what: str, log: Path, timeout_s: float = 180.0) -> None:
    """Until ``proc`` answers ``status``; fails if it exits (e.g. its port was taken) or never answers."""
    t_end = time.monotonic() + timeout_s
    while True:
        try:
            client.request("status", timeout_s=1)
            return
        except TimeoutError:
            if proc.poll() is not None:
                raise RuntimeError(f"the {what} exited with code {proc.returncode} before answering:\n"
                                   f"{log.read_text()[-2000:]}") from None
            if time.monotonic() > t_end:
                raise RuntimeError(f"the {what} did not answer 'status' within {timeout_s:g} s") from None


def run_scopecast(pkg_dir: Path, cfg: Path, daemon_cores: str, engine_cores: str, threads: int, seconds: float,
                  tmp: Path, interval_ms: float = 0.0, save: str = "", bundles: int = 0,
                  engine_args: tuple[str, ...] = (), demand: bool = False, precision: str = "fp32",
                  ipc: bool = False, inline: bool = False) -> dict[str, Any]:
    """``scopecast daemon`` + ``scopecast engine`` as a user starts them; this process is the
    user's client (pinned with the daemon) and receives the results, by shared memory as every local
    client does (``inline``: as the pixels of ``result`` messages). ``ipc``: the frame and result
    streams over Unix sockets (the README's advice for an engine on the same machine), else loopback TCP."""
    import zmq

    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.shm_results import SharedResults
    from scopecast.daemon.stream import decode

    ctl, stream, results, ectl = _port(), _port(), _port(), _port()
    if ipc:
        stream, results = f"ipc://{tmp}/frames-{os.getpid()}", f"ipc://{tmp}/results-{os.getpid()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "scopecast.daemon.cli"]
    daemon = subprocess.Popen([*cli, "daemon", "--config", str(cfg), "--control", ctl, "--stream", stream,
                               "--data-dir", str(tmp / "data"), "--cpus", daemon_cores],
                              env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "daemon.log").open("w"))
    engine = subprocess.Popen([*cli, "engine", "--model", str(pkg_dir), "--stream", stream, "--results", results,
                               "--control", ectl, "--cpus", engine_cores,
                               *(["--threads", str(threads)] if threads > 0 else []),
                               "--runtime", "ort-cpu", "--precision", precision, *engine_args],
                              env=env, stdout=subprocess.DEVNULL, stderr=(tmp / "engine.log").open("w"))
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _cores(daemon_cores))
    ctx = zmq.Context.instance()
    first_exposure: dict[tuple[str, int], int] = {}
    stop = threading.Event()

    def frame_headers() -> None:  # exposure start of each bundle's first frame (headers only are kept)
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, 1000)
        s.setsockopt(zmq.SUBSCRIBE, b"frame")
        s.connect(stream)
        while not stop.is_set():
            if s.poll(100):
                parts = s.recv_multipart(copy=False)
                h = json.loads(bytes(parts[1]))
                if h.get("bundle_index") == 0:
                    first_exposure[(h["acquisition_id"], h["bundle_id"])] = h["t_exposure_start_ns"]
        s.close(linger=0)

    watcher = threading.Thread(target=frame_headers, daemon=True)
    watcher.start()
    sub = ctx.socket(zmq.SUB)
    if inline:
        sub.setsockopt(zmq.SUBSCRIBE, b"result")
    shared = None if inline else SharedResults(sub, results)
    sub.connect(results)
    try:
        with ControlClient(ctl, timeout_s=120) as c, ControlClient(ectl, timeout_s=120) as ec:
            _wait_ready(c, daemon, "daemon", tmp / "daemon.log")
            _wait_ready(ec, engine, "engine", tmp / "engine.log")
            t_join = time.monotonic() + 120  # the engine and the header watcher on the stream, us on the results
            while c.request("status")["stream"]["subscribers"] < 2 or ec.request("status")["subscribers"] < 1:
                if time.monotonic() > t_join:
                    raise RuntimeError("the subscriptions did not reach the daemon and the engine within 120 s")
                time.sleep(0.05)
            c.request("start_live", channels=cycle_of(pkg_dir), interval_ms=interval_ms,
                      **({"pace_from": [results]} if demand else {}))
            done: list[int] = []
            lat: list[float] = []
            k, t_end, last = 0, None, None
            cpu0 = {"daemon": 0.0, "engine": 0.0}
            frames0 = 0
            while True:
                t_wait = time.monotonic() + 120
                while not sub.poll(1000):
                    if time.monotonic() > t_wait:
                        raise RuntimeError(f"no result for 120 s (engine exit code {engine.poll()}, daemon "
                                           f"{daemon.poll()})")
                got = decode(sub.recv_multipart(copy=False))
                got = got if shared is None else shared.resolve(*got, copy=False)  # a view, checked
                t1 = time.time_ns()  # the pixels in the client's hands
                if got is None:  # a slot reused before it was read (or the switch to inline)
                    continue
                _, h, data = got
                k += 1
                # the engine names the bundle's first exposure (worker.py); older engines do not, and the
                # header watcher (one more subscriber: a little CPU on the daemon's cores) stands in
                t_first = h.get("t_bundle_exposure_start_ns") or first_exposure.get(
                    (h["acquisition_id"], h["bundle_id"]), 0)
                if h.get("t_bundle_exposure_start_ns"):
                    stop.set()
                last = np.array(data) if save else None  # a copy: the engine reuses its slots
                if bundles:
                    done.append(t1)
                    lat.append((t1 - t_first) / 1e6 if t_first else float("nan"))
                    if k >= bundles:
                        break
                    continue
                if k <= WARMUP_RESULTS:
                    cpu0 = {"daemon": _cpu_s(daemon.pid), "engine": _cpu_s(engine.pid)}
                    frames0 = c.request("status")["frames_acquired"]
                    continue
                t_end = t_end or time.monotonic() + seconds
                done.append(t1)
                if t_first:
                    lat.append((t1 - t_first) / 1e6)
                if time.monotonic() > t_end and len(done) >= 3:
                    break
            cpu = {"daemon": _cpu_s(daemon.pid) - cpu0["daemon"], "engine": _cpu_s(engine.pid) - cpu0["engine"]}
            frames = c.request("status")["frames_acquired"] - frames0
            c.request("stop")
            est = ec.request("status")
    finally:
        stop.set()
        sub.close(linger=0)
        if shared is not None:
            shared.close()
        os.sched_setaffinity(0, own)
        for p in (engine, daemon):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)
        watcher.join(timeout=2)
    if save and last is not None:
        np.save(save, np.array(last))
    n = max(len(done), 1)
    return _summary(done, lat, daemon_cpu_per_result_ms=cpu["daemon"] / n * 1e3,
                    engine_cpu_per_result_ms=cpu["engine"] / n * 1e3, frames_per_result=frames / n,
                    dropped=est["dropped"], results=k)


# ------------------------------------------------------------------ driver
def camera_cfg(size: int, tmp: Path, timing: str = "Instant") -> Path:
    """bench_pipeline's simulator config (noise off) with the camera's timing model."""
    cfg = _cfg(size, tmp)
    if timing == "Instant":
        return cfg
    p = cfg.with_name(f"{cfg.stem}-{timing.lower()}.cfg")
    p.write_text(cfg.read_text() + f"#py Property,Camera,TimingModel,{timing}\n")
    return p


def run_row(row: Row, pkg_dir: Path, cfg: Path, seconds: float, tmp: Path, interval_ms: float = 0.0,
            save: str = "", bundles: int = 0, precision: str = "fp32") -> dict[str, Any]:
    if row.kind == "scopecast":
        return run_scopecast(pkg_dir, cfg, row.daemon_cores, row.cores, row.threads, seconds, tmp,
                             interval_ms, save, bundles, demand=row.demand, precision=precision, ipc=row.ipc,
                             inline=row.inline)
    cmd = [sys.executable, __file__, "--child", row.kind, "--model", str(pkg_dir), "--precision", precision,
           "--cfg", str(cfg),
           "--threads", str(row.threads), "--seconds", str(seconds), "--save", save, "--bundles", str(bundles)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run(["taskset", "-c", row.cores, *cmd], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode:
        raise RuntimeError(f"{row.key} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _versions() -> str:
    import onnxruntime
    import pymmcore_plus
    import zmq

    import scopecast.daemon

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "daemon"],
                           capture_output=True, text=True).stdout.strip()
    src = Path(scopecast.daemon.__file__).resolve().parent.parent
    code = (f"scopecast {sha}{' with daemon/ modified' if dirty else ''}" if src == ROOT
            else f"scopecast imported from {src}, benchmark from checkout {sha}")
    return (f"python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, pymmcore-plus "
            f"{pymmcore_plus.__version__}, pyzmq {zmq.__version__}; {code}")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _fmt(vals: list[dict[str, Any]], key: str, digits: int) -> str:
    xs = [v[key] for v in vals]
    med = float(np.median(xs))
    return f"{med:.{digits}f} ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per row and round")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", default=str(ACCURATE), help="model package (default: the shipped virtual staining)")
    ap.add_argument("--live", action="store_true", help="also run every row with the live tier package")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="every row runs the packages' model file of this precision (int8: the INT8 variants)")
    ap.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], help="subset of the rows")
    ap.add_argument("--interval-ms", type=float, default=0.0, help="the scopecast live cycle's interval")
    ap.add_argument("--extra", action="store_true",
                    help="also the paced live cycle, the real-timing camera and the ipc:// rows (EXTRA_ROWS)")
    ap.add_argument("--json", default="", help="also write every measurement here")
    # child processes (one row, pinned by the parent)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", default="", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--save", default="", help=argparse.SUPPRESS)
    ap.add_argument("--bundles", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = child_ort if args.child == "ort" else child_inproc
        kw = {"save": args.save, "bundles": args.bundles} if args.child == "inproc" else {}
        kw["precision"] = args.precision
        print(json.dumps(fn(Path(args.model), Path(args.cfg), args.threads, args.seconds, **kw)), flush=True)
        # the figures are out: skip interpreter teardown, where the core's C++ notification thread can
        # re-enter a finalizing interpreter and abort ("FATAL: exception not rethrown"; see daemon/cli.py)
        os._exit(0)

    tmp = Path(tempfile.mkdtemp(prefix="scopecast-inproc-"))
    models = [Path(args.model)] + ([live_tier_of(Path(args.model))] if args.live else [])
    every = ROWS + EXTRA_ROWS
    rows = [r for r in every if r.key in args.rows or (args.extra and r in EXTRA_ROWS)]
    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rnd in range(args.rounds):
        for model in models:
            for row in rows:
                interval = args.interval_ms
                if row.pace:
                    interval = out[(model.name, row.pace)][-1]["p50"]
                r = run_row(row, model, camera_cfg(args.size, tmp, row.camera), args.seconds, tmp, interval,
                            precision=args.precision)
                r["interval_ms"] = interval
                out.setdefault((model.name, row.key), []).append(r)
                print(f"# round {rnd + 1} {model.name} {row.key}: {r['rate']:.2f}/s p50 {r['p50']:.1f} ms "
                      f"p95 {r['p95']:.1f} ms" + (f"; daemon {r['daemon_cpu_per_result_ms']:.1f} ms CPU/result, "
                                                  f"engine {r['engine_cpu_per_result_ms']:.1f}, "
                                                  f"{r['frames_per_result']:.1f} frames/result"
                                                  if row.kind == "scopecast" else
                                                  f"; {r['cpu_per_result_ms']:.1f} ms CPU/result"), flush=True)
    load1 = os.getloadavg()
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, {_cpu_model()}, {os.cpu_count()} cores; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after; {_versions()}")
    print(f"{args.size}² frames, simulated camera Noise=Off; {args.rounds} rounds of "
          f"{args.seconds:g} s per row, rows interleaved; median (min–max over rounds)\n")
    for model in models:
        print(f"model `{model.name}`{' (INT8 variant)' if args.precision == 'int8' else ''}, live cycle "
              f"{'/'.join(cycle_of(model))}\n")
        print("| configuration | results/s | exposure→result p50 ms | p95 ms | CPU per result |")
        print("| --- | --- | --- | --- | --- |")
        for row in rows:
            v = out[(model.name, row.key)]
            if row.kind == "scopecast":
                cpu = (f"daemon {np.median([x['daemon_cpu_per_result_ms'] for x in v]):.0f} ms + engine "
                       f"{np.median([x['engine_cpu_per_result_ms'] for x in v]):.0f} ms; "
                       f"{np.median([x['frames_per_result'] for x in v]):.1f} frames/result")
            else:
                cpu = f"{np.median([x['cpu_per_result_ms'] for x in v]):.0f} ms"
            print(f"| {row.label} | {_fmt(v, 'rate', 2)} | {_fmt(v, 'p50', 0)} | {_fmt(v, 'p95', 0)} | {cpu} |")
        ratios = []
        for a, b in (("sc-split", "inproc-1"), ("sc-shared", "inproc-2"), ("sc-shared-paced", "inproc-2"),
                     ("sc-split-demand", "inproc-1"), ("sc-shared-demand", "inproc-2"),
                     ("sc-shared-real", "inproc-2-real"), ("sc-shared-real-demand", "inproc-2-real"),
                     ("sc-shared-demand-ipc", "inproc-2"), ("sc-shared-demand-ipc-inline", "inproc-2"),
                     ("sc-shared-demand-ipc", "sc-shared-demand-ipc-inline")):
            if (model.name, a) in out and (model.name, b) in out:
                va, vb = out[(model.name, a)], out[(model.name, b)]
                tr = [x["rate"] / y["rate"] for x, y in zip(va, vb, strict=True)]
                dl = [x["p50"] - y["p50"] for x, y in zip(va, vb, strict=True)]
                ratios.append(f"{a} / {b}: throughput {np.median(tr):.2f}× ({min(tr):.2f}–{max(tr):.2f}), "
                              f"latency {np.median(dl):+.0f} ms ({min(dl):+.0f} to {max(dl):+.0f})")
        for a, b in (("sc-split", "ort-1"), ("sc-shared", "ort-2"), ("sc-shared-paced", "ort-2"),
                     ("sc-split-demand", "ort-1"), ("sc-shared-demand", "ort-2"), ("sc-shared-default", "ort-2"),
                     ("sc-shared-demand-ipc", "ort-2"), ("sc-shared-demand-ipc-inline", "ort-2")):
            if (model.name, a) in out and (model.name, b) in out:
                eff = [x["rate"] / y["rate"] for x, y in zip(out[(model.name, a)], out[(model.name, b)], strict=True)]
                ratios.append(f"efficiency {a} / {b}: {np.median(eff):.2f} ({min(eff):.2f}–{max(eff):.2f})")
        print("\n" + "\n".join(f"- {r}" for r in ratios) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{m}/{k}": v for (m, k), v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
