"""Microscope backends: the one seam between acquisition logic and hardware.

:class:`MicroscopeBackend` is what the acquisition engine needs from a
microscope. :class:`MMCoreBackend` implements it on a pymmcore-plus core, so
the simulated LED-array scope (Python devices from a ``.cfg``) and a real
Micro-Manager system (C++ adapters from a ``.cfg``) run through the same code.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .frames import now_ns

__all__ = [
    "LED_CONTROLLERS",
    "BackendError",
    "ChannelInfo",
    "LedController",
    "MMCoreBackend",
    "MicroscopeBackend",
    "Snap",
    "load_mmcore_backend",
]


@dataclass(frozen=True)
class LedController:
    """How scopecast recognizes the label-free presets of an LED-array controller.

    A channel preset that sets ``property`` of the controller (``device``, or the
    first loaded device that has ``property``) to a value other than ``off`` is a
    label-free channel whose pattern is that value; one that sets ``off`` (the
    LEDs dark, e.g. during fluorescence) is not. docs/hardware.md has the table;
    another controller is declared in its ``.cfg`` with a comment line
    ``#scopecast led-pattern,<Device>,<Property>,<off value>``.
    """

    property: str
    off: str = ""
    device: str = ""  # a device label; "" = the first loaded device with ``property``
    adapter: str = ""  # the Micro-Manager device it describes (documentation)


#: Controllers recognized without a declaration (docs/hardware.md).
LED_CONTROLLERS: tuple[LedController, ...] = (
    LedController("IlluminationPattern", "Clear",
                  adapter="IlluminateLedArray (Micro-Manager) and scopecast's simulator"),
)
_DECLARATION = "#scopecast led-pattern,"
#: Exposure limits for cameras whose adapter declares none (ms).
DEFAULT_EXPOSURE_RANGE_MS = (0.01, 60_000.0)


#: Config group whose presets are the objectives (Micro-Manager's convention).
OBJECTIVE_GROUP = "Objective"
#: An XY stage property that declares its travel: the half-range in x and y about the origin (µm), as the
#: simulated stage has it; moves beyond it are refused by the stage, and plans reaching them at the request.
XY_TRAVEL_PROPERTY = "TravelLimitUm"


class BackendError(RuntimeError):
    """A hardware request that could not be carried out (message names the cause)."""


@dataclass(frozen=True)
class ChannelInfo:
    """A channel preset and what it does optically."""

    name: str
    modality: str  # "label-free" | "fluorescence"
    pattern: str = ""  # LED pattern for label-free channels
    exposure_ms: float | None = None  # the main camera's exposure the preset sets (None: it sets none)


@dataclass
class Snap:
    """One exposure from a detector."""

    data: np.ndarray
    detector: str
    t_exposure_start_ns: int
    t_acquired_ns: int
    exposure_ms: float
    extra: dict[str, Any]


@runtime_checkable
class MicroscopeBackend(Protocol):
    """What the acquisition engine needs from a microscope.

    All methods may be called from several threads; implementations serialise
    hardware access themselves and hold ``lock`` while the hardware is in use
    (callers that must never wait, like ``status``, only try it). Errors are
    raised as :class:`BackendError` (or a ``ValueError`` for a refused argument)
    with a message naming the problem; a refused request leaves the hardware as
    it was.
    """

    lock: threading.RLock

    def channels(self) -> dict[str, ChannelInfo]: ...
    def patterns(self) -> tuple[str, ...]: ...
    def detectors(self) -> tuple[str, ...]: ...
    def current_channel(self) -> str: ...
    def current_pattern(self) -> str: ...
    def set_channel(self, name: str) -> None: ...
    def set_pattern(self, name: str) -> None: ...
    def exposure_ms(self, detector: str | None = None) -> float: ...
    def set_exposure_ms(self, value: float, detector: str | None = None) -> None: ...
    def exposure_range_ms(self, detector: str | None = None) -> tuple[float, float]: ...
    def check_exposure_ms(self, value: float, detector: str | None = None) -> None: ...
    def position_um(self) -> tuple[float, float, float]: ...
    def move_um(self, x: float | None = None, y: float | None = None, z: float | None = None) -> None: ...
    def travel_um(self) -> dict[str, tuple[float, float]]: ...
    def pixel_size_um(self, detector: str | None = None) -> float: ...
    def objectives(self) -> tuple[str, ...]: ...
    def set_objective(self, name: str) -> None: ...
    def snap(self, detector: str | None = None, exposure_ms: float | None = None) -> Snap: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class MMCoreBackend:
    """:class:`MicroscopeBackend` on a pymmcore-plus ``CMMCorePlus``/``UniMMCore``.

    Parameters
    ----------
    core:
        A loaded core.
    channel_group:
        Config group whose presets are the channels (default: the core's channel group).
    """

    def __init__(self, core: Any, channel_group: str | None = None,
                 led_controllers: tuple[LedController, ...] = LED_CONTROLLERS) -> None:
        from .sim.unicore_workarounds import install

        install(core)  # pymmcore-plus gaps for Python devices (auto-shutter, pixel size)
        self.core = core
        self.lock = threading.RLock()
        self.channel_group = channel_group or core.getChannelGroup()
        if not self.channel_group:
            raise BackendError(
                "no channel group: set 'Property,Core,ChannelGroup,<group>' in the config"
            )
        if self.channel_group not in core.getAvailableConfigGroups():
            raise BackendError(
                f"channel group {self.channel_group!r} is not defined; groups: "
                f"{', '.join(core.getAvailableConfigGroups())}"
            )
        for group in (self.channel_group, OBJECTIVE_GROUP):
            _check_presets(core, group)
        for c in led_controllers:
            if c.device and not (c.device in core.getLoadedDevices() and core.hasProperty(c.device, c.property)):
                raise BackendError(f"the declared LED controller {c.device}-{c.property} is not a loaded "
                                   f"device with that property ({c.adapter})")
        found = next(((d, c) for c in led_controllers for d in ([c.device] if c.device else core.getLoadedDevices())
                      if d in core.getLoadedDevices() and core.hasProperty(d, c.property)), ("", None))
        self.led_device: str = found[0]
        self.led_controller: LedController | None = found[1]
        self.main_camera = core.getCameraDevice()
        self._sensor_sizes: dict[tuple, tuple[int, int]] = {}
        self._channels = self._discover_channels()

    # ------------------------------------------------------------ description
    def _discover_channels(self) -> dict[str, ChannelInfo]:
        out: dict[str, ChannelInfo] = {}
        led = self.led_controller
        for preset in self.core.getAvailableConfigs(self.channel_group):
            pattern, exposure = "", None
            for dev, prop, value in self.core.getConfigData(self.channel_group, preset):
                if led is not None and dev == self.led_device and prop == led.property and value != led.off:
                    pattern = value
                if dev == self.main_camera and prop == "Exposure":
                    with contextlib.suppress(ValueError):  # not a number: setting the preset says so
                        exposure = float(value)
            out[preset] = ChannelInfo(
                preset, "label-free" if pattern else "fluorescence", pattern, exposure
            )
        return out

    def channels(self) -> dict[str, ChannelInfo]:
        return dict(self._channels)

    @property
    def _pattern_property(self) -> str:
        return self.led_controller.property if self.led_controller else ""

    def patterns(self) -> tuple[str, ...]:
        if not self.led_device:
            return ()
        return tuple(self.core.getAllowedPropertyValues(self.led_device, self._pattern_property))

    def detectors(self) -> tuple[str, ...]:
        from pymmcore_plus import DeviceType

        return tuple(self.core.getLoadedDevicesOfType(DeviceType.Camera))

    def describe(self) -> dict[str, Any]:
        with self.lock:
            x, y, z = self.position_um()
            return {
                "channel_group": self.channel_group,
                "channel": self.current_channel(),
                "channels": {k: vars(v) for k, v in self._channels.items()},
                "patterns": list(self.patterns()),
                "pattern": self.current_pattern(),
                "detectors": list(self.detectors()),
                "camera": self.main_camera,
                "exposure_ms": self.exposure_ms(),
                "position_um": {"x": x, "y": y, "z": z},
                "pixel_size_um": self.pixel_size_um(),
                "image_shape": [self.core.getImageHeight(), self.core.getImageWidth()],
                "objectives": list(self.objectives()),
                "objective": self.core.getCurrentConfig(OBJECTIVE_GROUP) if self.objectives() else "",
            }

    # -------------------------------------------------------------- objective
    def objectives(self) -> tuple[str, ...]:
        """The presets of the ``Objective`` config group (empty: the config has none)."""
        if OBJECTIVE_GROUP not in self.core.getAvailableConfigGroups():
            return ()
        return tuple(self.core.getAvailableConfigs(OBJECTIVE_GROUP))

    def set_objective(self, name: str) -> None:
        """Switch the objective (the ``Objective`` preset ``name``) and wait until the devices settle."""
        with self.lock:
            names = self.objectives()
            if not names:
                raise ValueError("this microscope's config has no 'Objective' config group")
            if name not in names:
                raise ValueError(f"unknown objective {name!r}; objectives: {', '.join(names)}")
            self.core.setConfig(OBJECTIVE_GROUP, name)
            self.core.waitForConfig(OBJECTIVE_GROUP, name)

    def pixel_size_preset_with(self, objective: str) -> str:
        """The pixel-size preset that would match once the ``Objective`` preset ``objective`` is applied (its
        settings over the devices' current values, as the core matches them), "" where none would: the
        pixel size would read 0 µm. Nothing is moved."""
        with self.lock:
            applied = {(str(d), str(p)): v for d, p, v in self.core.getConfigData(OBJECTIVE_GROUP, objective)}

            def value(dev: str, prop: str) -> Any:
                key = (str(dev), str(prop))
                return applied[key] if key in applied else self.core.getProperty(dev, prop)

            for preset in self.core.getAvailablePixelSizeConfigs():
                settings = list(self.core.getPixelSizeConfigData(preset))
                if settings and all(same_setting(value(d, p), v) for d, p, v in settings):
                    return str(preset)
            return ""

    # ---------------------------------------------------------------- settings
    def current_channel(self) -> str:
        with self.lock:
            return self.core.getCurrentConfig(self.channel_group)

    def current_pattern(self) -> str:
        if not self.led_device:
            return ""
        return str(self.core.getProperty(self.led_device, self._pattern_property))

    def set_channel(self, name: str) -> None:
        if name not in self._channels:
            raise ValueError(
                f"unknown channel {name!r}; channels of group {self.channel_group!r}: "
                + ", ".join(self._channels)
            )
        with self.lock:
            self.core.setConfig(self.channel_group, name)
            self.core.waitForConfig(self.channel_group, name)

    def set_pattern(self, name: str) -> None:
        if not self.led_device:
            raise BackendError(
                "this microscope has no LED array scopecast recognizes (no device with "
                + " or ".join(repr(c.property) for c in LED_CONTROLLERS)
                + "; declare another controller in the .cfg, see docs/hardware.md)"
            )
        valid = self.patterns()
        if name not in valid:
            raise ValueError(f"unknown illumination pattern {name!r}; valid patterns: {', '.join(valid)}")
        with self.lock:
            self.core.setProperty(self.led_device, self._pattern_property, name)

    def exposure_ms(self, detector: str | None = None) -> float:
        """The exposure of ``detector`` (default: the current camera), ms: each camera keeps its own."""
        with self.lock, self._camera(detector):
            return float(self.core.getExposure())

    def set_exposure_ms(self, value: float, detector: str | None = None) -> None:
        """Set the exposure of ``detector`` (default: the current camera), ms; out of its range raises."""
        self.check_exposure_ms(value, detector)
        with self.lock, self._camera(detector):
            self.core.setExposure(float(value))

    @contextlib.contextmanager
    def _camera(self, detector: str | None) -> Iterator[str]:
        """``detector`` (default: the current camera) is the core's camera inside the block (the core's exposure
        and snap act on the current camera), the camera before it afterwards; yields its name. Hold the lock."""
        core = self.core
        prev = core.getCameraDevice()
        det = detector or prev
        if det == prev:
            yield det
            return
        if det not in self.detectors():
            raise ValueError(f"unknown detector {det!r}; detectors: {', '.join(self.detectors())}")
        core.setCameraDevice(det)
        try:
            yield det
        finally:
            core.setCameraDevice(prev)

    def exposure_range_ms(self, detector: str | None = None) -> tuple[float, float]:
        """The detector's exposure limits (its ``Exposure`` property limits where the
        adapter declares them; otherwise :data:`DEFAULT_EXPOSURE_RANGE_MS`). ``ValueError`` naming the
        detectors for a ``detector`` that is not one."""
        det = detector or self.main_camera
        core = self.core
        if detector and detector not in self.detectors():
            raise ValueError(f"unknown detector {detector!r}; detectors: {', '.join(self.detectors())}")
        if det and core.hasProperty(det, "Exposure") and core.hasPropertyLimits(det, "Exposure"):
            lo, hi = core.getPropertyLowerLimit(det, "Exposure"), core.getPropertyUpperLimit(det, "Exposure")
            if hi > lo:
                return max(float(lo), DEFAULT_EXPOSURE_RANGE_MS[0]), float(hi)
        return DEFAULT_EXPOSURE_RANGE_MS

    def check_exposure_ms(self, value: float, detector: str | None = None) -> None:
        """Raise ``ValueError`` naming the range unless ``value`` is a valid exposure."""
        lo, hi = self.exposure_range_ms(detector)
        if not (isinstance(value, int | float) and np.isfinite(value) and lo <= value <= hi):
            raise ValueError(
                f"exposure {value} ms is outside {detector or self.main_camera}'s range [{lo:g}, {hi:g}] ms"
            )

    # ------------------------------------------------------------------ stage
    def position_um(self) -> tuple[float, float, float]:
        with self.lock:
            x, y = self.core.getXYPosition() if self.core.getXYStageDevice() else (0.0, 0.0)
            z = self.core.getPosition() if self.core.getFocusDevice() else 0.0
            return float(x), float(y), float(z)

    def move_um(self, x: float | None = None, y: float | None = None, z: float | None = None) -> None:
        """Move to an absolute position; axes left ``None`` stay. Refused moves raise."""
        for name, v in (("x", x), ("y", y), ("z", z)):
            if v is not None and not np.isfinite(v):
                raise ValueError(f"stage {name} must be a finite number, got {v}")
        with self.lock:
            try:
                if x is not None or y is not None:
                    cx, cy = self.core.getXYPosition()
                    self.core.setXYPosition(cx if x is None else x, cy if y is None else y)
                    self.core.waitForDevice(self.core.getXYStageDevice())
                if z is not None:
                    self.core.setPosition(z)
                    self.core.waitForDevice(self.core.getFocusDevice())
            except (ValueError, RuntimeError) as e:
                raise ValueError(str(e)) from None

    def travel_um(self) -> dict[str, tuple[float, float]]:
        """The stage travel the adapters declare (µm, by axis): ``"z"`` from the focus drive's ``Position``
        property limits, where it has them; ``"x"`` and ``"y"`` from the XY stage's
        :data:`XY_TRAVEL_PROPERTY` (its half-range about the origin, as the simulator's stage declares it),
        where it has one. Micro-Manager has no way to ask other XY stages for their travel: their axes are
        not here (docs/hardware.md)."""
        with self.lock:
            core, travel = self.core, {}
            focus = core.getFocusDevice()
            if focus and core.hasProperty(focus, "Position") and core.hasPropertyLimits(focus, "Position"):
                lo = float(core.getPropertyLowerLimit(focus, "Position"))
                hi = float(core.getPropertyUpperLimit(focus, "Position"))
                if lo < hi:
                    travel["z"] = (lo, hi)
            xy = core.getXYStageDevice()
            if xy and core.hasProperty(xy, XY_TRAVEL_PROPERTY):
                with contextlib.suppress(ValueError):  # not a number: no travel known
                    half = float(core.getProperty(xy, XY_TRAVEL_PROPERTY))
                    if half > 0:
                        travel["x"] = travel["y"] = (-half, half)
            return travel

    # ----------------------------------------------------------------- camera
    def pixel_size_um(self, detector: str | None = None) -> float:
        """Pixel size at the sample, from the core's pixel-size configuration.

        A detector other than the main camera is assumed to see the same field of view.
        """
        with self.lock:
            px = float(self.core.getPixelSizeUm())
            if detector and detector != self.main_camera and px > 0:
                # the whole sensors' widths: an ROI on either detector narrows its image, not its sampling
                px *= self.sensor_size(self.main_camera)[0] / self.sensor_size(detector)[0]
            return px

    def sensor_size(self, camera: str) -> tuple[int, int]:
        """``(width, height)`` of ``camera``'s whole (binned) sensor, whatever ROI is set. MMCore reports the
        ROI's size only, so the ROI is cleared for the reading and put back (once per ROI and binning)."""
        core = self.core
        binning = core.getProperty(camera, "Binning") if core.hasProperty(camera, "Binning") else ""
        key = (camera, tuple(core.getROI(camera)), binning)
        cached = self._sensor_sizes.get(key)
        if cached is not None:
            return cached
        cur = core.getCameraDevice()
        if cur != camera:
            core.setCameraDevice(camera)
        try:
            x, y, w, h = core.getROI()
            core.clearROI()
            size = (int(core.getImageWidth()), int(core.getImageHeight()))
            if (x, y, w, h) != (0, 0, *size):
                core.setROI(x, y, w, h)
        finally:
            if cur != camera:
                core.setCameraDevice(cur)
        self._sensor_sizes[key] = size
        return size

    def roi_extra(self, camera: str) -> dict[str, Any]:
        """Where an ROI lies on the sensor (``roi`` x, y, w, h and ``sensor`` w, h; nothing without an ROI): the
        field's centre is then off the optical axis, and the recording places the frame by it."""
        x, y, w, h = (int(v) for v in self.core.getROI(camera))
        sw, sh = self.sensor_size(camera)
        return {} if (x, y, w, h) == (0, 0, sw, sh) else {"roi": [x, y, w, h], "sensor": [sw, sh]}

    def bit_depth_extra(self) -> dict[str, Any]:
        """The core's current camera's ``bit_depth`` where it is below its pixels' width (a 12-bit camera in
        16-bit pixels clips at 4095, not at the dtype's maximum): the ceiling the engine's saturation guard
        needs; nothing where the dtype's maximum is the ceiling. Hold the lock."""
        depth, width = int(self.core.getImageBitDepth()), 8 * int(self.core.getBytesPerPixel())
        return {"bit_depth": depth} if 0 < depth < width else {}

    def snap(self, detector: str | None = None, exposure_ms: float | None = None) -> Snap:
        """Expose ``detector`` (default: the current camera) once.

        ``exposure_ms`` is applied to that detector first (each camera keeps its
        own exposure). The core applies auto-shutter, as for any client.
        """
        with self.lock, self._camera(detector) as det:
            core = self.core
            if exposure_ms is not None and exposure_ms != core.getExposure():
                self.set_exposure_ms(exposure_ms)
            t0 = now_ns()
            core.snapImage()
            data = core.getImage()
            t1 = now_ns()
            extra = {**self._detector_extra(det), **self.roi_extra(det), **self.bit_depth_extra()}
            exposure = float(core.getExposure())  # the detector's own, before the main camera is back
        return Snap(np.ascontiguousarray(data), det, t0, t1, exposure, extra)

    def _detector_extra(self, det: str) -> dict[str, Any]:
        """Detector-specific ground truth (the simulator's single-molecule emitters)."""
        core = self.core
        if core.hasProperty(det, "FluorophoreMode") and core.getProperty(det, "FluorophoreMode") == "Blinking":
            import json

            return {"emitters_xy_um_photons": json.loads(core.getProperty(det, "LastEmitters"))}
        return {}

    def close(self) -> None:
        """Unload the devices and let go of the core, so that (when nothing else holds
        it) it is destroyed now, while the interpreter is whole, not at exit (see
        :func:`_unload_quietly`). The backend is unusable afterwards."""
        import gc

        with self.lock:
            if self.core is None:
                return
            _unload_quietly(self.core)
            self.core = None
        gc.collect()


def load_mmcore_backend(config: str | Path) -> MMCoreBackend:
    """Load a Micro-Manager ``.cfg`` into a ``UniMMCore`` and wrap it.

    ``#py`` lines load Python devices (the simulator); plain lines load C++
    adapters from the Micro-Manager installation pymmcore-plus finds. A
    malformed file raises :class:`BackendError` naming the file, line and cause.
    """
    import gc
    import os

    # The daemon never runs Qt: keep pymmcore-plus on psygnal events even when a Qt
    # application lives in the same process (tests, embedding).
    os.environ.setdefault("PYMM_SIGNALS_BACKEND", "psygnal")
    from pymmcore_plus.experimental.unicore import UniMMCore

    path = resolve_config(config)
    core = UniMMCore()
    msg = ""
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with the cause named
        msg = str(e).strip() or type(e).__name__
        cause = e.__cause__
        while cause is not None:
            if str(cause) and str(cause) not in msg:
                msg += f"\n  caused by: {cause}"
            cause = cause.__cause__
    backend: MMCoreBackend | None = None
    if not msg:
        try:
            backend = MMCoreBackend(core, led_controllers=(*_declared_controllers(path), *LED_CONTROLLERS))
        except BackendError as e:
            msg = str(e)
    if backend is None:  # raised outside any except block: no traceback keeps the failed core alive
        msg += _missing_adapters_hint(core, path)
        _unload_quietly(core)
        del core
        gc.collect()  # destroy it now (see below)
        raise BackendError(f"cannot load hardware config {path}:\n{msg}")
    return backend


def _check_presets(core: Any, group: str) -> None:
    """Raise :class:`BackendError` naming the preset, the setting and why, unless every preset of ``group`` (if
    defined) sets a loaded device's writable property to a value it takes: Micro-Manager checks presets only
    when they are applied, so a typo in a channel's filter label failed the first live cycle that used it."""
    if group not in core.getAvailableConfigGroups():
        return
    for preset in core.getAvailableConfigs(group):
        for dev, prop, value in core.getConfigData(group, preset):
            problem = _setting_problem(core, dev, prop, value)
            if problem:
                raise BackendError(f"preset {preset!r} of config group {group!r} sets {dev}-{prop} to {value!r}, "
                                   f"but {problem}")


def same_setting(current: Any, expected: Any) -> bool:
    """A property value equals a preset's (as text, or as numbers: "0.65" and "0.6500")."""
    if str(current) == str(expected):
        return True
    try:
        return float(current) == float(expected)
    except (TypeError, ValueError):
        return False


def _setting_problem(core: Any, dev: str, prop: str, value: str) -> str:
    """Why ``dev``-``prop`` cannot be set to ``value`` ("" if it can, as far as the core can tell unapplied). The
    ``Core`` device's roles are not checked: UniMMCore's C++ core does not list Python devices among them."""
    if dev == "Core":
        return ""
    if dev not in core.getLoadedDevices():
        return f"no device {dev!r} is loaded (devices: {', '.join(core.getLoadedDevices())})"
    if not core.hasProperty(dev, prop):
        return f"{dev} has no property {prop!r}"
    if core.isPropertyReadOnly(dev, prop):
        return f"{dev}-{prop} is read-only"
    allowed = tuple(core.getAllowedPropertyValues(dev, prop))
    if allowed and value not in allowed:
        return f"{dev}-{prop} takes only: {', '.join(allowed)}"
    if int(core.getPropertyType(dev, prop)) in (2, 3):  # MM::Float, MM::Integer
        try:
            number = float(value)
        except ValueError:
            return f"{dev}-{prop} takes a number"
        if core.hasPropertyLimits(dev, prop):
            lo, hi = core.getPropertyLowerLimit(dev, prop), core.getPropertyUpperLimit(dev, prop)
            if not lo <= number <= hi:
                return f"{dev}-{prop} takes [{lo:g}, {hi:g}]"
    return ""


def _declared_controllers(path: Path) -> tuple[LedController, ...]:
    """LED controllers a config declares: ``#scopecast led-pattern,<Device>,<Property>,<off value>``
    (a comment to Micro-Manager)."""
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if line.strip().startswith(_DECLARATION):
            parts = [p.strip() for p in line.strip()[len(_DECLARATION):].split(",")]
            if len(parts) != 3 or not all(parts[:2]):
                raise BackendError(
                    f"line {n}: {line.strip()!r}: "
                    "use '#scopecast led-pattern,<Device>,<Property>,<value that turns the LEDs off>'"
                )
            out.append(LedController(parts[1], parts[2], parts[0], f"declared in {path.name}"))
    return tuple(out)


def _missing_adapters_hint(core: Any, path: Path) -> str:
    """Where the adapters were looked for and how to get them, when a ``Device`` line's
    adapter library is not on the core's search path ("" when all were found)."""
    wanted: list[str] = []
    try:
        for line in path.read_text(errors="replace").splitlines():
            parts = [p.strip() for p in line.strip().split(",")]
            if parts[0] == "Device" and len(parts) >= 4 and parts[2] not in wanted:
                wanted.append(parts[2])
        if not wanted:  # Python devices only (the simulator)
            return ""
        available = set(core.getDeviceAdapterNames())
    except Exception:  # noqa: BLE001 - a hint must not hide the real error
        return ""
    missing = [lib for lib in wanted if lib not in available]
    if not missing:
        return ""
    import pymmcore
    from pymmcore_plus import find_micromanager

    searched = list(core.getDeviceAdapterSearchPaths()) or ["(none)"]
    parts = pymmcore.__version__.split(".")  # MMCore major.minor.patch, device interface, build
    div = parts[3] if len(parts) > 3 else "?"
    found = find_micromanager() or "nothing (MICROMANAGER_PATH, `mmcore install` folder, mm-test-adapters, /usr/local/lib)"
    return (
        f"\n  device adapter librar{'y' if len(missing) == 1 else 'ies'} not found: {', '.join(missing)}"
        f"\n  searched: {', '.join(searched)} (pymmcore_plus.find_micromanager() found {found};"
        f" available adapters: {', '.join(sorted(available)) or 'none'})"
        "\n  fix: `pip install mm-test-adapters` (DemoCamera, Utilities, SequenceTester, NotificationTester),"
        " or `mmcore install` (a Micro-Manager nightly's adapters), or set MICROMANAGER_PATH to a"
        f" Micro-Manager installation built for device interface {div}"
        " (pymmcore's)"
    )


# A core that failed to load is unloaded and destroyed before the error is raised,
# while the interpreter is whole. The MMCore C++ side delivers notifications (those
# of the unload after a failed load) from its own thread; left to interpreter
# shutdown, such a callback re-enters Python while it finalizes, the thread is
# force-unwound through a C++ ``catch (...)`` and the process aborts with
# ``FATAL: exception not rethrown`` (exit 134), about one failed start in three.
# Destroying the core joins that thread first.
def _unload_quietly(core: Any) -> None:
    try:
        core.unloadAllDevices()
    except Exception:  # noqa: BLE001 - it already failed; tearing down must not raise
        pass


def resolve_config(config: str | Path) -> Path:
    """A config path as given, or the name of one shipped in ``hardware_configs``."""
    p = Path(config).expanduser()
    if p.exists():
        return p.resolve()
    from importlib.resources import files

    shipped = files("scopecast.hardware_configs").joinpath(str(config))
    if shipped.is_file():
        return Path(str(shipped))
    raise BackendError(f"hardware config not found: {config}")
