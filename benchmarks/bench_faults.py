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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: A file name no request may create anywhere (hostile paths aim at it).
ESCAPE = "scopecast-fuzz-escape"
HOSTILE_STRINGS = [
    "../../etc/passwd", f"x/../../{ESCAPE}", f"../../{ESCAPE}", f"/tmp/{ESCAPE}", f"..\\..\\{ESCAPE}",
    f"{ESCAPE}/../../../{ESCAPE}", "..", ".", "", "\u0000", "con", "~/.ssh/id_rsa", f"file:///tmp/{ESCAPE}",
    "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "/proc/self/environ", "x" * 65536, "\udcff", "a\nb",
]
WRONG_VALUES: dict[str, list[Any]] = {  # never None: null is a valid "default" for optional arguments
    "num": [True, False, "25", "1e3", "", [], {}, [1.0], {"v": 1}],
    "int": [True, 1.5, "3", [], {}],
    "str": [1, 2.5, True, [], {}, ["DF"], {"name": "DF"}],
    "bool": ["yes", "true", 1, 0, 2.5, [], {}],
    "list": ["DPC-Left", 5, True, {"name": "DF"}],
    "dict": [[], "x", 5, True, [["a", 1]]],
}
#: Control commands and the kind of each argument; never ``shutdown`` (it would stop the daemon, rightly).
DAEMON_COMMANDS: dict[str, dict[str, str]] = {
    "status": {}, "describe": {}, "jobs": {}, "triggers": {}, "unload_triggers": {},
    "snap": {"channel": "str", "exposure_ms": "num", "detector": "str", "record": "bool"},
    "start_live": {"channels": "list", "exposure_ms": "num", "interval_ms": "num", "max_cycles": "int",
                   "record": "bool"},
    "stop": {"job": "str"}, "set_channel": {"channel": "str"}, "set_pattern": {"pattern": "str"},
    "set_exposure": {"exposure_ms": "num"},
    "move_stage": {"x": "num", "y": "num", "z": "num", "relative": "bool"},
    "capture_pairs": {"label_free": "list", "fluorescence": "list", "positions": "list", "grid": "dict",
                      "exposure_ms": "num"},
    "run_scan": {"sequence": "dict"}, "job": {"job": "str"}, "wait": {"job": "str", "wait_s": "num"},
    "load_triggers": {"config": "str", "sources": "dict"},
}
ENGINE_COMMANDS: dict[str, dict[str, str]] = {
    "status": {}, "load_model": {"path": "str"}, "set_policy": {"policy": "str"},
}
#: Numbers that are the right type but no sane value, per command and argument (only where the
#: command is refused whatever the microscope's state, so the fuzz never changes it).
HUGE_TARGETS = [("set_exposure", "exposure_ms"), ("snap", "exposure_ms"), ("move_stage", "x"), ("move_stage", "z"),
                ("wait", "wait_s")]
UNKNOWN_COMMANDS = ["shutdown_now", "close", "_shutdown", "__init__", "__class__", "backend", "engine", "server",
                    "publish", "_install", "STATUS", "status ", "", "stat\u0000us", "../status", "x" * 10000]


