"""Writing a package's bioimage.io files from its model and manifest, and re-packaging shipped packages.

:func:`write_bioimageio_files` writes everything a bioimage.io consumer reads besides the model:
the raw test input and the engine's output for it (see :mod:`.bioimageio`), sample tensors
(``sample_input.tif`` / ``sample_output.tif``), a cover image, the card's ``## Validation``
section and ``rdf.yaml``; then it runs ``bioimageio test`` and records the result in the card.
:func:`export_package` calls it; :func:`repackage` calls it on an existing package, recovering the
raw counts from an older package's normalized ``test_input.npy``. Neither touches the model files
or ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.manifest import MANIFEST, ModelManifest, normalize, sha256_file

from .bioimageio import (
    COVER, SAMPLE_INPUT, SAMPLE_OUTPUT, TEST_INPUT, TEST_OUTPUT, TOLERANCE, BioimageioTestReport, engine_output,
    raw_counts, run_bioimageio_test, write_rdf,
)

__all__ = [
    "STATE_DICT", "attach_state_dict", "raw_test_input", "reexport_onnx", "repackage", "save_state_dict",
    "validation_section", "write_bioimageio_files",
]

log = logging.getLogger("scopecast.export")

VALIDATION = "## Validation"
#: The network's PyTorch weights in a package (bioimage.io ``pytorch_state_dict``; ``model.onnx`` is its child)
STATE_DICT = "weights.pt"


def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, (0.5, 99.5))
    return np.clip((a.astype(np.float64) - lo) / (hi - lo + 1e-12), 0, 1)


def write_cover(path: Path, m: ModelManifest, raw: np.ndarray, out: np.ndarray) -> Path:
    """A 2:1 PNG: the input (bright-field when present, else the first channel) | the output.

    Two-channel outputs are shown as a composite (first channel magenta, second green); the
    input is repeated to the output's sampling so both halves show the same field of view.
    """
    import imageio.v3 as iio

    c = m.inputs.index("BF") if "BF" in m.inputs else 0
    sf = m.scale_factor
    left = np.repeat(np.repeat(_stretch(raw[0, c]), sf, axis=0), sf, axis=1)
    left = np.stack([left] * 3, axis=-1)
    o = [_stretch(ch) for ch in out[0]]
    if len(o) == 1:
        right = np.stack([o[0]] * 3, axis=-1)
    else:
        right = np.stack([o[0], o[1], o[0]], axis=-1)
    img = (np.concatenate([left, right], axis=1) * 255).round().astype(np.uint8)
    iio.imwrite(path, img)
    return path


def validation_section(m: ModelManifest, report: BioimageioTestReport | None = None,
                       package_path: str | None = None) -> str:
    """The card's ``## Validation`` section: how to validate on unseen data and the bioimage.io test."""
    where = shlex.quote(package_path or f"models/packages/{m.name}")  # a command to copy: a path with spaces quoted
    atol, rtol, mism = (TOLERANCE[k] for k in ("absolute_tolerance", "relative_tolerance",
                                               "mismatched_elements_per_million"))
    adapters = {"onnx": "ONNX", "pytorch_state_dict": "PyTorch"}
    by = report.max_abs_diff_by_format if report is not None else {}
    last = ("not run yet" if report is None else
            f"**{report.status}** with bioimage.io's own pre/postprocessing and "
            + (" and ".join(f"{adapters.get(k, k)} adapter (max |Δ| {v:.2g})" for k, v in by.items()) or "adapter")
            + f" (CPU), max |Δ| = {report.max_abs_diff:.2g} counts (relative {report.max_rel_diff:.2g}), "
            f"bioimageio.core {report.version}")
    return f"""{VALIDATION}

How to validate this model quantitatively on data it has never seen:

- **Unseen fields, through the engine:** `scopecast evaluate --model {where} --fields 8 --size 256 --seed 500`
  captures fresh fields on the simulated scope (a slide region never used for training, held-out
  morphologies, a blank slide, failure modes outside the validated domain) and scores the package,
  run by the engine with its input guards, against ground truth and baselines (the tables above).
- **On a real microscope:** the dual-modality capture (`capture_pairs`) acquires the real target
  modality at the same positions; the engine's trust monitor compares spot checks with the model's
  output and reports the live fidelity.
- **bioimage.io reproducibility:** `bioimageio test rdf.yaml` feeds `{TEST_INPUT}` (raw camera counts,
  uint16, 1×{len(m.inputs)}×H×W: a validation field never trained on, exactly as the engine receives the
  frames) through the declared preprocessing (`scale_linear`: the calibrated normalization with the
  engine's constants), `{m.model_file}` and the postprocessing (`scale_linear`: the output scaling to
  physical counts), and compares the result with `{TEST_OUTPUT}` (the engine's output for the same field,
  before its output guard clips to the physical range). Declared tolerance
  (`config.bioimageio.reproducibility_tolerance`): |Δ| ≤ {atol} + {rtol:g}·|expected| counts,
  {mism} mismatched elements per million (bioimage.io computes the linear steps in
  float64, the engine in float32). Last run: {last}. `{SAMPLE_INPUT}` / `{SAMPLE_OUTPUT}` hold the same
  field as images.
"""


