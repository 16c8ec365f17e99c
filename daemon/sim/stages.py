"""Simulated XY stage and focus drive, with travel limits (moves outside them are refused)."""

from __future__ import annotations

from pymmcore_plus.core import FocusDirection
from pymmcore_plus.experimental.unicore import StageDevice, XYStageDevice, pymm_property

from .hub import _Peripheral

__all__ = ["SimXYStage", "SimZStage"]


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

    def __init__(self) -> None:
        super().__init__()
        self._direction = FocusDirection.Unknown

    def get_focus_direction(self) -> FocusDirection:
        """What the configuration says (``FocusDirection,<label>,<0|1|-1>``, which Micro-Manager writes for
        every focus drive and ``saveSystemConfiguration`` writes for this one): the simulated drive has no
        preferred sense, so it keeps what it is told, as a real adapter without the information does."""
        return self._direction

    def set_focus_direction(self, sign: int) -> None:
        try:
            self._direction = FocusDirection(int(sign))
        except ValueError:
            raise ValueError(
                f"focus direction {sign!r} not understood: use 1 (towards the sample), -1 (away) or 0 (unknown)"
            ) from None

    @pymm_property(limits=_LIMITS, name="Position")
    def position(self) -> float:
        """The focus position (µm); its limits are the travel, which clients (the daemon's scan checks) read
        with ``getPropertyLowerLimit``/``getPropertyUpperLimit`` as they do a real focus drive's."""
        return self.scope.z_um

    @position.setter
    def position(self, v: float) -> None:
        self.set_position_um(float(v))

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
