"""The Triton runtime: the engine's tiles go to a Triton Inference Server over gRPC.

Chosen with ``--runtime triton://HOST:PORT/MODEL`` (``open_runtime`` with a
``triton://`` preference); ``--model`` still names the local package, whose
manifest the engine needs for its input guards, normalization, tiling, output
scaling and trust verdicts, exactly as with the local runtimes. Many engines
(one per daemon or stream) can share one server, whose dynamic batcher merges
their requests.

``MODEL`` is a model of a repository written by
:func:`scopecast.export.triton.write_triton_repository`: the physical model
``<name>`` (then its network ``<name>-net``, named in its config, is called)
or ``<name>-net`` itself. The runtime refuses a server model whose
``scopecast_manifest_sha256`` parameter is not the package's sha256: results
carry the package's hash, so they must come from its weights.

Shared memory: when ``HOST`` is loopback the tensors travel through POSIX
shared memory regions registered with the server (``tritonclient.utils.shared_memory``;
only the request and its metadata go over gRPC). ``?shm=off`` sends them in
the gRPC messages instead (always the case for a remote host).
``?timeout=S`` bounds one request (default 30 s).
"""

from __future__ import annotations

import logging
import uuid
import weakref
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .package import ModelPackage

__all__ = ["TritonRuntime", "parse_triton_url"]

log = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_triton_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``triton://host:port/model[?shm=auto|off&timeout=S]`` -> (``host:port``, model, options)."""
    parts = urlsplit(url)
    if parts.scheme != "triton" or not parts.hostname or not parts.port:
        raise ValueError(f"bad Triton address {url!r}: use triton://HOST:PORT/MODEL (the server's gRPC port)")
    model = parts.path.strip("/")
    if not model or "/" in model:
        raise ValueError(f"bad Triton address {url!r}: name one model after the port, "
                         f"e.g. triton://{parts.netloc}/virtual-staining")
    opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(opts) - {"shm", "timeout"}
    if unknown or opts.get("shm", "auto") not in ("auto", "off"):
        raise ValueError(f"bad Triton address {url!r}: options are shm=auto|off and timeout=SECONDS")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}", model, opts


class _Region:
    """One system shared-memory region registered with the server (grown on demand)."""

    def __init__(self, client: Any, tag: str) -> None:
        self.client, self.tag = client, tag
        self.name = ""
        self.handle: Any = None
        self.size = 0

    def ensure(self, nbytes: int) -> None:
        if nbytes <= self.size:
            return
        self.release()
        import tritonclient.utils.shared_memory as shm

        self.name = f"scopecast_{self.tag}_{uuid.uuid4().hex[:12]}"
        self.handle = shm.create_shared_memory_region(self.name, "/" + self.name, nbytes)
        self.client.register_system_shared_memory(self.name, "/" + self.name, nbytes)
        self.size = nbytes

    def release(self) -> None:
        if self.handle is None:
            return
        import tritonclient.utils.shared_memory as shm

        try:
            self.client.unregister_system_shared_memory(self.name)
        except Exception:  # noqa: BLE001 - the server may be gone; the region is still ours to free
            pass
        shm.destroy_shared_memory_region(self.handle)
        self.handle, self.size = None, 0


def _release(regions: list[_Region], client: Any) -> None:
    for r in regions:
        r.release()
    client.close()