@dataclass
class Case:
    """One fuzz request: its message parts and what the reply must be.

    ``expect``: ``bad_request`` (``ok: false``, type ``BadRequest``), ``error``
    (``ok: false``), ``ok`` (``ok: true``) or ``any`` (a well-formed reply).
    """

    category: str
    parts: list[bytes]
    expect: str
    req_id: Any = None  # set when the request carries a well-formed id the reply must echo


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def control_cases(rng: random.Random, n: int, commands: dict[str, dict[str, str]]) -> list[Case]:
    """``n`` malformed (and a few valid) requests for a control socket serving ``commands``."""
    names = sorted(commands)
    with_args = [c for c in names if commands[c]]
    string_args = [(c, a) for c in names for a, k in commands[c].items() if k == "str"]
    huge_targets = [t for t in HUGE_TARGETS if t[0] in commands]
    cases: list[Case] = []
    deep = 100_000

    def valid_request(req_id: Any = None) -> bytes:
        return _dumps({"cmd": "status", "args": {}, "id": req_id if req_id is not None else rng.randrange(1 << 30)})

    gens: list[Any] = []
    weights: list[float] = []

    def gen(f=None, weight: float = 1.0):
        def add(f):
            gens.append(f)
            weights.append(weight)
            return f
        return add(f) if f is not None else add

    @gen
    def random_bytes(i):
        return Case("random bytes", [rng.randbytes(rng.randrange(0, 300))], "bad_request")

    @gen
    def invalid_utf8(i):
        raw = valid_request()
        k = rng.randrange(1, len(raw))
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80\x80"])
        return Case("invalid UTF-8", [raw[:k] + bad + raw[k:]], "bad_request")

    @gen
    def truncated_utf8(i):
        raw = '{"cmd": "status", "id": "caf\u00e9-\u00b5m"}'.encode()
        cut = raw.index("\u00e9".encode()) + 1  # inside the 2-byte character
        return Case("truncated UTF-8", [raw[:cut]], "bad_request")

    @gen
    def truncated_json(i):
        raw = _dumps({"cmd": rng.choice(names), "args": {}, "id": i})
        return Case("truncated JSON", [raw[:rng.randrange(0, len(raw) - 1)]], "bad_request")

    @gen
    def non_object(i):
        return Case("JSON non-object", [rng.choice(
            [b"[]", b"5", b'"status"', b"null", b"true", b"false", b'[{"cmd": "status"}]', b"{}", b"  ", b"",
             b'{"cmd": "status"} {"cmd": "status"}', b"1.5e3"])], "bad_request")

    @gen
    def wrong_cmd_type(i):
        bad = rng.choice([5, 1.5, True, [], {}, ["status"], {"cmd": "status"}])
        return Case("wrong type: cmd", [_dumps({"cmd": bad, "args": {}, "id": i})], "bad_request")

    @gen
    def wrong_args_type(i):
        bad = rng.choice([[], "x", 5, True, ["a"], 1.5])
        return Case("wrong type: args", [_dumps({"cmd": "status", "args": bad, "id": i})], "bad_request")

    @gen
    def wrong_id_type(i):
        bad = rng.choice([{}, [], 1.5, True, {"a": [1]}, [1, 2]])
        return Case("wrong type: id", [_dumps({"cmd": "status", "args": {}, "id": bad})], "bad_request")

    @gen
    def extra_keys(i):
        return Case("unknown request field", [_dumps({"cmd": "status", "args": {}, "id": i,
                                                      rng.choice(["extra", "Cmd", "args2", ""]): 1})], "bad_request")

    @gen
    def nan_literal(i):
        lit = rng.choice(["NaN", "Infinity", "-Infinity"])
        cmd, arg = rng.choice([(c, a) for c in with_args for a, k in commands[c].items()] + [("status", None)])
        if arg is None:
            text = f'{{"cmd": "status", "args": {{}}, "id": {lit}}}'
        else:
            text = f'{{"cmd": "{cmd}", "args": {{"{arg}": {lit}}}, "id": {i}}}'
        return Case("NaN/Infinity literal", [text.encode()], "bad_request")

    @gen
    def huge_number(i):
        if not huge_targets:
            text = f'{{"cmd": "status", "args": {{}}, "id": {rng.choice(["1e999", "-1e999"])}}}'
            return Case("huge number", [text.encode()], "bad_request")
        cmd, arg = rng.choice(huge_targets)
        lit = rng.choice(["1e308", "-1e308", "1e999", "-1e999", "1" + "0" * 400, "1.7976931348623157e308"])
        extra = ', "job": "no-such-job"' if cmd == "wait" else ""
        text = f'{{"cmd": "{cmd}", "args": {{"{arg}": {lit}{extra}}}, "id": {i}}}'
        return Case("huge number", [text.encode()], "error")

    @gen(weight=0.5)
    def deep_nesting(i):
        where = rng.choice(["top", "args", "id", "id40"])
        if where == "top":
            text = "[" * deep + "]" * deep
        elif where == "args":
            text = '{"cmd": "status", "args": {"a": ' + "[" * deep + "]" * deep + "}}"
        elif where == "id":
            text = '{"cmd": "status", "id": ' + "[" * deep + "]" * deep + "}"
        else:  # modest depth, still beyond any sane request
            text = '{"cmd": "status", "id": ' + "[" * 40 + "]" * 40 + "}"
        return Case("deep nesting", [text.encode()], "bad_request")

    @gen
    def unknown_command(i):
        return Case("unknown command", [_dumps({"cmd": rng.choice(UNKNOWN_COMMANDS), "args": {}, "id": i})],
                    "bad_request")

    @gen
    def unknown_argument(i):
        cmd = rng.choice(names)
        return Case("unknown argument", [_dumps({"cmd": cmd, "args": {rng.choice(["foo", "__class__", "self", "_x"]): 1},
                                                 "id": i})], "bad_request")

    @gen
    def wrong_arg_type(i):
        cmd = rng.choice(with_args)
        arg, kind = rng.choice(sorted(commands[cmd].items()))
        args = {arg: rng.choice(WRONG_VALUES[kind])}
        if cmd == "load_triggers" and arg == "config":
            args = {"config": rng.choice([5, True, 1.5, ["x"]]), "sources": {}}
        return Case(f"wrong type: {cmd}.{arg}", [_dumps({"cmd": cmd, "args": args, "id": i})], "bad_request")

    @gen
    def hostile_path(i):
        if not string_args:
            return Case("hostile path", [_dumps({"cmd": "status", "args": {}, "id": rng.choice(HOSTILE_STRINGS)})], "any")
        cmd, arg = rng.choice(string_args)
        # (never 'stop' with job "": the daemon takes an empty job id for "the running job")
        args: dict[str, Any] = {arg: rng.choice([h for h in HOSTILE_STRINGS if h or cmd != "stop"])}
        if cmd == "load_triggers":
            args["sources"] = {"virtual-staining": rng.choice(["tcp://127.0.0.1:1", "ipc:///tmp/" + ESCAPE])}
        return Case("hostile path", [_dumps({"cmd": cmd, "args": args, "id": i})], "any", req_id=i)

    @gen
    def extra_parts(i):
        k = rng.randrange(1, 4)
        return Case("extra message parts", [valid_request(i)] + [rng.randbytes(rng.randrange(0, 64)) for _ in range(k)],
                    "any")

    @gen(weight=0.05)
    def big_string(i):
        return Case("1 MiB string", [_dumps({"cmd": "status", "args": {}, "id": "x" * (1 << 20)})], "any")

    @gen
    def valid(i):
        return Case("valid status", [valid_request(i)], "ok", req_id=i)

    for i in range(n):  # every kind once, then at random
        g = gens[i] if i < len(gens) else rng.choices(gens, weights)[0]
        cases.append(g(i))
    return cases


