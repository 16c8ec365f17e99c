"""Waiting for conditions (never for fixed times): shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(cond: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll ``cond`` until it is truthy (returning its value); fail naming ``what`` after ``timeout`` s.

    The timeout is a generous upper bound for a loaded machine, never an expected duration.
    """
    t_end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def wait_subscribed(publisher, topic: str, at_least: int = 1, timeout: float = 60.0) -> None:
    """Wait until ``publisher`` (a FramePublisher or InferenceEngine) has ``at_least``
    subscriptions to ``topic`` (instead of sleeping for ZeroMQ's slow joiner)."""
    wait_until(lambda: publisher.subscriptions.of(topic) >= at_least, timeout,
               f"{at_least} subscription(s) to {topic!r}")


def spin(app, cond: Callable[[], object], timeout: float = 60.0) -> bool:
    """Process Qt events of ``app`` until ``cond()`` holds; False after ``timeout`` s (a bound for a loaded
    machine, never an expected duration)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    return False
