"""Triton Inference Server model repository for a package (scale-out serving).

:func:`write_triton_repository` writes two models per package::

    <repository>/<name>/        raw camera counts in, physical units out (python backend)
        config.pbtxt
        1/model.py  1/scopecast.json  [1/model.onnx]
    <repository>/<name>-net/    the network alone: normalized in, model units out
        config.pbtxt
        1/model.onnx | 1/model.plan | 1/model.py + 1/model.onnx

``<name>`` carries the manifest's normalization and output scaling, so any
Triton client gets physical outputs from raw counts (input ``raw``, float32
``(N, C, H, W)``; output the manifest's ``output_name``). ``<name>-net`` is
what the scopecast engine calls (``--runtime triton://host:port/<name>``): the
engine keeps its guards, tiling and trust verdicts and normalizes itself, as
with every other runtime.

``backend`` chooses how the network runs:

``"python"`` (default)
    onnxruntime inside Triton's python backend, in both models (the physical
    model holds its own copy of the weights, so it needs no second hop). The
    only kind the ``tritonserver`` from PyPI (inside the ``nvidia-pytriton``
    wheel: CPU, python backend only) can load; on a ``KIND_GPU`` instance it
    uses onnxruntime's CUDA provider when the server's python has onnxruntime-gpu.
``"onnxruntime"``
    Triton's onnxruntime backend (``platform: onnxruntime_onnx``; NGC server images).
``"tensorrt"``
    the package's serialized TensorRT engine (``platform: tensorrt_plan``,
    ``KIND_GPU`` only; the plan must have been built for the server's GPU and
    TensorRT version).

With ``"onnxruntime"`` and ``"tensorrt"`` the physical model calls
``<name>-net`` inside the server (business logic scripting).

Both configs carry ``parameters`` ``scopecast_manifest_sha256`` (the package
the weights came from: the engine refuses a server model that is not its
package's) and ``scopecast_stage``; the physical model also names its network
in ``scopecast_network``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from scopecast.models.manifest import ModelManifest

__all__ = ["BACKENDS", "NETWORK_SUFFIX", "write_triton_repository"]

BACKENDS = ("python", "onnxruntime", "tensorrt")
NETWORK_SUFFIX = "-net"
_TEMPLATE = Path(__file__).with_name("triton_model.py")


def _tensor(name: str, channels: int) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: TYPE_FP32\n    dims: [ {channels}, -1, -1 ]\n  }}'


def _config(name: str, head: str, inp: str, out: str, m: ModelManifest, kind: str, instances: int,
            max_batch: int, params: dict[str, str]) -> str:
    parameters = "\n".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return f'''name: "{name}"
{head}
max_batch_size: {max_batch}
input [
{_tensor(inp, len(m.inputs))}
]
output [
{_tensor(out, len(m.outputs))}
]
dynamic_batching {{
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: {instances}
    kind: {kind}
  }}
]
{parameters}
'''


def _spec(m: ModelManifest, stage: str, weights: str | None, network: str, threads: int) -> str:
    return json.dumps({
        "stage": stage, "weights": weights, "network_model": network, "threads": threads,
        "input_name": m.input_name, "output_name": m.output_name, "multiple": m.multiple,
        "scale_factor": m.scale_factor, "normalization": m.normalization.model_dump(),
        "output_scaling": m.output_scaling.model_dump() if m.output_scaling else None,
    }, indent=2)


def write_triton_repository(package: Path, m: ModelManifest, repository: Path, instances: int = 1,
                            gpu: bool = False, max_batch: int = 8,
                            backend: Literal["python", "onnxruntime", "tensorrt"] = "python",
                            threads: int = 0) -> Path:
    """Write ``<repository>/<name>`` (physical) and ``<name>-net`` (network) for the package at ``package``.

    ``instances`` model instances of each model, on the GPU (``KIND_GPU``) when
    ``gpu`` else on the CPU; ``max_batch`` the largest batch the dynamic
    batcher forms; ``threads`` onnxruntime intra-op threads per python-backend
    instance (0: onnxruntime's default). Returns the physical model's folder.
    Raises ``ValueError`` naming the problem (unknown backend, a TensorRT
    repository without a plan or without ``gpu``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown Triton backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if instances < 1 or max_batch < 1:
        raise ValueError(f"instances ({instances}) and max_batch ({max_batch}) must be at least 1")
    package, repository = Path(package), Path(repository)
    onnx = package / m.model_file
    if backend == "tensorrt":
        plan = package / m.plan_file if m.plan_file else None
        if plan is None or not plan.is_file():
            raise ValueError(f"package {m.name!r} has no TensorRT plan (export with --tensorrt on the target GPU)")
        if not gpu:
            raise ValueError("a TensorRT plan runs only on KIND_GPU instances: pass gpu=True")
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    net_name = m.name + NETWORK_SUFFIX
    params = {"scopecast_manifest_sha256": m.sha256}

    net_dir = repository / net_name
    if net_dir.exists():
        shutil.rmtree(net_dir)
    (net_dir / "1").mkdir(parents=True)
    if backend == "python":
        head = 'backend: "python"'
        shutil.copy2(onnx, net_dir / "1" / "model.onnx")
        shutil.copy2(_TEMPLATE, net_dir / "1" / "model.py")
        (net_dir / "1" / "scopecast.json").write_text(_spec(m, "network", "model.onnx", net_name, threads))
    elif backend == "onnxruntime":
        head = 'platform: "onnxruntime_onnx"'
        shutil.copy2(onnx, net_dir / "1" / "model.onnx")
    else:
        head = 'platform: "tensorrt_plan"'
        shutil.copy2(plan, net_dir / "1" / "model.plan")  # type: ignore[arg-type]
    (net_dir / "config.pbtxt").write_text(_config(
        net_name, head, m.input_name, m.output_name, m, kind, instances, max_batch,
        {**params, "scopecast_stage": "network"}))

    phys_dir = repository / m.name
    if phys_dir.exists():
        shutil.rmtree(phys_dir)
    (phys_dir / "1").mkdir(parents=True)
    weights = None
    if backend == "python":
        weights = "model.onnx"
        shutil.copy2(onnx, phys_dir / "1" / "model.onnx")
    shutil.copy2(_TEMPLATE, phys_dir / "1" / "model.py")
    (phys_dir / "1" / "scopecast.json").write_text(_spec(m, "physical", weights, net_name, threads))
    (phys_dir / "config.pbtxt").write_text(_config(
        m.name, 'backend: "python"', "raw", m.output_name, m, kind, instances, max_batch,
        {**params, "scopecast_stage": "physical", "scopecast_network": net_name}))
    return phys_dir
