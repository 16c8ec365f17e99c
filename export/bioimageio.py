"""bioimage.io model description (spec 0.5, ``rdf.yaml``) for an exported package."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scopecast.models.manifest import ModelManifest, sha256_file

__all__ = ["preprocessing", "rdf"]

_DPC = {"text": "Tian & Waller (2015), Quantitative differential phase contrast imaging in an LED array "
                "microscope, Optics Express 23:11394", "doi": "10.1364/OE.23.011394"}
_CITATIONS = {
    "virtual-staining": [{"text": "Ounkomol et al. (2018), Label-free prediction of three-dimensional fluorescence "
                                  "images from transmitted-light microscopy, Nature Methods 15:917",
                          "doi": "10.1038/s41592-018-0111-2"}],
    "super-resolution": [{"text": "Wang et al. (2019), Deep learning enables cross-modality super-resolution in "
                                  "fluorescence microscopy, Nature Methods 16:103",
                          "doi": "10.1038/s41592-018-0239-0"}],
}


def _space_axes(size_min: int, step: int, scale: float | None, ref: str | None = None) -> list[dict[str, Any]]:
    axes = []
    for ax in ("y", "x"):
        a: dict[str, Any] = {"type": "space", "id": ax, "unit": "micrometer"}
        a["size"] = {"tensor_id": ref, "axis_id": ax} if ref else {"min": size_min, "step": step}
        if scale:
            a["scale"] = scale
        axes.append(a)
    return axes


def preprocessing(m: ModelManifest) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing that computes exactly what :func:`~scopecast.models.manifest.normalize` does.

    ``calibrated`` -> ``scale_linear`` along the channel axis with
    ``gain = 1/scale`` and ``offset = -offset/scale`` (the constants the
    engine multiplies and adds); ``percentile`` -> ``scale_range`` over
    ``(y, x)`` per sample and channel, with the exact percentiles and ``eps``;
    ``mean_std`` -> ``fixed_zero_mean_unit_variance`` along the channel axis.
    """
    n = m.normalization
    if n.kind == "calibrated":
        gain, bias = n.linear()
        return [{"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain, "offset": bias}}]
    if n.kind == "mean_std":
        return [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"axis": "channel", "mean": n.mean, "std": n.std}}]
    return [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": n.low, "max_percentile": n.high,
                                             "eps": n.eps}}]


def rdf(package: Path, m: ModelManifest, documentation: str = "card.md") -> dict[str, Any]:
    """The ``rdf.yaml`` content describing the same model as ``manifest.json``."""
    px = m.pixel_size_um
    pre = preprocessing(m)
    post = []
    if m.output_scaling is not None:
        post = [{"id": "scale_linear", "kwargs": {"axis": "channel", "gain": m.output_scaling.scale,
                                                  "offset": m.output_scaling.offset}}]
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": m.name,
        "description": m.description or f"{m.task} network exported by scopecast",
        "authors": [{"name": "scopecast"}],
        "cite": _CITATIONS.get(m.task, []) + [_DPC],
        "license": "BSD-3-Clause",
        "tags": ["scopecast", m.task, "led-array", "simulated"],
        "documentation": documentation,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "inputs": [{
            "id": m.input_name,
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": m.inputs},
                     *_space_axes(m.multiple, m.multiple, px)],
            "test_tensor": {"source": "test_input.npy", "sha256": sha256_file(package / "test_input.npy")},
            "preprocessing": pre,
        }],
        "outputs": [{
            "id": m.output_name,
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": m.outputs},
                     *_space_axes(0, 0, px / m.scale_factor if px else None, ref=m.input_name)],
            "test_tensor": {"source": "test_output.npy", "sha256": sha256_file(package / "test_output.npy")},
            "postprocessing": post,
        }],
        "weights": {"onnx": {"source": m.model_file, "sha256": m.sha256, "opset_version": 18}},
        "config": {"scopecast": {"manifest": "manifest.json", "tile": m.tile, "halo": m.halo,
                                 "output_range": m.output_range.model_dump() if m.output_range else None}},
    }
