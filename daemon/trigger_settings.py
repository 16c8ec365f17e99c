"""What each loaded trigger is set to do, for the ``triggers`` and ``load_triggers`` replies (docs/protocol.md).

The decision log names a trigger's thresholds only on the lines it writes (fires, re-arms, suppressions), and a
trigger below its threshold writes none: without this a client (the viewer's triggers panel, ``scopecast ctl
triggers``) could not say what a trigger waits for, nor how close the field is, until it had decided once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .triggers import TriggerConfig, TriggerSpec

__all__ = ["trigger_settings", "with_settings"]


def trigger_settings(spec: TriggerSpec) -> dict[str, Any]:
    """One trigger's configuration as a reply carries it: ``model``, ``measurement`` (its ``kind``, ``channel``,
    pixel ``threshold``, ``roi``, ``min_pixels``; null for a Python trigger) or ``python`` (``module:Class``),
    ``above``, ``rearm_below`` (the level it re-arms below: ``above`` when the configuration gives none),
    ``cooldown_s``, ``actions`` (their kinds, in order) and ``act_on_untrusted``."""
    cond = spec.condition
    return {
        "model": spec.model,
        "measurement": None if spec.measurement is None else spec.measurement.model_dump(mode="json"),
        "python": spec.python,
        "above": cond.above,
        "rearm_below": cond.above if cond.rearm_below is None else cond.rearm_below,
        "cooldown_s": spec.cooldown_s,
        "actions": [a.kind for a in spec.actions],
        "act_on_untrusted": spec.act_on_untrusted,
    }


def with_settings(status: dict[str, Any], config: TriggerConfig, states: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` (a trigger runner's) with each trigger's state joined by its :func:`trigger_settings` and
    ``last_measurement`` (the value it measured on the newest result it measured, null before the first; from its
    decider state in ``states``), whether or not that result made a decision."""
    per = dict(status.get("triggers") or {})
    for spec in config.triggers:
        last = getattr(states.get(spec.name), "last_measurement", None)
        per[spec.name] = {**per.get(spec.name, {}), **trigger_settings(spec), "last_measurement": last}
    return {**status, "triggers": per}
