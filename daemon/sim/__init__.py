"""The simulated LED-array microscope: pymmcore-plus ``UniMMCore`` Python devices.

Loaded from ``hardware_configs/sim-ledarray.cfg`` like any Micro-Manager
configuration; :func:`sized_config` writes that configuration with another
sensor size (smaller frames keep tests, gathering and benchmarks fast).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["sized_config"]


def sized_config(directory: str | Path, size: int, config: str | Path = "sim-ledarray.cfg") -> Path:
    """``config`` (a path or a shipped name) with ``size``×``size`` camera and STED sensors,
    written into ``directory``; returns the new file's path."""
    from scopecast.daemon.backend import resolve_config

    text = resolve_config(config).read_text()
    for dev in ("Camera", "STED"):
        for axis in ("Width", "Height"):
            text = text.replace(f"#py Property,{dev},Sensor{axis},512", f"#py Property,{dev},Sensor{axis},{size}")
    path = Path(directory) / f"sim-{size}.cfg"
    path.write_text(text)
    return path
