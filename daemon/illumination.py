"""LED-array illumination: geometry and patterns computed from it.

An LED array below the sample replaces the condenser. LED ``j`` at position
``(x_j, y_j)`` (mm, in the array plane, optical axis at the origin) and
distance ``d`` from the sample sends a plane wave whose illumination NA
components are ``na_x = x / sqrt(x² + y² + d²)``, ``na_y = y / sqrt(...)``;
its radial illumination NA is ``sin θ = r / sqrt(r² + d²)``.

Patterns follow the open *illuminate* firmware / Micro-Manager's
IlluminateLEDArray adapter and are never hard-coded masks: which LEDs are lit
is decided from each LED's illumination NA relative to the objective NA.

Coordinates: ``x`` grows to the right of the image, ``y`` grows towards the
*top* of the image. ``dpc.t`` lights the half of the bright-field disc with
``na_y > 0``; ``dpc.l`` the half with ``na_x < 0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

__all__ = [
    "PATTERN_NAMES",
    "LedArrayGeometry",
    "LedPattern",
    "PatternError",
    "compute_pattern",
]

#: Every pattern name :func:`compute_pattern` accepts (firmware command names).
PATTERN_NAMES: tuple[str, ...] = (
    "bf",  # bright-field: every LED inside the objective NA
    "df",  # dark-field: LEDs between the objective NA and the outer NA
    "dpc.t",
    "dpc.b",
    "dpc.l",
    "dpc.r",
    "an",  # annulus between inner and outer NA
    "ha.t",
    "ha.b",
    "ha.l",
    "ha.r",
    "cen",  # the centre LED
    "manual",  # an explicit list of LEDs
    "x",  # all off
)

_HALF_SELECTORS = {
    "t": lambda nx, ny: ny > 0,
    "b": lambda nx, ny: ny < 0,
    "l": lambda nx, ny: nx < 0,
    "r": lambda nx, ny: nx > 0,
}


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
        Distance from the LED plane to the sample.
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
        """``(n_leds, 2)`` array of ``(x, y)`` positions, row-major from the top-left."""
        iy, ix = np.mgrid[0 : self.rows, 0 : self.cols]
        x = (ix - (self.cols - 1) / 2) * self.pitch_mm
        y = ((self.rows - 1) / 2 - iy) * self.pitch_mm
        return np.stack([x.ravel(), y.ravel()], axis=1)

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

    def index(self, row: int, col: int) -> int:
        """Linear LED index of grid position ``(row, col)``."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise PatternError(
                f"LED ({row}, {col}) is outside the {self.rows}x{self.cols} array"
            )
        return row * self.cols + col

    def center_index(self) -> int:
        """The LED closest to the optical axis."""
        return int(np.argmin(self.na))


@dataclass(frozen=True)
class LedPattern:
    """Which LEDs are lit and how brightly (0..1 per LED)."""

    name: str
    weights: np.ndarray = field(repr=False)

    @property
    def lit(self) -> np.ndarray:
        """Indices of the LEDs with non-zero weight."""
        return np.flatnonzero(self.weights)

    @property
    def n_lit(self) -> int:
        return int(np.count_nonzero(self.weights))

    def key(self) -> tuple:
        """A hashable identity (used by simulator caches)."""
        lit = self.lit
        return (self.name, tuple(lit.tolist()), tuple(self.weights[lit].round(6).tolist()))


def parse_led_list(text: str, geometry: LedArrayGeometry) -> list[int]:
    """Parse a manual LED list.

    Accepts linear indices (``"12,13,44"``) or grid positions in the firmware's
    ``l.<row>.<col>`` style, separated by commas or spaces (``"l.15.15, l.15.16"``,
    or ``"15.15 15.16"``).
    """
    leds: list[int] = []
    for tok in re.split(r"[,\s;]+", text.strip()):
        if not tok:
            continue
        t = tok[2:] if tok.startswith("l.") else tok
        parts = t.split(".")
        try:
            if len(parts) == 1:
                idx = int(parts[0])
                if not 0 <= idx < geometry.n_leds:
                    raise PatternError(
                        f"LED index {idx} is outside 0..{geometry.n_leds - 1}"
                    )
            elif len(parts) == 2:
                idx = geometry.index(int(parts[0]), int(parts[1]))
            else:
                raise ValueError
        except ValueError as e:
            if isinstance(e, PatternError):
                raise
            raise PatternError(
                f"cannot read LED {tok!r}: use an index like '12' or 'l.<row>.<col>'"
            ) from None
        leds.append(idx)
    if not leds:
        raise PatternError("the manual LED list is empty")
    return leds


def compute_pattern(
    name: str,
    geometry: LedArrayGeometry,
    objective_na: float,
    *,
    inner_na: float | None = None,
    outer_na: float = 1.0,
    brightness: float = 1.0,
    manual_leds: str = "",
) -> LedPattern:
    """Compute the LED weights of pattern ``name`` for an objective of ``objective_na``.

    ``bf``/``dpc.*`` use LEDs with NA < ``objective_na``; ``df`` those with
    ``objective_na`` < NA ≤ ``outer_na``; ``an``/``ha.*`` those with
    ``inner_na`` ≤ NA ≤ ``outer_na`` (``inner_na`` defaults to the objective NA,
    so the default annulus is the dark-field ring). Raises :class:`PatternError`
    naming the valid patterns when ``name`` is unknown.
    """
    if name not in PATTERN_NAMES:
        raise PatternError(
            f"unknown illumination pattern {name!r}; valid patterns: "
            + ", ".join(PATTERN_NAMES)
        )
    if not 0 < objective_na <= 1.6:
        raise PatternError(f"objective NA must be in (0, 1.6], got {objective_na}")
    if not 0.0 <= brightness <= 1.0:
        raise PatternError(f"brightness must be in [0, 1], got {brightness}")
    na = geometry.na
    nx, ny = geometry.na_xy[:, 0], geometry.na_xy[:, 1]
    lo = objective_na if inner_na is None else inner_na
    kind, _, side = name.partition(".")
    if kind == "bf":
        mask = na < objective_na
    elif kind == "df":
        mask = (na > objective_na) & (na <= outer_na)
    elif kind == "dpc":
        mask = (na < objective_na) & _HALF_SELECTORS[side](nx, ny)
    elif kind == "an":
        mask = (na >= lo) & (na <= outer_na)
    elif kind == "ha":
        mask = (na >= lo) & (na <= outer_na) & _HALF_SELECTORS[side](nx, ny)
    elif kind == "cen":
        mask = np.zeros(geometry.n_leds, bool)
        mask[geometry.center_index()] = True
    elif kind == "manual":
        mask = np.zeros(geometry.n_leds, bool)
        mask[parse_led_list(manual_leds, geometry)] = True
    else:  # "x"
        mask = np.zeros(geometry.n_leds, bool)
    if kind in ("bf", "dpc", "df", "an", "ha") and not mask.any():
        raise PatternError(
            f"pattern {name!r} lights no LED for objective NA {objective_na} "
            f"(LED NA range {na.min():.3f}..{na.max():.3f}); check the array "
            "distance, pitch and NA settings"
        )
    return LedPattern(name=name, weights=mask.astype(np.float32) * np.float32(brightness))