class TritonRuntime:
    """Runs ``(N, C, h, w)`` normalized tiles on a Triton server's network model (see the module doc).

    Raises :class:`~.runtimes.RuntimeUnavailable` when the server cannot be
    reached or is not ready, and ``RuntimeError`` when it serves a different
    model than the package's.
    """

    name = "triton"

    def __init__(self, package: ModelPackage, url: str) -> None:
        from .runtimes import RuntimeUnavailable

        if package.precision != "fp32":  # the repository holds model_file (scopecast_manifest_sha256), never a variant
            raise RuntimeError(f"--precision {package.precision}: a Triton repository serves the package's FP32 model "
                               f"({package.manifest.model_file}); the {package.precision} variant runs on the local "
                               "runtimes only (leave out --runtime triton://..., or use --precision fp32)")
        try:
            import tritonclient.grpc as grpcclient
        except ImportError as e:
            raise RuntimeUnavailable(f"the Triton runtime needs tritonclient[grpc] (the 'gpu' extra): {e}") from None
        self._grpc = grpcclient
        self.url = url
        self.address, requested, opts = parse_triton_url(url)
        self.timeout = float(opts.get("timeout", 30))
        m = package.manifest
        self.manifest = m
        self.client = grpcclient.InferenceServerClient(self.address)
        try:
            ready = self.client.is_server_ready(client_timeout=5.0)
        except Exception as e:  # noqa: BLE001 - any transport failure means: not reachable
            self.client.close()
            raise RuntimeUnavailable(f"Triton server {self.address} not reachable: {e}") from None
        if not ready:
            self.client.close()
            raise RuntimeUnavailable(f"Triton server {self.address} is not ready")
        from tritonclient.utils import InferenceServerException

        try:
            self.model = self._network_of(requested)
            cfg = self._config(self.model)
            self.server_version = self.client.get_server_metadata(client_timeout=5.0).version
        except InferenceServerException as e:
            self.client.close()
            raise RuntimeUnavailable(f"Triton server {self.address}: {e}") from None
        except BaseException:
            self.client.close()
            raise
        self.max_batch = int(cfg.get("max_batch_size") or 0) or 1 << 30
        host = self.address.rsplit(":", 1)[0].strip("[]")
        self.shared_memory = opts.get("shm", "auto") == "auto" and host in _LOOPBACK
        self._in = _Region(self.client, "in")
        self._out = _Region(self.client, "out")
        self._finalizer = weakref.finalize(self, _release, [self._in, self._out], self.client)
        self.skipped: list[str] = []
        log.info("triton runtime: %s model %s (server %s, shared memory %s)", self.address, self.model,
                 self.server_version, "on" if self.shared_memory else "off")

    def _config(self, model: str) -> dict[str, Any]:
        if not self.client.is_model_ready(model, client_timeout=5.0):
            from .runtimes import RuntimeUnavailable

            raise RuntimeUnavailable(f"Triton server {self.address} has no ready model {model!r}")
        return self.client.get_model_config(model, as_json=True, client_timeout=5.0)["config"]

    def _network_of(self, requested: str) -> str:
        """The network model to call for ``requested``, checked against the package."""
        m = self.manifest
        cfg = self._config(requested)
        params = {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        model = requested
        if params.get("scopecast_stage") == "physical":
            model = params.get("scopecast_network") or ""
            if not model:
                raise RuntimeError(f"Triton model {requested!r} names no network (scopecast_network parameter)")
            cfg = self._config(model)
            params = {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}
        served = params.get("scopecast_manifest_sha256")
        if served != m.sha256:
            raise RuntimeError(
                f"Triton model {model!r} on {self.address} serves "
                + (f"weights of sha256 {served[:12]}…" if served else "a model without a scopecast manifest hash")
                + f", not package {m.name!r} ({m.short_hash}…): export the repository from this package")
        inputs = [i["name"] for i in cfg.get("input", [])]
        outputs = [o["name"] for o in cfg.get("output", [])]
        if m.input_name not in inputs or m.output_name not in outputs:
            raise RuntimeError(f"Triton model {model!r} has inputs {inputs} and outputs {outputs}; the package "
                               f"needs {m.input_name!r} -> {m.output_name!r}")
        return model

    def _infer(self, x: np.ndarray) -> np.ndarray:
        g = self._grpc
        m = self.manifest
        n, _, h, w = x.shape
        s = m.scale_factor
        out_shape = (n, len(m.outputs), h * s, w * s)
        out_bytes = int(np.prod(out_shape)) * 4
        inp = g.InferInput(m.input_name, list(x.shape), "FP32")
        req = g.InferRequestedOutput(m.output_name)
        if not self.shared_memory:
            inp.set_data_from_numpy(x)
            res = self.client.infer(self.model, [inp], outputs=[req], client_timeout=self.timeout)
            return res.as_numpy(m.output_name)
        import tritonclient.utils.shared_memory as shm

        self._in.ensure(x.nbytes)
        self._out.ensure(out_bytes)
        shm.set_shared_memory_region(self._in.handle, [x])
        inp.set_shared_memory(self._in.name, x.nbytes)
        req.set_shared_memory(self._out.name, out_bytes)
        res = self.client.infer(self.model, [inp], outputs=[req], client_timeout=self.timeout)
        shape = tuple(res.get_output(m.output_name).shape)
        if shape != out_shape:
            raise RuntimeError(f"Triton model {self.model!r} returned shape {shape}, expected {out_shape}")
        return shm.get_contents_as_numpy(self._out.handle, np.float32, out_shape).copy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.shape[0] <= self.max_batch:
            return self._infer(x)
        return np.concatenate([self._infer(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)])

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "server": self.address, "model": self.model,
                "server_version": self.server_version, "shared_memory": self.shared_memory}

    def close(self) -> None:
        """Unregister and free the shared-memory regions, close the channel (also done when collected)."""
        self._finalizer()
