"""Micro-Manager device adapters for the simulated LED-array microscope.

These are pymmcore-plus ``UniMMCore`` Python devices, loaded from a ``.cfg``
with ``#py pyDevice,<label>,scopecast.daemon.sim.devices,<Class>`` lines and
attached to the :class:`SimScopeHub` with ``#py Parent,<label>,<hub label>``.
The daemon drives them through the same core API as real hardware.

The LED array mirrors the properties of Micro-Manager's IlluminateLEDArray
adapter and the *illuminate* firmware (pattern commands ``bf``, ``df``,
``dpc.t|b|l|r``, ``an``, ``ha.*``, ``cen``, ``l.<row>.<col>`` manual LEDs, ``x``
off; numerical aperture, array distance, brightness, annulus NA range).
"""

from __future__ import annotations

import json
import threading
from typing import Any, ClassVar

import numpy as np
from pymmcore_plus.experimental.unicore import (
    GenericDevice,
    HubDevice,
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    XYStageDevice,
    pymm_property,
)

from ..illumination import PATTERN_NAMES, LedArrayGeometry, PatternError, parse_led_list
from .camera_model import CameraModel
from .scope import OBJECTIVES, SimScope
from .slide import FILE_KIND, SAMPLE_KINDS, Slide
from .specimens_file import load_specimen
from .unicore_workarounds import install_for_device

