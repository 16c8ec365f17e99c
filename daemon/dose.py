"""The light-dose budget of a session: one ledger that every consumer of excitation light draws from.

Dose is excitation ``exposure ms × power fraction``, the fraction being 1: scopecast
does not set the excitation power (the channel preset does, on the rig), so every
frame is charged as if at full power, the most its source can give (a ``power``
below 1 in a trigger action or the spot checks is refused: :func:`full_power`,
it would have charged less light than the hardware delivered). The specimen does not care
whether a trigger's confirmation capture or a spot check bleached it, so the
triggers (:mod:`.triggers`, :mod:`.trigger_actions`) and the spot checks
(:mod:`.spot_checks`) charge one :class:`DoseBudget` per acquisition engine
(:func:`shared_budget`): each sees the light the other has spent.

Limits. The budget's own limits (per position and per session, positions
closer than ``grid_um`` sharing one) bound the total of every source; they are
the triggers' ``SafetySpec`` (its defaults until a trigger configuration sets
them). A source may also cap its own share (the spot checks' ``dose_per_position``
/ ``dose_per_session``): a request is refused when either the total or the
source's share would exceed its limit. :meth:`DoseBudget.request` checks and
charges in one step under a lock, so two threads cannot both take the last
of the budget. Light is charged where it lands: a request that exposes several
fields (a trigger's tile scan) gives each field's position (:meth:`DoseBudget.request_all`),
each cell's limit holds for the light of that cell, and nothing is charged unless all fit. Light charged
before it is delivered follows the field if that changes first (:meth:`DoseBudget.move`).

The ledger lasts as long as the acquisition engine (the daemon's session):
reloading triggers or restarting spot checks does not give the light back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_PER_POSITION", "DEFAULT_PER_SESSION", "DEFAULT_GRID_UM", "Charge", "DoseBudget", "Refusal",
           "full_power", "shared_budget"]

#: The triggers' ``SafetySpec`` defaults (exposure ms at full power).
DEFAULT_PER_POSITION = 5_000.0
DEFAULT_PER_SESSION = 50_000.0
DEFAULT_GRID_UM = 100.0
#: One field's light: ``(x µm, y µm, dose)``.
Charge = tuple[float, float, float]


def full_power(power: float) -> float:
    """``power`` if it is 1; else ``ValueError``: scopecast does not set the excitation power, so a fraction
    below 1 would only lower the dose charged, not the light delivered (the channel preset sets the power)."""
    if power != 1:
        raise ValueError(f"power {power:g}: scopecast does not set the excitation power (the channel preset does), "
                         "so a fraction below 1 would charge the light budget less than the source delivers; "
                         "leave power out (1: every frame charged at full power) and set the power in the preset")
    return power


@dataclass(frozen=True)
class Refusal:
    """Why a dose was refused: ``scope`` is ``position`` or ``session``; ``source`` names whose limit it hit
    (``""``: the shared budget's)."""

    scope: str
    reason: str
    source: str = ""


class DoseBudget:
    """Per-position and per-session light dose of every source (see the module docstring). Thread-safe."""

    def __init__(self, per_position: float = DEFAULT_PER_POSITION, per_session: float = DEFAULT_PER_SESSION,
                 grid_um: float = DEFAULT_GRID_UM) -> None:
        if grid_um <= 0:
            raise ValueError(f"dose budget grid must be positive, got {grid_um} µm")
        self.per_position, self.per_session, self.grid_um = float(per_position), float(per_session), float(grid_um)
        self._charges: list[tuple[float, float, float, str]] = []  # (x µm, y µm, dose, source)
        self._lock = threading.Lock()

    def set_limits(self, per_position: float, per_session: float, grid_um: float) -> None:
        """New limits for the total (what has been charged stays charged)."""
        if grid_um <= 0:
            raise ValueError(f"dose budget grid must be positive, got {grid_um} µm")
        with self._lock:
            self.per_position, self.per_session, self.grid_um = float(per_position), float(per_session), float(grid_um)

    @staticmethod
    def _key(x: float, y: float, grid: float) -> tuple[int, int]:
        return int(round(x / grid)), int(round(y / grid))

    def _used(self, x: float, y: float, grid: float, source: str | None) -> tuple[float, float]:
        """(at this position, in the session) charged so far, by ``source`` only or by all (None)."""
        k = self._key(x, y, grid)
        pos = ses = 0.0
        for cx, cy, d, s in self._charges:
            if source is not None and s != source:
                continue
            ses += d
            if self._key(cx, cy, grid) == k:
                pos += d
        return pos, ses

    def _cells(self, charges: Sequence[Charge], grid: float) -> dict[tuple[int, int], tuple[float, float, float]]:
        """``charges`` summed per grid cell: ``{cell: (x, y of its first charge, dose)}``, in the order given."""
        out: dict[tuple[int, int], tuple[float, float, float]] = {}
        for x, y, d in charges:
            k = self._key(x, y, grid)
            cx, cy, total = out.get(k, (x, y, 0.0))
            out[k] = (cx, cy, total + d)
        return out

    def _refusal(self, charges: Sequence[Charge], source: str,
                 own: tuple[float, float, float] | None) -> Refusal | None:
        """Why ``charges`` would not fit, cell by cell and in the session, in the total and in ``own``."""
        limits: list[tuple[str | None, float, float, float, str]] = [
            (None, self.per_position, self.per_session, self.grid_um, "")]
        if own is not None:
            limits.append((source, *own, f"{source} "))
        dose = sum(d for *_, d in charges)
        for who, per_pos, per_ses, grid, name in limits:
            cells = self._cells(charges, grid)
            for x, y, d in cells.values():
                p, s = self._used(x, y, grid, who)
                if p + d > per_pos:
                    where = "this position" if len(cells) == 1 else f"{x:g}, {y:g} µm (a field of this request)"
                    return Refusal("position", f"{name}light budget at {where}: {p:g} + {d:g} > {per_pos:g}",
                                   source if who else "")
            s = self._used(0.0, 0.0, grid, who)[1]
            if s + dose > per_ses:
                return Refusal("session", f"{name}session light budget: {s:g} + {dose:g} > {per_ses:g}",
                               source if who else "")
        return None

    def refusal(self, dose: float, x: float, y: float, source: str = "",
                own: tuple[float, float, float] | None = None) -> Refusal | None:
        """Why ``dose`` at ``(x, y)`` µm would not fit (None: it fits). ``own``: the source's own caps on its share,
        ``(per_position, per_session, grid_um)``."""
        with self._lock:
            return self._refusal([(x, y, dose)], source, own)

    def request(self, dose: float, x: float, y: float, source: str,
                own: tuple[float, float, float] | None = None) -> Refusal | None:
        """Charge ``dose`` at ``(x, y)`` to ``source`` if it fits (returns None), else refuse (nothing charged)."""
        return self.request_all([(x, y, dose)], source, own)

    def request_all(self, charges: Sequence[Charge], source: str,
                    own: tuple[float, float, float] | None = None) -> Refusal | None:
        """Charge every ``(x µm, y µm, dose)`` of ``charges`` (the fields of one request: the tiles of a scan) to
        ``source`` if all fit, each in its own position's cell (returns None); else refuse, naming the first cell
        or the session limit that would be exceeded, and charge nothing. One step under the lock."""
        with self._lock:
            r = self._refusal(charges, source, own)
            if r is None:
                self._charges += [(float(x), float(y), float(d), source) for x, y, d in charges if d > 0]
            return r

    def move(self, old: Sequence[Charge], new: Sequence[Charge], source: str) -> Refusal | None:
        """Take back ``old`` (charges of ``source`` made by :meth:`request_all` for light not delivered there) and
        charge ``new`` instead if it fits (returns None); else refuse, ``old`` still taken back (the light goes
        nowhere). One step under the lock: the light of an action whose field changed after it was charged (the
        stage moved, the objective changed) is charged where it lands, each cell's limit holding there."""
        with self._lock:
            for x, y, d in old:
                entry = (float(x), float(y), float(d), source)
                if entry in self._charges:
                    self._charges.remove(entry)
            r = self._refusal(new, source, None)
            if r is None:
                self._charges += [(float(x), float(y), float(d), source) for x, y, d in new if d > 0]
            return r

    def charge(self, dose: float, x: float, y: float, source: str) -> None:
        """Charge ``dose`` unconditionally (light already delivered)."""
        if dose > 0:
            with self._lock:
                self._charges.append((float(x), float(y), float(dose), source))

    def used(self, x: float, y: float, source: str | None = None) -> tuple[float, float]:
        """``(at this position, in the session)`` charged so far, by ``source`` or (None) by every source."""
        with self._lock:
            return self._used(x, y, self.grid_um, source)

    @property
    def session(self) -> float:
        with self._lock:
            return sum(c[2] for c in self._charges)

    def by_position(self, source: str | None = None, grid_um: float | None = None) -> dict[tuple[int, int], float]:
        g = grid_um or self.grid_um
        out: dict[tuple[int, int], float] = {}
        with self._lock:
            for x, y, d, s in self._charges:
                if source is None or s == source:
                    k = self._key(x, y, g)
                    out[k] = out.get(k, 0.0) + d
        return out

    def status(self) -> dict[str, Any]:
        """The shared figures: limits, session total, totals per source and per position (``"i,j"`` grid keys)."""
        with self._lock:
            by_source: dict[str, float] = {}
            for *_, d, s in self._charges:
                by_source[s] = by_source.get(s, 0.0) + d
            per_position, per_session, grid = self.per_position, self.per_session, self.grid_um
        return {"dose_session": sum(by_source.values()), "dose_session_budget": per_session,
                "dose_per_position_budget": per_position, "position_grid_um": grid, "dose_by_source": by_source,
                "dose_by_position": {f"{k[0]},{k[1]}": v for k, v in self.by_position().items()}}


_shared: weakref.WeakKeyDictionary[Any, DoseBudget] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_budget(owner: Any) -> DoseBudget:
    """The one budget of ``owner`` (the daemon's acquisition engine), created with the default limits on first use."""
    with _shared_lock:
        b = _shared.get(owner)
        if b is None:
            b = _shared[owner] = DoseBudget()
        return b
