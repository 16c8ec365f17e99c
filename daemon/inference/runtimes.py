"""Inference runtimes behind one small interface, chosen at run time.

=================  ===========================================================
``ort-tensorrt``   ONNX Runtime, TensorRT execution provider: FP16 when the
                   package allows it, engine cache keyed on model hash + GPU +
                   precision + shape profile.
``ort-cuda``       ONNX Runtime, CUDA execution provider, IO binding (outputs
                   stay on the device until one copy back).
``ort-cpu``        ONNX Runtime, CPU provider, intra-op threads = cores / workers.
``tensorrt``       a serialized TensorRT engine (``.plan``) through the
                   TensorRT Python API and cuda-python.
=================  ===========================================================

:func:`open_runtime` walks a preference list and returns the first runtime that
can actually run here; every skipped choice is logged with its reason ("no GPU",
"onnxruntime has no TensorrtExecutionProvider", ...).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .package import ModelPackage, PackageError

__all__ = [
    "RUNTIME_NAMES", "InferenceRuntime", "RuntimeUnavailable", "gpu_name", "open_runtime", "verified_model",
]

log = logging.getLogger(__name__)

RUNTIME_NAMES = ("tensorrt", "ort-tensorrt", "ort-cuda", "ort-cpu")
#: The CUDA execution provider computes in full FP32, as the model card's figures were validated: its
#: default, TF32 convolutions on Ampere and later GPUs, moved a shipped super-resolution output by up to 8 % of
#: its scale in a pixel (0.4 % for virtual staining) for 1.4x speed (2.3 -> 1.7 ms at 512², H100;
#: benchmarks/bench_gpu_runtimes.py). Reduced precision is the package's choice (its FP16 / INT8 variants).
CUDA_OPTIONS = {"device_id": 0, "use_tf32": 0}
#: CPU sessions specialized to an input shape kept per runtime (:meth:`OrtRuntime._session_for`)
SHAPED_SESSIONS = 8


class RuntimeUnavailable(RuntimeError):
    """This runtime cannot run here (the message says why)."""


class InferenceRuntime(Protocol):
    """Runs a model on a float32 ``(N, C, H, W)`` batch."""

    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...
    def describe(self) -> dict[str, Any]: ...


def gpu_name() -> str | None:
    """Name of the first NVIDIA GPU, or None when there is none (nvidia-smi / driver query)."""
    try:
        import ctypes

        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if lib.nvmlInit_v2() != 0:
            return None
        handle = ctypes.c_void_p()
        if lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) != 0:
            return None
        buf = ctypes.create_string_buffer(96)
        if lib.nvmlDeviceGetName(handle, buf, 96) != 0:
            return None
        return buf.value.decode()
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------ ONNX Runtime
class OrtRuntime:
    """An ONNX Runtime session on one execution provider."""

    def __init__(self, package: ModelPackage, provider: str, threads: int | None = None,
                 cache_dir: Path | None = None) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        m = package.manifest
        if provider != "CPUExecutionProvider":
            if provider not in available:
                raise RuntimeUnavailable(
                    f"onnxruntime {ort.__version__} has no {provider} (available: {', '.join(available)}); "
                    "install the 'gpu' extra (onnxruntime-gpu) on a machine with an NVIDIA GPU"
                )
            if gpu_name() is None:
                raise RuntimeUnavailable(f"{provider}: no NVIDIA GPU found (NVML not available)")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        # the engine shares the machine with the daemon: idle threads must sleep, not spin
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any]
        if provider == "TensorrtExecutionProvider":
            precision = package.precision if package.precision != "fp32" else "fp16" if m.fp16 else "fp32"
            cache = (cache_dir or Path.home() / ".cache" / "scopecast" / "trt") / self.cache_key(package, precision)
            cache.mkdir(parents=True, exist_ok=True)
            c = len(m.inputs)
            t = m.tile
            trt_opts = {
                "trt_fp16_enable": m.fp16,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_profile_min_shapes": f"{m.input_name}:1x{c}x{m.multiple}x{m.multiple}",
                "trt_profile_opt_shapes": f"{m.input_name}:4x{c}x{t}x{t}",
                "trt_profile_max_shapes": f"{m.input_name}:8x{c}x{t}x{t}",
            }
            providers = [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", CUDA_OPTIONS),
                         "CPUExecutionProvider"]
            self.cache_path: Path | None = cache
        elif provider == "CUDAExecutionProvider":
            providers = [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
            self.cache_path = None
        else:
            providers = ["CPUExecutionProvider"]
            self.cache_path = None
        model = verified_model(package)
        try:
            self.session = ort.InferenceSession(model, opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - any load failure names the model
            raise RuntimeError(f"cannot load {package.model_path} with {provider}: {e}") from None
        _require_provider(self.session.get_providers(), provider, ort.__version__)
        self._model, self._model_path, self._threads_opts = model, str(package.model_path), threads
        self._shaped: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self.provider = provider
        self.name = {"TensorrtExecutionProvider": "ort-tensorrt", "CUDAExecutionProvider": "ort-cuda"}.get(provider, "ort-cpu")
        self.input_name = m.input_name
        self.output_name = m.output_name
        names = [i.name for i in self.session.get_inputs()]
        if m.input_name not in names:
            raise RuntimeError(f"{package.model_path}: no input named {m.input_name!r} (inputs: {names})")
        self._io = self.session.io_binding() if provider != "CPUExecutionProvider" else None
        self.threads = threads

    @staticmethod
    def cache_key(package: ModelPackage, precision: str) -> str:
        """Engine-cache folder: model hash + GPU + precision + shape profile."""
        m = package.manifest
        profile = f"{len(m.inputs)}x{m.multiple}-{m.tile}"
        gpu = (gpu_name() or "nogpu").replace(" ", "_")
        digest = hashlib.sha256(f"{m.sha256}|{gpu}|{precision}|{profile}".encode()).hexdigest()[:16]
        return f"{m.name}-{m.short_hash}-{gpu}-{precision}-{profile}-{digest}"

    def _session_for(self, shape: tuple[int, ...]) -> Any:
        """The CPU session for inputs of ``shape``: one built with ONNX Runtime's free-dimension overrides
        (``N``, ``H``, ``W`` fixed), so the graph optimizer sees static shapes. With symbolic spatial sizes
        it cannot prove that a residual ``Add``'s operands have one shape and leaves it unfused: the
        super-resolution live tier ran 1.4× slower (``benchmarks/bench_live_tier.py``). At most
        :data:`SHAPED_SESSIONS` shapes are kept (a camera sends one frame size; tiles add a few batch
        sizes); the generic session serves any shape whose specialization failed. Built from the model bytes
        the runtime was opened with (:func:`verified_model`), never from the file again."""
        sess = self._shaped.get(shape)
        if sess is not None:
            self._shaped.move_to_end(shape)
            return sess
        import onnxruntime as ort

        dims = self.session.get_inputs()[0].shape
        free = {d: n for d, n in zip(dims, shape, strict=False) if isinstance(d, str)}
        sess = self.session
        if free and len(dims) == len(shape):
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            if self._threads_opts:
                opts.intra_op_num_threads = self._threads_opts
                opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            for name, n in free.items():
                opts.add_free_dimension_override_by_name(name, int(n))
            try:
                sess = ort.InferenceSession(self._model, opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - the generic session still runs it
                log.warning("%s: no session specialized to %s (%s); the dynamic one runs it", self._model_path,
                            shape, e)
                sess = self.session
        self._shaped[shape] = sess
        while len(self._shaped) > SHAPED_SESSIONS:
            self._shaped.popitem(last=False)
        return sess

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._io is None:
            return self._session_for(x.shape).run([self.output_name], {self.input_name: x})[0]
        io = self._io
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        io.bind_cpu_input(self.input_name, x)
        io.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0]

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "providers": self.session.get_providers(), "threads": self.threads,
                "engine_cache": str(self.cache_path) if self.cache_path else None,
                "shapes": [list(s) for s, sess in self._shaped.items() if sess is not self.session]}


def verified_model(package: ModelPackage) -> bytes:
    """The bytes of the file ``package`` runs at its precision, read once and checked against its sha256.

    Every ONNX Runtime session of a runtime is built from these bytes, never from the path again: a package
    replaced on disk while an engine serves it (``scopecast export --overwrite``, ``reexport``) cannot change
    what the runtime computes under the sha256 its results name. Raises :class:`PackageError` naming the file
    when it no longer is the one the package was loaded with."""
    path = package.model_path
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PackageError(f"{path}: cannot read the model file: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != package.weights_sha256:
        raise PackageError(f"{path}: sha256 {digest[:12]}… does not match the manifest "
                           f"({package.weights_sha256[:12]}…); the file changed after the package was loaded")
    return data


def _require_provider(active: list[str], provider: str, version: str) -> None:
    """Raise :class:`RuntimeUnavailable` unless ``provider`` is the session's first provider.

    ONNX Runtime lists an execution provider as available when its plugin library ships in the wheel
    (onnxruntime-gpu always lists TensorRT's), and when the provider then cannot start (TensorRT's
    ``libnvinfer`` or CUDA's / cuDNN's libraries missing) it logs an error and builds the session on the
    next provider in the list. The runtime would then run on CUDA or the CPU under the name of the one
    asked for, and ``auto`` would stop there."""
    if provider != "CPUExecutionProvider" and (not active or active[0] != provider):
        raise RuntimeUnavailable(
            f"onnxruntime {version} lists {provider} but could not start it here (its libraries did not load: "
            f"TensorRT's libnvinfer, or CUDA's and cuDNN's) and fell back to {', '.join(active) or 'nothing'}")


# --------------------------------------------------------------- native TensorRT
class TensorRTRuntime:
    """A serialized TensorRT engine (``.plan``) run with the TensorRT 10 tensor API."""

    name = "tensorrt"

    def __init__(self, package: ModelPackage) -> None:
        plan = package.plan_path
        if plan is None or not plan.is_file():
            raise RuntimeUnavailable(f"package {package.manifest.name!r} has no TensorRT engine (.plan)")
        if gpu_name() is None:
            raise RuntimeUnavailable("TensorRT: no NVIDIA GPU found (NVML not available)")
        try:
            import tensorrt as trt
            from cuda.bindings import runtime as cudart
        except ImportError as e:
            raise RuntimeUnavailable(f"TensorRT runtime needs the 'gpu' extra: {e}") from None
        self._cudart = cudart
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{plan}: TensorRT could not deserialize the engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        m = package.manifest
        self.input_name, self.output_name = m.input_name, m.output_name
        err, self.stream = cudart.cudaStreamCreate()
        self._check(err)
        self._buffers: dict[str, tuple[int, int]] = {}

    def _check(self, err: Any) -> None:
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._cudart.cudaFree(ptr)
            err, ptr = self._cudart.cudaMalloc(nbytes)
            self._check(err)
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x = np.ascontiguousarray(batch, dtype=np.float32)
        self.context.set_input_shape(self.input_name, x.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        out = np.empty(out_shape, np.float32)
        d_in = self._device(self.input_name, x.nbytes)
        d_out = self._device(self.output_name, out.nbytes)
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(cudart.cudaMemcpyAsync(d_in, x.ctypes.data, x.nbytes, kind_h2d, self.stream)[0])
        self.context.set_tensor_address(self.input_name, d_in)
        self.context.set_tensor_address(self.output_name, d_out)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        self._check(cudart.cudaMemcpyAsync(out.ctypes.data, d_out, out.nbytes, kind_d2h, self.stream)[0])
        self._check(cudart.cudaStreamSynchronize(self.stream)[0])
        return out

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "gpu": gpu_name()}


_ORT_PROVIDER = {"ort-tensorrt": "TensorrtExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-cpu": "CPUExecutionProvider"}


def open_runtime(package: ModelPackage, preference: str | tuple[str, ...] = "auto",
                 threads: int | None = None, cache_dir: Path | None = None) -> InferenceRuntime:
    """The first runtime in ``preference`` that works here ("auto": fastest first).

    Each skipped runtime is logged with its reason; the choice is logged too.
    ``triton://HOST:PORT/MODEL`` sends the tiles to a Triton server (:mod:`.triton_runtime`).
    """
    if isinstance(preference, str) and preference.startswith("triton://"):
        from .triton_runtime import TritonRuntime

        return TritonRuntime(package, preference)
    order = RUNTIME_NAMES if preference == "auto" else ((preference,) if isinstance(preference, str) else preference)
    reasons = []
    for name in order:
        if name not in RUNTIME_NAMES:
            raise ValueError(f"unknown runtime {name!r}; runtimes: auto, {', '.join(RUNTIME_NAMES)}, "
                             "triton://HOST:PORT/MODEL")
        try:
            rt: InferenceRuntime
            if name == "tensorrt":
                rt = TensorRTRuntime(package)
            else:
                rt = OrtRuntime(package, _ORT_PROVIDER[name], threads=threads, cache_dir=cache_dir)
        except RuntimeUnavailable as e:
            reasons.append(f"{name}: {e}")
            log.debug("runtime %s unavailable: %s", name, e)
            continue
        log.info("model %s runs on %s%s", package.manifest.name, rt.name,  # the reasons: DEBUG, above
                 f" (not available here: {', '.join(r.split(':', 1)[0] for r in reasons)})" if reasons else "")
        rt.skipped = reasons  # type: ignore[attr-defined]
        return rt
    raise RuntimeUnavailable("no runtime can run this model here: " + "; ".join(reasons))


def default_threads(workers: int) -> int:
    """Intra-op threads per worker: all the cores this process may run on (its
    affinity, which ``--cpus`` sets) but one (left to the daemon and the engine's
    receiver), shared evenly between workers, at least one each. Counting
    ``os.cpu_count()`` instead gave 7 threads to an engine pinned to one core of 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, (cores - 1) // max(workers, 1))