def set_card_section(card: Path, section: str, mark: str = VALIDATION) -> None:
    """Replace the card's section starting with ``mark`` (up to the next ``## `` heading), or append it."""
    text = card.read_text() if card.exists() else ""
    m = re.search(rf"^{re.escape(mark)}\s*$", text, flags=re.M)
    if m:
        nxt = text.find("\n## ", m.end())
        tail = text[nxt:] if nxt >= 0 else "\n"
        text = text[:m.start()] + section.rstrip() + "\n" + tail
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    card.write_text(text)


def write_bioimageio_files(package: Path, m: ModelManifest, raw: np.ndarray, *, test: bool = True,
                           package_path: str | None = None) -> BioimageioTestReport | None:
    """Write the bioimage.io files of ``package`` for raw input ``raw`` ``(1, C, H, W)`` and test them.

    Raises :class:`~.bioimageio.BioimageioTestError` when ``bioimageio test`` fails (``test=True``).
    """
    import tifffile

    package = Path(package)
    raw = raw_counts(raw)
    out = engine_output(package / m.model_file, m, raw)
    np.save(package / TEST_INPUT, raw)
    np.save(package / TEST_OUTPUT, out)
    tifffile.imwrite(package / SAMPLE_INPUT, raw[0])
    tifffile.imwrite(package / SAMPLE_OUTPUT, out[0])
    write_cover(package / COVER, m, raw, out)
    card = package / "card.md"
    set_card_section(card, validation_section(m, None, package_path))
    write_rdf(package, m)
    if not test:
        return None
    report = run_bioimageio_test(package)
    # record the result in the card (its sha256 is in the rdf: rewrite that, and test what ships)
    set_card_section(card, validation_section(m, report, package_path))
    write_rdf(package, m)
    return run_bioimageio_test(package)


def raw_test_input(package: Path, m: ModelManifest) -> np.ndarray:
    """The package's test input as raw counts; an older package's normalized input is inverted exactly.

    Raises ``ValueError`` when the stored input is not the normalization of integer counts.
    """
    x = np.load(Path(package) / TEST_INPUT)
    if np.issubdtype(x.dtype, np.integer):
        return x
    n = m.normalization
    if n.kind == "percentile":
        raise ValueError(f"{package}: {TEST_INPUT} is normalized per image (percentiles): the raw counts cannot be "
                         "recovered; re-export the package from its checkpoint")
    gain, bias = n.linear()
    g = np.asarray(gain)[None, :, None, None]
    b = np.asarray(bias)[None, :, None, None]
    raw = raw_counts(np.round((x.astype(np.float64) - b) / g))
    if raw.dtype != np.uint16 or not all(np.array_equal(normalize(list(r), n), s) for r, s in zip(raw, x, strict=True)):
        raise ValueError(f"{package}: {TEST_INPUT} is not the normalization of 16-bit camera counts; "
                         "re-export the package from its checkpoint")
    return raw


def repackage(package: str | Path, *, test: bool = True) -> BioimageioTestReport | None:
    """Rewrite the bioimage.io files of an existing package from its model and manifest (no retraining).

    Only ``test_*.npy``, ``sample_*.tif``, ``cover.png``, the card's ``## Validation`` section and
    ``rdf.yaml`` change; the model files and ``manifest.json`` are verified, never written.
    """
    package = Path(package)
    m = ModelManifest.model_validate_json((package / MANIFEST).read_bytes())
    model = package / m.model_file
    if sha256_file(model) != m.sha256:
        raise ValueError(f"{model}: sha256 does not match {MANIFEST}; refusing to describe a different model")
    log.info("repackaging %s (%s)", package, m.name)
    return write_bioimageio_files(package, m, raw_test_input(package, m), test=test,
                                  package_path=_package_path(package))


def save_state_dict(model: Any, package: Path) -> dict[str, Any]:
    """Save ``model``'s weights as ``package/weights.pt`` (a plain ``state_dict``, what bioimage.io's
    ``pytorch_state_dict`` format and ``torch.load(weights_only=True)`` read); returns the manifest's
    ``provenance["pytorch_state_dict"]`` entry (file, sha256, the PyTorch version that wrote it)."""
    import torch

    path = Path(package) / STATE_DICT
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return {"file": STATE_DICT, "sha256": sha256_file(path), "pytorch_version": torch.__version__.split("+")[0]}


