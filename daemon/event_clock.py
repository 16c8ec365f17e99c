"""When a scan's events may start: useq's ``min_start_time`` counted as pymmcore-plus's ``MDARunner`` counts it.

An event's ``min_start_time`` is seconds after the event clock started, and the clock restarts at every event with
``reset_event_timer`` (useq sets it where the time index goes back to 0: the first event, and each position's own
time-lapse where time is inside position, e.g. ``axis_order="ptc"``). Counted from the job's start instead, every
time point of the second position on was already due: its time-lapse was taken at once.
"""

from __future__ import annotations

import threading
import time

import useq

__all__ = ["EventClock"]


class EventClock:
    """The scan's event clock; :meth:`wait_due` holds each event until it may start."""

    def __init__(self, stop: threading.Event) -> None:
        """``stop``: the job's stop request, which ends a wait at once."""
        self._stop = stop
        self._t0 = time.monotonic()

    def wait_due(self, event: useq.MDAEvent) -> bool:
        """Wait until ``event`` may start (restarting the clock first where it says so); False when a stop was
        requested meanwhile (the event is not to be taken)."""
        if event.reset_event_timer:
            self._t0 = time.monotonic()
        if event.min_start_time:
            delay = self._t0 + event.min_start_time - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return False
        return True
