"""Workarounds for pymmcore-plus ``UniMMCore`` with Python devices -- DELETE when upstream has them.

Every client of the simulator meets the core, not scopecast: a script that makes
a plain ``UniMMCore()`` and calls ``loadSystemConfiguration`` gets the
:class:`~scopecast.daemon.sim.hub.SimScopeHub`, whose ``initialize`` calls
:func:`install_for_device`; that finds the core initializing it and calls
:func:`install` on it, which patches that one core *instance* (the class is a
SWIG type and cannot be patched; C++ devices are left to the C++ core). So
``snapImage()``, ``core.mda.run()`` and scopecast's own backend all see the same
physical images and pixel size. :func:`scopecast.daemon.backend.load_mmcore_backend`
calls :func:`install` on its core too, for Python devices other than the simulator's.

The gaps, in pymmcore-plus 0.18.1 (``pymmcore_plus/experimental/unicore/core/_unicore.py``):

1. **Auto-shutter around a Python camera's exposure.** ``UniMMCore._do_snap_image``
   and ``_start_sequence`` run a Python camera without opening the core's
   shutter (the C++ core does it for C++ cameras), so with ``AutoShutter`` on --
   the Micro-Manager default -- every frame is dark: only the camera offset.
   Upstream: pymmcore-plus pull request #607 (open). Fixed here as the C++ core
   does it: when auto-shutter is on and the shutter is closed, open it for the
   snap (for a sequence: until the sequence ends or is stopped) and close it
   again. A shutter the client opened itself stays open, so an upstream fix that
   also opens it makes this a no-op.
2. **Pixel size of pixel configurations over Python devices.**
   ``getCurrentPixelSizeConfig`` is the C++ core's, which cannot read Python
   devices' properties, so it returns ``""`` and ``getPixelSizeUm()`` 0 (also
   ``getPixelSizeAffine``). Fixed by matching the presets against current
   property values, as the C++ core does for its own devices. (No upstream issue
   found at the time of writing; report it with #607.) Once upstream resolves
   it, the original ``getCurrentPixelSizeConfig`` answers first and these fall-backs never run;
   ``getPixelSizeUm`` applies the core's own formula to that answer (one match per call).

3. **Core role rows naming a Python device** (``ConfigGroup,Channel,BF,Core,Shutter,LED``,
   what every real rig's channel presets carry; ``ConfigPixelSize,Res10x-STED,Core,Camera,STED``, a pixel
   size per camera). ``UniMMCore.defineConfig`` hands
   ``Core`` rows to the C++ core, so ``setConfig`` fails with "Cannot set Core
   property Shutter to invalid value", and ``setProperty``/``getProperty`` on
   ``Core`` reach the C++ core, which knows no Python device (upstream already
   special-cases ``Core,ChannelGroup`` in ``setProperty``, with a FIXME saying so;
   no upstream issue found: report it with #607). Fixed by keeping such rows with
   the Python-device settings and routing ``Core`` role properties through
   ``setShutterDevice``/``getShutterDevice`` and their siblings, which accept
   Python devices.

4. **Bit depth of a Python camera.** ``UniMMCore.getImageBitDepth`` reports a Python camera's dtype width
   (16 for ``uint16``), so a camera set to ``BitDepth`` 12, which clips at 4095 ADU, reads as 16 bits to
   every client (``getTaggedImage``'s ``BitDepth`` tag, pymmcore-plus's pixel format, the daemon's
   ``extra.bit_depth``: the engine's saturation ceiling). A C++ camera reports its ``GetBitDepth``
   (DemoCamera: its ``BitDepth`` property). Fixed by reading a Python camera's ``BitDepth`` property where
   it has one below the dtype width. (No upstream issue found: report it with #607.)

To remove: delete this module and its two calls (``SimScopeHub.initialize`` in
``sim/hub.py``, ``load_mmcore_backend`` in ``backend.py``), then run
``tests/test_third_party_clients.py``.

Also, with gap 3's ``setProperty``: **a preset's value for a Python device's non-text allowed values.** A
configuration file gives every value as text, and UniMMCore checks it against a Python property's allowed
values as they are (a state device's ``State`` allows the integers 0..n-1), so ``ConfigGroup,Channel,DAPI,
Emission,State,1`` -- what rig configurations write for filter wheels and turrets, and what the C++ core takes
for its own devices -- failed when applied with "Value '1' is not allowed ... Allowed values: [0, 1, 2, 3, 4]".
Fixed by handing the device the allowed value the text names (no upstream issue found: report it with #607).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ..backend import same_setting

__all__ = ["install", "install_for_device"]

_MARK = "_scopecast_unicore_workarounds"


def install(core: Any) -> None:
    """Patch one ``UniMMCore`` instance (idempotent; no-op for other cores).

    The patches hold the core by weak reference: no reference cycle keeps a core
    alive past its last user (its C++ side must be destroyed while Python is whole).
    """
    from pymmcore_plus.experimental.unicore import UniMMCore

    if not isinstance(core, UniMMCore) or core.__dict__.get(_MARK):
        return
    ref = weakref.ref(core)
    _patch_auto_shutter(core, ref)
    _patch_pixel_size(core, ref)
    _patch_core_roles(core, ref)
    _patch_bit_depth(core, ref)
    core.__dict__[_MARK] = True


def install_for_device(device: Any) -> None:
    """:func:`install` on the core that is initializing ``device`` (call from ``initialize``).

    Python devices only see a restricted core proxy, so the core is found on the
    stack of the thread that called ``initializeDevice``/``initializeAllDevices``
    (UniMMCore initializes Python devices in worker threads while that caller
    waits) and recognised by its event signals, which the proxy shares.
    """
    import sys

    from pymmcore_plus.experimental.unicore import UniMMCore

    signal = device.core.events.propertyChanged
    frames = sys._current_frames()
    mine = frames.pop(threading.get_ident(), None)
    for frame in (mine, *frames.values()):
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, UniMMCore) and candidate.events.propertyChanged is signal:
                install(candidate)
                return
            frame = frame.f_back
    import logging

    logging.getLogger(__name__).warning(
        "device %r: the core initializing it was not found, so pymmcore-plus's auto-shutter and "
        "pixel-size gaps are not patched (frames may be dark); call "
        "scopecast.daemon.sim.unicore_workarounds.install(core)", device.get_label()
    )


# ------------------------------------------------------------ 1. auto-shutter
def _open_auto_shutter(core: Any) -> str:
    """Open the core's shutter if auto-shutter is on and it is closed; return its label ("" if untouched)."""
    if not core.getAutoShutter():
        return ""
    shutter = core.getShutterDevice()
    if not shutter or core.getShutterOpen(shutter):
        return ""
    core.setShutterOpen(shutter, True)
    core.waitForDevice(shutter)
    return shutter


