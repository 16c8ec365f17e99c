"""Shared by the tests: waiting for conditions (never for fixed times), and package copies with an edited
``validated`` section."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
    subscriptions to ``topic`` (instead of sleeping for ZeroMQ's slow joiner). ``result`` counts ``shm`` too:
    a result subscriber on the engine's machine takes its results by shared memory."""
    topics = ("result", "shm") if topic == "result" else (topic,)
    wait_until(lambda: publisher.subscriptions.of(*topics) >= at_least, timeout,
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


def package_with_validated(src: Path, dst: Path, key: str, section: dict[str, Any] | None) -> Any:
    """A copy of the package folder ``src`` at ``dst`` whose manifest's ``validated[key]`` is ``section`` (None:
    removed), loaded as the engine loads it."""
    from scopecast.daemon.inference.package import load_package

    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    m = json.loads(path.read_text())
    m["validated"].pop(key, None)
    if section is not None:
        m["validated"][key] = section
    path.write_text(json.dumps(m))
    return load_package(dst)
