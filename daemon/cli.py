"""``scopecast`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .control import DEFAULT_CONTROL_ADDRESS
from .stream import DEFAULT_STREAM_ADDRESS

DEFAULT_CONFIG = "sim-ledarray.cfg"


def _pin(cpus: str) -> None:
    """Restrict this process to the listed cores ("0", "1-3", "0,2")."""
    if not cpus:
        return
    cores: set[int] = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    os.sched_setaffinity(0, cores)


def _daemon(args: argparse.Namespace) -> int:
    from .backend import BackendError, load_mmcore_backend
    from .service import Daemon

    _pin(args.cpus)
    try:
        backend = load_mmcore_backend(args.config)
    except BackendError as e:
        print(f"scopecast daemon: {e}", file=sys.stderr)
        return 2
    daemon = Daemon(backend, args.data_dir, args.control, args.stream).start()
    print(f"scopecast daemon: {args.config} loaded; control socket {daemon.control_address}; "
          f"frame stream {daemon.stream_address}; recording to {Path(args.data_dir).resolve()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: daemon._shutdown.set())
    try:
        daemon.wait_for_shutdown()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.close()
    print("scopecast daemon: stopped", flush=True)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    from .control import ControlClient, DaemonError

    try:
        cmd_args = json.loads(args.args) if args.args else {}
    except json.JSONDecodeError as e:
        print(f"scopecast ctl: --args is not valid JSON: {e}", file=sys.stderr)
        return 2
    with ControlClient(args.control, timeout_s=args.timeout) as client:
        try:
            result, parts = client.request_parts(args.cmd, **cmd_args)
        except (DaemonError, TimeoutError) as e:
            print(f"scopecast ctl: {e}", file=sys.stderr)
            return 1
    if parts and args.save:
        from .snapshot import autoscale, write_png
        import numpy as np

        h = result["frame"]
        img = np.frombuffer(parts[0], dtype=h["dtype"]).reshape(h["shape"])
        write_png(args.save, autoscale(img))
        result["saved"] = args.save
    print(json.dumps(result, indent=2))
    return 0


def _engine(args: argparse.Namespace) -> int:
    from .inference.package import PackageError
    from .inference.runtimes import RuntimeUnavailable

    _pin(args.cpus)
    try:
        if args.offline:
            from .inference.offline import run_offline

            report = run_offline(args.model, args.offline, runtime=args.runtime)
            print(f"scopecast engine: {report.inferred}/{report.bundles} bundles inferred -> {report.output}")
            for s in report.skipped:
                print(f"  skipped {s}")
            return 0 if report.inferred or not report.bundles else 1
        from .inference.engine import InferenceEngine

        engine = InferenceEngine(args.model, args.stream, args.results, args.control, workers=args.workers,
                                 runtime=args.runtime, policy=args.policy, threads=args.threads).start()
    except (PackageError, RuntimeUnavailable, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"scopecast engine: {e}", file=sys.stderr)
        return 2
    m = engine.describe_model()
    print(f"scopecast engine: model {m['name']} ({m['sha256'][:12]}) on {m['runtime']['runtime']} x{args.workers}; "
          f"frames from {args.stream}; results on {engine.results_address}; control {args.control}", flush=True)
    for reason in m["skipped_runtimes"]:
        print(f"  not used: {reason}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(args.print_every or 3600):
            if args.print_every:
                st = engine.status()
                lat = st["latency_ms"].get("end_to_end", {})
                print(f"  results {st['results_published']:6d}  {st['results_per_s']:6.1f}/s  end-to-end p50 "
                      f"{lat.get('p50', float('nan')):6.1f} ms p99 {lat.get('p99', float('nan')):6.1f} ms  "
                      f"dropped {st['dropped']}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(config=args.config, out_dir=Path(args.out), seconds=args.seconds)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scopecast",
        description="Live deep-learning inference beside a Micro-Manager microscope. "
        "Without a hardware config, everything runs on the simulated LED-array microscope.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("daemon", help="run the acquisition daemon (owns the microscope)",
                       description="Load a Micro-Manager config and serve the microscope on the control socket.")
    d.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"Micro-Manager .cfg (path, or a shipped name; default {DEFAULT_CONFIG}: the simulator)")
    d.add_argument("--data-dir", default="data", help="where recordings go (default ./data)")
    d.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS,
                   help=f"control socket address (default {DEFAULT_CONTROL_ADDRESS}, loopback only)")
    d.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS,
                   help=f"frame stream address (default {DEFAULT_STREAM_ADDRESS})")
    d.add_argument("--cpus", default="", help="pin to these cores, e.g. 0 or 0-1 (keep them apart from the engine's)")
    d.set_defaults(func=_daemon)

    c = sub.add_parser("ctl", help="send one control command to a running daemon",
                       description="Send one command; prints the JSON result. Example: "
                       "scopecast ctl snap --args '{\"channel\": \"DF\"}' --save df.png")
    c.add_argument("cmd", help="command name (status, describe, snap, start_live, stop, move_stage, ...)")
    c.add_argument("--args", default="", help="JSON object of arguments")
    c.add_argument("--save", default="", help="for snap: write the frame as an auto-scaled PNG")
    c.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS)
    c.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    c.set_defaults(func=_ctl)

    e = sub.add_parser("engine", help="run the inference engine on the daemon's frame stream",
                       description="Load a model package, receive bundles from the frame stream, "
                       "publish results. With --offline, run over a recording instead.")
    e.add_argument("--model", required=True, help="model package directory (manifest.json + model.onnx)")
    e.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS, help="daemon frame stream to subscribe to")
    e.add_argument("--results", default="tcp://127.0.0.1:5557", help="address to publish results on")
    e.add_argument("--control", default="tcp://127.0.0.1:5558", help="engine control socket")
    e.add_argument("--workers", type=int, default=1, help="inference workers (threads with own sessions)")
    e.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per worker (default: (cores - 1) / workers)")
    e.add_argument("--runtime", default="auto",
                   help="auto (fastest available), tensorrt, ort-tensorrt, ort-cuda or ort-cpu")
    e.add_argument("--policy", default="live", choices=["live", "all"],
                   help="live: infer the newest bundle, drop older ones (counted); all: queue every bundle")
    e.add_argument("--offline", default="", help="run over this OME-Zarr recording and write results beside it")
    e.add_argument("--print-every", type=float, default=0.0, help="print throughput/latency every N s")
    e.add_argument("--cpus", default="", help="pin to these cores, e.g. 1 or 2-7 (apart from the daemon's)")
    e.set_defaults(func=_engine)

    m = sub.add_parser("demo", help="the main job on the simulated scope, headless",
                       description="Start the daemon on the simulated LED-array scope, run live, "
                       "print frame rates and latencies, capture dual-modality pairs and write "
                       "a snapshot PNG.")
    m.add_argument("--config", default=DEFAULT_CONFIG)
    m.add_argument("--out", default="demo-output", help="folder for the snapshot and recordings")
    m.add_argument("--seconds", type=float, default=5.0, help="how long to run live")
    m.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)
    for noisy in ("zarr", "asyncio", "numcodecs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
