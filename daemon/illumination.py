"""LED-array illumination: geometry, the controller's state and the patterns computed from them.

An LED array below the sample replaces the condenser. LED ``j`` at position
``(x_j, y_j)`` (mm, in the array plane, optical axis at the origin) and
distance ``d`` from the sample sends a plane wave whose illumination NA
components are ``na_x = x / sqrt(x² + y² + d²)``, ``na_y = y / sqrt(...)``;
its radial illumination NA is ``sin θ = r / sqrt(r² + d²)``.

Pattern names are the values of the ``IlluminationPattern`` property of
Micro-Manager's ``IlluminateLedArray`` adapter (``Brightfield``, ``DPC Left``,
``Manual LED Indicies`` -- sic --, ``Clear``, ...), and what each one lights
follows the *illuminate* firmware the adapter drives (:data:`FIRMWARE_COMMANDS`
lists the command the adapter sends for each). Patterns are never hard-coded
masks: which LEDs are lit is decided from each LED's illumination NA relative to
the objective NA (``NumericalAperture``), the inner NA, and the annulus range:

================================  =====================================================
pattern                           LEDs lit (illumination NA ``ρ``)
================================  =====================================================
``Brightfield``                   ``inner ≤ ρ < NA``
``Darkfield``                     ``NA < ρ ≤ 1``
``DPC Top|Bottom|Left|Right``     bright-field LEDs in that half (``na_y > 0`` is top)
``DPC <θ> Deg.``                  bright-field LEDs with ``na_x cos θ + na_y sin θ > 0``
``Color DPC``                     bright-field quadrants in red, red+blue, green+blue, green
``Color Darkfield``               the same quadrants on ``NA < ρ ≤ NA + 0.2``
``Annulus``                       ``start ≤ ρ ≤ start + width`` (``AnnulusStartNa/WidthNa``)
``Half Annulus Top|...``          that half of the annulus
``Center LED``                    LED 0, the one on (closest to) the optical axis
``Manual LED Indicies``           the LEDs of ``ManualLedList``
``Clear``                         none
================================  =====================================================

Coordinates: ``x`` grows to the right of the image, ``y`` towards the *top*;
angles are counter-clockwise from ``+x`` (``DPC 000 Deg.`` is the right half,
``DPC 090 Deg.`` the top half). LED numbers follow the illuminate convention
that LED 0 is the centre LED: LEDs are numbered by increasing distance from the
optical axis (ties by azimuth), so a ``ManualLedList`` of ``0.1.2.3`` lights
the innermost ring on the simulator as on the hardware.

Colour: each LED has red, green and blue emitters. An LED's output in channel
``c`` is ``Brightness/255 · ColorBalance_c/255`` (the firmware's ``sb``/``sc``);
``Color DPC`` and ``Color Darkfield`` use the firmware's fixed intensity 127 in
their channels. :attr:`LedPattern.weights` is the total output per LED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

__all__ = [
    "COLOR_WAVELENGTHS_NM",
    "FIRMWARE_COMMANDS",
    "LABEL_FREE_PATTERNS",
    "PATTERN_NAMES",
    "LedArrayGeometry",
    "LedArrayState",
    "LedPattern",
    "PatternError",
    "compute_pattern",
    "parse_led_list",
]

BRIGHTFIELD, DARKFIELD, CLEAR = "Brightfield", "Darkfield", "Clear"
MANUAL = "Manual LED Indicies"  # (sic) the adapter's spelling
CENTER = "Center LED"
ANNULUS = "Annulus"
COLOR_DPC, COLOR_DARKFIELD = "Color DPC", "Color Darkfield"

#: The four half-disc DPC patterns: name -> azimuth (degrees) of the lit half's centre.
DPC_HALVES: dict[str, int] = {"DPC Top": 90, "DPC Bottom": 270, "DPC Left": 180, "DPC Right": 0}
#: ``DPC 000 Deg.`` ... ``DPC 330 Deg.``: name -> azimuth.
DPC_ANGLES: dict[str, int] = {f"DPC {a:03d} Deg.": a for a in range(0, 360, 30)}
#: Half annuli: name -> azimuth.
HALF_ANNULI: dict[str, int] = {f"Half Annulus {s}": a for s, a in
                               (("Top", 90), ("Bottom", 270), ("Left", 180), ("Right", 0))}

#: Every ``IlluminationPattern`` value, in the order the adapter declares them.
PATTERN_NAMES: tuple[str, ...] = (
    CLEAR, BRIGHTFIELD, DARKFIELD, *DPC_HALVES, COLOR_DPC, COLOR_DARKFIELD, MANUAL, ANNULUS,
    *HALF_ANNULI, CENTER, *DPC_ANGLES,
)

#: Patterns that form a transmitted-light (label-free) image; ``Clear`` is the LEDs off.
LABEL_FREE_PATTERNS: frozenset[str] = frozenset(PATTERN_NAMES) - {CLEAR}

#: illuminate firmware command -> pattern (what the adapter sends for each pattern).
FIRMWARE_COMMANDS: dict[str, str] = {
    "bf": BRIGHTFIELD, "df": DARKFIELD,
    "dpc.t": "DPC Top", "dpc.b": "DPC Bottom", "dpc.l": "DPC Left", "dpc.r": "DPC Right",
    **{f"dpc.{a}": name for name, a in DPC_ANGLES.items()},
    "cdpc": COLOR_DPC, "cdf": COLOR_DARKFIELD, "an": ANNULUS,
    "ha.t": "Half Annulus Top", "ha.b": "Half Annulus Bottom",
    "ha.l": "Half Annulus Left", "ha.r": "Half Annulus Right",
    "l.0": CENTER, "x": CLEAR,
}

#: Mean wavelength of the red, green and blue emitters (nm).
COLOR_WAVELENGTHS_NM: tuple[float, float, float] = (630.0, 530.0, 470.0)

_COLOR_PATTERN_INTENSITY = 127 / 255  # cdpc / cdf without argument (firmware default)
# Colour quadrants of cdpc/cdf, clockwise from the top-left: which of (r, g, b) is on.
_COLOR_QUADRANTS = ((1, 0, 0), (1, 0, 1), (0, 1, 1), (0, 1, 0))


class PatternError(ValueError):
    """An illumination pattern that cannot be formed (unknown name, bad LED list)."""


@dataclass(frozen=True)
class LedArrayGeometry:
    """A planar, regular LED grid centred on the optical axis.

    Attributes
    ----------
    rows, cols:
        Number of LEDs along y and x.
    pitch_mm:
        Distance between neighbouring LEDs.
    distance_mm:
        Distance from the LED plane to the sample (``ArrayDistanceFromSample``).
    """

    rows: int = 32
    cols: int = 32
    pitch_mm: float = 4.0
    distance_mm: float = 50.0

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"LED grid must be at least 1x1, got {self.rows}x{self.cols}")
        if self.pitch_mm <= 0 or self.distance_mm <= 0:
            raise ValueError("LED pitch and array distance must be positive")

    @property
    def n_leds(self) -> int:
        return self.rows * self.cols

    @cached_property
    def positions_mm(self) -> np.ndarray:
        """``(n_leds, 2)`` array of ``(x, y)`` positions, by LED number (LED 0 on the axis)."""
        iy, ix = np.mgrid[0 : self.rows, 0 : self.cols]
        x = ((ix - (self.cols - 1) / 2) * self.pitch_mm).ravel()
        y = (((self.rows - 1) / 2 - iy) * self.pitch_mm).ravel()
        order = np.lexsort((np.mod(np.arctan2(y, x), 2 * np.pi).round(9), np.hypot(x, y).round(9)))
        return np.stack([x[order], y[order]], axis=1)

    @cached_property
    def na_xy(self) -> np.ndarray:
        """``(n_leds, 2)`` illumination NA components ``(na_x, na_y)`` of each LED."""
        p = self.positions_mm
        r = np.sqrt((p**2).sum(axis=1) + self.distance_mm**2)
        return p / r[:, None]

    @cached_property
    def na(self) -> np.ndarray:
        """Radial illumination NA ``r / sqrt(r² + d²)`` of each LED."""
        return np.hypot(self.na_xy[:, 0], self.na_xy[:, 1])

    def center_index(self) -> int:
        """The LED on (closest to) the optical axis: LED 0."""
        return 0


@dataclass(frozen=True)
class LedPattern:
    """Which LEDs are lit and how brightly, per colour channel (0..1); read-only, its figures computed once."""

    name: str
    rgb: np.ndarray = field(repr=False)  # (n_leds, 3) output of the red, green, blue emitters

    def __post_init__(self) -> None:
        self.rgb.setflags(write=False)  # shared by every caller of the same pattern (compute_pattern's cache)

    @cached_property
    def weights(self) -> np.ndarray:
        """Total output of each LED (sum over its colour channels)."""
        return _read_only(self.rgb.sum(axis=1))

    @cached_property
    def lit(self) -> np.ndarray:
        """Numbers of the LEDs with non-zero output."""
        return _read_only(np.flatnonzero(self.weights))

    @cached_property
    def n_lit(self) -> int:
        return int(np.count_nonzero(self.weights))

    def mean_wavelength_nm(self) -> float:
        """Output-weighted mean wavelength of the lit emitters (green when nothing is lit)."""
        return self._mean_wavelength_nm

    @cached_property
    def _mean_wavelength_nm(self) -> float:
        power = self.rgb.sum(axis=0)
        if power.sum() <= 0:
            return COLOR_WAVELENGTHS_NM[1]
        return float(np.dot(power, COLOR_WAVELENGTHS_NM) / power.sum())

    def key(self) -> tuple:
        """A hashable identity (used by simulator caches)."""
        return self._key

    @cached_property
    def _key(self) -> tuple:
        lit = self.lit
        return (self.name, tuple(lit.tolist()), tuple(self.rgb[lit].round(6).ravel().tolist()))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def parse_led_list(text: str, geometry: LedArrayGeometry) -> list[int]:
    """Parse a ``ManualLedList``: LED numbers separated by ``.`` (the firmware's
    ``l.0.1.2``), commas or spaces; a leading ``l.`` is accepted."""
    body = text.strip()
    if body.startswith("l."):
        body = body[2:]
    leds: list[int] = []
    for tok in re.split(r"[.,;\s]+", body):
        if not tok:
            continue
        try:
            idx = int(tok)
        except ValueError:
            raise PatternError(
                f"cannot read LED {tok!r} in the LED list {text!r}: use LED numbers like '0.1.2' or '0,1,2'"
            ) from None
        if not 0 <= idx < geometry.n_leds:
            raise PatternError(f"LED {idx} is outside 0..{geometry.n_leds - 1} (this array has {geometry.n_leds} LEDs)")
        leds.append(idx)
    if not leds:
        raise PatternError("the manual LED list is empty")
    return leds


def _half(nx: np.ndarray, ny: np.ndarray, azimuth_deg: float) -> np.ndarray:
    a = np.deg2rad(azimuth_deg)
    return (nx * np.cos(a) + ny * np.sin(a)) > 1e-9


def _quadrants(nx: np.ndarray, ny: np.ndarray) -> list[np.ndarray]:
    """Top-left, top-right, bottom-right, bottom-left (the firmware's quadrant order)."""
    return [(nx <= 0) & (ny >= 0), (nx >= 0) & (ny >= 0), (nx >= 0) & (ny <= 0), (nx <= 0) & (ny <= 0)]


@lru_cache(maxsize=256)
def compute_pattern(
    name: str,
    geometry: LedArrayGeometry,
    numerical_aperture: float,
    *,
    inner_na: float = 0.0,
    annulus_start_na: float | None = None,
    annulus_width_na: float = 0.2,
    brightness: float = 1.0,
    color: tuple[float, float, float] = (0.0, 1.0, 0.0),
    manual_leds: str = "",
) -> LedPattern:
    """The LEDs pattern ``name`` lights for an objective of ``numerical_aperture``.

    ``brightness`` (0..1) and ``color`` (per-channel balance, 0..1) scale every
    LED but those of the colour patterns; ``annulus_start_na`` defaults to the
    objective NA. The same arguments give the same (read-only) pattern object: it is computed once,
    as a live cycle sets its few patterns over and over. Raises :class:`PatternError` naming the valid patterns when
    ``name`` is unknown, and when a bright-field, dark-field, DPC or annulus
    pattern would light no LED (so a geometry or NA mistake is not a dark frame).
    """
    if name not in PATTERN_NAMES:
        raise PatternError(
            f"unknown illumination pattern {name!r}; valid patterns: " + ", ".join(PATTERN_NAMES)
        )
    if not 0 < numerical_aperture <= 1.6:
        raise PatternError(f"objective NA must be in (0, 1.6], got {numerical_aperture}")
    if not 0.0 <= brightness <= 1.0:
        raise PatternError(f"brightness must be in [0, 1], got {brightness}")
    if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
        raise PatternError(f"colour balance must be three values in [0, 1], got {color}")
    na = geometry.na
    nx, ny = geometry.na_xy[:, 0], geometry.na_xy[:, 1]
    n = geometry.n_leds
    bf = (na >= inner_na) & (na < numerical_aperture)
    start = numerical_aperture if annulus_start_na is None else annulus_start_na
    ring = (na >= start) & (na <= start + annulus_width_na)
    rgb = np.zeros((n, 3), np.float32)
    mask = np.zeros(n, bool)
    if name in (COLOR_DPC, COLOR_DARKFIELD):
        region = bf if name == COLOR_DPC else (na > numerical_aperture) & (na <= numerical_aperture + 0.2)
        for quadrant, channels in zip(_quadrants(nx, ny), _COLOR_QUADRANTS, strict=True):
            rgb[region & quadrant] = np.maximum(rgb[region & quadrant], np.asarray(channels, np.float32))
        rgb *= np.float32(_COLOR_PATTERN_INTENSITY)
        mask = rgb.any(axis=1)
    else:
        if name == BRIGHTFIELD:
            mask = bf
        elif name == DARKFIELD:
            mask = (na > numerical_aperture) & (na <= 1.0)
        elif name in DPC_HALVES or name in DPC_ANGLES:
            mask = bf & _half(nx, ny, {**DPC_HALVES, **DPC_ANGLES}[name])
        elif name == ANNULUS:
            mask = ring
        elif name in HALF_ANNULI:
            mask = ring & _half(nx, ny, HALF_ANNULI[name])
        elif name == CENTER:
            mask[geometry.center_index()] = True
        elif name == MANUAL:
            mask[parse_led_list(manual_leds, geometry)] = True
        rgb[mask] = np.asarray(color, np.float32) * np.float32(brightness)
    if name not in (CLEAR, CENTER, MANUAL) and not mask.any():
        raise PatternError(
            f"pattern {name!r} lights no LED for objective NA {numerical_aperture} "
            f"(LED NA range {na.min():.3f}..{na.max():.3f}); check the array "
            "distance, pitch and NA settings"
        )
    return LedPattern(name=name, rgb=rgb)


@dataclass
class LedArrayState:
    """What an illuminate LED-array controller holds: the pattern, its NA settings,
    brightness, colour balance and the global shutter (``gs``).

    The LEDs emit only while :attr:`global_shutter` is open *and* the light path
    is open (:attr:`is_open`: open unless the simulator's path shutter closes it).
    """

    geometry: LedArrayGeometry = field(default_factory=LedArrayGeometry)
    pattern_name: str = CLEAR
    objective_na: float = 0.25
    inner_na: float = 0.0
    annulus_start_na: float = 0.25
    annulus_width_na: float = 0.2
    brightness: int = 255
    color_balance: tuple[int, int, int] = (0, 255, 0)
    manual_leds: str = ""
    global_shutter: bool = True
    is_open: bool = True

    @property
    def emitting(self) -> bool:
        return self.is_open and self.global_shutter

    def pattern(self) -> LedPattern:
        return compute_pattern(
            self.pattern_name, self.geometry, self.objective_na,
            inner_na=self.inner_na, annulus_start_na=self.annulus_start_na,
            annulus_width_na=self.annulus_width_na, brightness=self.brightness / 255.0,
            color=tuple(c / 255.0 for c in self.color_balance),  # type: ignore[arg-type]
            manual_leds=self.manual_leds,
        )

    @property
    def wavelength_nm(self) -> float:
        """Mean wavelength of the current pattern's light (the simulator images at it)."""
        try:
            return self.pattern().mean_wavelength_nm()
        except PatternError:
            return COLOR_WAVELENGTHS_NM[1]