def _close(core: Any, shutter: str) -> None:
    if shutter:
        core.setShutterOpen(shutter, False)


def _patch_auto_shutter(core: Any, ref: Callable[[], Any]) -> None:
    cls = type(core)
    # one snap at a time opens, exposes and closes: the C++ core holds the camera's module lock around all three,
    # so a snap from another thread cannot find the shutter open (the first snap's), leave it to that snap, and
    # be exposed after that snap closed it (a dark frame)
    snapping = threading.Lock()

    def _do_snap_image() -> None:
        self = ref()
        if self._py_camera() is None:  # C++ camera: the C++ core applies auto-shutter
            return cls._do_snap_image(self)
        with snapping:
            shutter = _open_auto_shutter(self)
            try:
                return cls._do_snap_image(self)
            finally:
                _close(self, shutter)

    def _start_sequence(cam: Any, n_images: int | None, stop_on_overflow: bool) -> None:
        self = ref()
        shutter = _open_auto_shutter(self)
        if not shutter:
            return cls._start_sequence(self, cam, n_images, stop_on_overflow)
        images = cam.start_sequence

        def start_sequence(*args: Any, **kwargs: Any) -> Iterator[Any]:
            # closes when the sequence ends, or when stopSequenceAcquisition drops the
            # acquisition thread (the generator is closed with it)
            try:
                yield from images(*args, **kwargs)
            finally:
                if (c := ref()) is not None:
                    with contextlib.suppress(Exception):
                        _close(c, shutter)

        cam.start_sequence = start_sequence  # this one call only
        try:
            cls._start_sequence(self, cam, n_images, stop_on_overflow)
        except BaseException:
            _close(self, shutter)
            raise
        finally:
            del cam.start_sequence

    core._do_snap_image = _do_snap_image
    core._start_sequence = _start_sequence


# -------------------------------------------------------------- 2. pixel size