class Strict(ValueError):
    pass


def strict_loads(data: bytes) -> Any:
    """Parse JSON as any standard parser must read it: UTF-8, no NaN/Infinity, finite numbers."""
    def constant(name: str) -> Any:
        raise Strict(f"{name} literal")

    def number(text: str) -> float:
        v = float(text)
        if not math.isfinite(v):
            raise Strict(f"number {text[:20]} out of range")
        return v

    return json.loads(data.decode("utf-8"), parse_constant=constant, parse_float=number)


@dataclass
class FuzzReport:
    """What the control sockets did with the fuzz."""

    sent: int = 0
    replies: int = 0
    hangs: int = 0  # requests without a reply in time
    extra_replies: int = 0
    not_strict: int = 0  # replies that are not strict JSON objects of the protocol's shape
    leaks: int = 0  # replies quoting a file outside the data directory
    wrong: Counter = field(default_factory=Counter)  # category -> replies of the wrong kind
    examples: dict[str, str] = field(default_factory=dict)  # category -> one offending reply
    oversized_sent: int = 0
    oversized_replies: int = 0
    seconds: float = 0.0

    @property
    def wrong_total(self) -> int:
        return sum(self.wrong.values())

    def merge(self, other: FuzzReport) -> None:
        for k in ("sent", "replies", "hangs", "extra_replies", "not_strict", "leaks", "oversized_sent",
                  "oversized_replies"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.wrong.update(other.wrong)
        for k, v in other.examples.items():
            self.examples.setdefault(k, v)
        self.seconds += other.seconds


def _check_reply(case: Case, parts: list[bytes], report: FuzzReport) -> None:
    head = parts[0] if parts else b""
    try:
        reply = strict_loads(head)
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise Strict("not an object with a boolean 'ok'")
        if reply["ok"] is False:
            err = reply.get("error")
            if not (isinstance(err, dict) and isinstance(err.get("type"), str) and isinstance(err.get("message"), str)):
                raise Strict("error reply without error.type and error.message strings")
        elif "result" not in reply:
            raise Strict("ok reply without 'result'")
    except (Strict, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        report.not_strict += 1
        report.examples.setdefault(f"not strict ({case.category})", f"{e}: {head[:160]!r}")
        return
    if b"root:" in head and b":0:0:" in head:
        report.leaks += 1
        report.examples.setdefault("leak", head[:200].decode("utf-8", "replace"))
    ok, etype = reply["ok"], (reply.get("error") or {}).get("type")
    good = {"bad_request": not ok and etype == "BadRequest", "error": not ok, "ok": ok, "any": True}[case.expect]
    if good and case.req_id is not None and reply.get("id") != case.req_id:
        good = False
    if not good:
        report.wrong[case.category] += 1
        report.examples.setdefault(case.category, f"expected {case.expect}, got {head[:200].decode('utf-8', 'replace')}")


def fuzz_control(address: str, cases: list[Case], reply_timeout_s: float = 10.0,
                 oversized: int = 2, ctx: zmq.Context | None = None) -> FuzzReport:
    """Send each case (one at a time, on a DEALER so any number of replies would be seen) and check
    its reply; then ``oversized`` requests above the socket's 4 MiB limit on throw-away sockets
    (refused by dropping the connection, or answered: either is fine; the server must survive)."""
    ctx = ctx or zmq.Context.instance()
    report = FuzzReport()
    t0 = time.monotonic()

    def dealer() -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        return s

    sock = dealer()
    try:
        for case in cases:
            while sock.poll(0):  # anything arriving between requests is a reply too many
                sock.recv_multipart()
                report.extra_replies += 1
            sock.send_multipart([b"", *case.parts])
            report.sent += 1
            if not sock.poll(int(reply_timeout_s * 1000)):
                report.hangs += 1
                report.examples.setdefault(f"hang ({case.category})", repr(b"".join(case.parts)[:160]))
                sock.close(linger=0)
                sock = dealer()
                continue
            msg = sock.recv_multipart()
            report.replies += 1
            _check_reply(case, msg[1:] if msg and msg[0] == b"" else msg, report)
        # one final request: every reply before its own is one too many
        sock.send_multipart([b"", _dumps({"cmd": "status", "id": "final"})])
        deadline = time.monotonic() + reply_timeout_s
        while time.monotonic() < deadline and sock.poll(int((deadline - time.monotonic()) * 1000)):
            msg = sock.recv_multipart()
            if b'"final"' in msg[-1] or (len(msg) > 1 and b'"final"' in msg[1]):
                break
            report.extra_replies += 1
    finally:
        sock.close(linger=0)
    for _ in range(oversized):
        s = dealer()
        s.send_multipart([b"", b'{"cmd": "status", "id": "' + b"x" * (5 << 20) + b'"}'])
        report.oversized_sent += 1
        if s.poll(1000):
            report.oversized_replies += 1
        s.close(linger=0)
    report.seconds = time.monotonic() - t0
    return report


# ------------------------------------------------------------------ streams
def stream_garbage(address: str, n: int, rng: random.Random, ctx: zmq.Context | None = None) -> int:
    """``n`` garbage upstream messages (subscriptions, unsubscriptions, noise) to a PUB/XPUB socket
    from an XSUB that reads (and discards) whatever it is sent; returns the count sent."""
    ctx = ctx or zmq.Context.instance()
    s = ctx.socket(zmq.XSUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.connect(address)
    sent = 0
    try:
        for i in range(n):
            kind = rng.randrange(6)
            if kind == 0:  # subscriptions to topics that do not exist (this client never reads frames)
                parts = [b"\x01" + bytes([rng.choice(b"0123456789XYZ")]) + rng.randbytes(rng.randrange(0, 64))]
            elif kind == 1:
                parts = [b"\x00" + rng.randbytes(rng.randrange(0, 64))]
            elif kind == 2:
                parts = [rng.randbytes(rng.randrange(0, 256))]
            elif kind == 3:
                parts = [rng.randbytes(rng.randrange(1, 32)) for _ in range(rng.randrange(2, 6))]
            elif kind == 4:
                parts = [b"\x01" + b"f" * rng.randrange(1000, 100_000)]
            else:
                parts = [b""]
            s.send_multipart(parts)
            sent += 1
            while s.poll(0):
                s.recv_multipart()
        # unsubscribe from everything this socket might have subscribed to, then go
        s.send(b"\x00")
    finally:
        s.close(linger=0)
    return sent


def valid_header(channel: str, acquisition_id: str, bundle_id: int, index: int, size: int, shape: tuple[int, int],
                 seq: int, dtype: str = "uint16") -> dict[str, Any]:
    t = time.time_ns()
    return {"version": 1, "acquisition_id": acquisition_id, "seq": seq, "bundle_id": bundle_id, "bundle_index": index,
            "bundle_size": size, "channel": channel, "modality": "label-free", "pattern": "", "detector": "Camera",
            "stage_x_um": 0.0, "stage_y_um": 0.0, "stage_z_um": 0.0, "exposure_ms": 10.0, "pixel_size_um": 0.65,
            "dtype": dtype, "shape": list(shape), "position_index": 0, "t_exposure_start_ns": t - 10_000_000,
            "t_acquired_ns": t, "t_published_ns": t, "series": "", "index": {}, "extra": {}}


def valid_bundle(channels: list[str], acquisition_id: str, bundle_id: int, shape: tuple[int, int] = (256, 256),
                 rng: np.random.Generator | None = None) -> list[list[bytes]]:
    rng = rng or np.random.default_rng(bundle_id)
    out = []
    for i, c in enumerate(channels):
        h = valid_header(c, acquisition_id, bundle_id, i, len(channels), shape, bundle_id * 16 + i)
        out.append([b"frame", _dumps(h), rng.integers(100, 4000, shape, dtype=np.uint16).tobytes()])
    return out


#: Frame header fields and the broken values a bundle may carry in them.
BROKEN_FIELDS: dict[str, list[Any]] = {
    "acquisition_id": [[1], {"a": 1}, 5, None, 1.5, ""],
    "bundle_id": ["x", [1], None, 1.5, float("nan"), -1, 10**30, {}],
    "bundle_size": ["6", -1, 0, 10**30, [6], None, 1.5, float("inf")],
    "bundle_index": ["0", -5, None, [0]],
    "channel": [["DF"], {"c": 1}, 5, None, "", "../../etc/passwd"],
    "dtype": ["object", "float128", "V0", "<U4", "", 5, None, "int64", "float32", "complex64", "bool", "|S3"],
    "shape": [[-1, 5], [10**9, 10**9], "256", [256], [], [2.5, 3], [None, None], 5, [0, 0], [1, 1, 1]],
    "t_exposure_start_ns": ["x", None, [1], float("nan"), 1e308, -(10**30)],
    "t_acquired_ns": ["x", None, [1], float("nan"), 1e308, 10**30],
    "t_published_ns": ["x", None, float("inf"), {}],
    "pixel_size_um": ["x", None, float("nan"), -1.0, [1]],
    "stage_x_um": ["x", float("nan"), None, {}],
    "seq": ["x", None, 1.5, [1]],
    "version": ["1", None, 99, []],
    "extra": [[], "x", 5],
}


def frame_fuzz(channels: list[str], n: int, rng: random.Random,
               shape: tuple[int, int] = (32, 32)) -> list[list[list[bytes]]]:
    """``n`` malformed stream messages for an engine needing ``channels``, grouped in bundles:
    each group is a bundle (or a lone message) with one thing broken."""
    nprng = np.random.default_rng(rng.randrange(1 << 30))
    groups: list[list[list[bytes]]] = []
    count = 0
    b = 0
    while count < n:
        b += 1
        acq = f"fuzz-{rng.randrange(1 << 20)}"
        kind = rng.randrange(8)
        if kind == 0:  # a lone message that is not a frame at all
            parts = rng.choice([
                [b"frame", rng.randbytes(rng.randrange(0, 200))],
                [b"frame", rng.randbytes(rng.randrange(0, 200)), rng.randbytes(64)],
                [b"frame", b"[" * 100_000 + b"]" * 100_000, b""],
                [b"frame", b'{"shape": [2, 2], "dtype": "uint16", "bundle_id": NaN}', b"\x00" * 8],
                [b"frame", b"\xff\xfe{}", b""],
                [b"frame", rng.choice([b"[]", b"5", b"null", b'"x"', b"{}"]), b"\x00" * 8],
                [b"frame"],
                [b"frameX", b"{}", b""],
                [b"frame", _dumps(valid_header(channels[0], acq, b, 0, 1, shape, b)), b"\x00" * 3],
            ])
            groups.append([parts])
            count += 1
            continue
        bundle = valid_bundle(channels, acq, b, shape, nprng)
        if kind <= 4:  # one header field broken, in one frame or in all
            key = rng.choice(sorted(BROKEN_FIELDS))
            value = rng.choice(BROKEN_FIELDS[key])
            targets = range(len(bundle)) if rng.random() < 0.5 else [rng.randrange(len(bundle))]
            for t in targets:
                h = json.loads(bundle[t][1])
                h[key] = value
                bundle[t][1] = _dumps(h)
        elif kind == 5:  # missing fields
            t = rng.randrange(len(bundle))
            h = json.loads(bundle[t][1])
            for key in rng.sample(sorted(h), rng.randrange(1, 6)):
                del h[key]
            bundle[t][1] = _dumps(h)
        elif kind == 6:  # pixels that do not match the header, or extra/missing parts
            t = rng.randrange(len(bundle))
            bundle[t] = rng.choice([
                bundle[t][:2], bundle[t] + [b"extra", b""], [bundle[t][0], bundle[t][1], bundle[t][2][:-2]],
                [bundle[t][0], bundle[t][1], b""], [bundle[t][0], bundle[t][1], bundle[t][2] * 2]])
        else:  # float pixels with NaN/Inf, or frames of one bundle in different shapes
            if rng.random() < 0.5:
                for t in range(len(bundle)):
                    h = json.loads(bundle[t][1])
                    h["dtype"] = "float32"
                    px = nprng.normal(size=shape).astype(np.float32)
                    px[0, 0] = rng.choice([np.nan, np.inf, -np.inf])
                    bundle[t] = [b"frame", _dumps(h), px.tobytes()]
            else:
                t = rng.randrange(len(bundle))
                h = json.loads(bundle[t][1])
                h["shape"] = [shape[0] * 2, shape[1] * 2]
                bundle[t] = [b"frame", _dumps(h), np.zeros(h["shape"], np.uint16).tobytes()]
        groups.append(bundle)
        count += len(bundle)
    return groups


class FakeStream:
    """A frame stream we control (an XPUB that queues without limit), for feeding an engine."""

    def __init__(self, address: str = "tcp://127.0.0.1:*", ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.XPUB)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def wait_subscriber(self, timeout_s: float = 60.0) -> bool:
        """True once a subscriber subscribed to ``frame``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sock.poll(100) and self.sock.recv().startswith(b"\x01frame"):
                return True
        return False

    def send(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts)

    def close(self) -> None:
        self.sock.close(linger=0)


# ------------------------------------------------------------------ processes and probes
def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def small_config(directory: Path, size: int = 256) -> Path:
    """The shipped simulator config with a ``size``-pixel camera."""
    text = (ROOT / "hardware_configs" / "sim-ledarray.cfg").read_text()
    for dev in ("Camera", "STED"):
        for axis in ("Width", "Height"):
            text = text.replace(f"#py Property,{dev},Sensor{axis},512", f"#py Property,{dev},Sensor{axis},{size}")
    path = directory / f"sim-{size}.cfg"
    path.write_text(text)
    return path


def scopecast(*args: str, cwd: Path | None = None, quiet: bool = True, **kw: Any) -> subprocess.Popen:
    """Start ``scopecast ARGS`` as a process (output discarded unless ``quiet`` is False)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen([sys.executable, "-m", "scopecast.daemon.cli", *args], cwd=cwd,
                            stdout=kw.pop("stdout", out), stderr=kw.pop("stderr", out),
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def wait_status(address: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0) -> dict:
    """Poll ``status`` until it answers; raises if ``proc`` ends or time runs out."""
    from scopecast.daemon.control import ControlClient

    deadline = time.monotonic() + timeout_s
    with ControlClient(address, timeout_s=1.0) as c:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process {proc.args[3:5]} ended with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no status from {address} in {timeout_s:g} s")
            try:
                return c.request("status", timeout_s=1.0)
            except TimeoutError:
                continue


def children_of(pid: int) -> dict[int, str]:
    """Child pid -> command line, for the processes whose parent is ``pid``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
    return out


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def listener_pid(address: str, parent: int, timeout_s: float = 60.0, not_pid: int | None = None) -> int:
    """The pid of the child of ``parent`` listening on ``address``'s TCP port (the daemon or an
    engine of ``scopecast up``; an engine restarted from a warm spare has no telling command line)."""
    port = int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                f = row.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
        for pid in children_of(parent):
            if pid == not_pid:
                continue
            try:
                links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            except OSError:
                continue
            if links & inodes:
                return pid
        time.sleep(0.02)
    raise TimeoutError(f"no child of {parent} listens on {address}")


class ResultWatch:
    """A subscriber to an engine's results that reconnects fast (10 ms) after the engine restarts."""

    def __init__(self, address: str, ctx: zmq.Context | None = None) -> None:
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 50)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"result")
        self.sock.connect(address)

    def first_after(self, t_ns: int, timeout_s: float, match: dict | None = None) -> dict | None:
        """The first result published after ``t_ns`` (and matching ``match``), or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.sock.poll(int(max(deadline - time.monotonic(), 0) * 1000) + 1):
                continue
            parts = self.sock.recv_multipart()
            h = json.loads(parts[1])
            if h.get("t_published_ns", 0) > t_ns and all(h.get(k) == v for k, v in (match or {}).items()):
                return h
        return None

    def close(self) -> None:
        self.sock.close(linger=0)


class StatusProbe:
    """Measure ``status`` round trips on ``address`` in a thread, at ``hz``, labelled by phase."""

    def __init__(self, address: str, hz: float = 20.0, timeout_s: float = 2.0) -> None:
        self.address, self.period, self.timeout_s = address, 1.0 / hz, timeout_s
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {}
        self.timeouts: Counter = Counter()
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-probe", daemon=True)

    def start(self) -> StatusProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        from scopecast.daemon.control import ControlClient, DaemonError

        with ControlClient(self.address, timeout_s=self.timeout_s) as c:
            while not self._stop.wait(self.period):
                if self.paused.is_set():
                    continue
                phase = self.phase
                t0 = time.perf_counter()
                try:
                    c.request("status")
                except (TimeoutError, DaemonError):
                    if not self.paused.is_set():
                        self.timeouts[phase] += 1
                    continue
                self.samples.setdefault(phase, []).append((time.perf_counter() - t0) * 1e3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict[str, dict[str, float]]:
        return {p: {"n": len(v), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
                    "max": float(np.max(v)), "timeouts": self.timeouts[p]} for p, v in self.samples.items() if v}


def tree_snapshot(root: Path, exclude: list[Path]) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` except under ``exclude``: path -> (size, mtime_ns)."""
    out = {}
    ex = [str(p.resolve()) + os.sep for p in exclude]
    for dirpath, dirnames, filenames in os.walk(root):
        if any((dirpath + os.sep).startswith(e) for e in ex):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def writes_outside(before: dict, after: dict) -> list[str]:
    """Files created or changed between two :func:`tree_snapshot` calls."""
    return sorted(p for p, v in after.items() if before.get(p) != v)


def escapes_found(*roots: Path) -> list[str]:
    """Anything named like the hostile paths' target under ``roots`` (not recursing into big trees)."""
    found = []
    for r in roots:
        for dirpath, dirnames, filenames in os.walk(r):
            found += [os.path.join(dirpath, f) for f in filenames + dirnames if ESCAPE in f]
            if dirpath.count(os.sep) - str(r).count(os.sep) >= 6:
                dirnames[:] = []
    return found


def recording_check(path: str | Path, counted: int | None = None) -> dict[str, Any]:
    """Open a recording (complete or interrupted) and check every journalled frame's plane.

    ``counted``: frames the daemon said it recorded (``frames_recorded``); a
    frame counted but not in the journal, or journalled but unreadable, is lost.
    """
    from scopecast.daemon.recorder import open_recording

    try:
        rec = open_recording(path)
    except Exception as e:  # noqa: BLE001 - an unreadable recording loses everything counted
        return {"journalled": 0, "unreadable": 0, "lost": counted or 0, "complete": False,
                "error": f"{type(e).__name__}: {e}"}
    journalled, unreadable = 0, 0
    for s in rec.series:
        for f in s.frames:
            journalled += 1
            try:
                plane = np.asarray(s.data[f.index["t"], f.index["c"], f.index.get("z", 0)])
                if plane.shape != tuple(f.shape) or not plane.any():
                    unreadable += 1
            except Exception:  # noqa: BLE001 - any failure to read is a lost frame
                unreadable += 1
    lost = unreadable + max((counted or 0) - journalled, 0)
    return {"journalled": journalled, "unreadable": unreadable, "lost": lost,
            "complete": bool(rec.attrs.get("scopecast", {}).get("complete"))}


# ------------------------------------------------------------------ the benchmark
def _package(tmp: Path, synthetic: bool) -> Path:
    from scopecast.daemon.demo import shipped_packages

    shipped = [p for p in shipped_packages() if p.name == "virtual-staining"]
    dst = tmp / ("virtual-staining" if shipped and not synthetic else "synthetic")
    if shipped and not synthetic:
        shutil.copytree(shipped[0], dst)
        return dst
    from scopecast.models.synthetic import write_package

    return write_package(dst, ["DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF"], ["nuclei", "membrane"],
                         name="synthetic", width=8, layers=3, tile=128)


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
