"""A time limit on a user's Python trigger, so that one that hangs cannot stall the others.

The trigger thread decides on each result for every loaded trigger in turn. A Python trigger's ``measure``
is the user's code: one that never returns would hold that thread forever, and with it every other
trigger, the decision log, lockstep live and ``unload_triggers`` (which waits 30 s for the thread, then leaves
it). :class:`TimedTrigger` runs ``measure`` on a thread of the trigger's own and waits at most
:data:`MEASURE_TIMEOUT_S` for it; past that it raises ``TimeoutError``, which disables the trigger with the
reason in the decision log as any other failing measurement. A measurement that never returns cannot be
interrupted in Python: its thread (a daemon thread) is left behind, and the trigger is never called again.

Loading is bounded the same way: :func:`load_within` imports a Python trigger's module and makes its object on a
daemon thread, given at most :data:`IMPORT_TIMEOUT_S`. A module that hangs at import (it waits for a device, a
share, a licence server) makes ``load_triggers`` answer a ``ValueError`` naming the limit instead of never
answering, and its thread, left behind, cannot hold up the daemon's exit (a request's worker thread would have:
the process waits for those at exit). Another load of that module is refused at once while the import hangs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .triggers import DeclarativeMeasurement, Trigger

__all__ = ["IMPORT_TIMEOUT_S", "MEASURE_TIMEOUT_S", "TimedTrigger", "load_within", "time_limited"]

#: Longest a Python trigger's ``measure`` may take on one result (s) before the trigger is disabled.
MEASURE_TIMEOUT_S = 5.0
#: Longest the import of a Python trigger's module and the making of its object may take (s) before the load is
#: refused (well within a client's reply timeout: ``ControlClient`` waits 30 s by default, ``scopecast ctl`` 60 s).
IMPORT_TIMEOUT_S = 10.0
_hung: dict[str, tuple[threading.Thread, float]] = {}  # module -> (the thread still importing it, when it started)
_hung_lock = threading.Lock()


class TimedTrigger:
    """``inner.measure`` on a thread of its own, given at most ``limit_s`` per result (a :class:`Trigger`)."""

    def __init__(self, inner: Trigger, name: str, limit_s: float | None = None) -> None:
        self.inner = inner
        self.limit_s = MEASURE_TIMEOUT_S if limit_s is None else limit_s
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=f"trigger-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            header, data, box, done = call
            try:
                box.append((True, self.inner.measure(header, data)))
            except BaseException as e:  # noqa: BLE001 - handed to the deciding thread, which disables the trigger
                box.append((False, e))
            done.set()

    def measure(self, header: dict[str, Any], data: np.ndarray) -> float:
        """``inner.measure(header, data)``; ``TimeoutError`` when it has not returned within ``limit_s``."""
        box: list[tuple[bool, Any]] = []
        done = threading.Event()
        self._calls.put((header, data, box, done))
        if not done.wait(self.limit_s):
            raise TimeoutError(f"measure() did not return within {self.limit_s:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Let the thread end (once a measurement under way returns)."""
        self._calls.put(None)


def time_limited(measures: dict[str, Trigger], limit_s: float | None = None) -> dict[str, Trigger]:
    """``measures`` with every Python trigger wrapped in a :class:`TimedTrigger` (declarative ones are ours and
    bounded: they stay as they are)."""
    return {name: m if isinstance(m, DeclarativeMeasurement | TimedTrigger) else TimedTrigger(m, name, limit_s)
            for name, m in measures.items()}


def load_within(module: str, load: Callable[[], Any], limit_s: float | None = None) -> Any:
    """``load()`` (importing ``module``, a Python trigger's, and making its object) on a daemon thread, given at
    most ``limit_s`` (default :data:`IMPORT_TIMEOUT_S`). Returns its value or raises its exception (a
    ``BaseException`` such as ``SystemExit`` as a ``RuntimeError`` naming it); ``TimeoutError`` past the limit,
    and at once while an earlier load of ``module`` has hung past the limit (a hung import cannot be interrupted).
    """
    limit = IMPORT_TIMEOUT_S if limit_s is None else limit_s
    box: list[tuple[bool, Any]] = []
    with _hung_lock:
        earlier = _hung.get(module)
        if earlier is not None and earlier[0].is_alive() and time.monotonic() - earlier[1] >= limit:
            raise TimeoutError(f"an earlier import of module {module!r} (started {time.monotonic() - earlier[1]:.0f} s "
                               "ago) has not returned; fix the module and restart the daemon")

        def run() -> None:
            try:
                box.append((True, load()))
            except Exception as e:  # noqa: BLE001 - handed to the loading thread
                box.append((False, e))
            except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: not this thread's to end
                box.append((False, RuntimeError(f"{type(e).__name__} raised while loading: {e}")))

        thread = threading.Thread(target=run, name=f"trigger-import-{module}", daemon=True)
        _hung[module] = (thread, time.monotonic())
        thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise TimeoutError(f"importing module {module!r} and making the trigger did not finish within {limit:g} s "
                           "(it cannot be interrupted: a further load of it is refused until the daemon restarts)")
    with _hung_lock:
        if _hung.get(module, (None, 0.0))[0] is thread:
            del _hung[module]
    ok, value = box[0]
    if not ok:
        raise value
    return value