def _patch_pixel_size(core: Any, ref: Callable[[], Any]) -> None:
    cls = type(core)

    def getCurrentPixelSizeConfig(*args: Any) -> str:  # noqa: N802 - core API name
        self = ref()
        presets = [(str(p), list(self.getPixelSizeConfigData(p))) for p in self.getAvailablePixelSizeConfigs()]
        # the C++ core can only match presets over its own devices: with Python devices alone (and Core role rows,
        # read below) it always fails, and its failing match was a fifth of the simulator daemon's time in a live
        # cycle (py-spy)
        if any(str(dev) not in self._pydevices and str(dev) != "Core"
               for _, settings in presets for dev, _, _ in settings):
            found = cls.getCurrentPixelSizeConfig(self, *args)
            if found:
                return found
        cached = bool(args[0]) if args else False
        state: dict[tuple[str, str], Any] = {}
        for preset, settings in presets:
            ok = bool(settings)
            for dev, prop, value in settings:
                key = (dev, prop)
                if key not in state:
                    try:
                        # a Core role row (a preset per camera) reads the role itself: the C++ core's cache
                        # does not hold a Python device there (gap 3)
                        state[key] = (getattr(self, "get" + _ROLES[prop])() if dev == "Core" and prop in _ROLES
                                      else self.getPropertyFromCache(dev, prop) if cached
                                      else self.getProperty(dev, prop))
                    except Exception:  # noqa: BLE001 - an unreadable property matches nothing
                        state[key] = None
                if state[key] is None or not same_setting(state[key], value):
                    ok = False
                    break
            if ok:
                return preset
        return ""

    def _factor(self: Any) -> float:
        cam = self.getCameraDevice()
        binning = 1.0
        if cam and self.hasProperty(cam, "Binning"):
            with contextlib.suppress(TypeError, ValueError):
                binning = float(self.getProperty(cam, "Binning"))
        return binning / self.getMagnificationFactor()

    def getPixelSizeUm(*args: Any) -> float:  # noqa: N802
        # the C++ core's formula (the preset's size x binning / magnification) on the one preset found above (the
        # core's own match first, then the Python devices'). Asking the original first matched three times per
        # call (UniMMCore's getPixelSizeUm matches, then CMMCore's matches again and fails) and then twice more
        # here: 0.08-0.18 ms a call, on every frame the daemon takes (now 0.02 ms).
        self = ref()
        res = getCurrentPixelSizeConfig(*args)
        return float(self.getPixelSizeUmByID(res)) * _factor(self) if res else 0.0

    def getPixelSizeAffine(*args: Any) -> tuple[float, ...]:  # noqa: N802
        self = ref()
        af = tuple(cls.getPixelSizeAffine(self, *args))
        if any(af):
            return af
        res = getCurrentPixelSizeConfig(*args)
        if not res:
            return af
        f = _factor(self)  # scaled like the C++ core scales its own: by binning / magnification
        return tuple(float(v) * f for v in self.getPixelSizeAffineByID(res))

    core.getCurrentPixelSizeConfig = getCurrentPixelSizeConfig
    core.getPixelSizeUm = getPixelSizeUm
    core.getPixelSizeAffine = getPixelSizeAffine


#: ``Core`` properties that name the device playing a role, and the core's setter/getter for it.
_ROLES = {"Shutter": "ShutterDevice", "Camera": "CameraDevice", "Focus": "FocusDevice",
          "XYStage": "XYStageDevice", "AutoFocus": "AutoFocusDevice", "SLM": "SLMDevice",
          "Galvo": "GalvoDevice"}


def _as_allowed(core: Any, label: str, prop: str, value: Any) -> Any:
    """``value`` as the allowed value of a Python device's property that it names as text (``"1"`` for a state
    device's integer ``State`` 1, as a configuration file gives it); ``value`` itself otherwise, for the device
    to accept or refuse."""
    if not isinstance(value, str) or label not in core._pydevices:
        return value
    try:
        allowed = core._pydevices[label].get_property_info(prop).allowed_values
    except Exception:  # noqa: BLE001 - no such property: the device's own refusal names it
        return value
    if not allowed or value in allowed:
        return value
    return next((a for a in allowed if not isinstance(a, str) and same_setting(value, a)), value)


def _patch_core_roles(core: Any, ref: Callable[[], Any]) -> None:
    cls = type(core)

    def defineConfig(group: str, preset: str, *row: Any) -> None:  # noqa: N802 - core API name
        self = ref()
        if len(row) == 3 and row[0] == "Core" and row[1] in _ROLES and str(row[2]) in self._pydevices:
            if not self.isGroupDefined(group):
                self.defineConfigGroup(group)
            if not self.isConfigDefined(group, preset):
                cls.defineConfig(self, group, preset)
            self._py_config_groups.setdefault(group, {}).setdefault(preset, {})[("Core", row[1])] = str(row[2])
            self.events.configDefined.emit(group, preset, "Core", row[1], str(row[2]))
            return
        cls.defineConfig(self, group, preset, *row)

    def setProperty(label: str, prop: str, value: Any) -> None:  # noqa: N802
        self = ref()
        if label == "Core" and prop in _ROLES:
            getattr(self, "set" + _ROLES[prop])(str(value))
            return
        cls.setProperty(self, label, prop, _as_allowed(self, label, prop, value))

    def getProperty(label: str, prop: str) -> Any:  # noqa: N802
        self = ref()
        if label == "Core" and prop in _ROLES:
            return getattr(self, "get" + _ROLES[prop])()
        return cls.getProperty(self, label, prop)

    core.defineConfig = defineConfig
    core.setProperty = setProperty
    core.getProperty = getProperty


# --------------------------------------------------------------- 4. bit depth
def _patch_bit_depth(core: Any, ref: Callable[[], Any]) -> None:
    cls = type(core)

    def getImageBitDepth() -> int:  # noqa: N802 - core API name
        """The current camera's significant bits: a Python camera's ``BitDepth`` property where it is below its
        dtype's width (what a C++ camera's ``GetBitDepth`` says), else the core's answer."""
        self = ref()
        depth = int(cls.getImageBitDepth(self))
        cam = self.getCameraDevice()
        if cam in self._pydevices and self.hasProperty(cam, "BitDepth"):
            with contextlib.suppress(TypeError, ValueError):
                bits = int(float(self.getProperty(cam, "BitDepth")))
                if 0 < bits < depth:
                    return bits
        return depth

    core.getImageBitDepth = getImageBitDepth
