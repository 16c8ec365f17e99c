"""The simulated microscope body (:class:`SimScopeHub`) and how its peripherals find it.

Python devices only see a restricted core proxy, so each initialized hub
registers its :class:`~scopecast.daemon.sim.scope.SimScope` here, keyed by the
core and the hub's label; a peripheral resolves its parent's scope on first use.
A peripheral without a ``Parent`` line attaches to the core's only
``SimScopeHub`` -- so a configuration written for real hardware (whose devices
have no such hub) runs on the simulator by swapping its ``Device`` lines.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from pymmcore_plus.experimental.unicore import HubDevice, pymm_property

from .scope import SimScope
from .slide import FILE_KIND, SAMPLE_KINDS, Slide
from .specimens_file import load_specimen
from .unicore_workarounds import install_for_device

__all__ = ["SimScopeHub", "TriggerLine", "trigger_line"]

# (id of the core's event signal, hub label) -> scope.
_SCOPES: dict[tuple[int, str], SimScope] = {}
_SCOPES_LOCK = threading.Lock()


def _core_key(device: Any) -> int:
    return id(device.core.events.propertyChanged)


class TriggerLine:
    """The cameras' exposure-out TTL, wired to whatever listens (an LED array running a
    triggered sequence). Every camera frame fires it once, at the end of its exposure;
    listeners run synchronously in the camera's thread, so a pattern switched by the
    trigger is in place before the next exposure, as in hardware (microseconds)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def connect(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def disconnect(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def fire(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()


_TRIGGER_LINES: weakref.WeakKeyDictionary[SimScope, TriggerLine] = weakref.WeakKeyDictionary()


def trigger_line(scope: SimScope) -> TriggerLine:
    """The trigger line of one simulated microscope."""
    with _SCOPES_LOCK:
        return _TRIGGER_LINES.setdefault(scope, TriggerLine())


class _Peripheral:
    """Mixin: resolve the parent hub's :class:`SimScope` on first use."""

    _scope_obj: SimScope | None = None

    @property
    def scope(self) -> SimScope:
        if self._scope_obj is None:
            label = self.get_label()  # type: ignore[attr-defined]
            parent = self.get_parent_label()  # type: ignore[attr-defined]
            key = _core_key(self)
            # UniMMCore initializes Python devices in parallel: give the hub a moment.
            deadline = time.monotonic() + 5.0
            while True:
                with _SCOPES_LOCK:
                    if parent:
                        scope = _SCOPES.get((key, parent))
                    else:
                        hubs = [s for (k, _), s in _SCOPES.items() if k == key]
                        scope = hubs[0] if len(hubs) == 1 else None
                if scope is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if scope is None:
                if parent:
                    raise RuntimeError(f"parent hub {parent!r} of {label!r} is not an initialized SimScopeHub")
                raise RuntimeError(
                    f"device {label!r} has no parent hub and the core has no single initialized SimScopeHub: "
                    f"load one ('#py pyDevice,Scope,scopecast.daemon.sim.devices,SimScopeHub') before "
                    f"{label!r}, or add '#py Parent,{label},<SimScopeHub label>' to the config"
                )
            self._scope_obj = scope
        return self._scope_obj


class SimScopeHub(HubDevice):
    """The simulated LED-array microscope body; owns the specimen and the optics."""

    def __init__(self) -> None:
        super().__init__()
        self.scope_model = SimScope()
        self._sample = "cells"
        self._seed = 0
        self._specimen = None  # a loaded user specimen (SpecimenFile)
        self._specimen_path = ""
        self._specimen_px = 0.1

    def initialize(self) -> None:
        # Any client that loads the simulator (a plain UniMMCore, its MDA runner,
        # scopecast) gets auto-shutter and pixel size right: the core that initializes
        # this hub is patched for pymmcore-plus gaps (unicore_workarounds; upstream #607).
        install_for_device(self)
        with _SCOPES_LOCK:
            _SCOPES[(_core_key(self), self.get_label())] = self.scope_model

    def shutdown(self) -> None:
        with _SCOPES_LOCK:
            _SCOPES.pop((_core_key(self), self.get_label()), None)

    def get_installed_peripherals(self):
        from .devices import PERIPHERALS

        return [(c.__name__, (c.__doc__ or "").splitlines()[0]) for c in PERIPHERALS]

    @pymm_property(allowed_values=(*SAMPLE_KINDS, FILE_KIND), name="Sample")
    def sample(self) -> str:
        """Specimen on the stage (docs/specimens.md); ``file``: the one loaded by SpecimenFile."""
        return self._sample

    @sample.setter
    def sample(self, value: str) -> None:
        if value == FILE_KIND and self._specimen is None:
            raise ValueError(
                "Sample 'file' needs a specimen: set Scope-SpecimenFile to a .npz, .npy, .tif or "
                ".zarr file first"
            )
        self._sample = value
        self._apply_sample()

    def _apply_sample(self) -> None:
        scope = self.scope_model
        with scope.lock:
            if self._sample == FILE_KIND:
                scope.set_sample("blank", self._seed)  # drops cached images and bleaching
                scope.slide = Slide(FILE_KIND, self._seed, specimen=self._specimen)
            else:
                scope.set_sample(self._sample, self._seed)

    @pymm_property(name="SpecimenFile")
    def specimen_file(self) -> str:
        """A specimen of your own (maps or a label image; .npz/.npy/.tif/.zarr), centred on (0, 0).

        Setting it loads and checks the file and switches Sample to ``file``;
        an empty value unloads it (Sample returns to ``cells``).
        """
        return self._specimen_path

    @specimen_file.setter
    def specimen_file(self, value: str) -> None:
        path = str(value).strip()
        if not path:
            self._specimen, self._specimen_path = None, ""
            if self._sample == FILE_KIND:
                self._sample = "cells"
                self._apply_sample()
            return
        specimen = load_specimen(path, self._specimen_px)  # SpecimenFileError names the problem
        self._specimen, self._specimen_path = specimen, specimen.path
        self._sample = FILE_KIND
        self._apply_sample()

    @pymm_property(limits=(0.001, 100.0), name="SpecimenPixelSizeUm")
    def specimen_pixel_size(self) -> float:
        """Pixel size of the SpecimenFile on the slide, µm."""
        return self._specimen_px

    @specimen_pixel_size.setter
    def specimen_pixel_size(self, value: float) -> None:
        px = float(value)
        if self._specimen is not None:
            self._specimen = load_specimen(self._specimen_path, px)
        self._specimen_px = px
        if self._sample == FILE_KIND:
            self._apply_sample()

    @pymm_property(limits=(0, 2**31 - 1), name="Seed")
    def seed(self) -> int:
        return self._seed

    @seed.setter
    def seed(self, value: float) -> None:
        self._seed = int(value)
        self._apply_sample()

    @pymm_property(allowed_values=("Off", "On"), name="Photobleaching")
    def photobleaching(self) -> str:
        return "On" if self.scope_model.photobleaching else "Off"

    @photobleaching.setter
    def photobleaching(self, value: str) -> None:
        self.scope_model.photobleaching = value == "On"

    @pymm_property(limits=(-1000.0, 1000.0), name="FocalPlaneUm")
    def focal_plane_um(self) -> float:
        """Z-stage position at which the specimen is in focus."""
        return self.scope_model.focal_plane_um

    @focal_plane_um.setter
    def focal_plane_um(self, value: float) -> None:
        self.scope_model.focal_plane_um = float(value)
