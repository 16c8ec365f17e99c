"""The bioimage.io side of a package: ``rdf.yaml`` (spec 0.5, built with ``bioimageio.spec``'s models),
the test and sample tensors, and the ``bioimageio test`` itself (``bioimageio.core``).

A bioimage.io consumer sees the model exactly as the engine does:

- ``test_input.npy``: raw camera counts (uint16 ``(1, C, H, W)``), the frames as the engine receives them;
- preprocessing: ``ensure_dtype`` float32, the package's normalization
  (``calibrated`` -> ``scale_linear`` with :meth:`Normalization.linear`'s constants), ``ensure_dtype`` float32;
- the ONNX model (``model.onnx``), and the network's PyTorch weights it was exported from (``weights.pt``,
  ``pytorch_state_dict`` with the architecture class from ``architectures.py``, a copy of
  :mod:`scopecast.models.architectures` in the package, so a consumer without scopecast installed loads it;
  ``model.onnx`` names it as its parent) in packages that carry them;
- postprocessing: ``scale_linear`` with the manifest's ``output_scaling`` (physical units);
- ``test_output.npy``: what the engine computes from ``test_input.npy`` (:func:`engine_output`):
  :func:`~scopecast.models.manifest.normalize`, ONNX Runtime (CPU), output scaling, in float32.
  The engine's output guard then clips to the package's physical range; that is a trust step
  (it also flags), not part of the model, and is not applied here.

bioimage.io computes the two ``scale_linear`` steps in float64 and rounds once; the engine rounds
after each float32 operation. The outputs therefore differ by float32 rounding (measured ≤ 2e-3
counts on the shipped packages); :data:`TOLERANCE` declares what the test allows
(``config.bioimageio.reproducibility_tolerance``) and the test suite checks the measured difference
against it. ``bioimageio.spec`` / ``bioimageio.core`` are imported lazily (``dev`` extra).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.manifest import ModelManifest, normalize, sha256_file

__all__ = [
    "ARCHITECTURE_SOURCE", "TOLERANCE", "BioimageioTestError", "BioimageioTestReport", "describe", "engine_output",
    "postprocessing", "preprocessing", "raw_counts", "run_bioimageio_test", "write_architecture_source", "write_rdf",
]

log = logging.getLogger("scopecast.export")

#: What ``bioimageio test`` may tolerate between its output and ``test_output.npy`` (physical units):
#: half a camera count absolute (below the read noise of the cameras the packages were trained for)
#: plus 1e-5 relative, no mismatched element. The float32-vs-float64 rounding measured on the
#: shipped packages is ~100x smaller; ONNX Runtime builds on other CPUs may add their own rounding.
TOLERANCE = {"absolute_tolerance": 0.5, "relative_tolerance": 1e-5, "mismatched_elements_per_million": 0}

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
TEST_INPUT, TEST_OUTPUT = "test_input.npy", "test_output.npy"
#: The architectures' source in a package with PyTorch weights: bioimage.io imports the class from this file
#: (``import_from`` a module would need scopecast installed wherever the package is tested or run)
ARCHITECTURE_SOURCE = "architectures.py"
SAMPLE_INPUT, SAMPLE_OUTPUT, COVER = "sample_input.tif", "sample_output.tif", "cover.png"


class BioimageioTestError(RuntimeError):
    """``bioimageio test`` failed on a package (the message lists the failing checks)."""


def preprocessing(m: ModelManifest) -> list[dict[str, Any]]:
    """The bioimage.io step that computes what :func:`~scopecast.models.manifest.normalize` does.

    ``calibrated`` -> ``scale_linear`` along the channel axis with
    ``gain = 1/scale`` and ``offset = -offset/scale`` (the constants the
    engine multiplies and adds); ``percentile`` -> ``scale_range`` over
    ``(y, x)`` per sample and channel, with the exact percentiles and ``eps``;
    ``mean_std`` -> ``fixed_zero_mean_unit_variance`` along the channel axis.
    (:func:`describe` wraps it in ``ensure_dtype`` float32 steps.)
    """
    n = m.normalization
    if n.kind == "calibrated":
        gain, bias = n.linear()
        return [{"id": "scale_linear", "kwargs": {"axis": "channel", "gain": gain, "offset": bias}}]
    if n.kind == "mean_std":
        return [{"id": "fixed_zero_mean_unit_variance", "kwargs": {"axis": "channel", "mean": n.mean, "std": n.std}}]
    return [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": n.low, "max_percentile": n.high,
                                             "eps": n.eps}}]


def postprocessing(m: ModelManifest) -> list[dict[str, Any]]:
    """The manifest's output scaling (physical units) as bioimage.io ``scale_linear``; ``[]`` when absent."""
    s = m.output_scaling
    if s is None:
        return []
    return [{"id": "scale_linear", "kwargs": {"axis": "channel", "gain": list(s.scale), "offset": list(s.offset)}}]


