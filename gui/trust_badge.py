"""The text of the viewer's trust badge, from a result header's ``trust`` (docs/protocol.md): pure, no Qt.

The badge's first line is the verdict (``trusted · score 1.00`` or ``NOT TRUSTED``, with the per-pixel
map's ``uncertainty p99`` when the engine computes it), the second says whether the engine's uncertainty
check has judged the scene shown (:func:`check_line`), a third the same of the consistency check where it
applies (super-resolution), then an untrusted result's reasons.

The viewer is a socket client of engines of possibly other versions: every field may be absent or of
another type, and a field it cannot read leaves its part out rather than raising.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["badge_text", "check_line"]

#: How many of an untrusted result's reasons the badge lists.
MAX_REASONS = 4


def _num(v: Any) -> float | None:
    """A finite number from the wire, else None (``bool`` is not a number here)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _when(age: Any) -> str:
    """How long ago the checked bundle was (``this bundle``, ``1 bundle ago``, ``12 bundles ago``), or ''."""
    if isinstance(age, bool) or not isinstance(age, int) or age < 0:
        return ""
    return "this bundle" if age == 0 else f"{age} bundle{'' if age == 1 else 's'} ago"


def check_line(check: Any, label: str = "uncertainty check", show_off: bool = True) -> str | None:
    """One line on the engine's uncertainty check (``trust.uncertainty.check``; or another check of the same
    shape named by ``label``: ``trust.consistency``), or None when there is none or it cannot be read (an
    older engine, a malformed header), or it is off and ``show_off`` is false (a check that does not apply).

    - ``off``: ``uncertainty check: off``;
    - ``pending`` (a new scene, not yet checked): ``uncertainty check: pending (new scene, guards only)``;
    - ``checked`` / ``carried`` within the threshold: ``uncertainty check: ok 0.041 ≤ 0.131 (cells), this
      bundle`` / ``…, 12 bundles ago``;
    - above it (the reason is among the badge's reasons already): ``uncertainty check: failed 0.31 > 0.131
      (ceiling)``;
    - a package without a validated threshold: ``uncertainty check: informational (no validated threshold)``,
      with the measured statistic and its age when given;
    - a state this viewer does not know (a newer engine): the state as sent.
    """
    if not isinstance(check, dict) or not isinstance(check.get("state"), str) or not check["state"].strip():
        return None
    state = check["state"].strip()
    base = state.split("(", 1)[0].strip()
    if base == "off" or base.startswith("off:"):
        return f"{label}: off" if show_off else None
    if base == "pending":
        return f"{label}: pending (new scene, guards only)"
    if base not in ("checked", "carried"):
        return f"{label}: " + " ".join(state.split())[:80]
    value, threshold, ok = _num(check.get("value")), _num(check.get("threshold")), check.get("ok")
    when = _when(check.get("age"))
    if "informational" in state or threshold is None:
        stat = check.get("statistic")
        figure = "" if value is None else f"{stat} {value:.3g}" if isinstance(stat, str) and stat else f"{value:.3g}"
        measured = ", ".join(p for p in (figure, when) if p)
        return f"{label}: informational (no validated threshold)" + (f", {measured}" if measured else "")
    if value is None or not isinstance(ok, bool):
        return None  # a judged state without its figures: nothing honest to say
    against = check.get("morphology")
    against = f" ({against})" if isinstance(against, str) and against else ""
    if ok:
        return f"{label}: ok {value:.3g} ≤ {threshold:.3g}{against}" + (f", {when}" if when else "")
    return f"{label}: failed {value:.3g} > {threshold:.3g}{against}"


def badge_text(trust: Any) -> tuple[str, bool]:
    """The badge's text and whether the result is trusted (``trust.ok is True``); a missing or malformed
    ``trust`` is an untrusted result saying so."""
    if not isinstance(trust, dict):
        trust = {"ok": False, "score": 0.0, "reasons": ["no trust verdict in the result"]}
    u = trust.get("uncertainty")
    u = u if isinstance(u, dict) else {}
    p99 = _num(u.get("p99"))
    spread = f" · uncertainty p99 {p99:.3g}" if p99 is not None else ""
    lines = [check_line(u.get("check")), check_line(trust.get("consistency"), "consistency check", show_off=False)]
    check = "".join(f"\n{x}" for x in lines if x)
    if trust.get("ok") is True:
        score = _num(trust.get("score"))
        return f"trusted · score {score or 0.0:.2f}{spread}{check}", True
    reasons = trust.get("reasons")
    reasons = [str(r) for r in reasons] if isinstance(reasons, list) and reasons else ["untrusted"]
    return f"NOT TRUSTED{spread}{check}\n" + "\n".join(reasons[:MAX_REASONS]), False
