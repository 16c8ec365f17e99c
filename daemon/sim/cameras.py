"""Simulated detectors: an sCMOS camera and a STED-like super-resolution detector.

Both turn the photon map of :class:`~scopecast.daemon.sim.scope.SimScope` into
counts with the noise model of :class:`~scopecast.daemon.sim.camera_model.CameraModel`.
With ``Noise=Off`` a frame is a function of the scope's cached photon maps and the
camera's settings alone, so the camera keeps the last few it made and copies one
that is asked for again (a live cycle of patterns at one position): a frame then
costs a copy, as with a real camera, and is identical to a rendered one.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

import numpy as np
from pymmcore_plus.experimental.unicore import SimpleCameraDevice, pymm_property

from .camera_model import CameraModel
from .hub import _Peripheral, trigger_line
from .scope import PhotonTerms

__all__ = ["SimCamera", "SimStedDetector"]

#: The binning factors the camera offers, and its exposure range (ms).
BINNINGS = (1, 2, 4)
EXPOSURE_LIMITS_MS = (0.01, 60_000.0)
#: Noiseless frames a camera keeps (each with the photon maps it was made from), at most this many bytes.
FRAME_CACHE_BYTES = 64 << 20


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
        self._timing = "Instant"
        self._line_time_us = 9.74  # ORCA-Flash4.0-like rolling-shutter line time
        self._seq_end: float | None = None  # in a sequence: when its last frame's period ended (perf_counter)
        self._seq_first = False  # in a sequence, before its first frame
        self._frames: OrderedDict[tuple, tuple[np.ndarray, PhotonTerms]] = OrderedDict()
        # declared as DemoCamera declares them: a client's binning list and exposure range come from here
        self.set_property_allowed_values("Binning", BINNINGS)
        self.set_property_limits("Exposure", EXPOSURE_LIMITS_MS)

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
        low, high = EXPOSURE_LIMITS_MS
        if not low <= float(exposure) <= high:
            raise ValueError(f"exposure {exposure} ms outside [{low:g}, {high:g}] ms")
        self._exposure = float(exposure)

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        if int(value) not in BINNINGS:
            raise ValueError(f"binning {value} not supported; use 1, 2 or 4")
        self._refuse_while_acquiring("Binning")
        old, new = self._binning, int(value)
        self._rescale_roi(lambda n: n * old // new, lambda: setattr(self, "_binning", new))

    def _refuse_while_acquiring(self, what: str) -> None:
        """Raise (naming ``what``) while a sequence acquisition or a snap runs on this camera: its frames keep the
        geometry and bit depth they started with, so a change would go unseen in them while ``getROI`` and the
        properties report it. Micro-Manager's DemoCamera refuses Binning and BitDepth then, and the C++ core
        refuses a snap during a sequence."""
        if self._seq_end is not None:
            raise RuntimeError(
                f"camera {self.get_label()!r}: {what} is not allowed while a sequence acquisition is running; "
                "stop it first (stopSequenceAcquisition)"
            )

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        self._refuse_while_acquiring("setROI")
        super().set_roi(x, y, width, height)

    def clear_roi(self) -> None:
        self._refuse_while_acquiring("clearROI")
        super().clear_roi()

    def _rescale_roi(self, scale, change) -> None:
        """Apply ``change`` to the sensor's geometry, keeping an active ROI on the same region of the sensor
        (as Micro-Manager's DemoCamera does on a binning change), cut to the new sensor (all of it: no ROI).
        Without this the ROI of the old geometry cropped the new frame (a broadcast error)."""
        h, w = self.sensor_shape()[:2]
        roi = self.get_roi()
        change()
        if roi == (0, 0, w, h):  # the whole sensor: the whole sensor again
            self.clear_roi()
            return
        h, w = self.sensor_shape()[:2]
        x, y = min(scale(roi[0]), w - 1), min(scale(roi[1]), h - 1)
        rw, rh = min(max(scale(roi[2]), 1), w - x), min(max(scale(roi[3]), 1), h - y)
        if (x, y, rw, rh) == (0, 0, w, h):
            self.clear_roi()
        else:
            self.set_roi(x, y, rw, rh)

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
        self._refuse_while_acquiring("BitDepth")
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

    def _terms(self, shape: tuple[int, int]) -> PhotonTerms:
        return self.scope.photon_terms(self._pixel_um, self._binning, shape, self._exposure)

    def _blinking(self) -> bool:
        return self._mode == "Blinking" and self.scope.fluo.is_open

    def _photons(self, shape: tuple[int, int]) -> np.ndarray:
        scope = self.scope
        if self._blinking():
            img, self._truth = scope.blinking_photons(
                self._pixel_um, self._binning, shape, self._exposure, self._rng
            )
            lf = scope.label_free_rate(scope.pixel_um(self._pixel_um, self._binning), shape, self._binning)
            if lf is not None:
                img = img + lf * np.float32(self._exposure)
            return img
        return self._terms(shape).compose()

    def _expose(self, buffer: np.ndarray) -> None:
        """Fill ``buffer`` with the next frame: rendered, or without noise the kept frame of the same terms."""
        if self._noise or self._blinking():
            self._model.expose(self._photons(buffer.shape), out=buffer, noise=self._noise)
            return
        terms = self._terms(buffer.shape)
        m = self._model
        key = (terms.key, m.quantum_efficiency, m.gain_adu_per_e, m.offset_adu, m.bit_depth, m.full_well_e)
        kept = self._frames.get(key)
        if kept is None:
            kept = (m.expose(terms.compose(), noise=False), terms)  # ``terms`` holds the maps its key names
            self._frames[key] = kept
            while sum(f.nbytes for f, _ in self._frames.values()) > FRAME_CACHE_BYTES and len(self._frames) > 1:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(key)
        np.copyto(buffer, kept[0])

    # timing
    @pymm_property(allowed_values=("Instant", "Realistic"), name="TimingModel")
    def timing_model(self) -> str:
        """``Realistic``: a snap takes exposure + readout, a sequence runs at one frame per
        max(exposure, readout) (overlapped sCMOS readout); ``Instant``: as fast as computed."""
        return self._timing

    @timing_model.setter
    def timing_model(self, v: str) -> None:
        self._timing = v

    @pymm_property(limits=(0.1, 100.0), name="LineTimeUs")
    def line_time(self) -> float:
        """Rolling-shutter line time; readout = sensor rows x line time."""
        return self._line_time_us

    @line_time.setter
    def line_time(self, v: float) -> None:
        self._line_time_us = float(v)

    def readout_ms(self) -> float:
        return self.sensor_shape()[0] * self._line_time_us / 1000.0

    def start_sequence(self, n, get_buffer):
        """Frames of a sequence acquisition (UniMMCore snaps through it too: one frame); with realistic timing
        paced at max(exposure, readout). One at a time: a snap or a second sequence while one runs is refused."""
        self._refuse_while_acquiring("snapImage" if n == 1 else "another sequence")
        self._seq_end = time.perf_counter()
        try:
            self._seq_first = True  # its first frame is exposed, then read out; later ones overlap the two
            yield from super().start_sequence(n, get_buffer)
        finally:
            self._seq_end = None

    def snap(self, buffer: np.ndarray) -> dict:
        t_start = time.perf_counter()
        self._expose(buffer)
        if self._timing == "Realistic":
            if self._seq_end is not None and not self._seq_first:
                # each frame ends one period of its own after the previous one: the exposure may change
                # during a sequence (live mode), and a new period applies from the next frame on
                period = max(self._exposure, self.readout_ms()) / 1000.0
                self._seq_end = deadline = self._seq_end + period
            else:
                # a snap (UniMMCore snaps through start_sequence: a sequence of one) or a sequence's first
                # frame: its exposure, then the readout of the whole sensor; only later frames overlap the two
                deadline = t_start + (self._exposure + self.readout_ms()) / 1000.0
                if self._seq_end is not None:
                    self._seq_end, self._seq_first = deadline, False
            time.sleep(max(0.0, deadline - time.perf_counter()))
        trigger_line(self.scope).fire()  # end of this exposure: the exposure-out TTL falls
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
        self._refuse_while_acquiring("Oversampling")
        old, new = self._oversampling, int(v)
        self._rescale_roi(lambda n: n * new // old, lambda: setattr(self, "_oversampling", new))

    def sensor_shape(self) -> tuple[int, int]:
        h, w = super().sensor_shape()
        return (h * self._oversampling, w * self._oversampling)

    def _terms(self, shape: tuple[int, int]) -> PhotonTerms:
        pixel = self._pixel_um / self._oversampling
        return self.scope.photon_terms(pixel, self._binning, shape, self._exposure, self._factor)

    def _blinking(self) -> bool:
        return False  # the detector images the ensemble