def raw_counts(x: np.ndarray) -> np.ndarray:
    """Camera frames as the engine receives them: uint16 when every value is a count in 0..65535, else float32."""
    x = np.asarray(x)
    if x.dtype == np.uint16:
        return x
    if np.issubdtype(x.dtype, np.integer) or (np.all(np.isfinite(x)) and np.array_equal(x, np.round(x))):
        if x.size and x.min() >= 0 and x.max() <= 65535:
            return x.astype(np.uint16)
    return x.astype(np.float32)


def engine_output(model_file: Path, m: ModelManifest, raw: np.ndarray) -> np.ndarray:
    """What the engine computes for raw ``(N, C, H, W)`` counts, before its output guard (see module docstring).

    The input must fit one tile (no tiling here): ``H, W`` multiples of ``m.multiple``.
    """
    import onnxruntime as ort

    if raw.ndim != 4 or raw.shape[1] != len(m.inputs) or raw.shape[2] % m.multiple or raw.shape[3] % m.multiple:
        raise ValueError(f"raw test input must be (N, {len(m.inputs)}, H, W) with H, W multiples of {m.multiple}, "
                         f"got {raw.shape}")
    x = np.stack([normalize(list(sample), m.normalization) for sample in raw])
    sess = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    y = sess.run(None, {m.input_name: x})[0].astype(np.float32)
    if m.output_scaling is not None:  # the worker's postprocess, in the same float32 steps
        y *= np.asarray(m.output_scaling.scale, np.float32)[None, :, None, None]
        y += np.asarray(m.output_scaling.offset, np.float32)[None, :, None, None]
    return y


def _dtype(path: Path) -> str:
    return str(np.load(path, mmap_mode="r").dtype)


def describe(package: Path, m: ModelManifest, *, documentation: str = "card.md", timestamp: str | None = None):
    """The ``bioimageio.spec`` ``ModelDescr`` (format 0.5) of ``package`` (test tensors, card, model present).

    Files are referenced relative to ``package`` with their sha256. Sample tensors and the cover
    are included when present. Raises ``ValueError`` naming the field when the spec refuses it.
    """
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5 as bio

    package = Path(package)
    px = m.pixel_size_um or 1.0

    def f(name: str) -> bio.FileDescr | None:
        p = package / name
        return bio.FileDescr(source=bio.RelativeFilePath(Path(name)), sha256=sha256_file(p)) if p.is_file() else None

    def space_in() -> list[Any]:
        return [bio.SpaceInputAxis(id=bio.AxisId(a), unit="micrometer", scale=px,
                                   size=bio.ParameterizedSize(min=m.multiple, step=m.multiple)) for a in "yx"]

    def space_out() -> list[Any]:  # size = input size * input scale / output scale = input size * scale_factor
        return [bio.SpaceOutputAxis(id=bio.AxisId(a), unit="micrometer", scale=px / m.scale_factor,
                                    size=bio.SizeReference(tensor_id=bio.TensorId(m.input_name),
                                                           axis_id=bio.AxisId(a))) for a in "yx"]

    f32 = {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}
    in_type = _dtype(package / TEST_INPUT)
    with ValidationContext(root=package, perform_io_checks=True, raise_errors=True):
        inp = bio.InputTensorDescr(
            id=bio.TensorId(m.input_name),
            description="raw camera counts (ADU), one frame per channel, as the engine receives them",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=list(m.inputs)), *space_in()],
            data=bio.IntervalOrRatioDataDescr(type=in_type),
            test_tensor=f(TEST_INPUT), sample_tensor=f(SAMPLE_INPUT),
            preprocessing=[f32, *preprocessing(m), f32],
        )
        out = bio.OutputTensorDescr(
            id=bio.TensorId(m.output_name),
            description="physical units (camera counts of the target modality) after the output scaling",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=list(m.outputs)),
                  *space_out()],
            data=bio.IntervalOrRatioDataDescr(type="float32"),
            test_tensor=f(TEST_OUTPUT), sample_tensor=f(SAMPLE_OUTPUT),
            postprocessing=[*postprocessing(m), f32],
        )
        cover = f(COVER)
        return bio.ModelDescr(
            name=m.name,
            description=m.description or f"{m.task} network exported by scopecast",
            authors=[bio.Author(name="scopecast")],
            cite=[bio.CiteEntry(**c) for c in _CITATIONS.get(m.task, []) + [_DPC]],
            license=bio.LicenseId("BSD-3-Clause"),
            tags=["scopecast", m.task, "led-array", "simulated"],
            documentation=bio.FileDescr(source=bio.RelativeFilePath(Path(documentation))),
            covers=[cover] if cover else [],
            timestamp=bio.Datetime(timestamp) if timestamp else bio.Datetime.now(),
            inputs=[inp], outputs=[out],
            weights=_weights(bio, m, package),
            config=bio.Config(
                bioimageio=bio.BioimageioConfig(reproducibility_tolerance=[bio.ReproducibilityTolerance(**TOLERANCE)]),
                scopecast={"manifest": "manifest.json", "tile": m.tile, "halo": m.halo,
                           "output_range": m.output_range.model_dump() if m.output_range else None},
            ),
        )