def attach_state_dict(package: str | Path, checkpoint: str | Path) -> BioimageioTestReport | None:
    """Add the PyTorch weights to a package exported before packages carried them, then :func:`repackage`.

    ``checkpoint`` must be the one the package was exported from (its sha256 is in the manifest's
    provenance) and must reproduce the package's ONNX model on its test input (the export's FP32 parity);
    only ``weights.pt``, the manifest's provenance and the bioimage.io files change.
    """
    from scopecast.models.training import load_checkpoint

    from .onnx_export import FP32_TOLERANCE, parity

    package, checkpoint = Path(package), Path(checkpoint)
    m = ModelManifest.model_validate_json((package / MANIFEST).read_bytes())
    want = m.provenance.get("checkpoint_sha256")
    if sha256_file(checkpoint) != want:
        raise ValueError(f"{checkpoint}: sha256 does not match the checkpoint {m.name} was exported from ({want})")
    model, _ = load_checkpoint(checkpoint)
    x = np.ascontiguousarray(normalize(list(raw_test_input(package, m)[0]), m.normalization)[None])
    report = parity(package / m.model_file, model, x, FP32_TOLERANCE, m.input_name)
    raw = json.loads((package / MANIFEST).read_text())  # as written, one key more: a reviewable diff
    raw["provenance"]["pytorch_state_dict"] = {**save_state_dict(model, package), "parity": report}
    ModelManifest.model_validate(raw)
    (package / MANIFEST).write_text(json.dumps(raw, indent=2))
    log.info("%s: weights.pt attached (parity with model.onnx, max |err| %.2e)", package, report["max_abs_error"])
    return repackage(package)


def reexport_onnx(package: str | Path) -> dict[str, Any]:
    """Write a package's ``model.onnx`` again from its ``weights.pt`` with the current exporter; :func:`repackage`.

    For an exporter improvement (e.g. LiveNet's folded stem: no 6-D Transpose) reaching a shipped package
    without retraining. The network is rebuilt from the manifest's provenance and its weights (sha256
    checked); the new file must match PyTorch (the export's FP32 parity) *and* the old ``model.onnx`` on the
    package's test input within the same tolerance, so every figure measured on the package still holds.
    Only ``model.onnx``, the manifest's ``sha256`` and FP32 parity, ``parity.json``'s ``fp32`` entry, the
    card's citations of the old file's sha256 and the bioimage.io files change; variants (INT8, FP16,
    TensorRT) are separate files and stay as they are.
    Returns ``{"old_sha256", "sha256", "max_abs_error_vs_old", "parity"}``.
    """
    import tempfile

    import onnxruntime as ort

    from scopecast.models.training import load_teacher

    from .onnx_export import FP32_TOLERANCE, export_onnx, parity

    package = Path(package)
    m = ModelManifest.model_validate_json((package / MANIFEST).read_bytes())
    model_path = package / m.model_file
    if sha256_file(model_path) != m.sha256:
        raise ValueError(f"{model_path}: sha256 does not match {MANIFEST}; refusing to replace a model it does not "
                         "describe")
    model, _ = load_teacher(package)
    x = np.ascontiguousarray(normalize(list(raw_test_input(package, m)[0]), m.normalization)[None]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        new = export_onnx(model, x, Path(tmp) / "model.onnx", input_name=m.input_name, output_name=m.output_name)
        report = parity(new, model, x, FP32_TOLERANCE, m.input_name)
        outputs = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, {m.input_name: x})[0]
                   for f in (model_path, new)]
        vs_old = float(np.abs(outputs[0].astype(np.float64) - outputs[1]).max())
        if vs_old > FP32_TOLERANCE:
            raise ValueError(f"{package}: the re-exported model differs from the shipped model.onnx by {vs_old:.3g} "
                             f"(> {FP32_TOLERANCE:g}) on the test input; not replaced")
        old_sha = m.sha256
        model_path.write_bytes(new.read_bytes())
    raw = json.loads((package / MANIFEST).read_text())
    raw["sha256"] = sha256_file(model_path)
    raw["provenance"]["parity"] = report
    ModelManifest.model_validate(raw)
    (package / MANIFEST).write_text(json.dumps(raw, indent=2))
    parity_file = package / "parity.json"
    if parity_file.is_file():
        reports = json.loads(parity_file.read_text())
        reports["fp32"] = report
        parity_file.write_text(json.dumps(reports, indent=2))
    card = package / "card.md"  # figures measured on the old file hold for the new one: say so where they cite it
    if card.is_file():
        card.write_text(card.read_text().replace(
            f"sha256 {old_sha[:12]}", f"sha256 {raw['sha256'][:12]}, re-exported from {old_sha[:12]} with outputs "
            f"within {vs_old:.1e}"))
    log.info("%s: model.onnx re-exported (sha256 %s -> %s; max |new - old| %.2e)", package, old_sha[:12],
             raw["sha256"][:12], vs_old)
    repackage(package)
    return {"old_sha256": old_sha, "sha256": raw["sha256"], "max_abs_error_vs_old": vs_old, "parity": report}


def _package_path(package: Path) -> str:
    p = package.resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
