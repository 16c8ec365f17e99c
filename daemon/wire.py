"""Strict JSON for every socket: what the daemon and engine accept and send.

Requests are parsed with :func:`loads_strict`: UTF-8 JSON only, no ``NaN`` /
``Infinity`` literals nor numbers beyond a 64-bit float (``1e999``), no integers
longer than Python converts (4300 digits), nesting at most :data:`MAX_DEPTH` levels. Everything
sent is encoded with :func:`dumps_strict`, which never emits ``NaN`` or
``Infinity`` (non-finite floats become ``null``), so any standard JSON parser
reads every message.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "WireError", "dumps_strict", "loads_strict"]

#: Deepest nesting (objects and arrays) a message may have.
MAX_DEPTH = 32


class WireError(ValueError):
    """A message that is not strict JSON (the message says why)."""


def _no_constants(name: str) -> Any:
    raise WireError(f"{name} is not JSON (use a finite number or null)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999: valid JSON syntax, but no double holds it
        raise WireError(f"number {text[:40]} is out of range for a 64-bit float")
    return value


def loads_strict(data: bytes | bytearray | memoryview | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one strict JSON document; raise :class:`WireError` naming the problem (never another
    exception for any input: not UTF-8, not JSON, NaN, a number too large, nesting too deep)."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"not UTF-8 ({e})") from None
    try:
        obj = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except WireError:
        raise
    except RecursionError:
        raise WireError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise WireError(f"not valid JSON ({e})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts (4300 by default)
        raise WireError(_value_error_text(e)) from None
    if _depth_exceeds(obj, max_depth):
        raise WireError(f"nested deeper than {max_depth} levels")
    return obj


def _value_error_text(e: ValueError) -> str:
    """What a ``ValueError`` from :func:`json.loads` (not a syntax error) says about the message."""
    if "integer string conversion" in str(e):
        return (f"a number too large: an integer of more than {sys.get_int_max_str_digits()} digits "
                "(give a number that fits a 64-bit float or integer)")
    return f"not valid JSON ({e})"


def _depth_exceeds(obj: Any, limit: int) -> bool:
    stack = [(obj, 0)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict | list):
            if d >= limit:
                return True
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return False


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def dumps_strict(obj: Any, default: Any = None) -> bytes:
    """Encode ``obj`` as strict JSON bytes (non-finite floats become ``null``)."""
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":"), default=default).encode()
    except ValueError:  # a NaN or Infinity somewhere: replace, then encode
        return json.dumps(_finite(_plain(obj, default)), allow_nan=False, separators=(",", ":")).encode()


def _plain(obj: Any, default: Any) -> Any:
    """``obj`` with every value ``default`` knows converted (so :func:`_finite` sees floats)."""
    return json.loads(json.dumps(obj, default=default))
