"""INT8 variants of a model package: ONNX Runtime static quantization, kept only where fidelity holds.

``quantize_package(package, dataset)`` calibrates a QDQ model (8-bit
per-channel weights, 8-bit activations, entropy calibration by default) on
the package's own training fields, normalized exactly as the engine normalizes
them (:func:`scopecast.models.manifest.normalize`), then measures on the
dataset's validation fields, through the package's output scaling:

- parity: the INT8 output against the FP32 output (max |Δ| in output units,
  PSNR of INT8 against FP32);
- fidelity: PSNR of FP32 and of INT8 against the ground truth, per output
  channel, and the loss ``fp32 − int8`` in dB;
- speed: p50 of FP32 and INT8 sessions on one tile, same thread count, in
  one run.

The variant is written (``model_int8.onnx`` + ``int8.json``) and recorded
in the manifest's ``variants`` only when every channel loses at most
``max_loss_db``; otherwise :class:`QuantizationRefused` carries the report.
The engine uses it with ``precision="int8"``
(:func:`scopecast.daemon.inference.package.load_package`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from scopecast.models.dataset import BLANK, load_pairs
from scopecast.models.manifest import MANIFEST, ModelManifest, ModelVariant, normalize, sha256_file

__all__ = ["QuantizationRefused", "quantize_package"]

log = logging.getLogger(__name__)

INT8_FILE = "model_int8.onnx"
REPORT_FILE = "int8.json"


class QuantizationRefused(RuntimeError):
    """INT8 lost more fidelity than allowed; ``report`` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _psnr(truth: np.ndarray, pred: np.ndarray) -> float:
    rng = float(truth.max() - truth.min()) or 1.0
    mse = float(np.mean((truth.astype(np.float64) - pred) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(rng * rng / mse)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _inputs(m: ModelManifest, pairs: Any, keep: list[int]) -> np.ndarray:
    return np.stack([normalize(list(pairs.inputs[i]), m.normalization) for i in keep]).astype(np.float32)


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
                     method: str = "entropy", threads: int = 1,
                     speed_size: int = 512, speed_repeats: int = 10) -> dict[str, Any]:
    """Write and register the INT8 variant of ``package`` if it keeps fidelity; returns the report.

    ``dataset`` is the gathered dataset the package was trained on (its
    ``train`` split calibrates, its ``val`` split measures). Raises
    :class:`QuantizationRefused` (nothing registered) when a channel loses
    more than ``max_loss_db`` dB PSNR against the ground truth.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    package = Path(package)
    m = ModelManifest.model_validate_json((package / MANIFEST).read_text())
    fp32 = package / m.model_file
    tr, va = load_pairs(dataset, "train"), load_pairs(dataset, "val")
    if tr.inputs.shape[1] != len(m.inputs):
        raise ValueError(f"{dataset} has {tr.inputs.shape[1]} input channels; {m.name} needs {len(m.inputs)}")
    rng = np.random.default_rng(0)
    idx = [int(i) for i in rng.permutation(len(tr.inputs))[:calibration_fields]]
    calib = _inputs(m, tr, idx)
    log.info("int8 %s: calibrating on %d training fields (%s)", m.name, len(idx), method)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {m.input_name: x}

    calib_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                    "entropy": CalibrationMethod.Entropy}
    if method not in calib_method:
        raise ValueError(f"unknown calibration method {method!r}; methods: {', '.join(calib_method)}")
    out = package / INT8_FILE
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calib_method[method])
    report = _measure(m, fp32, out, va, threads, speed_size, speed_repeats)
    report.update({"calibration": {"fields": len(idx), "method": method, "dataset": str(dataset)},
                   "max_loss_db": max_loss_db})
    worst = max(report["loss_db"].values())
    report["accepted"] = bool(worst <= max_loss_db)
    (package / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    if not report["accepted"]:
        out.unlink()
        raise QuantizationRefused(f"{m.name}: INT8 loses {worst:.2f} dB PSNR (allowed {max_loss_db} dB); "
                                  f"variant not written (report: {package / REPORT_FILE})", report)
    variants = dict(m.variants)
    variants["int8"] = ModelVariant(file=INT8_FILE, sha256=sha256_file(out), precision="int8",
                                    loss_db=report["loss_db"], speedup=report["speed"]["speedup"])
    (package / MANIFEST).write_text(m.model_copy(update={"variants": variants}).model_dump_json(indent=2) + "\n")
    log.info("int8 %s: accepted (worst loss %.2f dB, %.2fx faster)", m.name, worst, report["speed"]["speedup"])
    return report


def _measure(m: ModelManifest, fp32: Path, int8: Path, va: Any, threads: int, size: int, repeats: int
             ) -> dict[str, Any]:
    keep = [i for i, k in enumerate(va.kinds) if k != BLANK] or list(range(len(va.inputs)))
    x = _inputs(m, va, keep)
    s32, s8 = _session(fp32, threads), _session(int8, threads)
    psnr32: dict[str, list[float]] = {o: [] for o in m.outputs}
    psnr8: dict[str, list[float]] = {o: [] for o in m.outputs}
    parity, max_abs = [], 0.0
    for j, i in enumerate(keep):
        y32 = _physical(m, s32.run(None, {m.input_name: x[j:j + 1]})[0][0])
        y8 = _physical(m, s8.run(None, {m.input_name: x[j:j + 1]})[0][0])
        max_abs = max(max_abs, float(np.abs(y32 - y8).max()))
        parity.append(_psnr(y32, y8))
        for c, o in enumerate(m.outputs):
            psnr32[o].append(_psnr(va.targets[i, c], y32[c]))
            psnr8[o].append(_psnr(va.targets[i, c], y8[c]))
    t = np.zeros((1, len(m.inputs), size, size), np.float32)
    t += np.random.default_rng(1).random(t.shape, np.float32)
    ms32, ms8 = _p50_ms(s32, m.input_name, t, repeats), _p50_ms(s8, m.input_name, t, repeats)
    f32 = {o: float(np.mean(v)) for o, v in psnr32.items()}
    f8 = {o: float(np.mean(v)) for o, v in psnr8.items()}
    return {
        "fields": len(keep),
        "parity": {"max_abs_output_units": max_abs, "psnr_int8_vs_fp32_db": float(np.mean(parity))},
        "psnr_db": {"fp32": f32, "int8": f8},
        "loss_db": {o: f32[o] - f8[o] for o in m.outputs},
        "speed": {"size": size, "threads": threads, "fp32_p50_ms": ms32, "int8_p50_ms": ms8,
                  "speedup": ms32 / ms8 if ms8 > 0 else float("nan")},
    }
