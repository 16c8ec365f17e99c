"""What the viewer restarts when "record" is toggled during live: the running job as the daemon reports it.

Recording cannot be switched on a running live job, so the viewer stops it and starts it again with ``record``
flipped. Everything else comes from the job in the daemon's ``status`` (docs/protocol.md, "Jobs"): its plan
(cycle, exposures, interval, pacing, hardware sequencing), the cycles a bounded live has left, and the recording
cap another client gave (``record_max_frames`` / ``record_max_bytes``), which the plan does not hold. The job is
read from a ``status`` asked for at the click (:func:`restart_recording`), not from the viewer's last poll: that is up
to a second old, and restarting its job undid what changed meanwhile (a cycle another client or a trigger's
``switch_live`` started, a live another client stopped, a trigger's scan that paused live). Pure: no Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["recording_cap", "restart_recording", "restarted_live"]


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


def restart_recording(request: Callable[..., Any], record: bool, cap: dict[str, int] | None,
                      stop_timeout_s: Callable[[dict[str, Any]], float]) -> dict[str, Any] | None:
    """Restart the live job the daemon runs now with recording ``record`` (``request(cmd, **args)``: the viewer's
    control requests, in order, none of its others between them). The job comes from a fresh ``status``; nothing is
    stopped or started unless live runs and records otherwise than ``record`` (a live stopped, or paused by a
    trigger's scan, stays so); ``stop`` names that job (``stop_timeout_s(status)``: how long to wait for it).
    Returns ``start_live``'s reply, or None when nothing was restarted."""
    status = request("status")
    job = status.get("job") or {}
    if status.get("state") != "live" or not job.get("plan") or bool(job.get("path")) == record:
        return None
    plan = restarted_live(job, record, cap)
    request("stop", job=job["id"], timeout_s=stop_timeout_s(status))
    return request("start_live", **plan)