def _weights(bio: Any, m: ModelManifest, package: Path) -> Any:
    """``model.onnx``; with the network's PyTorch weights (``provenance["pytorch_state_dict"]``) as its
    parent, described by the architecture's class and its kwargs: from the package's own
    :data:`ARCHITECTURE_SOURCE` (:func:`write_architecture_source`), else (an older package) imported from
    :mod:`scopecast.models.architectures`."""
    sd = m.provenance.get("pytorch_state_dict")
    if not sd:
        return bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(
            source=bio.RelativeFilePath(Path(m.model_file)), sha256=m.sha256, opset_version=18))
    from scopecast.models.architectures import ARCHITECTURES  # PyTorch: export only, never the daemon

    arch, kwargs = ARCHITECTURES[m.provenance["arch"]], dict(m.provenance["config"])
    src = package / ARCHITECTURE_SOURCE
    architecture = (
        bio.ArchitectureFromFileDescr(source=bio.RelativeFilePath(Path(ARCHITECTURE_SOURCE)),
                                      sha256=sha256_file(src), callable=arch.__name__, kwargs=kwargs)
        if src.is_file() else
        bio.ArchitectureFromLibraryDescr(callable=arch.__name__, import_from=arch.__module__, kwargs=kwargs))
    return bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=bio.RelativeFilePath(Path(sd["file"])), sha256=sd["sha256"], architecture=architecture,
            pytorch_version=bio.Version(sd["pytorch_version"])),
        onnx=bio.OnnxWeightsDescr(source=bio.RelativeFilePath(Path(m.model_file)), sha256=m.sha256,
                                  opset_version=18, parent="pytorch_state_dict"),
    )


def write_architecture_source(package: Path, m: ModelManifest) -> Path | None:
    """Copy :mod:`scopecast.models.architectures` (torch only) into a package with PyTorch weights as
    :data:`ARCHITECTURE_SOURCE`, unless it has one; returns its path (None: no PyTorch weights)."""
    if not m.provenance.get("pytorch_state_dict"):
        return None
    dest = Path(package) / ARCHITECTURE_SOURCE
    if not dest.is_file():
        import scopecast.models.architectures as arch

        dest.write_bytes(Path(arch.__file__).read_bytes())
    return dest


