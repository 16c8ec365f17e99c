"""A time limit on a user's Python trigger, so that one that hangs cannot stall the others.

The trigger thread decides on each result for every loaded trigger in turn. A Python trigger's ``measure``
is the user's code: one that never returns would hold that thread forever, and with it every other
trigger, the decision log, lockstep live and ``unload_triggers`` (which waits 30 s for the thread, then leaves
it). :class:`TimedTrigger` runs ``measure`` on a thread of the trigger's own and waits at most
:data:`MEASURE_TIMEOUT_S` for it; past that it raises ``TimeoutError``, which disables the trigger with the
reason in the decision log as any other failing measurement. A measurement that never returns cannot be
interrupted in Python: its thread (a daemon thread) is left behind, and the trigger is never called again.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from .triggers import DeclarativeMeasurement, Trigger

__all__ = ["MEASURE_TIMEOUT_S", "TimedTrigger", "time_limited"]

#: Longest a Python trigger's ``measure`` may take on one result (s) before the trigger is disabled.
MEASURE_TIMEOUT_S = 5.0


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
