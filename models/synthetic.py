"""Small fully convolutional ONNX models built with ``onnx.helper`` (no torch).

For tests and benchmarks of the engine: a stack of 3×3 convolutions with ReLU
(receptive-field radius = number of layers), optionally followed by a
constant-factor upsampling (``DepthToSpace``), with dynamic batch and spatial
axes. :func:`write_package` writes it as a model package the engine loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .manifest import MANIFEST, ModelManifest, sha256_file

__all__ = ["conv_net", "write_package"]


def conv_net(in_channels: int, out_channels: int, width: int = 16, layers: int = 4, scale: int = 1,
             seed: int = 0, nan_output: bool = False, opset: int = 18):
    """An ``onnx.ModelProto``: ``layers`` 3×3 convs (ReLU between), then ×``scale`` upsampling."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    chans = [in_channels] + [width] * (layers - 1) + [out_channels * scale * scale]
    x = "input"
    for i in range(layers):
        cin, cout = chans[i], chans[i + 1]
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        y = f"conv{i}"
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], pads=[1, 1, 1, 1]))
        x = y
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"]))
            x = f"relu{i}"
    if scale > 1:
        nodes.append(helper.make_node("DepthToSpace", [x], ["d2s"], blocksize=scale, mode="CRD"))
        x = "d2s"
    if nan_output:
        inits.append(numpy_helper.from_array(np.array([0.0], np.float32), "zero"))
        nodes.append(helper.make_node("Div", [x, "zero"], ["nan"]))
        nodes.append(helper.make_node("Sub", ["nan", "nan"], ["nanout"]))
        x = "nanout"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    graph = helper.make_graph(
        nodes, "scopecast_synthetic",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", in_channels, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", out_channels, "H2", "W2"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_package(directory: str | Path, inputs: list[str], outputs: list[str], *, name: str = "synthetic",
                  task: str = "other", width: int = 16, layers: int = 4, scale: int = 1, tile: int = 256,
                  halo: int = 16, seed: int = 0, nan_output: bool = False, **manifest_fields) -> Path:
    """Write a synthetic model package (``model.onnx`` + ``manifest.json``).

    ``manifest_fields`` go into the manifest as given (models or plain dicts):
    e.g. a ``calibrated`` ``normalization``, ``camera``, ``input_stats`` and
    ``output_range`` (from :func:`scopecast.models.dataset.calibrate`) make a
    package whose inputs the engine's guards compare with a training
    distribution.
    """
    import onnx

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = conv_net(len(inputs), len(outputs), width, layers, scale, seed, nan_output)
    onnx.save(model, directory / "model.onnx")
    manifest_fields.setdefault("multiple", 1)
    manifest = ModelManifest(
        name=name, task=task, sha256=sha256_file(directory / "model.onnx"), inputs=inputs, outputs=outputs,
        scale_factor=scale, tile=tile, halo=halo,
        provenance={"source": "scopecast.models.synthetic", "seed": seed, "width": width, "layers": layers},
        **manifest_fields,
    )
    (directory / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2))
    return directory
