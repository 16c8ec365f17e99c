"""``scopecast gui``: open the live viewer, or render a screenshot headless and exit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["missing_display", "run_gui"]

#: Qt platforms that need a window system (X11 or Wayland) to start.
_WINDOWED = ("", "xcb", "wayland", "wayland-egl")


def missing_display(environ: dict[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Why no window can open here (one line), or None. Checked before Qt starts, which would
    otherwise abort with its own message ("could not connect to display")."""
    env = os.environ if environ is None else environ
    if not platform.startswith("linux") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0]
    if qpa not in _WINDOWED:
        return None
    return ("scopecast gui: no display (DISPLAY and WAYLAND_DISPLAY are unset): run it on a desktop session, "
            "render headless with QT_QPA_PLATFORM=offscreen and --screenshot out.png, or run the headless demo "
            "(scopecast demo: latency figures in the terminal and a snapshot image)")


def run_gui(control: str, stream: str, engines: list[tuple[str, str]], screenshot: str = "",
            frames: int = 20, timeout_s: float = 120.0, size: tuple[int, int] = (1600, 1000)) -> int:
    """Run the window; with ``screenshot`` render after ``frames`` results (or raw frames) and exit.

    ``engines`` is a list of ``(results address, control address)``.
    """
    if screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    why = missing_display()
    if why:
        print(why, file=sys.stderr)
        return 2
    import time

    import pyqtgraph as pg
    from pyqtgraph.Qt import QtCore

    from .window import EngineEndpoint, ScopeWindow

    app = pg.mkQApp("scopecast")
    win = ScopeWindow(control, stream, [EngineEndpoint(r, c) for r, c in engines])
    win.resize(*size)
    win.show()
    code = {"rc": 0}
    if screenshot:
        t_end = time.monotonic() + timeout_s
        timer = QtCore.QTimer()

        def check() -> None:
            """Save the screenshot once: the timer is stopped before ``processEvents`` could run it again."""
            if not timer.isActive():
                return
            done = win.displayed >= frames if engines else win.frames_shown >= frames
            if done or time.monotonic() > t_end:
                timer.stop()
                if not done:
                    print(f"scopecast gui: only {win.displayed} results / {win.frames_shown} frames in "
                          f"{timeout_s:g} s; saving what is shown", file=sys.stderr)
                    code["rc"] = 1
                app.processEvents()
                win.grab().save(str(Path(screenshot)))
                print(f"scopecast gui: screenshot {screenshot}")
                win.close()
                app.quit()

        timer.timeout.connect(check)
        timer.start(200)
    app.exec()
    # PySide6 can crash while tearing down Qt objects during interpreter exit: release the
    # window while the application still exists, then leave without a second teardown.
    win.deleteLater()
    app.processEvents()
    del win
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code["rc"])
