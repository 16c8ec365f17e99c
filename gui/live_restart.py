"""What the viewer restarts when "record" is toggled during live: the running job as the daemon reports it.

Recording cannot be switched on a running live job, so the viewer stops it and starts it again with ``record``
flipped. Everything else comes from the job in the daemon's ``status`` (docs/protocol.md, "Jobs"): its plan
(cycle, exposures, interval, pacing, hardware sequencing), the cycles a bounded live has left, and the recording
cap another client gave (``record_max_frames`` / ``record_max_bytes``), which the plan does not hold. Pure: no Qt.
"""

from __future__ import annotations

from typing import Any

__all__ = ["recording_cap", "restarted_live"]


def recording_cap(job: dict[str, Any] | None) -> dict[str, int] | None:
    """The ``start_live`` cap arguments that give a new recording the cap of ``job``'s (a status ``job``):
    ``record_max_frames`` when its frames are capped, ``record_max_bytes`` when its cap, not the free disk, limits
    its bytes; ``{}`` for a recording without a cap; None when ``job`` records nothing (or not said yet)."""
    rec = (job or {}).get("recording")
    if not isinstance(rec, dict):
        return None
    cap: dict[str, int] = {}
    if isinstance(rec.get("max_frames"), int) and rec["max_frames"] > 0:
        cap["record_max_frames"] = rec["max_frames"]
    if rec.get("bytes_limited_by") == "cap" and isinstance(rec.get("max_bytes"), int) and rec["max_bytes"] > 0:
        cap["record_max_bytes"] = rec["max_bytes"]
    return cap


def restarted_live(job: dict[str, Any], record: bool, cap: dict[str, int] | None) -> dict[str, Any]:
    """``start_live`` arguments that continue the running live ``job`` (a status ``job`` with its ``plan``) with
    recording ``record``: the same plan, a bounded live the cycles it has left (at least one), and a recording
    the ``cap`` (from :func:`recording_cap` of the last recording seen) it had."""
    plan = {**job["plan"], "record": record}
    if plan.get("max_cycles"):
        done = int(job.get("frames") or 0) // max(len(plan.get("channels") or []), 1)
        plan["max_cycles"] = max(plan["max_cycles"] - done, 1)
    if record and cap:
        plan.update(cap)
    return plan
