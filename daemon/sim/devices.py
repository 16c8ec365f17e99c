"""Micro-Manager device adapters for the simulated LED-array microscope.

These are pymmcore-plus ``UniMMCore`` Python devices, loaded from a ``.cfg``
with ``#py pyDevice,<label>,scopecast.daemon.sim.devices,<Class>`` lines and
attached to the :class:`SimScopeHub` with ``#py Parent,<label>,<hub label>``
(a device without a ``Parent`` line attaches to the core's only hub). The
daemon drives them through the same core API as real hardware.

This module is the one every configuration names; the devices live in
:mod:`.hub` (the microscope body), :mod:`.led_array` (the LED array, which
mirrors Micro-Manager's ``IlluminateLedArray`` adapter and is also exported
under that name), :mod:`.stages`, :mod:`.cameras` and here (the light path:
fluorescence source, path shutter, emission filter, objective turret).
"""

from __future__ import annotations

from typing import ClassVar

from pymmcore_plus.experimental.unicore import GenericDevice, ShutterDevice, StateDevice, pymm_property

from .cameras import SimCamera, SimStedDetector
from .hub import SimScopeHub, _Peripheral
from .led_array import IlluminateLedArray, SimLedArray
from .scope import OBJECTIVES
from .stages import SimXYStage, SimZStage

__all__ = [
    "PERIPHERALS",
    "IlluminateLedArray",
    "SimCamera",
    "SimEmissionFilter",
    "SimFluorescenceSource",
    "SimIlluminationShutter",
    "SimLedArray",
    "SimObjectiveTurret",
    "SimScopeHub",
    "SimStedDetector",
    "SimXYStage",
    "SimZStage",
]


class SimFluorescenceSource(_Peripheral, GenericDevice):
    """Multi-line laser/LED engine for epi-fluorescence excitation."""

    LINES: ClassVar[tuple[str, ...]] = ("405", "488", "561", "640")

    @pymm_property(allowed_values=LINES, name="Wavelength")
    def wavelength(self) -> str:
        return str(int(self.scope.fluo.wavelength_nm))

    @wavelength.setter
    def wavelength(self, v: str) -> None:
        self.scope.fluo.wavelength_nm = float(v)

    @pymm_property(limits=(0.0, 100.0), name="PowerPercent")
    def power(self) -> float:
        return self.scope.fluo.power * 100.0

    @power.setter
    def power(self, v: float) -> None:
        self.scope.fluo.power = float(v) / 100.0


class SimIlluminationShutter(_Peripheral, ShutterDevice):
    """Shutter on the selected light path: transmitted (LED array) or epi (fluorescence).

    Channel presets select the ``Path``; the core opens this one shutter around
    each exposure, so label-free and fluorescence channels share one shutter
    role as with Micro-Manager's Multi Shutter. (A real rig usually makes the LED
    array itself the core shutter of its label-free presets, ``Core,Shutter,<LED>``;
    UniMMCore cannot switch the core shutter to a Python device from a preset.)
    The LED array's own global shutter (``GlobalShutter``) must be open too.
    Without this device the transmitted path is open.
    """

    PATHS: ClassVar[tuple[str, ...]] = ("Transmitted", "Epi")

    def __init__(self) -> None:
        super().__init__()
        self._path = "Transmitted"
        self._open = False

    def initialize(self) -> None:
        self._apply()

    def get_open(self) -> bool:
        return self._open

    def set_open(self, open: bool) -> None:
        self._open = bool(open)
        self._apply()

    def _apply(self) -> None:
        with self.scope.lock:
            self.scope.led.is_open = self._open and self._path == "Transmitted"
            self.scope.fluo.is_open = self._open and self._path == "Epi"

    @pymm_property(allowed_values=PATHS, name="Path")
    def path(self) -> str:
        return self._path

    @path.setter
    def path(self, v: str) -> None:
        self._path = v
        self._apply()


class SimEmissionFilter(_Peripheral, StateDevice):
    """Emission filter wheel (position 0 is open, for label-free imaging)."""

    CENTERS: ClassVar[dict[int, float | None]] = {0: None, 1: 460.0, 2: 525.0, 3: 600.0, 4: 700.0}

    def __init__(self) -> None:
        super().__init__({0: "Open", 1: "460/50", 2: "525/50", 3: "600/50", 4: "700/75"})
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)
        self.scope.fluo.emission_filter_nm = self.CENTERS[self._state]


class SimObjectiveTurret(_Peripheral, StateDevice):
    """Objective turret; sets magnification and NA of the simulated optics."""

    def __init__(self) -> None:
        super().__init__({i: o.name for i, o in enumerate(OBJECTIVES)})
        self._state = 1

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)
        self.scope.objective = OBJECTIVES[self._state]


PERIPHERALS = (
    SimLedArray, SimFluorescenceSource, SimIlluminationShutter, SimEmissionFilter, SimObjectiveTurret,
    SimXYStage, SimZStage, SimCamera, SimStedDetector,
)