__all__ = [
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

# (id of the core's event signal, hub label) -> scope. Python devices only see a
# restricted core proxy, so peripherals find their hub's scope through here.
_SCOPES: dict[tuple[int, str], SimScope] = {}
_SCOPES_LOCK = threading.Lock()


def _core_key(device: Any) -> int:
    return id(device.core.events.propertyChanged)


class _Peripheral:
    """Mixin: resolve the parent hub's :class:`SimScope` on first use."""

    _scope_obj: SimScope | None = None

    @property
    def scope(self) -> SimScope:
        if self._scope_obj is None:
            parent = self.get_parent_label()  # type: ignore[attr-defined]
            if not parent:
                raise RuntimeError(
                    f"device {self.get_label()!r} has no parent hub: add "  # type: ignore[attr-defined]
                    f"'#py Parent,{self.get_label()},<SimScopeHub label>' to the config"  # type: ignore[attr-defined]
                )
            with _SCOPES_LOCK:
                scope = _SCOPES.get((_core_key(self), parent))
            if scope is None:
                raise RuntimeError(
                    f"parent hub {parent!r} of {self.get_label()!r} is not an "  # type: ignore[attr-defined]
                    "initialized SimScopeHub"
                )
            self._scope_obj = scope
        return self._scope_obj


# --------------------------------------------------------------------------- hub
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
        return [(c.__name__, (c.__doc__ or "").splitlines()[0]) for c in _PERIPHERALS]

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


# --------------------------------------------------------------------- LED array
class SimLedArray(_Peripheral, GenericDevice):
    """Programmable LED array (IlluminateLEDArray-compatible properties).

    LEDs light only while the :class:`SimIlluminationShutter` is open on the
    transmitted path.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rows = 32
        self._cols = 32
        self._pitch = 4.0
        self._distance = 50.0
        self._last_command = ""

    def initialize(self) -> None:
        self.scope.led.geometry = self._geometry()

    def _geometry(self) -> LedArrayGeometry:
        return LedArrayGeometry(self._rows, self._cols, self._pitch, self._distance)

    @pymm_property(limits=(1, 64), is_pre_init=True, name="Rows")
    def rows(self) -> int:
        return self._rows

    @rows.setter
    def rows(self, v: float) -> None:
        self._rows = int(v)

    @pymm_property(limits=(1, 64), is_pre_init=True, name="Columns")
    def columns(self) -> int:
        return self._cols

    @columns.setter
    def columns(self, v: float) -> None:
        self._cols = int(v)

    @pymm_property(limits=(0.5, 20.0), is_pre_init=True, name="LedPitchMm")
    def led_pitch(self) -> float:
        return self._pitch

    @led_pitch.setter
    def led_pitch(self, v: float) -> None:
        self._pitch = float(v)

    @pymm_property(limits=(5.0, 300.0), name="ArrayDistanceMm")
    def array_distance(self) -> float:
        return self._distance

    @array_distance.setter
    def array_distance(self, v: float) -> None:
        self._distance = float(v)
        self.scope.led.geometry = self._geometry()

    @pymm_property(allowed_values=PATTERN_NAMES, name="IlluminationPattern")
    def pattern(self) -> str:
        return self.scope.led.pattern_name

    @pattern.setter
    def pattern(self, value: str) -> None:
        led = self.scope.led
        if value == "manual":
            parse_led_list(led.manual_leds, led.geometry)  # refuse an empty/bad list
        led.pattern_name = value

    @pymm_property(limits=(0.01, 1.5), name="NumericalAperture")
    def numerical_aperture(self) -> float:
        """Objective NA used to split bright-field from dark-field LEDs."""
        return self.scope.led.objective_na

    @numerical_aperture.setter
    def numerical_aperture(self, v: float) -> None:
        self.scope.led.objective_na = float(v)

    @pymm_property(limits=(0.0, 1.0), name="AnnulusInnerNA")
    def inner_na(self) -> float:
        """Inner NA of ``an``/``ha`` patterns (0 = use the objective NA)."""
        return self.scope.led.inner_na or 0.0

    @inner_na.setter
    def inner_na(self, v: float) -> None:
        self.scope.led.inner_na = float(v) or None

    @pymm_property(limits=(0.0, 1.0), name="OuterNA")
    def outer_na(self) -> float:
        """Largest illumination NA used by ``df``/``an``/``ha``."""
        return self.scope.led.outer_na

    @outer_na.setter
    def outer_na(self, v: float) -> None:
        self.scope.led.outer_na = float(v)

    @pymm_property(limits=(0, 255), name="Brightness")
    def brightness(self) -> int:
        return int(round(self.scope.led.brightness * 255))

    @brightness.setter
    def brightness(self, v: float) -> None:
        self.scope.led.brightness = float(v) / 255.0

    @pymm_property(allowed_values=("red", "green", "blue"), name="Color")
    def color(self) -> str:
        return {630.0: "red", 530.0: "green", 470.0: "blue"}[self.scope.led.wavelength_nm]

    @color.setter
    def color(self, v: str) -> None:
        self.scope.led.wavelength_nm = {"red": 630.0, "green": 530.0, "blue": 470.0}[v]

    @pymm_property(name="ManualLedIndices")
    def manual_leds(self) -> str:
        """LEDs lit by the ``manual`` pattern: indices or ``l.<row>.<col>`` items."""
        return self.scope.led.manual_leds

    @manual_leds.setter
    def manual_leds(self, v: str) -> None:
        parse_led_list(str(v), self.scope.led.geometry)
        self.scope.led.manual_leds = str(v)

    @pymm_property(name="SerialCommand")
    def command(self) -> str:
        """Send a raw firmware command (``bf``, ``dpc.l``, ``l.15.16``, ``x`` ...)."""
        return self._last_command

    @command.setter
    def command(self, v: str) -> None:
        cmd = str(v).strip()
        if cmd.startswith("l."):
            self.manual_leds = cmd  # type: ignore[misc]
            self.pattern = "manual"  # type: ignore[misc]
        elif cmd in PATTERN_NAMES:
            self.pattern = cmd  # type: ignore[misc]
        else:
            raise PatternError(
                f"unknown LED array command {cmd!r}; valid: {', '.join(PATTERN_NAMES)} "
                "or l.<row>.<col>[,...]"
            )
        self._last_command = cmd

    @pymm_property(is_read_only=True, name="LitLedCount")
    def lit_count(self) -> int:
        return self.scope.led.pattern().n_lit


# ---------------------------------------------------------------- fluorescence
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
    role as with Micro-Manager's Multi Shutter.
    """

    PATHS: ClassVar[tuple[str, ...]] = ("Transmitted", "Epi")

    def __init__(self) -> None:
        super().__init__()
        self._path = "Transmitted"
        self._open = False

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


# ------------------------------------------------------------------------ stages
class SimXYStage(_Peripheral, XYStageDevice):
    """Motorised XY stage with travel limits; refuses moves outside them."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = 50_000.0

    @pymm_property(limits=(100.0, 1e6), name="TravelLimitUm")
    def travel_limit(self) -> float:
        """Half-range of travel in x and y (µm from the origin)."""
        return self._limit

    @travel_limit.setter
    def travel_limit(self, v: float) -> None:
        self._limit = float(v)

    def set_position_um(self, x: float, y: float) -> None:
        lim = self._limit
        if not (-lim <= x <= lim and -lim <= y <= lim):
            raise ValueError(
                f"XY move to ({x:.2f}, {y:.2f}) µm refused: outside the stage travel "
                f"[-{lim:g}, {lim:g}] µm in x and y; the stage did not move"
            )
        with self.scope.lock:
            self.scope.x_um, self.scope.y_um = float(x), float(y)
        self.core.events.XYStagePositionChanged.emit(self.get_label(), float(x), float(y))

    def get_position_um(self) -> tuple[float, float]:
        return self.scope.x_um, self.scope.y_um

    def home(self) -> None:
        self.set_position_um(0.0, 0.0)

    def stop(self) -> None:
        pass

    def set_origin_x(self) -> None:
        raise NotImplementedError("the simulated stage keeps absolute slide coordinates")

    def set_origin_y(self) -> None:
        raise NotImplementedError("the simulated stage keeps absolute slide coordinates")


class SimZStage(_Peripheral, StageDevice):
    """Focus drive with travel limits."""

    _LIMITS = (-2000.0, 2000.0)

    def set_position_um(self, val: float) -> None:
        lo, hi = self._LIMITS
        if not lo <= val <= hi:
            raise ValueError(
                f"Z move to {val:.2f} µm refused: outside the focus travel "
                f"[{lo:g}, {hi:g}] µm; the stage did not move"
            )
        with self.scope.lock:
            self.scope.z_um = float(val)
        self.core.events.stagePositionChanged.emit(self.get_label(), float(val))

    def get_position_um(self) -> float:
        return self.scope.z_um

    def home(self) -> None:
        self.set_position_um(0.0)

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        raise NotImplementedError("the simulated focus keeps absolute coordinates")


# ------------------------------------------------------------------------ cameras
class SimCamera(_Peripheral, SimpleCameraDevice):
    """sCMOS camera: photons from the simulated optics, realistic noise."""

    def __init__(self) -> None:
        super().__init__()
        self._exposure = 10.0
        self._width = 512
        self._height = 512
        self._pixel_um = 6.5
        self._binning = 1
        self._model = CameraModel()
        self._noise = True
        self._mode = "Ensemble"
        self._rng = np.random.default_rng(1)
        self._truth = np.zeros((0, 3))

    # geometry
    @pymm_property(limits=(16, 4096), is_pre_init=True, name="SensorWidth")
    def sensor_width(self) -> int:
        return self._width

    @sensor_width.setter
    def sensor_width(self, v: float) -> None:
        self._width = int(v)

    @pymm_property(limits=(16, 4096), is_pre_init=True, name="SensorHeight")
    def sensor_height(self) -> int:
        return self._height

    @sensor_height.setter
    def sensor_height(self, v: float) -> None:
        self._height = int(v)

    @pymm_property(limits=(1.0, 30.0), name="PhysicalPixelSizeUm")
    def physical_pixel(self) -> float:
        return self._pixel_um

    @physical_pixel.setter
    def physical_pixel(self, v: float) -> None:
        self._pixel_um = float(v)

    def sensor_shape(self) -> tuple[int, int]:
        return (self._height // self._binning, self._width // self._binning)

    def dtype(self) -> str:
        return "uint16"

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        if not 0.01 <= float(exposure) <= 60_000:
            raise ValueError(f"exposure {exposure} ms outside [0.01, 60000] ms")
        self._exposure = float(exposure)

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        if int(value) not in (1, 2, 4):
            raise ValueError(f"binning {value} not supported; use 1, 2 or 4")
        self._binning = int(value)

    # noise model
    @pymm_property(limits=(0.01, 100.0), name="Gain")
    def gain(self) -> float:
        """ADU per electron."""
        return self._model.gain_adu_per_e

    @gain.setter
    def gain(self, v: float) -> None:
        self._model.gain_adu_per_e = float(v)

    @pymm_property(limits=(0.0, 10000.0), name="Offset")
    def offset(self) -> float:
        return self._model.offset_adu

    @offset.setter
    def offset(self, v: float) -> None:
        self._model.offset_adu = float(v)

    @pymm_property(limits=(0.0, 100.0), name="ReadNoiseElectrons")
    def read_noise(self) -> float:
        return self._model.read_noise_e

    @read_noise.setter
    def read_noise(self, v: float) -> None:
        self._model.read_noise_e = float(v)

    @pymm_property(limits=(0.01, 1.0), name="QuantumEfficiency")
    def qe(self) -> float:
        return self._model.quantum_efficiency

    @qe.setter
    def qe(self, v: float) -> None:
        self._model.quantum_efficiency = float(v)

    @pymm_property(limits=(100.0, 1e6), name="FullWellElectrons")
    def full_well(self) -> float:
        return self._model.full_well_e

    @full_well.setter
    def full_well(self, v: float) -> None:
        self._model.full_well_e = float(v)

    @pymm_property(allowed_values=("8", "12", "16"), name="BitDepth")
    def bit_depth(self) -> str:
        return str(self._model.bit_depth)

    @bit_depth.setter
    def bit_depth(self, v: str) -> None:
        self._model.bit_depth = int(v)

    @pymm_property(allowed_values=("On", "Off"), name="Noise")
    def noise(self) -> str:
        """``Off``: expected counts without shot/read noise (clean references, pipeline benchmarks)."""
        return "On" if self._noise else "Off"

    @noise.setter
    def noise(self, v: str) -> None:
        self._noise = v == "On"

    @pymm_property(allowed_values=("Ensemble", "Blinking"), name="FluorophoreMode")
    def fluorophore_mode(self) -> str:
        """``Blinking``: single-molecule frames (sparse random emitters on)."""
        return self._mode

    @fluorophore_mode.setter
    def fluorophore_mode(self, v: str) -> None:
        self._mode = v

    @pymm_property(is_read_only=True, name="LastEmitters")
    def last_emitters(self) -> str:
        """Ground truth of the last blinking frame: JSON list of [x_um, y_um, photons]."""
        return json.dumps(np.round(self._truth, 4).tolist())

    def _photons(self, shape: tuple[int, int]) -> np.ndarray:
        scope = self.scope
        if self._mode == "Blinking" and scope.fluo.is_open:
            img, self._truth = scope.blinking_photons(
                self._pixel_um, self._binning, shape, self._exposure, self._rng
            )
            lf = scope.label_free_rate(scope.pixel_um(self._pixel_um, self._binning), shape)
            if lf is not None:
                img = img + lf * np.float32(self._exposure)
            return img
        return scope.photons(self._pixel_um, self._binning, shape, self._exposure)

    def snap(self, buffer: np.ndarray) -> dict:
        self._model.expose(self._photons(buffer.shape), out=buffer, noise=self._noise)
        return {"scopecast.simulated": True}


class SimStedDetector(SimCamera):
    """Super-resolution detector: the ground truth with a STED-like narrowed PSF.

    It samples the specimen ``Oversampling`` times finer than the widefield
    camera (same field of view) and images fluorescence with an effective PSF
    ``StedFactor`` times narrower than the widefield Airy PSF.
    """

    def __init__(self) -> None:
        super().__init__()
        self._factor = 4.0
        self._oversampling = 2
        self._model.read_noise_e = 0.5

    @pymm_property(limits=(1.0, 10.0), name="StedFactor")
    def sted_factor(self) -> float:
        return self._factor

    @sted_factor.setter
    def sted_factor(self, v: float) -> None:
        self._factor = float(v)

    @pymm_property(allowed_values=("1", "2", "4"), name="Oversampling")
    def oversampling(self) -> str:
        return str(self._oversampling)

    @oversampling.setter
    def oversampling(self, v: str) -> None:
        self._oversampling = int(v)

    def sensor_shape(self) -> tuple[int, int]:
        h, w = super().sensor_shape()
        return (h * self._oversampling, w * self._oversampling)

    def _photons(self, shape: tuple[int, int]) -> np.ndarray:
        pixel = self._pixel_um / self._oversampling
        return self.scope.photons(pixel, self._binning, shape, self._exposure, self._factor)


_PERIPHERALS = (
    SimLedArray, SimFluorescenceSource, SimIlluminationShutter, SimEmissionFilter, SimObjectiveTurret,
    SimXYStage, SimZStage, SimCamera, SimStedDetector,
)
