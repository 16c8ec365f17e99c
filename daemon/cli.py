"""``scopecast`` command line: one console script, one subcommand per job."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
from pathlib import Path

from .cli_ctl import add_ctl_parser
from .cli_logging import configure_logging
from .control import DEFAULT_CONTROL_ADDRESS
from .stream import DEFAULT_STREAM_ADDRESS

DEFAULT_CONFIG = "sim-ledarray.cfg"


def cpu_list(value: str) -> str:
    """A ``--cpus`` value: cores as ``0``, ``1-3`` or ``0,2``, every one a core this process may run on.

    Checked on the command line (``argparse.ArgumentTypeError`` naming the problem), so a mistyped list is a
    one-line usage error, not a traceback from ``sched_setaffinity`` (nor, under ``scopecast up``, a child
    that dies at every restart)."""
    text = value.strip()
    if not text:
        return ""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    shown = ",".join(map(str, usable))
    cores: set[int] = set()
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"{value!r} is not a list of cores such as 0, 1-3 or 0,2")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise argparse.ArgumentTypeError(f"{value!r}: the range {part.strip()} holds no core")
        if last > usable[-1]:
            raise argparse.ArgumentTypeError(f"{value!r}: there is no core {last} to run on here (cores: {shown})")
        cores.update(range(first, last + 1))
    missing = sorted(cores - set(usable))
    if missing:
        raise argparse.ArgumentTypeError(f"{value!r}: this process may not run on core(s) "
                                         f"{', '.join(map(str, missing))} (cores: {shown})")
    return text


def _pin(cpus: str) -> None:
    """Restrict this process to the listed cores ("0", "1-3", "0,2")."""
    if not cpus:
        return
    cores: set[int] = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    os.sched_setaffinity(0, cores)


def address(value: str, bind: bool = False) -> str:
    """A ZeroMQ endpoint given on the command line, checked and normalised.

    ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``; a bare ``HOST:PORT``
    means ``tcp://HOST:PORT``. A port is 1-65535; ``*`` or ``0`` (any free port)
    only where the address is bound. Raises ``argparse.ArgumentTypeError`` with
    a one-line message naming the problem.
    """
    text = value.strip()
    if "://" not in text and ":" in text and "/" not in text:
        text = "tcp://" + text
    scheme, sep, rest = text.partition("://")
    example = "expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a ZeroMQ address ({example})")
    if not rest:
        raise argparse.ArgumentTypeError(f"{value!r} names no {'path' if scheme == 'ipc' else 'endpoint'}")
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or any(c.isspace() for c in rest):
            raise argparse.ArgumentTypeError(f"{value!r} lacks a host or port ({example})")
        if port in ("*", "0"):
            if not bind:
                raise argparse.ArgumentTypeError(f"{value!r}: a client needs the server's actual port, not {port!r}")
        elif not port.isdigit() or not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"{value!r}: port {port!r} is not a number in 1-65535")
    return text


def bind_address(value: str) -> str:
    """:func:`address` for a socket this process binds (``*`` ports allowed)."""
    return address(value, bind=True)


def _optional_address(value: str) -> str:
    """:func:`address`, or "" for none."""
    return address(value) if value.strip() else ""


def _address_list(value: str) -> str:
    """Comma-separated :func:`address` values (``RESULTS,CONTROL`` of an engine)."""
    return ",".join(address(v) for v in value.split(","))


def _unbindable(*addresses: str) -> str:
    """Why one of the TCP ``addresses`` cannot be listened on now ("" if all can).

    Probed with plain sockets (bound with ``SO_REUSEADDR`` like ZeroMQ's, all held
    at once, closed synchronously), so that a port clash is found before any
    hardware is touched. Any-port (``*``, ``0``) and other non-TCP addresses pass, except an ``ipc://`` path
    given twice or one a process listens on (ZeroMQ would take it from that process without a word).
    """
    import errno
    import socket

    probes: list[socket.socket] = []
    try:
        for a in addresses:
            scheme, _, rest = a.partition("://")
            if scheme == "ipc":
                from .security import ipc_in_use

                if addresses.count(a) > 1:
                    return f"cannot listen on {a}: it is given for two sockets"
                if ipc_in_use(a):
                    return f"cannot listen on {a}: Address already in use (is another scopecast daemon or " \
                        "engine running there?)"
                continue
            host, _, port = rest.rpartition(":")
            if scheme != "tcp" or not port.isdigit() or int(port) == 0:
                continue
            host = "" if host == "*" else host.strip("[]")
            try:
                infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror:
                continue  # an interface name ZeroMQ resolves itself: let the real bind judge
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            probes.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(sockaddr)
                sock.listen(1)
            except OSError as e:
                hint = " (is another scopecast daemon or engine running there?)" if e.errno == errno.EADDRINUSE else ""
                return f"cannot listen on {a}: {e.strerror}{hint}"
        return ""
    finally:
        for sock in probes:
            sock.close()


def _daemon(args: argparse.Namespace) -> int:
    import zmq

    from .backend import BackendError, load_mmcore_backend
    from .service import Daemon

    _pin(args.cpus)
    # hand the GIL over every 1 ms (default 5 ms): the control thread answers status promptly
    # while acquisition, stream and trigger threads run Python code
    sys.setswitchinterval(0.001)
    # sockets first: a second daemon on the same ports must not touch the first one's hardware.
    # The probe names the address in use; the Daemon then binds its sockets before it calls
    # the backend factory, so a port taken since the probe also fails before the hardware.
    problem = _unbindable(args.control, args.stream)
    if problem:
        print(f"scopecast daemon: {problem}; the hardware config was not loaded", file=sys.stderr)
        return 2
    try:  # the data directory too, before the hardware: recording needs it, and a refusal is one line
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or e
        print(f"scopecast daemon: cannot use data directory {args.data_dir}: {why}; the hardware "
              "config was not loaded", file=sys.stderr)
        return 2
    _finalise_interrupted(args.data_dir)
    if args.backend == "mmcore":
        def backend():
            return load_mmcore_backend(args.config)
    else:
        from .pycromanager_backend import load_pycromanager_backend

        def backend():
            if args.backend == "pycromanager-bridge":  # the running Micro-Manager's own configuration
                return load_pycromanager_backend(bridge=True, port=args.bridge_port)
            return load_pycromanager_backend(args.config)
    try:
        from .recording import RecordingCap

        cap = RecordingCap(max_bytes=args.record_max_bytes, max_frames=args.record_max_frames)
        daemon = Daemon(backend, args.data_dir, args.control, args.stream, trigger_dirs=args.trigger_dir or None,
                        trigger_modules=args.allow_trigger, record_cap=cap, ngff=args.ngff).start()
    except BackendError as e:
        print(f"scopecast daemon: {e}", file=sys.stderr)
        return 2
    except zmq.ZMQError as e:
        print(f"scopecast daemon: cannot listen: {e}; the hardware config was not loaded", file=sys.stderr)
        return 2
    except ValueError as e:  # an address or data directory refused
        print(f"scopecast daemon: {e}", file=sys.stderr)
        return 2
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
    # Destroy the core now, not during interpreter shutdown: its C++ notification thread
    # re-entering a finalizing interpreter aborts the process (see backend.load_mmcore_backend).
    del daemon
    gc.collect()
    return 0


def _engine(args: argparse.Namespace) -> int:
    import zmq

    from .inference.package import PackageError
    from .inference.runtimes import RuntimeUnavailable

    _pin(args.cpus)
    if not args.offline:
        problem = _unbindable(args.results, args.control)
        if problem:
            print(f"scopecast engine: {problem}", file=sys.stderr)
            return 2
    try:
        if args.offline:
            from .inference.offline import run_offline

            report = run_offline(args.model, args.offline, runtime=args.runtime, precision=args.precision,
                                 threads=args.threads, uncertainty=args.uncertainty,
                                 uncertainty_budget=args.uncertainty_budget,
                                 uncertainty_morphology=args.uncertainty_morphology or None)
            print(f"scopecast engine: {report.summary()} -> {report.output or 'nothing written'}")
            for s in report.skipped:
                print(f"  skipped {s}")
            return 0 if report.inferred or not report.bundles else 1
        from .inference.engine import InferenceEngine

        engine = InferenceEngine(args.model, args.stream, args.results, args.control, workers=args.workers,
                                 runtime=args.runtime, policy=args.policy, threads=args.threads,
                                 model_dirs=args.model_dir or None, precision=args.precision,
                                 uncertainty=args.uncertainty, uncertainty_budget=args.uncertainty_budget,
                                 uncertainty_morphology=args.uncertainty_morphology or None).start()
    except (PackageError, RuntimeUnavailable, ValueError, RuntimeError, FileNotFoundError, FileExistsError,
            zmq.ZMQError) as e:
        print(f"scopecast engine: {e}", file=sys.stderr)
        return 2
    m = engine.describe_model()
    print(f"scopecast engine: model {m['name']} ({m['sha256'][:12]}) on {m['runtime']['runtime']} x{args.workers}; "
          f"frames from {args.stream}; results on {engine.results_address}; control {args.control}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(args.print_every or 3600):
            if args.print_every:
                st = engine.status()
                lat = st["latency_ms"].get("end_to_end", {})
                latency = (f"end-to-end p50 {lat['p50']:6.1f} ms p99 {lat['p99']:6.1f} ms" if "p50" in lat
                           else "no result yet")
                print(f"  results {st['results_published']:6d}  {st['results_per_s']:6.1f}/s  {latency}  "
                      f"dropped {st['dropped']}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()
    return 0


def _gui(args: argparse.Namespace) -> int:
    from scopecast.gui.app import run_gui

    engines = [tuple((e.split(",") + [""])[:2]) for e in args.engine]
    return run_gui(args.control, args.stream, engines, screenshot=args.screenshot, frames=args.frames,
                   timeout_s=args.timeout)


def _replay(args: argparse.Namespace) -> int:
    from .triggers import replay

    try:
        decisions = replay(args.triggers, args.results)
    except (ValueError, OSError) as e:  # a missing or wrong file, a config that does not validate: one line
        print(f"scopecast replay: {e}", file=sys.stderr)
        return 2
    lines = [json.dumps(d.key()) for d in decisions]
    if args.out:
        Path(args.out).write_text("\n".join(lines) + ("\n" if lines else ""))
    for d in decisions:
        print(f"{d.t_ns} {d.trigger:<16} {d.event:<10} value {d.measurement if d.measurement is not None else float('nan'):.4f} "
              f"bundle {d.bundle_id} {d.reason}{' -> ' + ', '.join(d.actions) if d.actions else ''}")
    print(f"scopecast replay: {len(decisions)} decisions, {sum(d.event == 'fire' for d in decisions)} fired")
    return 0


def _repair(args: argparse.Namespace) -> int:
    from .recording import RecordingInUse, repair_recording

    rc = 0
    for path in args.recordings:
        try:
            print(f"scopecast repair: {repair_recording(path)}")
        except (ValueError, OSError, RecordingInUse) as e:  # not a recording, still open, a disk error
            print(f"scopecast repair: {e}", file=sys.stderr)
            rc = 2
    return rc


def _finalise_interrupted(data_dir: str) -> None:
    """The recordings a killed daemon (or engine) left unclosed in ``data_dir``: finalised before the
    hardware loads, each said in one line; one that cannot be is named and left as it is."""
    from .recording import interrupted_recordings, repair_recording

    for path in interrupted_recordings(data_dir):
        try:
            print(f"scopecast daemon: {repair_recording(path)}", flush=True)
        except Exception as e:  # noqa: BLE001 - the daemon starts anyway; the recording keeps its frames
            print(f"scopecast daemon: could not finalise interrupted recording {path}: {type(e).__name__}: {e}; "
                  f"its durable frames are intact ('scopecast repair {path}' retries)", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from .supervisor import EngineSpec, Supervisor

    if args.engine:
        specs = args.engine
    elif args.no_engines:
        specs = []
    else:
        from .demo import shipped_packages

        specs = [str(p) for p in shipped_packages(args.tier)]
    engines = []
    for i, spec in enumerate(specs):
        model, *addrs = spec.split(",")
        if len(addrs) > 2:
            print(f"scopecast up: --engine {spec!r}: expected MODEL[,RESULTS[,CONTROL]]", file=sys.stderr)
            return 2
        defaults = [f"tcp://127.0.0.1:{5557 + 2 * i}", f"tcp://127.0.0.1:{5558 + 2 * i}"]
        try:
            results, control = (bind_address(a) for a in [*addrs, *defaults[len(addrs):]])
        except argparse.ArgumentTypeError as e:
            print(f"scopecast up: --engine {spec!r}: {e}", file=sys.stderr)
            return 2
        engines.append(EngineSpec(model, results, control))
    if args.precision != "fp32":  # every engine runs that variant: a package without one starts nothing
        from .inference.package import PackageError, load_package

        for e in engines:
            try:
                load_package(e.model, args.precision)
            except PackageError as err:
                print(f"scopecast up: --precision {args.precision}: {err}; nothing was started", file=sys.stderr)
                return 2
    daemon_args = ["--config", args.config, "--data-dir", args.data_dir, "--backend", args.backend]
    daemon_args += ["--cpus", args.cpus] if args.cpus else []
    daemon_args += [a for d in args.trigger_dir for a in ("--trigger-dir", d)]
    daemon_args += [a for t in args.allow_trigger for a in ("--allow-trigger", t)]
    engine_args = ["--runtime", args.runtime, "--precision", args.precision, "--workers", str(args.workers),
                   "--policy", args.policy,
                   "--uncertainty", str(args.uncertainty), "--uncertainty-budget", str(args.uncertainty_budget)]
    engine_args += ["--uncertainty-morphology", args.uncertainty_morphology] if args.uncertainty_morphology else []
    if args.keys:
        daemon_args += ["--keys", args.keys]
        engine_args += ["--keys", args.keys]
    engine_args += ["--threads", str(args.threads)] if args.threads else []
    engine_args += ["--cpus", args.engine_cpus] if args.engine_cpus else []
    sup = Supervisor(daemon_args, args.control, args.stream, engines, engine_args, verbose=args.verbose,
                     warm_spares=not args.no_spares)
    problem = _unbindable(sup.control, sup.stream, *(a for e in sup.engines for a in (e.results, e.control)))
    if problem:
        print(f"scopecast up: {problem}; nothing was started", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sup.stop())
    signal.signal(signal.SIGINT, lambda *_: sup.stop())
    return sup.run()


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(config=args.config, out_dir=Path(args.out), seconds=args.seconds,
                    headless=True if args.headless else None)


def _keys(args: argparse.Namespace) -> int:
    from .security import create_keys

    try:
        d = create_keys(args.dir, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"scopecast keys: {e}", file=sys.stderr)
        return 2
    print(f"scopecast keys: server and client key pairs in {d}\n"
          f"  servers (daemon, engine): --keys {d}  (they use server.key_secret and admit the public keys in "
          f"{d / 'authorized_clients'})\n"
          f"  clients (ctl, gui, engines, other hosts): copy server.key and client.key_secret, then --keys DIR")
    return 0


def _add_keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keys", default="", metavar="DIR",
                        help="CurveZMQ key directory from 'scopecast keys DIR': every socket authenticates and "
                        "encrypts (required to listen off loopback)")


def _add_trigger_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trigger-dir", action="append", default=[], metavar="DIR",
                        help="directory load_triggers may read configuration files from (repeatable; "
                        "default: the data directory)")
    parser.add_argument("--allow-trigger", action="append", default=[], metavar="MODULE:CLASS",
                        help="a Python trigger class configurations may name (repeatable; default: none)")


def _add_uncertainty_check_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uncertainty-budget", type=float, default=0.025,
                        help="share of inference time the uncertainty check may add (its verdict, against the "
                        "package's validated threshold, can make results untrusted); a super-resolution "
                        "package's consistency check gets 0.4 x this on top; 0: both off")
    parser.add_argument("--uncertainty-morphology", default="",
                        help="the specimen's training morphology, whose validated uncertainty threshold applies "
                        "(default: the largest of the package's)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scopecast",
        description="Live deep-learning inference beside a Micro-Manager microscope. "
        "Without a hardware config, everything runs on the simulated LED-array microscope.",
    )
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log debug messages, pymmcore-plus's (hardware adapters) included")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only (no progress lines)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("daemon", help="run the acquisition daemon (owns the microscope)",
                       description="Load a Micro-Manager config and serve the microscope on the control socket.")
    d.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"Micro-Manager .cfg (path, or a shipped name; default {DEFAULT_CONFIG}: the simulator)")
    d.add_argument("--data-dir", default="data", help="where recordings go (default ./data)")
    d.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS, type=bind_address,
                   help=f"control socket address (default {DEFAULT_CONTROL_ADDRESS}, loopback only)")
    d.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS, type=bind_address,
                   help=f"frame stream address (default {DEFAULT_STREAM_ADDRESS})")
    d.add_argument("--cpus", default="", type=cpu_list,
                   help="pin to these cores, e.g. 0 or 0-1 (keep them apart from the engine's)")
    d.add_argument("--backend", default="mmcore", choices=["mmcore", "pycromanager", "pycromanager-bridge"],
                   help="mmcore: pymmcore-plus (simulator and C++ adapters); pycromanager: its Python backend "
                   "(C++ adapters only); pycromanager-bridge: a running Micro-Manager (docs/pycromanager.md)")
    d.add_argument("--bridge-port", type=int, default=4827, help="pycromanager-bridge: the Java bridge's port")
    d.add_argument("--record-max-bytes", type=int, default=None, help="cap every live recording (raw bytes)")
    d.add_argument("--record-max-frames", type=int, default=None, help="cap every live recording (frames)")
    d.add_argument("--ngff", default="0.4", choices=["0.4", "0.5"],
                   help="OME-Zarr version of recordings (0.4: zarr v2, read most widely; 0.5: zarr v3)")
    _add_trigger_options(d)
    _add_keys_option(d)
    d.set_defaults(func=_daemon)

    k = sub.add_parser("keys", help="create CurveZMQ key pairs (to listen off loopback, or to encrypt)",
                       description="Create server and client key pairs in DIR (see docs/protocol.md, "
                       "'Where sockets listen, and authentication').")
    k.add_argument("dir", help="directory to create the keys in")
    k.add_argument("--overwrite", action="store_true", help="replace keys already there")
    k.set_defaults(func=_keys)

    add_ctl_parser(sub, address, _add_keys_option)

    e = sub.add_parser("engine", help="run the inference engine on the daemon's frame stream",
                       description="Load a model package, receive bundles from the frame stream, "
                       "publish results. With --offline, run over a recording instead.")
    e.add_argument("--model", required=True, help="model package directory (manifest.json + model.onnx)")
    e.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS, type=address, help="daemon frame stream to subscribe to")
    e.add_argument("--results", default="tcp://127.0.0.1:5557", type=bind_address, help="address to publish results on")
    e.add_argument("--control", default="tcp://127.0.0.1:5558", type=bind_address, help="engine control socket")
    e.add_argument("--workers", type=int, default=1, help="inference workers (threads with own sessions)")
    e.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per worker (default: (cores - 1) / workers)")
    e.add_argument("--runtime", default="auto",
                   help="auto (fastest available), tensorrt, ort-tensorrt, ort-cuda, ort-cpu, or "
                   "triton://HOST:PORT/MODEL (a Triton server; docs/triton.md)")
    e.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8: the package's INT8 variant (exists only where it kept fidelity: scopecast export --int8)")
    e.add_argument("--uncertainty", type=int, default=0, choices=[0, 2, 4, 8],
                   help="per-pixel uncertainty from N flipped/rotated copies (extra '<output>:std' channels and "
                   "trust.uncertainty; costs about N inferences)")
    _add_uncertainty_check_options(e)
    e.add_argument("--policy", default="live", choices=["live", "all"],
                   help="live: infer the newest bundle, drop older ones (counted); all: queue every bundle")
    e.add_argument("--offline", default="", help="run over this OME-Zarr recording and write results beside it")
    e.add_argument("--print-every", type=float, default=0.0, help="print throughput/latency every N s")
    e.add_argument("--cpus", default="", type=cpu_list,
                   help="pin to these cores, e.g. 1 or 2-7 (apart from the daemon's)")
    e.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="directory load_model may load packages from (repeatable; default: the model's parent "
                   "directory and the shipped packages)")
    _add_keys_option(e)
    e.set_defaults(func=_engine)

    from .cli_models import add_model_commands  # here: it imports this module's helpers

    add_model_commands(sub)

    v = sub.add_parser("gui", help="the live viewer (a client of the daemon and engine sockets)",
                       description="Raw and inferred images, latency figures and acquisition controls.")
    v.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS, type=address, help="daemon control socket")
    v.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS, type=address, help="daemon frame stream")
    v.add_argument("--engine", action="append", default=[], type=_address_list,
                   help="RESULTS[,CONTROL] of an engine (repeat for several), e.g. "
                   "tcp://127.0.0.1:5557,tcp://127.0.0.1:5558")
    v.add_argument("--screenshot", default="", help="render to this PNG after --frames results and exit")
    v.add_argument("--frames", type=int, default=20, help="results (or raw frames without an engine) before --screenshot")
    v.add_argument("--timeout", type=float, default=120.0, help="give up waiting for frames after this many s")
    _add_keys_option(v)
    v.set_defaults(func=_gui)

    r = sub.add_parser("replay", help="run smart-acquisition triggers over recorded results (tune thresholds)",
                       description="Replay triggers over the results of 'scopecast engine --offline' on a "
                       "recording: the decisions live operation would take, without the microscope.")
    r.add_argument("--triggers", required=True, help="trigger config (.yaml or .json)")
    r.add_argument("--results", required=True, help="results recording from 'scopecast engine --offline'")
    r.add_argument("--out", default="", help="write the decision log (JSON lines) here")
    r.set_defaults(func=_replay)

    f = sub.add_parser("repair", help="finalise recordings whose process died before closing them",
                       description="Finalise OME-Zarr recordings left unclosed by a killed daemon or engine, "
                       "from their frame journals: trim the time axis to the frames that are durable, write "
                       "the OME-XML planes, time step and display windows, and mark them complete: false "
                       "with the reason. Closed recordings are left as they are; the daemon does this at "
                       "start for its data directory.")
    f.add_argument("recordings", nargs="+", metavar="RECORDING", help="an .ome.zarr recording")
    f.set_defaults(func=_repair)

    u = sub.add_parser("up", help="run the daemon and engines as supervised processes (restarts dead engines)",
                       description="Start the daemon and one engine per model as child processes; restart "
                       "any that dies (SIGKILL included) with back-off, on the same addresses; stop them "
                       "all cleanly on SIGTERM or Ctrl-C. Exits when the daemon is shut down "
                       "('scopecast ctl shutdown').")
    u.add_argument("--config", default=DEFAULT_CONFIG, help="Micro-Manager .cfg for the daemon")
    u.add_argument("--data-dir", default="data", help="where recordings go (default ./data)")
    u.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS, type=bind_address, help="daemon control socket")
    u.add_argument("--stream", default=DEFAULT_STREAM_ADDRESS, type=bind_address, help="daemon frame stream")
    u.add_argument("--engine", action="append", default=[], metavar="MODEL[,RESULTS[,CONTROL]]",
                   help="an engine: model package, and the addresses it binds (default: results "
                   "tcp://127.0.0.1:5557, control :5558, the next engine :5559/:5560, ...); repeat for "
                   "several. Without --engine: the shipped models")
    u.add_argument("--backend", default="mmcore", choices=["mmcore", "pycromanager"], help="see 'scopecast daemon'")
    u.add_argument("--tier", default="accurate", choices=["accurate", "live"],
                   help="without --engine: the shipped accurate models, or their real-time tier (*-live)")
    u.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="every engine runs its package's model of this precision (int8: the INT8 variant, which "
                   "exists only where it kept fidelity; a package without one starts nothing)")
    u.add_argument("--no-engines", action="store_true", help="supervise the daemon alone")
    u.add_argument("--no-spares", action="store_true",
                   help="no warm spare interpreter per engine (saves its memory; restarts take longer)")
    u.add_argument("--runtime", default="auto", help="engine runtime (see 'scopecast engine --help')")
    u.add_argument("--workers", type=int, default=1, help="inference workers per engine")
    u.add_argument("--uncertainty", type=int, default=0, choices=[0, 2, 4, 8], help="see 'scopecast engine'")
    _add_uncertainty_check_options(u)
    u.add_argument("--threads", type=int, default=None, help="intra-op threads per engine worker")
    u.add_argument("--policy", default="live", choices=["live", "all"], help="engine bundle policy")
    u.add_argument("--cpus", default="", type=cpu_list, help="pin the daemon to these cores")
    u.add_argument("--engine-cpus", default="", type=cpu_list, help="pin the engines to these cores")
    _add_trigger_options(u)
    _add_keys_option(u)
    u.set_defaults(func=_up)

    m = sub.add_parser("demo", help="the main job: simulated scope + shipped models, GUI or headless",
                       description="Start the daemon on the simulated LED-array scope and the shipped "
                       "models' engines, run live; with a display open the GUI, without one print "
                       "latency figures and write a snapshot PNG of raw and inferred frames; then "
                       "capture dual-modality pairs.")
    m.add_argument("--config", default=DEFAULT_CONFIG)
    m.add_argument("--out", default="demo-output", help="folder for the snapshot and recordings")
    m.add_argument("--seconds", type=float, default=10.0, help="how long to run live (headless)")
    m.add_argument("--headless", action="store_true", help="no GUI even when a display is present")
    _add_keys_option(m)
    m.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from .supervisor import die_with_parent

    die_with_parent()  # a child of 'scopecast up' ends with it
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "ctl":  # ctl takes its command's options from the server (cli_ctl)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    configure_logging(args.verbose, args.quiet)
    if getattr(args, "keys", ""):
        from .security import KeysMissing, use_keys

        try:
            use_keys(args.keys)
        except KeysMissing as e:
            print(f"scopecast {args.command}: {e}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into a reader that stopped early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
