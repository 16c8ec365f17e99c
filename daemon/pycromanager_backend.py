"""The ``pycromanager`` backend: scopecast's microscope backend on pycromanager's core.

Two ways in, one backend (:class:`PycromanagerBackend`, which reuses
:class:`~scopecast.daemon.backend.MMCoreBackend`'s logic unchanged):

- **Python backend** (:func:`load_pycromanager_backend` with a config):
  pycromanager's in-process core, ``start_headless(mm_path, python_backend=True)``
  then ``pycromanager.Core()``: a plain pymmcore ``CMMCore`` (an mmpycorex
  subclass that adds snake_case aliases). It loads compiled Micro-Manager
  adapters (a lab's rig, or the ``mm-test-adapters`` DemoCamera the tests use)
  but not Python devices: a config with ``#py`` lines (the simulator) is refused
  with that reason -- run those with ``--backend mmcore``.
- **Java bridge** (``bridge=True``): MMCoreJ inside a running Micro-Manager
  application (or pycromanager's Java headless mode), reached over pycromanager's
  ZeroMQ bridge (``pycromanager.Core(convert_camel_case=False, port=...)``). The
  application owns the hardware configuration; the backend never loads or
  unloads devices there. Written against pycromanager's documented API and not
  exercised here (no Micro-Manager application in the test environment).

The pycromanager core offers the camelCase MMCore API but not pymmcore-plus's
extras (``core.events``, ``core.mda``, tuple-returning ``getConfigData``, the
UniMMCore auto-shutter/pixel-size workarounds, which it does not need: it has no
Python devices). :class:`_CoreView` is the one place that bridges the
differences. pycromanager itself is imported only when a backend is loaded.
"""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Any

import numpy as np

from .backend import (LED_CONTROLLERS, BackendError, LedController, MMCoreBackend, _declared_controllers,
                      _missing_adapters_hint, _unload_quietly, resolve_config)

__all__ = ["DEFAULT_BRIDGE_PORT", "PycromanagerBackend", "load_pycromanager_backend", "start_python_backend"]

#: pycromanager's default ZeroMQ bridge port (Micro-Manager: Tools > Options > "Run server on port 4827").
DEFAULT_BRIDGE_PORT = 4827


class _CoreView:
    """pycromanager's core seen with the return types :class:`MMCoreBackend` relies on.

    Every call is forwarded; only these differ from pymmcore-plus and are translated:
    ``getConfigData`` returns ``[(device, property, value), ...]`` (pymmcore returns a
    ``Configuration``; pymmcore-plus an iterable of such tuples).
    """

    def __init__(self, core: Any) -> None:
        self._core = core

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._core, name)
        self.__dict__[name] = attr  # forward once, then straight from the instance
        return attr

    def getConfigData(self, group: str, preset: str) -> list[tuple[str, str, str]]:  # noqa: N802 - MMCore name
        cfg = self._core.getConfigData(group, preset)
        settings = (cfg.getSetting(i) for i in range(cfg.size()))
        return [(str(s.getDeviceLabel()), str(s.getPropertyName()), str(s.getPropertyValue())) for s in settings]


