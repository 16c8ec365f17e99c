"""What the spot-check fidelity figure shows: each model's PSNR curve per output channel and its line of text.

The daemon's spot checks (docs/smart-acquisition.md) publish ``event`` messages on the frame stream: ``fidelity``
(a check, with the running figures and the alarm), ``skipped`` (a check not made, and why: a spent light budget at
this position, the stage moved; with the same figures), ``weights_changed`` (results of other weights: the running
fidelity restarts and the alarm clears) and ``stopped``. These functions turn the events received, oldest first,
into what the window draws; they draw nothing themselves.
"""

from __future__ import annotations

import collections
import html
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["fidelity_line", "fidelity_series"]


def fidelity_series(events: Iterable[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Each ``"model · channel"`` curve's PSNR (dB) per check, and each model's last event. A weights change ends
    its model's curves with a NaN, a break (drawn with ``connect="finite"``): the checks after it judge other
    weights, from a fidelity started again."""
    series: dict[str, list[float]] = collections.defaultdict(list)
    last: dict[str, dict[str, Any]] = {}
    for ev in events:
        model = ev.get("model", "?")
        last[model] = ev
        if ev.get("kind") == "weights_changed":
            for name, values in series.items():
                if name.startswith(f"{model} · ") and values and not math.isnan(values[-1]):
                    values.append(math.nan)
        elif ev.get("kind") not in ("stopped", "skipped"):
            for ch, fig in (ev.get("check", {}).get("channels") or {}).items():
                if fig.get("psnr_db") is not None:
                    series[f"{model} · {ch}"].append(float(fig["psnr_db"]))
    return dict(series), last


def _skip_note(ev: dict[str, Any]) -> str:
    """After a ``skipped`` event, the line (orange) on why the figure got no new point, else ''."""
    if ev.get("kind") != "skipped":
        return ""
    counts = ev.get("skipped") if isinstance(ev.get("skipped"), dict) else {}
    n = sum(v for v in counts.values() if isinstance(v, int))
    return (f"<br><span style='color:#c60'>last check skipped ({n} skipped so far): "
            f"{html.escape(str(ev.get('reason') or 'no reason given'))}</span>")


def fidelity_line(model: str, ev: dict[str, Any]) -> str:
    """The fidelity label's line (rich text) for ``model`` after its last event ``ev``: an alarm in red with its
    reasons, spot checks stopped in orange, other weights judged from now on (no alarm: none of theirs yet), or
    the running PSNR per output channel; after a skipped check, a second line in orange says why."""
    if ev.get("kind") == "stopped":
        return f"<span style='color:#c60'><b>{model}: spot checks stopped</b> {ev.get('reason', '')}</span>"
    if ev.get("kind") == "weights_changed":
        to = ev.get("to") if isinstance(ev.get("to"), dict) else {}
        return (f"{model}: other weights (sha256 {str(to.get('model_sha256'))[:12]}, {to.get('precision')}): "
                "fidelity restarted, no check of them yet")
    skipped = _skip_note(ev)
    if ev.get("alarm"):
        return (f"<span style='color:#d00'><b>{model}: ALARM</b> {'; '.join(ev.get('alarm_reasons', []))}</span>"
                + skipped)
    fid = ev.get("fidelity") or {}
    figures = ", ".join(f"{ch} {f.get('psnr_db') or float('nan'):.1f} dB (n={f.get('n', 0)})" for ch, f in fid.items())
    return f"{model}: {figures or 'no check compared yet'}{skipped}"
