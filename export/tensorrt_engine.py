"""Serialized TensorRT engines (``.plan``) built with the TensorRT Python API."""

from __future__ import annotations

from pathlib import Path

from scopecast.models.manifest import ModelManifest

__all__ = ["TensorRTUnavailable", "build_plan"]


class TensorRTUnavailable(RuntimeError):
    """TensorRT or an NVIDIA GPU is not present (the message says which)."""


def _gpu_present() -> bool:
    import ctypes

    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        return lib.nvmlInit_v2() == 0
    except OSError:
        return False


def build_plan(onnx_path: Path, m: ModelManifest, out: Path, fp16: bool = True, max_batch: int = 8) -> Path:
    """Build an engine with a min/opt/max shape profile (1×C×multiple² / 4×C×tile² / max_batch×C×tile²)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'scopecast[gpu]' on a machine with an NVIDIA GPU)") from None
    if not _gpu_present():
        raise TensorRTUnavailable("no NVIDIA GPU found: TensorRT engines are built on the GPU they will run on")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    c, t, k = len(m.inputs), m.tile, m.multiple
    profile = builder.create_optimization_profile()
    profile.set_shape(m.input_name, (1, c, k, k), (min(4, max_batch), c, t, t), (max_batch, c, t, t))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    out.write_bytes(bytes(serialized))
    return out
