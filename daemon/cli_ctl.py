"""``scopecast ctl``: one control command, its arguments given as options.

The options are not written down here: they are derived from the server's own
``commands`` reply (the JSON Schema of every command's arguments, built from
the handler signatures that validate requests, see :mod:`.control`), so the
command line cannot drift from the daemon or engine it talks to::

    scopecast ctl snap --channel DF --exposure 50 --save df.png
    scopecast ctl live --record                       # alias of start_live
    scopecast ctl capture_pairs --grid rows=3 columns=3
    scopecast ctl move_stage --x 40000 --y 0
    scopecast ctl wait                                # until the running (or latest) job ends, with progress
    scopecast ctl snap --args '{"channel": "DF"}'     # JSON, as before

How values are read (from the argument's JSON Schema): booleans are flags
(``--record`` / ``--no-record``); numbers and integers are parsed; a list takes
several values or comma-separated ones (``--channels BF DF`` or
``--channels BF,DF``; a list of pairs ``--positions 0,0 100,0``); an object
takes ``KEY=VALUE`` pairs (``--grid rows=3 columns=3``); any of them also
takes JSON (``--grid '{"rows": 3}'``). An argument ending in a unit
(``exposure_ms``, ``wait_s``, ``z_um``) is also accepted without it
(``--exposure``); required arguments may also be given positionally
(``scopecast ctl wait JOB``, ``scopecast ctl set_channel DF``). Options override
the same keys of ``--args``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from typing import Any

from .control import DEFAULT_CONTROL_ADDRESS
from .progress import Progress, format_duration
from .wire import WireError, loads_strict

__all__ = ["ALIASES", "add_ctl_parser", "command_parser", "run_ctl"]

log = logging.getLogger("scopecast.ctl")

#: Short names for the commands used most (resolved by the client).
ALIASES = {"live": "start_live", "pairs": "capture_pairs", "scan": "run_scan"}
#: Unit suffixes an option may be given without (``--exposure`` for ``exposure_ms``).
UNITS = ("_ms", "_s", "_um", "_db")
#: Options of ``ctl`` itself; a command argument of the same name can only be given in ``--args``.
CTL_OPTIONS = frozenset({"--args", "--save", "--control", "--timeout", "--keys", "--help", "-h"})
#: Seconds to wait for a connection to the server before saying none answers (a reply may take ``--timeout``).
CONNECT_TIMEOUT_S = 5.0
#: The same for ``ctl --help``, which falls back to this installation's commands when no server is there.
HELP_CONNECT_TIMEOUT_S = 3.0


class UsageError(ValueError):
    """A command line that cannot become a request (exit status 2)."""


# ------------------------------------------------------------------ the parser
def add_ctl_parser(sub: Any, address_type: Any, add_keys_option: Any) -> argparse.ArgumentParser:
    """The ``ctl`` subcommand; the command's own options are parsed later, from the server's description."""
    c = sub.add_parser(
        "ctl", help="send one control command to a running daemon (or engine)", add_help=False, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send one command; prints the JSON result. The command's arguments are options derived\n"
        "from the server's own description of its commands: 'scopecast ctl COMMAND --help' lists them\n"
        "with their types.",
        epilog="examples:\n"
        "  scopecast ctl snap --channel DF --exposure 50 --save df.png\n"
        "  scopecast ctl live --record                   # live = start_live\n"
        "  scopecast ctl capture_pairs --grid rows=3 columns=3\n"
        "  scopecast ctl wait                            # until the running (or latest) job ends (progress: stderr)\n"
        "  scopecast ctl snap --args '{\"channel\": \"DF\"}'  # JSON arguments (options override them)\n"
        f"aliases: {', '.join(f'{a} = {c}' for a, c in ALIASES.items())}\n"
        "exit status: 0 done; 1 the server refused or failed the command, none answered, or a waited job failed;\n"
        "  2 a usage error: a command or arguments that the CLI or the server (BadRequest) cannot take")
    c.add_argument("cmd", nargs="?", default="", metavar="COMMAND",
                   help="command name (status, describe, snap, start_live, stop, move_stage, ...)")
    c.add_argument("-h", "--help", action="store_true", help="show this help (with COMMAND: that command's options)")
    c.add_argument("--args", default="", help="JSON object of arguments")
    c.add_argument("--save", default="", help="for snap: write the frame as an auto-scaled PNG")
    c.add_argument("--control", default=DEFAULT_CONTROL_ADDRESS, type=address_type,
                   help="daemon (or engine) control socket; HOST:PORT means tcp://HOST:PORT")
    c.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for the reply (> 0)")
    add_keys_option(c)
    c.set_defaults(func=run_ctl, ctl_parser=c)
    return c


def _seconds(value: str) -> float:
    """``--timeout``: a finite number of seconds above 0 (a negative one would make ZeroMQ wait forever)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of seconds above 0")
    return seconds


