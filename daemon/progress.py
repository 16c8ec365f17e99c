"""Progress lines for long work: done / total, rate and time left, on a logger at INFO.

Plain :mod:`logging`, no progress-bar library (the running daemon needs none):
``scopecast`` shows INFO on stderr by default (``-q`` hides it), so ``gather``,
the offline engine and ``scopecast ctl wait`` say how far they are while they
run. Lines are rate-limited (one every ``every_s`` seconds, plus the first and
the last), so a log file stays readable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Progress", "format_duration", "wait_job"]


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Count work done towards an optional ``total`` and log where it stands.

    ``update`` sets (``done=``) or advances (``advance=``) the count and logs a
    line at most every ``every_s`` seconds; ``finish`` logs the last line. The
    rate is measured from the moment of construction and its ``done`` (work
    already under way when it is first observed gets an honest rate), the time
    left from that rate.
    """

    def __init__(self, what: str, total: int | None = None, unit: str = "items",
                 log: logging.Logger | None = None, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, done: int = 0) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.log = log or logging.getLogger("scopecast.progress")
        self.every_s = every_s
        self.clock = clock
        self.done = done
        self._t0 = clock()
        self._done0 = done
        self._last_line = -float("inf")
        self.lines = 0

    def rate(self) -> float | None:
        """Units per second since construction (None before there is one to measure)."""
        elapsed = self.clock() - self._t0
        if elapsed <= 0 or self.done <= self._done0:
            return None
        return (self.done - self._done0) / elapsed

    def line(self, note: str = "", finished: bool = False) -> str:
        """``what: 12/48 fields (25 %), 0.82 fields/s, 44 s left[, note]``."""
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        parts = [f"{count} {self.unit}" + (f" ({100 * self.done / self.total:.0f} %)" if self.total else "")]
        rate = self.rate()
        elapsed = format_duration(self.clock() - self._t0)
        if rate:
            parts.append(f"{rate:.3g} {self.unit}/s")
        if finished:
            parts.append(f"in {elapsed}")
        elif rate and self.total and self.done < self.total:
            parts.append(f"{format_duration((self.total - self.done) / rate)} left")
        elif not rate:
            parts.append(f"{elapsed} so far")
        return f"{self.what}: " + ", ".join(p for p in [*parts, note] if p)

    def update(self, done: int | None = None, advance: int = 1, total: int | None = None, note: str = "",
               emit: bool = True) -> None:
        """Set or advance the count; log a line (``emit``) if ``every_s`` has passed since the last one."""
        if total is not None:
            self.total = total
        self.done = done if done is not None else self.done + advance
        if emit and self.clock() - self._last_line >= self.every_s:
            self._emit(note)

    def finish(self, note: str = "", finished: bool = True) -> None:
        """Log the last line (always); ``finished=False`` when the work goes on unobserved
        (the line then keeps the time left instead of the time taken)."""
        self._emit(note, finished=finished)

    def _emit(self, note: str, finished: bool = False) -> None:
        self._last_line = self.clock()
        self.lines += 1
        self.log.info("%s", self.line(note, finished))


def wait_job(client: Any, job_id: str, timeout_s: float = 600.0, progress: Progress | None = None,
             poll_s: float = 2.0, margin_s: float = 30.0) -> dict[str, Any]:
    """Wait for a daemon job through ``client`` (a :class:`ControlClient`), showing its
    progress (frames / total) on ``progress``; return the job when it ended or
    ``timeout_s`` passed (its ``status`` is then still ``queued`` or ``running``;
    ``math.inf``: until it ends).

    Uses the daemon's own ``wait`` in slices of ``poll_s``, so the reply comes the
    moment the job ends, never a fixed sleep later; each reply is awaited ``margin_s``
    beyond its slice (``TimeoutError`` after that).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        slice_s = max(0.0, min(poll_s, deadline - time.monotonic()))
        info = client.request("wait", timeout_s=slice_s + margin_s, job=job_id, wait_s=slice_s)
        ended = info.get("status") not in ("queued", "running") or time.monotonic() >= deadline
        if progress is not None:
            progress.update(done=int(info.get("frames") or 0), total=info.get("total"), emit=not ended)
            if ended:
                status = str(info.get("status", ""))
                running = status in ("queued", "running")
                progress.finish(f"still {status}" if running else status, finished=not running)
        if ended:
            return info
