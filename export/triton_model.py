"""The python-backend model that :func:`scopecast.export.triton.write_triton_repository` copies into a
Triton model repository as ``<model>/1/model.py``.

It runs inside Triton's python backend stub, never inside scopecast: it imports
only numpy, ``triton_python_backend_utils`` (the stub provides it) and, when it
holds the weights, onnxruntime. What it does is read from ``scopecast.json``
beside it, written by the exporter from the package manifest:

``stage: "network"``
    the network alone: normalized ``(N, C, H, W)`` float32 in, model units
    out; ``H``/``W`` multiples of the network's size multiple. This is what
    the scopecast engine calls (it normalizes, tiles and scales itself, as
    with every other runtime).
``stage: "physical"``
    raw camera counts in (float32, ``(N, C, H, W)``, any ``H``/``W``), physical
    units out: the manifest's normalization (the same definition as
    ``scopecast.models.manifest.normalize``), reflect padding to the size
    multiple, the network, cropping, the manifest's output scaling
    (``y * scale + offset``). No tiling: a frame is inferred whole.

The network runs in this process with onnxruntime when ``weights`` names a
file beside this one (CPU, or the CUDA provider on a ``KIND_GPU`` instance
when the server's python has onnxruntime-gpu); otherwise the physical stage
calls the ``network_model`` in the same server (business logic scripting), so
it can front an ``onnxruntime_onnx`` or ``tensorrt_plan`` model too.

Requests that arrive together (dynamic batching) are run as one batch per
frame size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend stub


def _linear(norm: dict) -> tuple[np.ndarray, np.ndarray]:
    """(gain, bias) per channel of a fixed normalization (``calibrated`` or ``mean_std``)."""
    if norm["kind"] == "calibrated":
        gain = [1.0 / float(s) for s in norm["scale"]]
        bias = [-float(o) * g for o, g in zip(norm["offset"], gain)]
    else:
        gain = [1.0 / float(s) for s in norm["std"]]
        bias = [-float(m) * g for m, g in zip(norm["mean"], gain)]
    return np.asarray(gain, np.float32), np.asarray(bias, np.float32)


def normalize(x: np.ndarray, norm: dict) -> np.ndarray:
    """Raw counts ``(N, C, H, W)`` -> model input, per image and channel, as scopecast's ``normalize``."""
    out = np.empty(x.shape, np.float32)
    if norm["kind"] == "percentile":
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                lo, hi = np.percentile(x[n, c].astype(np.float64), [norm["low"], norm["high"]])
                np.subtract(x[n, c], np.float32(lo), out=out[n, c], dtype=np.float32)
                out[n, c] *= np.float32(1.0 / (hi - lo + norm["eps"]))
        return out
    gain, bias = _linear(norm)
    if len(gain) != x.shape[1]:
        raise ValueError(f"{norm['kind']} normalization is for {len(gain)} channels, got {x.shape[1]}")
    for c in range(x.shape[1]):
        np.multiply(x[:, c], gain[c], out=out[:, c], dtype=np.float32)
        out[:, c] += bias[c]
    return out


class TritonPythonModel:
    """Triton python-backend entry point (``initialize`` / ``execute``)."""

    def initialize(self, args: dict) -> None:
        here = Path(args["model_repository"]) / args["model_version"]
        self.spec = json.loads((here / "scopecast.json").read_text())
        self.session = None
        weights = self.spec.get("weights")
        if weights:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            threads = int(self.spec.get("threads") or 0)
            if threads:
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers: list = ["CPUExecutionProvider"]
            if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}))
            self.session = ort.InferenceSession(str(here / weights), opts, providers=providers)

    # ------------------------------------------------------------------ network
    def _network(self, x: np.ndarray) -> np.ndarray:
        s = self.spec
        if self.session is not None:
            return self.session.run([s["output_name"]], {s["input_name"]: x})[0]
        req = pb_utils.InferenceRequest(model_name=s["network_model"], requested_output_names=[s["output_name"]],
                                        inputs=[pb_utils.Tensor(s["input_name"], x)])
        resp = req.exec()
        if resp.has_error():
            raise RuntimeError(f"network model {s['network_model']!r}: {resp.error().message()}")
        return pb_utils.get_output_tensor_by_name(resp, s["output_name"]).as_numpy()

    def _physical(self, raw: np.ndarray) -> np.ndarray:
        s = self.spec
        n, c, h, w = raw.shape
        x = normalize(raw, s["normalization"])
        m = int(s["multiple"])
        ph, pw = -(-h // m) * m - h, -(-w // m) * m - w
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")
        f = int(s["scale_factor"])
        y = np.ascontiguousarray(self._network(x)[:, :, : h * f, : w * f], dtype=np.float32)
        sc = s.get("output_scaling")
        if sc is not None:
            y *= np.asarray(sc["scale"], np.float32)[None, :, None, None]
            y += np.asarray(sc["offset"], np.float32)[None, :, None, None]
        return y

    # ------------------------------------------------------------------ serving
    def execute(self, requests: list) -> list:
        s = self.spec
        physical = s["stage"] == "physical"
        in_name = "raw" if physical else s["input_name"]
        arrays, responses = [], [None] * len(requests)
        for i, r in enumerate(requests):
            arrays.append(np.asarray(pb_utils.get_input_tensor_by_name(r, in_name).as_numpy(), np.float32))
        by_shape: dict[tuple, list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape[1:], []).append(i)
        for idx in by_shape.values():
            try:
                x = np.concatenate([arrays[i] for i in idx]) if len(idx) > 1 else arrays[idx[0]]
                y = self._physical(x) if physical else self._network(np.ascontiguousarray(x))
                start = 0
                for i in idx:
                    k = arrays[i].shape[0]
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(s["output_name"], y[start : start + k])])
                    start += k
            except Exception as e:  # noqa: BLE001 - every failure goes back to its requests
                for i in idx:
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
        return responses