def _kind(schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The argument's kind (boolean, integer, number, string, array, object, union, any)
    and its schema without the ``null`` option."""
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if options:
        if len(options) == 1:
            return _kind({**schema, **options[0], "anyOf": []})
        return "union", {**schema, "anyOf": options}
    t = schema.get("type")
    if t in ("boolean", "integer", "number", "string", "array", "object"):
        return t, schema
    if "$ref" in schema:
        return "object", schema
    return "any", schema


def _describe(schema: dict[str, Any]) -> str:
    """A short type name: ``number``, ``list of (string | object)``, ``[number, number]``."""
    kind, s = _kind(schema)
    if kind == "union":
        return " | ".join(_describe(o) for o in s["anyOf"])
    if kind == "array":
        if "prefixItems" in s:
            return "[" + ", ".join(_describe(i) for i in s["prefixItems"]) + "]"
        item = _describe(s.get("items", {}))
        return f"list of {'(' + item + ')' if '|' in item else item}"
    if kind == "string" and "enum" in s:
        return "one of " + ", ".join(s["enum"])
    return {"any": "JSON", "boolean": "flag"}.get(kind, kind)


_HOW = {"array": ": several values (or comma-separated ones), or JSON", "object": ": KEY=VALUE pairs, or JSON",
        "union": " (JSON for an object or a list)", "any": " (JSON, or text)"}
_METAVAR = {"integer": "INT", "number": "NUMBER", "string": "TEXT", "array": "VALUE", "object": "KEY=VALUE",
            "union": "VALUE", "any": "JSON"}


def _own_flags(name: str) -> list[str]:
    """``--exposure-ms`` and ``--exposure_ms``."""
    return [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])


def _flags(name: str, taken: set[str]) -> list[str]:
    """The argument's own flags and, unless ``taken`` has it, the one without its unit
    (``--exposure``); none that ``ctl`` itself uses. Adds what it returns to ``taken``."""
    flags = _own_flags(name)
    for unit in UNITS:
        short = name.removesuffix(unit)
        if short != name and short and f"--{short.replace('_', '-')}" not in taken:
            flags.append(f"--{short.replace('_', '-')}")
            break
    flags = [f for f in flags if f not in CTL_OPTIONS]
    taken.update(flags)
    return flags


#: A token that starts like a negative number (``-100,0``, ``-1e3``, ``-.5``) is a value: no command option looks like
#: one. Python 3.11's argparse reads only ``-5`` and ``-5.0`` so, and took ``--positions -100,0`` for an option.
#: Workaround for python/cpython#124693 (3.14 reads ``-1e3``; ``-100,0`` never): the one place it lives.
NEGATIVE_VALUE = re.compile(r"^-\.?\d")


class _Parser(argparse.ArgumentParser):
    """Raises :class:`UsageError` instead of exiting; reads tokens that start like a negative number as values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_VALUE

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(message)


def command_parser(cmd: str, spec: dict[str, Any]) -> argparse.ArgumentParser:
    """An argument parser for ``cmd`` from its ``commands`` entry (summary + JSON Schema).

    Every value lands in the namespace under the argument's name (positional
    forms of required arguments under ``pos:NAME``); absent ones are absent.
    """
    schema = spec.get("arguments", {})
    props: dict[str, Any] = schema.get("properties", {})
    required = list(schema.get("required", []))
    p = _Parser(prog=f"scopecast ctl {cmd}", description=spec.get("summary") or None,
                allow_abbrev=False, add_help=False, argument_default=argparse.SUPPRESS)
    for name in required:
        p.add_argument(f"pos:{name}", nargs="?", metavar=name.upper(), help=f"{name} (or --{name.replace('_', '-')})")
    taken = {f for name in props for f in _own_flags(name)}
    for name, s in props.items():
        kind, sub = _kind(s)
        flags = _flags(name, taken)
        if not flags:
            continue  # the same name as a ctl option: --args only
        hidden = [f for f in flags if "_" in f]  # --exposure_ms: accepted, not listed
        flags = [f for f in flags if f not in hidden]
        text = _describe(s) + _HOW.get(kind, "")
        if kind == "array" and (_kind(sub.get("items", {}))[0] == "array" or "prefixItems" in sub):
            text = _describe(s) + ": one comma-separated item per value, or JSON"
        if name in required:
            text += ", required"
        elif "default" in s and s["default"] is not None:
            text += f", default {json.dumps(s['default'])}"
        for names, shown in ((flags, text), (hidden, argparse.SUPPRESS)):
            if not names:
                continue
            if kind == "boolean":
                p.add_argument(*names, dest=name, action=argparse.BooleanOptionalAction, help=shown)
            elif kind in ("array", "object"):
                p.add_argument(*names, dest=name, nargs="+", metavar=_METAVAR[kind], help=shown)
            else:
                p.add_argument(*names, dest=name, metavar=_METAVAR[kind], help=shown)
    return p


def _scalar(text: str, schema: dict[str, Any], option: str) -> Any:
    """One token as the schema's kind."""
    kind, s = _kind(schema)
    stripped = text.strip()
    if kind == "union":
        if stripped.startswith(("{", "[")):
            return _json(stripped, option)
        for o in s["anyOf"]:
            try:
                return _scalar(text, o, option)
            except UsageError:
                continue
        raise UsageError(f"{option}: {text!r} is not {_describe(s)}")
    if kind == "boolean":
        low = stripped.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise UsageError(f"{option}: {text!r} is not true or false")
    if kind == "integer":
        try:
            return int(stripped)
        except ValueError:
            raise UsageError(f"{option}: {text!r} is not an integer") from None
    if kind == "number":
        try:
            value = float(stripped)
        except ValueError:
            raise UsageError(f"{option}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise UsageError(f"{option}: {text!r} is not a finite number")
        return value
    if kind == "string":
        if "enum" in s and text not in s["enum"]:
            raise UsageError(f"{option}: {text!r} is not one of {', '.join(s['enum'])}")
        return text
    if kind == "array":
        if stripped.startswith("["):
            return _json(stripped, option)
        items = s.get("prefixItems") or [s.get("items", {})] * max(1, len(stripped.split(",")))
        parts = [t for t in stripped.split(",") if t.strip()] if stripped else []
        if "prefixItems" in s and len(parts) != len(items):
            raise UsageError(f"{option}: {text!r} is not {_describe(s)} (give {len(items)} comma-separated values)")
        return [_scalar(t, i, option) for t, i in zip(parts, items, strict=False)]
    if kind == "object":
        if stripped.startswith("{"):
            return _json(stripped, option)
        raise UsageError(f"{option}: {text!r} is not an object (give KEY=VALUE pairs or JSON)")
    try:  # any: JSON if it is strict JSON (NaN, 1e999 stay text), else text
        return loads_strict(stripped)
    except WireError:
        return text


def _json(text: str, option: str) -> Any:
    """``text`` parsed as strict JSON (no NaN/Infinity, no number out of range); :class:`UsageError` naming why not."""
    try:
        return loads_strict(text)
    except WireError as e:
        raise UsageError(f"{option}: not valid JSON: {e}") from None


def convert(tokens: list[str], schema: dict[str, Any], option: str) -> Any:
    """The tokens given to one option, as the JSON value its schema asks for."""
    kind, s = _kind(schema)
    if kind == "array":
        if len(tokens) == 1 and tokens[0].strip().startswith("["):
            return _json(tokens[0], option)
        item = s.get("items", {})
        item_kind, _ = _kind(item)
        if item_kind == "array" or "prefixItems" in s:  # one token per item: --positions 0,0 100,0
            return [_scalar(t, item, option) for t in tokens]
        out = []
        for t in tokens:  # --channels BF DF, --channels BF,DF, --channels '{"name": "BF"}'
            parts = [t] if t.strip().startswith("{") else [p for p in t.split(",") if p.strip()]
            out += [_scalar(p, item, option) for p in parts]
        return out
    if kind == "object":
        if len(tokens) == 1 and tokens[0].strip().startswith("{"):
            return _json(tokens[0], option)
        values = s.get("additionalProperties")
        out_obj: dict[str, Any] = {}
        for t in tokens:
            key, eq, value = t.partition("=")
            if not eq or not key:
                raise UsageError(f"{option}: {t!r} is not KEY=VALUE (or give the object as JSON)")
            out_obj[key] = _scalar(value, values, option) if isinstance(values, dict) else _scalar(value, {}, option)
        return out_obj
    if len(tokens) != 1:
        raise UsageError(f"{option}: expected one value, got {len(tokens)}")
    return _scalar(tokens[0], schema, option)


def parse_command_args(cmd: str, spec: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """The arguments ``argv`` gives ``cmd`` (only those given); raises :class:`UsageError`."""
    # intermixed: a positional may follow options (plain parse_args of Python 3.11 drops it)
    ns = vars(command_parser(cmd, spec).parse_intermixed_args(argv))
    props = spec.get("arguments", {}).get("properties", {})
    out: dict[str, Any] = {}
    for key, raw in ns.items():
        name = key.removeprefix("pos:")
        option = name.upper() if key.startswith("pos:") else f"--{name.replace('_', '-')}"
        value = raw if isinstance(raw, bool) else convert(raw if isinstance(raw, list) else [raw], props[name], option)
        if name in out and out[name] != value:
            raise UsageError(f"{name} given twice ({name.upper()} and --{name.replace('_', '-')})")
        out[name] = value
    return out


# ------------------------------------------------------------------ running
def _described(client: Any, address: str, required: bool = True) -> dict[str, Any] | None:
    """The server's ``commands`` reply; None (or a :class:`UsageError`) if it gives none."""
    from .control import DaemonError

    try:
        return client.request("commands")["commands"]
    except DaemonError as e:
        if not required:
            return None
        raise UsageError(f"{address} does not describe its commands ({e.message}); an older server? "
                         "Give the arguments as JSON with --args") from None


def _local_commands() -> dict[str, Any]:
    """This installation's daemon commands (for help when no daemon answers)."""
    from .control import describe_commands
    from .service import Daemon

    return describe_commands({c: getattr(Daemon, c) for c in Daemon.COMMANDS}, Daemon.INLINE)


def _help(args: argparse.Namespace, parser_help: str, cmd: str) -> int:
    """``ctl --help`` (every command, with its options) or ``ctl COMMAND --help``."""
    import zmq

    from .control import ControlClient, ServerUnreachable

    source = f"the server at {args.control}"
    commands: dict[str, Any] | None = None
    why = "does not describe its commands"
    # no server there: fall back after a short wait for a connection; a server that is there (if busy) is waited
    # for up to --timeout, as any command is, rather than silently listing this installation's commands
    connect_s = min(args.timeout, HELP_CONNECT_TIMEOUT_S)
    with ControlClient(args.control, timeout_s=args.timeout, connect_timeout_s=connect_s) as client:
        try:
            commands = _described(client, args.control, required=False)
        except ServerUnreachable:
            why = f"did not answer: no connection within {connect_s:g} s"
        except TimeoutError:
            why = f"did not answer: connected, but no reply within {args.timeout:g} s"
        except zmq.ZMQError as e:
            why = f"did not answer: {e}"
    if commands is None:
        commands = _local_commands()
        source = f"this installation's daemon ({args.control} {why})"
    if cmd:
        if cmd not in commands:
            print(f"scopecast ctl: unknown command {cmd!r}; commands of {source}: {', '.join(sorted(commands))}",
                  file=sys.stderr)
            return 2
        print(command_parser(cmd, commands[cmd]).format_help().rstrip())
        print(f"\n(options from {source}; --args JSON is accepted too)")
        return 0
    import shutil
    import textwrap

    width = min(shutil.get_terminal_size().columns, 120)
    print(parser_help.rstrip())
    print(f"\ncommands of {source} ('scopecast ctl COMMAND --help' for one):")
    for name, spec in sorted(commands.items()):
        text = " ".join(x for x in (spec.get("summary", ""), synopsis(spec)) if x)
        print(textwrap.fill(text or "-", width, initial_indent=f"  {name:<18} ", subsequent_indent=" " * 21,
                            break_on_hyphens=False).replace("\xa0", " "))
    return 0


def synopsis(spec: dict[str, Any]) -> str:
    """The arguments in one line with their types: ``JOB:string [--wait-s number]`` (no-break
    spaces inside an argument, so a wrapped line breaks between arguments only)."""
    schema = spec.get("arguments", {})
    required = schema.get("required", [])
    out = []
    for name, s in schema.get("properties", {}).items():
        kind, _ = _kind(s)
        flag = f"--{name.replace('_', '-')}"
        if name in required:
            out.append(f"{name.upper()}: {_describe(s)}")
        elif kind == "boolean":
            out.append(f"[{flag}]")
        else:
            out.append(f"[{flag} {_describe(s)}]")
    return ("Arguments: " + " ".join(o.replace(" ", "\xa0") for o in out) + ".") if out else ""


def run_ctl(args: argparse.Namespace) -> int:
    """Send one command (``args.cmd``, its options in ``args.extra``); print the JSON result."""
    extra: list[str] = list(getattr(args, "extra", []) or [])
    cmd = args.cmd
    if not cmd and extra and not extra[0].startswith("-"):  # 'ctl --control X status': argparse left it over
        cmd = extra.pop(0)
    cmd = ALIASES.get(cmd, cmd)
    if args.help:
        return _help(args, args.ctl_parser.format_help(), cmd)
    if not cmd:
        print("scopecast ctl: name a command (scopecast ctl --help lists them)", file=sys.stderr)
        return 2
    try:
        cmd_args = _json(args.args, "--args") if args.args else {}
    except UsageError as e:
        print(f"scopecast ctl: {e}", file=sys.stderr)
        return 2
    if not isinstance(cmd_args, dict):
        print(f"scopecast ctl: --args must be a JSON object, got {type(cmd_args).__name__}", file=sys.stderr)
        return 2
    if args.save:  # before the request: a frame is not taken (light on the specimen) only to be thrown away
        problem = _unwritable(args.save)
        if problem:
            print(f"scopecast ctl: --save {args.save}: {problem}; nothing was sent", file=sys.stderr)
            return 2
    import zmq

    from .control import ControlClient, DaemonError, ServerUnreachable

    connect_s = min(args.timeout, CONNECT_TIMEOUT_S)
    with ControlClient(args.control, timeout_s=args.timeout, connect_timeout_s=connect_s) as client:
        try:
            if extra:
                commands = _described(client, args.control)
                assert commands is not None
                if cmd not in commands:
                    raise UsageError(f"unknown command {cmd!r}; commands: {', '.join(sorted(commands))}")
                cmd_args.update(parse_command_args(cmd, commands[cmd], extra))
            if cmd == "wait":
                result, parts = _wait(client, cmd_args, args.timeout), []
            else:
                result, parts = client.request_parts(cmd, **cmd_args)
            if cmd == "load_triggers":
                _hint_live(client)
        except UsageError as e:
            print(f"scopecast ctl {cmd}: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C while waiting: the job itself goes on
            print(f"scopecast ctl {cmd}: interrupted (a job goes on: scopecast ctl stop ends it)", file=sys.stderr)
            return 130
        except ServerUnreachable as e:
            if e.handshake is not None:
                print(f"scopecast ctl: {args.control} refused the connection: {e.handshake}", file=sys.stderr)
                return 1
            print(f"scopecast ctl: no reply: no daemon (or engine) answered at {args.control} within {connect_s:g} s."
                  " Is it running? Give its control address with --control HOST:PORT (and its keys with --keys DIR"
                  " if it uses CurveZMQ)", file=sys.stderr)
            return 1
        except DaemonError as e:
            if e.type == "BadRequest":  # an unknown command or arguments its schema refuses: a usage error
                print(f"scopecast ctl {cmd}: {e.message}", file=sys.stderr)
                return 2
            print(f"scopecast ctl: {e}", file=sys.stderr)
            return 1
        except TimeoutError as e:
            print(f"scopecast ctl: {e}", file=sys.stderr)
            return 1
        except (zmq.ZMQError, ValueError) as e:
            print(f"scopecast ctl: cannot talk to {args.control}: {e}", file=sys.stderr)
            return 2
    if parts and args.save:
        import numpy as np

        from .snapshot import autoscale, write_png

        h = result["frame"]
        img = np.frombuffer(parts[0], dtype=h["dtype"]).reshape(h["shape"])
        try:
            write_png(args.save, autoscale(img))
        except OSError as e:  # e.g. the disk filled since the check: say so, and still print the frame's header
            print(json.dumps(result, indent=2))
            print(f"scopecast ctl: could not write {args.save}: {e.strerror or e}", file=sys.stderr)
            return 1
        result["saved"] = args.save
    print(json.dumps(result, indent=2))
    if cmd == "wait" and isinstance(result, dict) and result.get("status") == "failed":
        # a script's `scopecast ctl wait && next step` must not go on after a job that failed
        print(f"scopecast ctl wait: {result.get('kind', 'the')} job {result.get('id')} failed: {result.get('error')}",
              file=sys.stderr)
        return 1
    return 0


def _unwritable(path: str) -> str:
    """Why ``--save PATH`` could not be written ("" if it can)."""
    import os
    from pathlib import Path

    target = Path(path).expanduser()
    if target.is_dir():
        return "is a directory (give a file name, e.g. frame.png)"
    parent = target.parent
    if not parent.is_dir():
        return f"directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return "cannot be written (permission denied)"
    return ""


def _wait(client: Any, cmd_args: dict[str, Any], margin_s: float) -> dict[str, Any]:
    """``wait`` with the job's progress on stderr, until it ends (or ``wait_s`` passes: the
    client waits in slices of the daemon's ``wait``, so any length is fine); without ``job``,
    the running one, else the latest (a short job may end before ``wait`` starts: that one is meant)."""
    from .progress import wait_job

    job = cmd_args.get("job")
    wait_s = cmd_args.get("wait_s", math.inf)  # the command line waits for the end unless told
    unknown = set(cmd_args) - {"job", "wait_s"}
    if unknown:
        raise UsageError(f"unknown arguments {sorted(unknown)} (wait takes job and wait_s)")
    if not isinstance(wait_s, int | float) or isinstance(wait_s, bool) or wait_s < 0:
        raise UsageError(f"wait_s must be a number of seconds >= 0, got {wait_s!r}")
    if job is None:
        latest = client.request("status").get("job") or (client.request("jobs") or [None])[-1]
        if not latest:
            raise UsageError("this daemon has run no job yet; start one (scopecast ctl --help lists them)")
        job = latest["id"]
    first = client.request("job", job=job)
    progress = _JobProgress(first, log)
    return wait_job(_Watching(client, progress), job, float(wait_s), progress, margin_s=margin_s)


def job_run_s(job: dict[str, Any]) -> float | None:
    """How long a job ran: its ``finished`` minus its ``started`` (Unix s, the daemon's clock); None while it runs."""
    started, finished = job.get("started"), job.get("finished")
    if not isinstance(started, int | float) or not isinstance(finished, int | float):
        return None
    return max(0.0, finished - started)


class _JobProgress(Progress):
    """Progress of a daemon job: while it runs as :class:`Progress` (rate from when it was first seen);
    the last line of an ended job gives its own run time and rate (``started`` to ``finished``), not how
    long it was watched."""

    def __init__(self, job: dict[str, Any], logger: logging.Logger) -> None:
        super().__init__(f"{job['kind']} job {job['id']}", job.get("total"), "frames", logger, every_s=2.0,
                         done=int(job.get("frames") or 0))  # the rate counts from here
        self.job = job

    def line(self, note: str = "", finished: bool = False) -> str:
        ran = job_run_s(self.job) if finished else None
        if ran is None:
            return super().line(note, finished)
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        parts = [f"{count} {self.unit}" + (f" ({100 * self.done / self.total:.0f} %)" if self.total else "")]
        if ran > 0 and self.done:
            parts.append(f"{self.done / ran:.3g} {self.unit}/s")
        parts.append(f"in {format_duration(ran)}")
        return f"{self.what}: " + ", ".join(p for p in [*parts, note] if p)


class _Watching:
    """``client`` as :func:`~.progress.wait_job` uses it, handing each ``wait`` reply (the job) to ``progress``."""

    def __init__(self, client: Any, progress: _JobProgress) -> None:
        self.client = client
        self.progress = progress

    def request(self, cmd: str, timeout_s: float | None = None, **args: Any) -> Any:
        result = self.client.request(cmd, timeout_s=timeout_s, **args)
        if cmd == "wait" and isinstance(result, dict):
            self.progress.job = result
        return result


def _hint_live(client: Any) -> None:
    """Triggers measure live results: say so when nothing is live."""
    try:
        state = client.request("status").get("state")
    except (TimeoutError, RuntimeError):
        return
    if state != "live":
        print(f"scopecast ctl: triggers loaded, but the daemon is {state}: triggers act on the results of live "
              "frames only; start live (scopecast ctl start_live) for them to do anything", file=sys.stderr)
