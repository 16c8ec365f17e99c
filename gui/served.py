"""Whether an engine's pane shows a result of the model the engine serves now: pure, no Qt.

After ``load_model`` (another package, or other weights under the same name) the last result shown stays on the
pane until the new model's first one arrives, which may be never: the running cycle may lack the new model's
inputs, or live may not run. The viewer then says whose result it shows and dims it, as it does for an engine
gone silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["same_model", "served_elsewhere"]


def served_elsewhere(shown: Mapping[str, Any] | None, status: Mapping[str, Any] | None) -> str | None:
    """Why the result whose header is ``shown`` is not of the model the engine serves, by its ``status`` (its
    ``status`` reply or ``stats`` message, docs/protocol.md): ``the engine now serves sr`` or ``the engine now
    serves other weights of vs (sha256 …, int8)``. None when it is of that model and weights, when either side
    does not say, or when the status is not newer than the result (a result of a model just loaded may arrive
    before a status that names it; both times are the engine's clock)."""
    if not shown or not status:
        return None
    model = status.get("model")
    t_status, t_result = status.get("t_ns"), shown.get("t_published_ns")
    if not isinstance(model, Mapping) or not isinstance(t_status, int) or not isinstance(t_result, int):
        return None
    if t_status <= t_result:
        return None
    name, was = model.get("name"), shown.get("model")
    if name and was and name != was:
        return f"the engine now serves {name}"
    sha, was_sha = model.get("sha256"), shown.get("model_sha256")
    precision, was_precision = model.get("precision"), shown.get("precision")
    if (sha and was_sha and sha != was_sha) or (precision and was_precision and precision != was_precision):
        return f"the engine now serves other weights of {name} (sha256 {str(sha)[:12]}, {precision})"
    return None


def same_model(a: Any, b: Any) -> bool:
    """Whether two engine ``status.model`` objects name the same model and weights (name, sha256, precision): a
    latency figure of one is not the other's. Either not an object: treated as the same (nothing to tell apart)."""
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return True
    return all(a.get(k) == b.get(k) for k in ("name", "sha256", "precision"))
