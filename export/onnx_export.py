"""PyTorch -> ONNX with dynamic batch and spatial axes, checked and compared with PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FP32_TOLERANCE", "ExportError", "ParityError", "export_onnx", "parity", "to_fp16"]

OPSET = 18


class ExportError(RuntimeError):
    """The model could not be exported (message names the operator or problem)."""


class ParityError(RuntimeError):
    """ONNX Runtime output differs from PyTorch beyond the tolerance."""


def export_onnx(model, example: np.ndarray, path: Path, opset: int = OPSET,
                input_name: str = "input", output_name: str = "output") -> Path:
    """Export ``model`` with axes ``N, C, H, W`` dynamic in N, H and W; runs ``onnx.checker``."""
    import onnx
    import torch

    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(example, dtype=np.float32))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, opset_version=opset,
                input_names=[input_name], output_names=[output_name],
                dynamic_axes={input_name: {0: "N", 2: "H", 3: "W"}, output_name: {0: "N", 2: "H_out", 3: "W_out"}},
                do_constant_folding=True,
            )
    except Exception as e:  # noqa: BLE001 - re-raised naming what failed
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {type(e).__name__}: {e}") from None
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported model fails onnx.checker: {e}") from None
    if proto.opset_import[0].version < 18:
        raise ExportError(f"exported opset {proto.opset_import[0].version} < 18")
    return path


#: ONNX Runtime against PyTorch on a real field (normalized units): the largest |difference| an export accepts
FP32_TOLERANCE = 1e-4


def parity(onnx_path: Path, model, inputs: np.ndarray, atol: float, input_name: str = "input") -> dict[str, Any]:
    """Compare ONNX Runtime (CPU) with PyTorch on ``inputs``; raises :class:`ParityError` beyond ``atol``."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = model.eval()(torch.from_numpy(inputs)).numpy()
    got = sess.run(None, {input_name: inputs.astype(np.float32)})[0]
    if got.shape != ref.shape:
        raise ParityError(f"{onnx_path.name}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
    err = np.abs(got.astype(np.float64) - ref)
    report = {"max_abs_error": float(err.max()), "mean_abs_error": float(err.mean()), "tolerance": atol,
              "inputs_shape": list(inputs.shape), "passed": bool(err.max() <= atol)}
    if not report["passed"]:
        raise ParityError(
            f"{onnx_path.name}: max |ONNX Runtime - PyTorch| = {err.max():.3g} exceeds the tolerance {atol:g}"
        )
    return report


def to_fp16(src: Path, dst: Path) -> Path:
    """FP16 weights and arithmetic with float32 inputs/outputs (inputs arrive normalized, so
    raw 16-bit counts never meet an FP16 layer)."""
    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns for every tiny weight it rounds to fp16's range
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst
