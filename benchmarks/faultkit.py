"""Tools of the fault and fuzz suite: malformed-message generators, reply checks, process helpers.

Used by benchmarks/bench_faults.py (the full run with printed figures) and
tests/test_faults.py (the short version in the suite).
"""

from __future__ import annotations

import json
import math
import random
import sys
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
    "start_spot_checks": {"model": "str", "results": "str", "period_s": "num", "channels": "dict",
                          "exposure_ms": "num", "power": "num", "window": "int"},
    "spot_checks": {}, "stop_spot_checks": {"model": "str"},
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
            text = f'{{"cmd": "status", "args": {{}}, "id": {rng.choice(["1e999", "-1e999", "1" * 5000])}}}'
            return Case("huge number", [text.encode()], "bad_request")
        cmd, arg = rng.choice(huge_targets)
        # "1" * 5000: more digits than Python converts to an int (a BadRequest, not a request left unanswered)
        lit = rng.choice(["1e308", "-1e308", "1e999", "-1e999", "1" + "0" * 400, "1" * 5000, "1.7976931348623157e308"])
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
