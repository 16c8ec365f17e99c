"""How ``scopecast`` logs: one stderr handler, INFO by default, ``-v`` for everything, ``-q`` for warnings.

By default the scopecast loggers show INFO (progress of long work, one-line
summaries such as the runtime an engine chose) and other libraries only their
warnings; ``-q`` leaves warnings and errors; ``-v`` shows debug messages, with
pymmcore-plus's and the Micro-Manager core's (hardware adapters) among them.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["configure_logging"]


class _Shown(logging.Filter):
    """What the stderr handler shows: scopecast's messages from ``level`` up (INFO by
    default: progress and one-line summaries), pymmcore-plus's only with ``-v``, other
    libraries' warnings (their debug messages too with ``-v``, except the chatty ones)."""

    QUIET_LIBRARIES = ("zarr", "asyncio", "numcodecs")

    def __init__(self, level: int, verbose: bool) -> None:
        super().__init__()
        self.level, self.verbose = level, verbose

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "scopecast" or name.startswith("scopecast."):
            return record.levelno >= self.level
        if name.startswith("pymmcore-plus") or name.startswith("pymmcore_plus"):
            return self.verbose
        if self.verbose and not name.startswith(self.QUIET_LIBRARIES):
            return True
        return record.levelno >= logging.WARNING


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """One stderr handler on the root logger (replacing one an earlier call added).

    pymmcore-plus sets the root logger to DEBUG when imported and logs to stderr
    through its own handler: with ``-v`` its messages come through ours instead
    (its stderr handler is removed), and the Micro-Manager core and its device
    adapters log to stderr too (pymmcore-plus's ``PYMM_STDERR_LOG`` and
    ``PYMM_DEBUG_LOG``, read when a core is created; an environment that sets
    them wins). Without ``-v`` none of that is shown (the core still writes
    pymmcore-plus's log file).
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "scopecast", False)]:
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.scopecast = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(_Shown(level, verbose))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("scopecast").setLevel(level)
    mm = logging.getLogger("pymmcore-plus")
    if verbose:
        import pymmcore_plus  # noqa: F401 - its import adds its stderr handler: replace it with ours now

        for h in [h for h in mm.handlers if type(h) is logging.StreamHandler]:
            mm.removeHandler(h)
        mm.setLevel(logging.DEBUG)
        os.environ.setdefault("PYMM_STDERR_LOG", "1")
        os.environ.setdefault("PYMM_DEBUG_LOG", "1")
    else:
        mm.setLevel(logging.CRITICAL)
