"""INT8 variants of a model package: ONNX Runtime static quantization, kept only where fidelity holds.

``quantize_package(package, dataset)`` calibrates a QDQ model (8-bit
per-channel weights, 8-bit activations) on the package's own training fields,
normalized exactly as the engine normalizes them
(:func:`scopecast.models.manifest.normalize`). The calibration (how each
activation's 8-bit range is chosen: ONNX Runtime's entropy, min-max or
percentile calibrators, :data:`CALIBRATIONS`) is chosen by ``method="auto"``
on further *training* fields the calibration did not see (the one whose worst
loss, over specimen morphologies and outputs, is least); the validation fields
never take part in a choice. It then measures on the dataset's validation
fields, through the package's output scaling:

- parity: the INT8 output against the FP32 output (max |Δ| in output units,
  PSNR of INT8 against FP32);
- fidelity: PSNR of FP32 and of INT8 against the ground truth, per output
  channel, and the loss ``fp32 − int8`` in dB, over all fields and per
  specimen morphology (the dataset's field kinds);
- speed: p50 of FP32 and INT8 sessions on one tile, same thread count, in
  one run.

The variant is written (``model_int8.onnx`` + ``int8.json``) and recorded
in the manifest's ``variants`` only when every output loses at most
``max_loss_db`` on every morphology: a pooled mean hides a morphology that
rounding hurts (the super-resolution U-Net lost 0.37 dB pooled but 1.62 dB on
the ``membranes`` sheet's validation fields, and 3.2 dB there through the
engine). Otherwise :class:`QuantizationRefused` carries the report, and a
variant kept before is removed.
The engine uses it with ``precision="int8"``
(:func:`scopecast.daemon.inference.package.load_package`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.dataset import BLANK, load_pairs
from scopecast.models.manifest import (
    MANIFEST, ModelManifest, ModelVariant, normalize, pad_to_multiple, sha256_file,
)

__all__ = ["QuantizationRefused", "quantize_package"]

log = logging.getLogger(__name__)

INT8_FILE = "model_int8.onnx"
REPORT_FILE = "int8.json"
#: ONNX Runtime calibrations ``quantize_package`` can use: (``CalibrationMethod`` name, ``extra_options``). A
#: percentile calibrator clips each activation's range at that percentile of its calibration values (the
#: rare extremes then saturate instead of coarsening every other value's step); "percentile" is ONNX
#: Runtime's default 99.999.
CALIBRATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "entropy": ("Entropy", {}),
    "minmax": ("MinMax", {}),
    "percentile": ("Percentile", {}),
    "percentile-99.99": ("Percentile", {"CalibPercentile": 99.99}),
    "percentile-99.9": ("Percentile", {"CalibPercentile": 99.9}),
}
#: Training fields (beyond the calibration fields, not empty) on which ``method="auto"`` compares calibrations.
SELECTION_FIELDS = 32


class QuantizationRefused(RuntimeError):
    """INT8 lost more fidelity than allowed; ``report`` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _psnr(truth: np.ndarray, pred: np.ndarray) -> float:
    rng = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((truth.astype(np.float64) - pred) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(rng * rng / mse)


def _session(path: Path, threads: int, shape: tuple[int, ...] | None = None):
    """A CPU session; with ``shape``, specialized to it as the engine runs every model (free-dimension
    overrides for the exporter's ``N``, ``H``, ``W``: see ``OrtRuntime._session_for``), so a speed ratio is
    the one the engine sees: a dynamic FP32 session leaves LiveNet's residual Adds unfused."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if shape is not None:
        for name, n in zip(("N", "H", "W"), (shape[0], shape[2], shape[3]), strict=True):
            so.add_free_dimension_override_by_name(name, int(n))
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _inputs(m: ModelManifest, pairs: Any, keep: list[int]) -> np.ndarray:
    """Fields ``keep`` normalized as the engine normalizes them, padded to the network's size multiple as the
    engine pads a frame (a camera's field need not be a multiple of it); outputs are cropped back
    (:func:`_fidelity`)."""
    x = np.stack([normalize(list(pairs.inputs[i]), m.normalization) for i in keep]).astype(np.float32)
    return np.ascontiguousarray(pad_to_multiple(x, m.multiple))


def _physical(m: ModelManifest, y: np.ndarray) -> np.ndarray:
    s = m.output_scaling
    if s is None:
        return y
    return y * np.asarray(s.scale, np.float32)[:, None, None] + np.asarray(s.offset, np.float32)[:, None, None]


def _p50_ms(sess: Any, name: str, x: np.ndarray, repeats: int) -> float:
    sess.run(None, {name: x})
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def quantize_package(package: str | Path, dataset: str | Path, max_loss_db: float = 0.5, calibration_fields: int = 24,
                     method: str = "auto", threads: int = 1,
                     speed_size: int = 512, speed_repeats: int = 10, min_speedup: float = 1.0) -> dict[str, Any]:
    """Write and register the INT8 variant of ``package`` if it keeps fidelity; returns the report.

    ``dataset`` is the gathered dataset the package was trained on: ``calibration_fields`` of its ``train``
    split calibrate, up to :data:`SELECTION_FIELDS` other non-empty training fields choose the calibration
    when ``method`` is ``"auto"`` (else ``method`` names one of :data:`CALIBRATIONS`; with too few training
    fields the calibration fields also choose, and the report says so), and its ``val`` split measures.
    Raises :class:`QuantizationRefused` (nothing registered; an earlier variant removed) when an output loses
    more than ``max_loss_db`` dB PSNR against the ground truth on the validation fields of any morphology,
    or when it is not faster than FP32 by more than ``min_speedup`` at ``speed_size``² as the engine runs both
    (shape-specialized sessions): a variant no faster than its parent only adds a way to lose fidelity.
    """
    from onnxruntime.quantization import quant_pre_process

    if method != "auto" and method not in CALIBRATIONS:
        raise ValueError(f"unknown calibration method {method!r}; methods: auto, {', '.join(CALIBRATIONS)}")
    package = Path(package)
    m = ModelManifest.model_validate_json((package / MANIFEST).read_bytes())
    fp32 = package / m.model_file
    tr, va = load_pairs(dataset, "train"), load_pairs(dataset, "val")
    if tr.inputs.shape[1] != len(m.inputs):
        raise ValueError(f"{dataset} has {tr.inputs.shape[1]} input channels; {m.name} needs {len(m.inputs)}")
    order = [int(i) for i in np.random.default_rng(0).permutation(len(tr.inputs))]
    idx = order[:calibration_fields]
    calib = _inputs(m, tr, idx)
    out = package / INT8_FILE
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        selection: dict[str, Any] = {}
        if method == "auto":
            chosen = [i for i in order[calibration_fields:] if tr.kinds[i] != BLANK][:SELECTION_FIELDS]
            sel_from = "training fields apart from the calibration fields"
            if not chosen:
                chosen = [i for i in idx if tr.kinds[i] != BLANK] or idx
                sel_from = "the calibration fields (no other training fields)"
            losses = {}
            for name in CALIBRATIONS:
                _quantize(pre, Path(tmp) / f"{name}.onnx", m, calib, name)
                losses[name] = _worst(_fidelity(m, fp32, Path(tmp) / f"{name}.onnx", tr, chosen, threads))
                log.info("int8 %s: calibration %s loses %.2f dB at most (a morphology's output) on %d training "
                         "fields", m.name, name, losses[name], len(chosen))
            method = min(losses, key=lambda k: losses[k])
            (Path(tmp) / f"{method}.onnx").replace(out)
            selection = {"fields": len(chosen), "from": sel_from, "worst_loss_db": losses}
        else:
            _quantize(pre, out, m, calib, method)
    report = _measure(m, fp32, out, va, threads, speed_size, speed_repeats)
    report.update({"calibration": {"fields": len(idx), "method": method, "dataset": str(dataset),
                                   **({"selection": selection} if selection else {})},
                   "max_loss_db": max_loss_db})
    worst, speedup = report["worst_loss_db"], report["speed"]["speedup"]
    report["min_speedup"] = min_speedup
    report["accepted"] = bool(worst <= max_loss_db and speedup > min_speedup)
    (package / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    _update_card(package / "card.md", report)
    variants = dict(m.variants)
    if not report["accepted"]:
        out.unlink()
        if variants.pop("int8", None) is not None:
            (package / MANIFEST).write_text(m.model_copy(update={"variants": variants}).model_dump_json(indent=2)
                                            + "\n")
        where = report["worst_where"]
        why = (f"INT8 loses {worst:.2f} dB PSNR on {where} (allowed {max_loss_db} dB per morphology)"
               if worst > max_loss_db else
               f"INT8 is {speedup:.2f}x the FP32 model's speed at {report['speed']['size']}² (needs more than "
               f"{min_speedup:g}x)")
        raise QuantizationRefused(f"{m.name}: {why}; variant not written (report: {package / REPORT_FILE})", report)
    variants["int8"] = ModelVariant(file=INT8_FILE, sha256=sha256_file(out), precision="int8",
                                    loss_db=report["loss_db"], speedup=report["speed"]["speedup"])
    (package / MANIFEST).write_text(m.model_copy(update={"variants": variants}).model_dump_json(indent=2) + "\n")
    log.info("int8 %s: accepted (%s calibration, worst loss %.2f dB, %.2fx faster)", m.name, method, worst,
             report["speed"]["speedup"])
    return report


CARD_SECTION = "## INT8 variant"


def _update_card(card: Path, report: dict[str, Any]) -> None:
    """Replace (or append) the card's INT8 section with what this quantization measured (kept or refused)."""
    if not card.is_file():
        return
    cal, sp = report["calibration"], report["speed"]
    losses = (", ".join(f"{o} {v:.2f} dB" for o, v in report["loss_db"].items()) + f" over all fields; at most "
              f"{report['worst_loss_db']:.2f} dB on one morphology ({report['worst_where']})")
    sel = cal.get("selection")
    chosen = (f"chosen among {', '.join(sel['worst_loss_db'])} by the worst loss of a morphology's output on "
              f"{sel['fields']} "
              f"{sel['from']} ({', '.join(f'{k} {v:.2f} dB' for k, v in sel['worst_loss_db'].items())})"
              if sel else "named by the caller")
    kept = (f"**Kept** as `{INT8_FILE}` (`--precision int8` in `scopecast engine`, `up` and `evaluate`; the "
            "engine judges it by its own validated figures, `variants.int8.validated`, once measured)."
            if report["accepted"] else f"**Not kept**: an output lost more than {report['max_loss_db']} dB on a "
            "morphology." if report["worst_loss_db"] > report["max_loss_db"] else
            f"**Not kept**: no faster than the FP32 model as the engine runs both (needs more than "
            f"{report.get('min_speedup', 1.0):g}x).")
    section = (f"{CARD_SECTION}\n\nONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 "
               f"activations), calibrated on {cal['fields']} training fields of `{cal['dataset']}` with the "
               f"`{cal['method']}` calibrator ({chosen}). On {report['fields']} validation fields, against the "
               f"ground truth: loss {losses} (allowed {report['max_loss_db']} dB per morphology); "
               f"{sp['speedup']:.2f}x the FP32 "
               f"model's speed ({sp['int8_p50_ms']:.0f} against {sp['fp32_p50_ms']:.0f} ms per {sp['size']}² tile, "
               f"{sp['threads']} thread). {kept} The whole report: `{REPORT_FILE}`.\n")
    text = card.read_text()
    if CARD_SECTION in text:
        head, _, rest = text.partition(CARD_SECTION)
        nxt = rest.find("\n## ", 1)
        text = head + section + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    card.write_text(text)


def _quantize(pre: Path, out: Path, m: ModelManifest, calib: np.ndarray, method: str) -> None:
    """QDQ model of the pre-processed ``pre`` at ``out``: per-channel int8 weights, uint8 activations."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {m.input_name: x}

    log.info("int8 %s: calibrating on %d training fields (%s)", m.name, len(calib), method)
    kind, extra = CALIBRATIONS[method]
    # ONNX Runtime's calibrators print their progress ("Collecting tensor data ...") on stdout, which is the
    # command's own output: it goes to the debug log instead (-v shows it)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, kind), extra_options=dict(extra))
    finally:
        for line in chatter.getvalue().splitlines():
            log.debug("int8 %s: onnxruntime: %s", m.name, line)


def _fidelity(m: ModelManifest, fp32: Path, int8: Path, pairs: Any, keep: list[int], threads: int
              ) -> dict[str, Any]:
    """FP32 and INT8 against the ground truth on fields ``keep`` of ``pairs``: mean PSNR per output (``fp32``,
    ``int8``), the loss ``fp32 − int8`` (dB) per output (``loss``) and per field kind and output
    (``by_kind``), and the parity of INT8 against FP32 (``max_abs`` in output units, ``psnr`` dB)."""
    x = _inputs(m, pairs, keep)
    h, w = (n * m.scale_factor for n in pairs.inputs.shape[-2:])  # the fields' own size at the output sampling
    s32, s8 = _session(fp32, threads), _session(int8, threads)
    psnr: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (kind, output) -> (fp32, int8) per field
    parity, max_abs = [], 0.0
    for j, i in enumerate(keep):
        y32 = _physical(m, s32.run(None, {m.input_name: x[j:j + 1]})[0][0][:, :h, :w])
        y8 = _physical(m, s8.run(None, {m.input_name: x[j:j + 1]})[0][0][:, :h, :w])
        max_abs = max(max_abs, float(np.abs(y32 - y8).max()))
        parity.append(_psnr(y32, y8))
        for c, o in enumerate(m.outputs):
            psnr.setdefault((str(pairs.kinds[i]), o), []).append(
                (_psnr(pairs.targets[i, c], y32[c]), _psnr(pairs.targets[i, c], y8[c])))
    pooled = {o: np.mean([v for (_, out), vs in psnr.items() if out == o for v in vs], axis=0) for o in m.outputs}
    by_kind: dict[str, dict[str, float]] = {}
    for (kind, o), vs in sorted(psnr.items()):
        f32, f8 = np.mean(vs, axis=0)
        by_kind.setdefault(kind, {})[o] = float(f32 - f8)
    return {"fp32": {o: float(v[0]) for o, v in pooled.items()}, "int8": {o: float(v[1]) for o, v in pooled.items()},
            "loss": {o: float(v[0] - v[1]) for o, v in pooled.items()}, "by_kind": by_kind,
            "max_abs": max_abs, "psnr": float(np.mean(parity))}


def _worst(fid: dict[str, Any]) -> float:
    """The largest loss (dB) of any output on any field kind."""
    return max(v for per in fid["by_kind"].values() for v in per.values())


def _measure(m: ModelManifest, fp32: Path, int8: Path, va: Any, threads: int, size: int, repeats: int
             ) -> dict[str, Any]:
    keep = [i for i, k in enumerate(va.kinds) if k != BLANK] or list(range(len(va.inputs)))
    fid = _fidelity(m, fp32, int8, va, keep, threads)
    size = -(-size // m.multiple) * m.multiple  # a size the network takes
    t = np.zeros((1, len(m.inputs), size, size), np.float32)
    t += np.random.default_rng(1).random(t.shape, np.float32)
    s32, s8 = _session(fp32, threads, t.shape), _session(int8, threads, t.shape)
    ms32, ms8 = _p50_ms(s32, m.input_name, t, repeats), _p50_ms(s8, m.input_name, t, repeats)
    return {
        "fields": len(keep),
        "parity": {"max_abs_output_units": fid["max_abs"], "psnr_int8_vs_fp32_db": fid["psnr"]},
        "psnr_db": {"fp32": fid["fp32"], "int8": fid["int8"]},
        "loss_db": fid["loss"],
        "loss_db_by_morphology": fid["by_kind"],
        "worst_loss_db": _worst(fid),
        "worst_where": max(((f"{k} / {o}", v) for k, per in fid["by_kind"].items() for o, v in per.items()),
                           key=lambda kv: kv[1])[0],
        "speed": {"size": size, "threads": threads, "fp32_p50_ms": ms32, "int8_p50_ms": ms8,
                  "speedup": ms32 / ms8 if ms8 > 0 else float("nan")},
    }