class _BridgeCoreView(_CoreView):
    """MMCoreJ over pycromanager's ZeroMQ bridge (``convert_camel_case=False``).

    Beyond :class:`_CoreView`: Java ``StrVector`` results become tuples of str;
    ``getImage`` returns the 2-D image (the bridge sends a flat Java array, and
    ``short[]``/``int[]`` arrive signed: viewed as the camera's unsigned pixels);
    ``getXYPosition`` returns ``(x, y)`` (Java returns a ``Point2D``);
    ``getLoadedDevicesOfType`` takes pymmcore's integer device type (Java takes
    an enum the bridge cannot build) and filters ``getLoadedDevices`` by
    ``getDeviceType`` name.
    """

    _UNSIGNED = {np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16, np.dtype(np.int32): np.uint32}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._core, name)
        if not callable(attr):
            return attr

        def call(*args: Any) -> Any:
            return _plain(attr(*args))

        call.__name__ = name
        self.__dict__[name] = call
        return call

    def getImage(self, *args: Any) -> np.ndarray:  # noqa: N802 - MMCore name
        core = self._core
        pix = np.asarray(core.getImage(*args))
        unsigned = self._UNSIGNED.get(pix.dtype)
        if unsigned is not None:
            pix = pix.view(unsigned)
        return pix.reshape(int(core.getImageHeight()), int(core.getImageWidth()))

    def getXYPosition(self) -> tuple[float, float]:  # noqa: N802 - MMCore name
        return float(self._core.getXPosition()), float(self._core.getYPosition())

    def getLoadedDevicesOfType(self, device_type: int) -> tuple[str, ...]:  # noqa: N802 - MMCore name
        from pymmcore_plus import DeviceType

        wanted = DeviceType(int(device_type)).name  # "CameraDevice", ...: the Java enum's names
        out = []
        for label in self.getLoadedDevices():
            kind = self._core.getDeviceType(label)
            if str(kind if isinstance(kind, str) else kind.toString()) == wanted:
                out.append(label)
        return tuple(out)


def _plain(value: Any) -> Any:
    """A Java ``StrVector`` (``size()``/``get(i)``) as a tuple of str; anything else as is."""
    if hasattr(value, "size") and hasattr(value, "get") and not isinstance(value, dict | list | tuple | np.ndarray):
        return tuple(str(value.get(i)) for i in range(value.size()))
    return value


class PycromanagerBackend(MMCoreBackend):
    """:class:`~scopecast.daemon.backend.MicroscopeBackend` on pycromanager's core.

    Build it with :func:`load_pycromanager_backend`. ``pycro_core`` is the object
    ``pycromanager.Core()`` returns (the same one a user's pycromanager script
    drives); ``core`` is its :class:`_CoreView`. ``kind`` is ``"python"`` or
    ``"bridge"``.
    """

    def __init__(self, pycro_core: Any, kind: str, channel_group: str | None = None,
                 led_controllers: tuple[LedController, ...] = LED_CONTROLLERS) -> None:
        if kind not in ("python", "bridge"):
            raise ValueError(f"unknown pycromanager backend kind {kind!r}; use 'python' or 'bridge'")
        self.kind = kind
        self.pycro_core = pycro_core
        view = _BridgeCoreView(pycro_core) if kind == "bridge" else _CoreView(pycro_core)
        super().__init__(view, channel_group, led_controllers)

    def close(self) -> None:
        """Python backend: unload the devices and stop pycromanager's headless core and
        acquisition engine (``stop_headless``). Java bridge: let go of the remote core
        only -- the Micro-Manager application keeps its hardware. Unusable afterwards."""
        with self.lock:
            if self.core is None:
                return
            if self.kind == "python":
                import pycromanager

                _unload_quietly(self.pycro_core)
                pycromanager.stop_headless()
            self.core = None
            self.pycro_core = None
        gc.collect()


def start_python_backend(mm_path: str | Path | None = None) -> Any:
    """Start pycromanager's Python backend (no config loaded) and return its core.

    ``mm_path``: the folder of device adapters (default: what
    ``pymmcore_plus.find_micromanager()`` finds: ``MICROMANAGER_PATH``, an
    ``mmcore install`` folder, or the ``mm-test-adapters`` package). Refuses when a
    Python-backend core is already running in this process (``pycromanager.Core()``
    returns the first one, so a second would be unreachable).

    Workaround (pycromanager 1.0.2, ``acq_eng_py/internal/engine.py``; no upstream
    issue found -- report it): ``Engine`` is a class-level singleton that
    ``stop_headless`` shuts down but never clears, so a second ``start_headless``
    in the same process keeps the first, unloaded core and its stopped executors,
    and every ``Acquisition`` then fails ("Camera byte depth cannot be zero"). The
    stale singleton is dropped here before starting; with an upstream fix there is
    none to drop.
    """
    import mmpycorex
    import pycromanager
    from pycromanager.acquisition.acq_eng_py.internal.engine import Engine

    if mmpycorex.is_pymmcore_active():
        raise BackendError(
            "a pycromanager Python-backend core is already running in this process; "
            "call pycromanager.stop_headless() first"
        )
    if mm_path is None:
        from pymmcore_plus import find_micromanager

        mm_path = find_micromanager()
        if not mm_path:
            raise BackendError(
                "no Micro-Manager device adapters found for pycromanager's Python backend "
                "(MICROMANAGER_PATH, `mmcore install` folder, mm-test-adapters); fix: "
                "`pip install mm-test-adapters`, `mmcore install`, or set MICROMANAGER_PATH"
            )
    if getattr(Engine, "singleton", None) is not None:
        del Engine.singleton  # the stale engine of an earlier start_headless (see above)
    pycromanager.start_headless(str(mm_path), None, python_backend=True)
    return pycromanager.Core()


