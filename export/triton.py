"""Triton Inference Server model repository for a package (scale-out serving)."""

from __future__ import annotations

import shutil
from pathlib import Path

from scopecast.models.manifest import ModelManifest

__all__ = ["write_triton_repository"]


def write_triton_repository(package: Path, m: ModelManifest, repository: Path, instances: int = 1,
                            gpu: bool = False, max_batch: int = 8) -> Path:
    """``<repository>/<name>/config.pbtxt`` + ``1/model.onnx`` (or ``model.plan``), dynamic batching."""
    model_dir = repository / m.name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    plan = package / m.plan_file if m.plan_file else None
    if plan is not None and plan.is_file() and gpu:
        platform, src, dst = "tensorrt_plan", plan, "model.plan"
    else:
        platform, src, dst = "onnxruntime_onnx", package / m.model_file, "model.onnx"
    shutil.copy2(src, model_dir / "1" / dst)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    config = f'''name: "{m.name}"
platform: "{platform}"
max_batch_size: {max_batch}
input [
  {{
    name: "{m.input_name}"
    data_type: TYPE_FP32
    dims: [ {len(m.inputs)}, -1, -1 ]
  }}
]
output [
  {{
    name: "{m.output_name}"
    data_type: TYPE_FP32
    dims: [ {len(m.outputs)}, -1, -1 ]
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {max(1, max_batch // 2)}, {max_batch} ]
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: {instances}
    kind: {kind}
  }}
]
parameters: {{ key: "scopecast_manifest_sha256" value: {{ string_value: "{m.sha256}" }} }}
'''
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir
