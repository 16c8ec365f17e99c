"""The simulated LED array: Micro-Manager's ``IlluminateLedArray`` adapter, emulated.

:class:`SimLedArray` is a **Shutter** device with the real adapter's property
names, allowed values, types and defaults (``IlluminationPattern``,
``NumericalAperture``, ``InnerNumericalAperture``, ``AnnulusStartNa``,
``AnnulusWidthNa``, ``ArrayDistanceFromSample``, ``ManualLedList``,
``Brightness``, ``ColorBalanceRed|Green|Blue``, ``GlobalShutter``,
``SerialCommand``/``SerialResponse``, ``LedCount``, ``Sequence``,
``SequenceDelaySeconds``, ``SequenceRunCount``, ``TriggerInput0Mode``,
``TriggerOutput0Mode``, ...), so the property and preset lines of a
configuration written for the real array run unchanged against it: only the
``Device`` line changes (``Device,LED,IlluminateLedArray,IlluminateLedArray`` ->
``#py pyDevice,LED,scopecast.daemon.sim.devices,IlluminateLedArray``). It even
reports the real device name (``getDeviceName`` is ``IlluminateLedArray``).

Semantics follow the adapter and the *illuminate* firmware it drives: what each
pattern lights is computed from the LED geometry and the NA settings
(:mod:`scopecast.daemon.illumination`); setting ``ManualLedList`` switches the
pattern to ``Manual LED Indicies`` (an empty list is ``Clear``); the Shutter
API is the firmware's global shutter (``gs``, mirrored by ``GlobalShutter``,
open by default), and LEDs emit only while it is open *and* the light path is
open (:class:`~scopecast.daemon.sim.devices.SimIlluminationShutter`, when the
configuration has one). ``SerialCommand`` accepts the firmware commands the
adapter sends. Setting ``Sequence`` runs the firmware's sequence with its
timing in the background (each pattern shown for ``SequenceDelaySeconds``,
``SequenceRunCount`` times, then the array is cleared) and reads back ``""``
like the adapter; trigger modes are stored and reported, not wired to a camera.

Simulator-only, pre-initialization: ``Rows``, ``Columns``, ``LedPitchMm`` (the
real adapter reads its geometry from the controller). Diagnostic:
``LitLedCount``.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from pymmcore_plus.experimental.unicore import ShutterDevice, pymm_property

from ..illumination import (
    CLEAR,
    COLOR_WAVELENGTHS_NM,
    FIRMWARE_COMMANDS,
    MANUAL,
    PATTERN_NAMES,
    LedArrayGeometry,
    PatternError,
    parse_led_list,
)
from .hub import _Peripheral, trigger_line

__all__ = ["SEQUENCES", "TRIGGER_MODES", "SimLedArray"]

#: ``Sequence`` values (``""``: not running) and the firmware command each starts.
SEQUENCES: dict[str, str] = {
    "": "",
    "Individual LEDs (All)": "scf",
    "Individual LEDs (Brightfield)": "scb",
    "Individual LEDs (Darkfield)": "scd",
    "DPC Patterns": "rdpc",
}
#: ``TriggerInput0Mode`` / ``TriggerOutput0Mode`` values.
TRIGGER_MODES: tuple[str, ...] = ("Disabled", "Every Pattern Change", "Every Pattern Cycle", "Start of First Pattern")


class SimLedArray(_Peripheral, ShutterDevice):
    """Programmable LED array, property-compatible with Micro-Manager's IlluminateLedArray."""

    NAME: ClassVar[str] = "IlluminateLedArray"

    def __init__(self) -> None:
        super().__init__()
        self._rows, self._cols, self._pitch = 32, 32, 4.0
        self._port = "Undefined"
        self._command = ""
        self._response = ""
        self._sequence_delay_s = 0.0
        self._sequence_runs = 1
        self._trigger_in = self._trigger_out = "Disabled"
        self._sequence_thread: threading.Thread | None = None
        self._sequence_stop = threading.Event()
        self._trigger = threading.Event()
        self._triggered: list[dict] = []  # the remaining patterns of an every-pattern-change sequence
        self._armed = False  # an every-pattern-change sequence waits for camera triggers
        self._serial_delay_s = 0.0

    @classmethod
    def name(cls) -> str:
        return cls.NAME

    def initialize(self) -> None:
        led = self.scope.led
        led.geometry = LedArrayGeometry(self._rows, self._cols, self._pitch, led.geometry.distance_mm)

    def shutdown(self) -> None:
        self._stop_sequence()
        trigger_line(self.scope).disconnect(self._on_trigger)

    # ---------------------------------------------------------------- shutter
    def get_open(self) -> bool:
        return self.scope.led.global_shutter

    def set_open(self, open: bool) -> None:
        self.scope.led.global_shutter = bool(open)

    @pymm_property(limits=(0, 1), name="GlobalShutter")
    def global_shutter(self) -> int:
        """The firmware's global shutter (``gs``): 1 lets the pattern emit (the Shutter API)."""
        return int(self.scope.led.global_shutter)

    @global_shutter.setter
    def global_shutter(self, v: float) -> None:
        self.set_open(bool(int(v)))

    # ------------------------------------------------------- pre-init geometry
    @pymm_property(is_pre_init=True, name="Port")
    def port(self) -> str:
        """Serial port of the real controller; accepted and unused by the simulator."""
        return self._port

    @port.setter
    def port(self, v: str) -> None:
        self._port = str(v)

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

    # ---------------------------------------------------------------- pattern
    def _set(self, serial: bool = True, **changes) -> None:
        """Apply controller settings; refuse (and keep the old state) if the current
        pattern cannot be formed with them. ``serial``: a command over the serial line,
        which costs ``SerialDelayMs`` (the adapter waits 30 ms for every answer)."""
        if serial and self._serial_delay_s:
            time.sleep(self._serial_delay_s)
        led = self.scope.led
        with self.scope.lock:
            old = {k: getattr(led, k) for k in changes}
            for k, v in changes.items():
                setattr(led, k, v)
            try:
                led.pattern()
            except PatternError:
                for k, v in old.items():
                    setattr(led, k, v)
                raise

    @pymm_property(allowed_values=PATTERN_NAMES, name="IlluminationPattern")
    def pattern(self) -> str:
        return self.scope.led.pattern_name

    @pattern.setter
    def pattern(self, value: str) -> None:
        if value == MANUAL and not self.scope.led.manual_leds.strip():
            value = CLEAR  # the adapter: a manual pattern without LEDs is Clear
        self._set(pattern_name=value)

    @pymm_property(limits=(0.01, 1.0), name="NumericalAperture")
    def numerical_aperture(self) -> float:
        """Objective NA: bright-field LEDs are those inside it, dark-field those outside."""
        return self.scope.led.objective_na

    @numerical_aperture.setter
    def numerical_aperture(self, v: float) -> None:
        self._set(objective_na=float(v))

    @pymm_property(limits=(0.0, 1.0), name="InnerNumericalAperture")
    def inner_na(self) -> float:
        """Bright-field and DPC patterns light LEDs from this NA out to NumericalAperture."""
        return self.scope.led.inner_na

    @inner_na.setter
    def inner_na(self, v: float) -> None:
        self._set(inner_na=float(v))

    @pymm_property(limits=(0.0, 1.0), name="AnnulusStartNa")
    def annulus_start(self) -> float:
        """Inner NA of the Annulus and Half Annulus patterns."""
        return self.scope.led.annulus_start_na

    @annulus_start.setter
    def annulus_start(self, v: float) -> None:
        self._set(annulus_start_na=float(v))

    @pymm_property(limits=(0.0, 1.0), name="AnnulusWidthNa")
    def annulus_width(self) -> float:
        """Width (in NA) of the Annulus and Half Annulus patterns."""
        return self.scope.led.annulus_width_na

    @annulus_width.setter
    def annulus_width(self, v: float) -> None:
        self._set(annulus_width_na=float(v))

    @pymm_property(limits=(5.0, 300.0), name="ArrayDistanceFromSample")
    def array_distance(self) -> float:
        """Distance from the LED plane to the sample, mm."""
        return self.scope.led.geometry.distance_mm

    @array_distance.setter
    def array_distance(self, v: float) -> None:
        g = self.scope.led.geometry
        self._set(geometry=LedArrayGeometry(g.rows, g.cols, g.pitch_mm, float(v)))

    @pymm_property(name="ManualLedList")
    def manual_leds(self) -> str:
        """LED numbers (``0.1.2.3`` or ``0,1,2,3``; LED 0 is the centre LED); setting it
        lights them (the pattern becomes ``Manual LED Indicies``)."""
        return self.scope.led.manual_leds

    @manual_leds.setter
    def manual_leds(self, v: str) -> None:
        text = str(v).strip()
        if not text:
            self._set(manual_leds="", pattern_name=CLEAR)
            return
        parse_led_list(text, self.scope.led.geometry)  # names a bad LED
        self._set(manual_leds=text, pattern_name=MANUAL)

    @pymm_property(limits=(0, 255), name="Brightness")
    def brightness(self) -> int:
        return self.scope.led.brightness

    @brightness.setter
    def brightness(self, v: float) -> None:
        self._set(brightness=int(v))

    def _balance(self, channel: int, v: float) -> None:
        rgb = list(self.scope.led.color_balance)
        rgb[channel] = int(v)
        self._set(color_balance=tuple(rgb))

    @pymm_property(limits=(0, 255), name="ColorBalanceRed")
    def color_red(self) -> int:
        return self.scope.led.color_balance[0]

    @color_red.setter
    def color_red(self, v: float) -> None:
        self._balance(0, v)

    @pymm_property(limits=(0, 255), name="ColorBalanceGreen")
    def color_green(self) -> int:
        return self.scope.led.color_balance[1]

    @color_green.setter
    def color_green(self, v: float) -> None:
        self._balance(1, v)

    @pymm_property(limits=(0, 255), name="ColorBalanceBlue")
    def color_blue(self) -> int:
        return self.scope.led.color_balance[2]

    @color_blue.setter
    def color_blue(self, v: float) -> None:
        self._balance(2, v)

    # ------------------------------------------------------- device parameters
    @pymm_property(limits=(0.0, 1000.0), name="SerialDelayMs")
    def serial_delay(self) -> float:
        """Simulator timing: what each serial command costs (the adapter's SERIAL_DELAY_MS is 30;
        0, the default, keeps the simulator fast)."""
        return self._serial_delay_s * 1000.0

    @serial_delay.setter
    def serial_delay(self, v: float) -> None:
        self._serial_delay_s = float(v) / 1000.0

    @pymm_property(is_read_only=True, name="LedCount")
    def led_count(self) -> int:
        return self.scope.led.geometry.n_leds

    @pymm_property(is_read_only=True, name="ColorChannelCount")
    def color_channel_count(self) -> int:
        return 3

    @pymm_property(is_read_only=True, name="ModelName")
    def model_name(self) -> str:
        return "scopecast-sim-{}x{}".format(self._rows, self._cols)

    @pymm_property(is_read_only=True, name="TriggerInputCount")
    def trigger_input_count(self) -> int:
        return 1

    @pymm_property(is_read_only=True, name="TriggerOutputCount")
    def trigger_output_count(self) -> int:
        return 1

    @pymm_property(is_read_only=True, name="ColorMeanWavelengthRedNm")
    def wavelength_red(self) -> str:
        return f"{COLOR_WAVELENGTHS_NM[0]:.6f}"

    @pymm_property(is_read_only=True, name="ColorMeanWavelengthGreenNm")
    def wavelength_green(self) -> str:
        return f"{COLOR_WAVELENGTHS_NM[1]:.6f}"

    @pymm_property(is_read_only=True, name="ColorMeanWavelengthBlueNm")
    def wavelength_blue(self) -> str:
        return f"{COLOR_WAVELENGTHS_NM[2]:.6f}"

    @pymm_property(is_read_only=True, name="LitLedCount")
    def lit_count(self) -> int:
        """Simulator diagnostic: LEDs the current pattern lights."""
        return self.scope.led.pattern().n_lit

    @pymm_property(allowed_values=("", "Reset"), name="Reset")
    def reset(self) -> str:
        return ""

    @reset.setter
    def reset(self, v: str) -> None:
        if v == "Reset":
            self._stop_sequence()
            self._set(pattern_name=CLEAR)

    # ------------------------------------------------------------ serial I/O
    @pymm_property(name="SerialCommand")
    def command(self) -> str:
        """Send an illuminate firmware command (``bf``, ``dpc.l``, ``l.0.1.2``, ``na.25``, ``x`` ...);
        the reply is in ``SerialResponse``."""
        return self._command

    @command.setter
    def command(self, v: str) -> None:
        cmd = str(v).strip()
        self._command = cmd
        try:
            self._response = self._run_command(cmd)
        except (PatternError, ValueError) as e:
            self._response = f"ERROR - {e}"
            raise PatternError(f"LED array command {cmd!r} failed: {e}") from None

    @pymm_property(is_read_only=True, name="SerialResponse")
    def response(self) -> str:
        return self._response

    def _within(self, prop: str, value: float) -> float:
        """``value`` if the property ``prop`` allows it: a serial command is held to the property's limits, and
        the refusal speaks the command's units (a brightness 0-255, not the controller's internal fraction)."""
        lo, hi = self.get_property_info(prop).limits
        if not lo <= value <= hi:
            raise ValueError(f"{prop} {value:g} is outside its limits {lo:g}..{hi:g}")
        return value

    def _run_command(self, cmd: str) -> str:
        head, _, rest = cmd.partition(".")
        args = [a for a in rest.split(".") if a] if rest else []
        led = self.scope.led
        if cmd in FIRMWARE_COMMANDS:
            self._set(pattern_name=FIRMWARE_COMMANDS[cmd])
            return ""
        if head in ("an", "ha") and args:
            side = args.pop(0) if head == "ha" else ""
            base = f"{head}.{side}" if side else head
            if base not in FIRMWARE_COMMANDS or len(args) != 2:
                raise ValueError(f"use {head}{'.<t|b|l|r>' if head == 'ha' else ''}.<start NA x100>.<width NA x100>")
            start, width = int(args[0]) / 100, int(args[1]) / 100
            self._within("AnnulusStartNa", start)
            self._within("AnnulusWidthNa", width)
            self._set(annulus_start_na=start, annulus_width_na=width, pattern_name=FIRMWARE_COMMANDS[base])
            return ""
        if head == "l" and args:
            self.manual_leds = ".".join(args)  # type: ignore[misc]
            return ""
        values = {"na": ("NA", "objective_na", 100), "nai": ("NAI", "inner_na", 100),
                  "sad": ("DZ", "geometry", 1), "sb": ("SB", "brightness", 1)}
        if head in values:
            tag, attr, scale = values[head]
            if args:
                if head == "sad":
                    self.array_distance = float(args[0])  # type: ignore[misc]
                elif head == "sb":
                    self._set(brightness=int(self._within("Brightness", int(args[0]))))
                else:
                    prop = "NumericalAperture" if head == "na" else "InnerNumericalAperture"
                    self._set(**{attr: self._within(prop, int(args[0]) / scale)})
            value = led.geometry.distance_mm if head == "sad" else getattr(led, attr)
            return f"{tag}.{round(value * scale)}"
        if head == "sc":
            if args:
                if len(args) != 3:
                    raise ValueError("use sc.<red>.<green>.<blue> (0-255 each)")
                self._set(color_balance=tuple(int(self._within(f"ColorBalance{c}", int(a)))
                                              for c, a in zip(("Red", "Green", "Blue"), args, strict=True)))
            return "SC." + ".".join(str(c) for c in led.color_balance)
        if head == "gs":
            if args:
                self.set_open(bool(int(args[0])))
            return f"GS.{int(led.global_shutter)}"
        if cmd == "reset":
            self.reset = "Reset"  # type: ignore[misc]
            return ""
        raise ValueError(
            "unknown command; the simulator accepts " + ", ".join(sorted({*FIRMWARE_COMMANDS, "an.<s>.<w>",
            "ha.<t|b|l|r>.<s>.<w>", "l.<led>[.<led>...]", "na[.<x100>]", "nai[.<x100>]", "sad[.<mm>]",
            "sb[.<0-255>]", "sc[.<r>.<g>.<b>]", "gs[.<0|1>]", "reset"}))
        )

    # --------------------------------------------------------------- sequence
    @pymm_property(allowed_values=tuple(SEQUENCES), name="Sequence")
    def sequence(self) -> str:
        """Start a firmware sequence; reads back ``""`` (the adapter cannot tell when it ends)."""
        return ""

    @sequence.setter
    def sequence(self, value: str) -> None:
        if not value:
            return
        patterns = self._sequence_patterns(value)
        if self._serial_delay_s:
            time.sleep(self._serial_delay_s)  # the one serial command that starts it
        self._stop_sequence()
        if self._trigger_in == "Every Pattern Change":
            # the camera's exposure-out advances the array: switched in the camera's thread
            # (microseconds on the hardware), so each frame sees its own pattern
            runs = patterns * max(1, self._sequence_runs)
            self._set(serial=False, **runs[0])
            self._triggered, self._armed = runs[1:], True
            trigger_line(self.scope).connect(self._on_trigger)
            return
        self._sequence_stop.clear()
        self._trigger.clear()
        trigger_line(self.scope).connect(self._on_trigger)
        t = threading.Thread(target=self._run_sequence, args=(patterns,), name=f"{self.get_label()}-sequence",
                             daemon=True)
        self._sequence_thread = t
        t.start()

    def _on_trigger(self) -> None:
        if self._trigger_in != "Every Pattern Change" or self._sequence_thread is not None:
            self._trigger.set()
            return
        with self.scope.lock:
            if not self._armed:
                return
            if self._triggered:
                self._set(serial=False, **self._triggered.pop(0))
                return
            self._set(serial=False, pattern_name=CLEAR)  # done: cleared, like the firmware
            self._armed = False
        trigger_line(self.scope).disconnect(self._on_trigger)

    def _sequence_patterns(self, value: str) -> list[dict]:
        led = self.scope.led
        na, geometry = led.geometry.na, led.geometry
        if value == "DPC Patterns":
            return [{"pattern_name": p} for p in ("DPC Top", "DPC Bottom", "DPC Left", "DPC Right")]
        if value == "Individual LEDs (Brightfield)":
            numbers = [i for i in range(geometry.n_leds) if led.inner_na <= na[i] < led.objective_na]
        elif value == "Individual LEDs (Darkfield)":
            numbers = [i for i in range(geometry.n_leds) if na[i] > led.objective_na]
        else:
            numbers = list(range(geometry.n_leds))
        return [{"pattern_name": MANUAL, "manual_leds": str(i)} for i in numbers]

    def _run_sequence(self, patterns: list[dict]) -> None:
        """The firmware's timed sequence: each pattern for SequenceDelaySeconds; with an input
        trigger mode, a cycle (or the first pattern) waits for the camera's trigger first."""
        mode = self._trigger_in
        try:
            for run in range(max(1, self._sequence_runs)):
                for k, settings in enumerate(patterns):
                    if self._sequence_stop.is_set():
                        return
                    self._set(serial=False, **settings)
                    gate = (mode == "Every Pattern Cycle" and k == 0) or (
                        mode == "Start of First Pattern" and run == 0 and k == 0)
                    if gate:
                        self._trigger.clear()
                        while not self._trigger.wait(0.05):
                            if self._sequence_stop.is_set():
                                return
                    self._sequence_stop.wait(self._sequence_delay_s)
            self._set(serial=False, pattern_name=CLEAR)
        finally:
            trigger_line(self.scope).disconnect(self._on_trigger)

    def _stop_sequence(self) -> None:
        self._sequence_stop.set()
        t = self._sequence_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self._sequence_thread = None
        self._triggered, self._armed = [], False
        trigger_line(self.scope).disconnect(self._on_trigger)

    @pymm_property(is_read_only=True, name="SequenceRunning")
    def sequence_running(self) -> int:
        """Simulator diagnostic: 1 while a sequence runs or waits for camera triggers (the
        adapter cannot tell, and like it the device never reports busy)."""
        t = self._sequence_thread
        return int((t is not None and t.is_alive()) or self._armed)

    @pymm_property(limits=(0.0, 60.0), name="SequenceDelaySeconds")
    def sequence_delay(self) -> float:
        """Time each pattern of a sequence is shown, s."""
        return self._sequence_delay_s

    @sequence_delay.setter
    def sequence_delay(self, v: float) -> None:
        self._sequence_delay_s = float(v)

    @pymm_property(limits=(1, 100000), name="SequenceRunCount")
    def sequence_run_count(self) -> int:
        return self._sequence_runs

    @sequence_run_count.setter
    def sequence_run_count(self, v: float) -> None:
        self._sequence_runs = int(v)

    @pymm_property(allowed_values=TRIGGER_MODES, name="TriggerInput0Mode")
    def trigger_input0_mode(self) -> str:
        return self._trigger_in

    @trigger_input0_mode.setter
    def trigger_input0_mode(self, v: str) -> None:
        if self._serial_delay_s:
            time.sleep(self._serial_delay_s)  # the adapter sends it to the firmware
        self._trigger_in = v

    @pymm_property(allowed_values=TRIGGER_MODES, name="TriggerOutput0Mode")
    def trigger_output0_mode(self) -> str:
        return self._trigger_out

    @trigger_output0_mode.setter
    def trigger_output0_mode(self, v: str) -> None:
        if self._serial_delay_s:
            time.sleep(self._serial_delay_s)  # the adapter sends it to the firmware
        self._trigger_out = v


#: The device under its real name, so a config's pyDevice line reads like the real Device line.
IlluminateLedArray = SimLedArray