def write_rdf(package: Path, m: ModelManifest, **kwargs: Any) -> Path:
    """Write ``package/rdf.yaml`` from :func:`describe` (``bioimageio.spec``'s serializer), after
    :func:`write_architecture_source`: the package's PyTorch weights load without scopecast installed.

    Every file is pinned by its sha256 except the card, which ``scopecast evaluate --card`` updates.
    """
    from bioimageio.spec import dump_description, save_bioimageio_yaml_only

    write_architecture_source(package, m)
    path = Path(package) / "rdf.yaml"
    content = dump_description(describe(package, m, **kwargs))
    # the spec fills in the card's sha256; drop it: the card is a living document (`scopecast evaluate --card`)
    if isinstance(content.get("documentation"), dict):
        content["documentation"].pop("sha256", None)
    save_bioimageio_yaml_only(content, file=path)
    return path


@dataclass
class BioimageioTestReport:
    """``bioimageio test``'s verdict on a package, with the measured output difference."""

    status: str
    max_abs_diff: float
    max_rel_diff: float
    seconds: float
    version: str
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: max |Δ| per weight format bioimage.io ran (``onnx``, ``pytorch_state_dict``)
    max_abs_diff_by_format: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "seconds": round(self.seconds, 2), "bioimageio.core": self.version, "tolerance": TOLERANCE,
                "by_format": self.max_abs_diff_by_format, "failures": self.failures, "warnings": self.warnings}


def _details(summary: Any) -> tuple[list[str], list[str]]:
    fails, warns = [], []
    for d in summary.details:
        loc = ".".join(map(str, d.loc)) if getattr(d, "loc", None) else ""
        for e in d.errors:
            fails.append(f"{d.name}{' [' + loc + ']' if loc else ''}: {e.msg}")
        for w in d.warnings:
            warns.append(f"{'.'.join(map(str, w.loc))}: {w.msg}")
    return fails, warns


def run_bioimageio_test(package: str | Path, *, raise_on_failure: bool = True) -> BioimageioTestReport:
    """Run ``bioimageio.core.test_model`` on ``package/rdf.yaml`` (CPU) and measure max |Δ| of its output.

    The difference is bioimage.io's own prediction (its pre/postprocessing, its adapter for each weight
    format the package has: ONNX, and PyTorch when it carries ``weights.pt``) on ``test_input.npy``
    against ``test_output.npy``; the largest over the formats, and each in ``max_abs_diff_by_format``. Raises :class:`BioimageioTestError` listing
    the failing checks unless ``raise_on_failure`` is False.
    """
    import bioimageio.core
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict, test_model

    package = Path(package)
    rdf = package / "rdf.yaml"
    if not rdf.is_file():
        raise BioimageioTestError(f"{package}: no rdf.yaml")
    t0 = time.perf_counter()
    summary = test_model(rdf, devices=["cpu"])
    fails, warns = _details(summary)
    by_format: dict[str, float] = {}
    dmax = rmax = float("nan")
    try:
        descr = load_model_description(rdf)
        expected = np.load(package / TEST_OUTPUT)
        for wf in descr.weights.available_formats:
            # not `with pipeline:` - its unload() waits forever on bioimageio.core 0.11.0 (after predict)
            pp = create_prediction_pipeline(descr, devices=["cpu"], weight_format=wf)
            got = predict(model=pp, inputs={descr.inputs[0].id: np.load(package / TEST_INPUT)})
            d = np.abs(got.members[descr.outputs[0].id].data.to_numpy().astype(np.float64) - expected)
            by_format[wf] = float(d.max())
            dmax = float(d.max()) if math.isnan(dmax) else max(dmax, float(d.max()))
            r = float((d / np.maximum(np.abs(expected), 1e-6)).max())
            rmax = r if math.isnan(rmax) else max(rmax, r)
    except Exception as e:  # noqa: BLE001 - reported beside the test's own findings
        fails.append(f"prediction on {TEST_INPUT}: {type(e).__name__}: {e}")
    report = BioimageioTestReport(summary.status, dmax, rmax, time.perf_counter() - t0,
                                  bioimageio.core.__version__, fails, warns, by_format)
    log.info("bioimageio test %s: %s, max |Δ| %.3g (rel %.3g; %s), %.1f s", package.name, report.status, dmax, rmax,
             ", ".join(f"{k} {v:.3g}" for k, v in by_format.items()), report.seconds)
    if raise_on_failure and not report.passed:
        raise BioimageioTestError(f"{package}: bioimageio test {report.status}: " + "; ".join(fails or warns))
    return report