def load_pycromanager_backend(
    config: str | Path | None = None, *, bridge: bool = False, mm_path: str | Path | None = None,
    port: int = DEFAULT_BRIDGE_PORT, channel_group: str | None = None,
) -> PycromanagerBackend:
    """Load a scopecast backend on pycromanager's core.

    Python backend (default): start pycromanager's in-process core on the
    adapters in ``mm_path`` (see :func:`start_python_backend`) and load the
    Micro-Manager ``config`` (a path or the name of a shipped config). Configs
    with ``#py`` lines (Python devices, e.g. the simulator) are refused: the
    plain pymmcore core cannot load them. A failed load stops the core again and
    raises :class:`BackendError` naming the file and cause (and, for missing
    adapters, where they were looked for and the fix).

    Java bridge (``bridge=True``): connect to the Micro-Manager application whose
    ZeroMQ server listens on ``port`` and drive the hardware it has loaded;
    ``config`` must be None (the application owns its configuration).
    """
    if bridge:
        if config is not None:
            raise ValueError(
                "the pycromanager Java bridge drives the configuration the Micro-Manager application "
                "has loaded: load it there (or with pycromanager.start_headless) and pass no config"
            )
        return PycromanagerBackend(_bridge_core(port), "bridge", channel_group)
    if config is None:
        raise ValueError("pycromanager's Python backend needs a Micro-Manager config (.cfg) to load")
    path = resolve_config(config)
    py_lines = [n for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
                if line.lstrip().startswith("#py")]
    if py_lines:
        raise BackendError(
            f"cannot load hardware config {path} with pycromanager's Python backend: lines "
            f"{', '.join(map(str, py_lines[:5]))}{'...' if len(py_lines) > 5 else ''} declare Python "
            "devices ('#py'), which its plain pymmcore core cannot load; run this config with the "
            "mmcore backend (pymmcore-plus UniMMCore)"
        )
    import pycromanager

    core = start_python_backend(mm_path)
    msg = ""
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with the cause named
        msg = (str(e).strip() or type(e).__name__) + _missing_adapters_hint(core, path)
    backend: PycromanagerBackend | None = None
    if not msg:
        try:
            backend = PycromanagerBackend(core, "python", channel_group,
                                          (*_declared_controllers(path), *LED_CONTROLLERS))
        except BackendError as e:
            msg = str(e)
    if backend is None:  # raised outside the except blocks: no traceback keeps the core alive
        _unload_quietly(core)
        pycromanager.stop_headless()
        del core
        gc.collect()
        raise BackendError(f"cannot load hardware config {path} with pycromanager's Python backend:\n{msg}")
    return backend


def _bridge_core(port: int) -> Any:
    """MMCoreJ over pycromanager's bridge on ``port``; a clear error when nothing listens there."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError as e:
        raise BackendError(
            f"no Micro-Manager Java bridge on port {port} ({e.strerror or e}): start the Micro-Manager "
            f"application with Tools > Options > 'Run server on port {port}' enabled, or pycromanager's "
            "Java headless mode (pycromanager.start_headless(mm_app_path, config))"
        ) from None
    from pycromanager import Core

    try:
        return Core(convert_camel_case=False, port=port)
    except Exception as e:  # noqa: BLE001 - pycromanager raises a bare Exception
        raise BackendError(f"cannot reach Micro-Manager's core over the Java bridge on port {port}: {e}") from None
