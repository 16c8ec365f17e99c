"""Start the ``tritonserver`` that ships inside the ``nvidia-pytriton`` wheel on a model repository.

The PyPI wheel carries a CPU build of Triton (2.51 in nvidia-pytriton 0.7.0)
with the python backend only, and one python-backend stub per Python version.
:class:`TritonServer` lays out a backend directory with the stub for *this*
interpreter's version, puts this environment's ``bin`` first on ``PATH`` (the
stub's embedded Python takes its ``sys.prefix``, hence its site-packages with
numpy and onnxruntime, from the ``python3`` it finds there; its ``libpython``
is the system one of the same version), binds gRPC to loopback (HTTP and
metrics off) and waits until the server and every model are ready.

nvidia-pytriton pins ``numpy<2``, which the rest of scopecast cannot use: it is
not a declared dependency. Install it beside scopecast with
``pip install --no-deps nvidia-pytriton`` (only the server binary is used),
or point ``SCOPECAST_TRITONSERVER`` at another ``tritonserver`` binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["TritonServer", "TritonServerUnavailable", "find_tritonserver", "free_port"]


class TritonServerUnavailable(RuntimeError):
    """No Triton server can run here (the message says why)."""


class _PortInUse(RuntimeError):
    """The gRPC port was taken (by another process) before the server bound it."""


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stub_environment() -> Path:
    """The Python environment the python backend's stub runs in -- a workaround, DELETE with it.

    The stub's embedded Python takes its ``sys.prefix`` (hence its site-packages) from the first
    ``python3`` on ``PATH``. The stub in nvidia-pytriton 0.7.0 (Triton 2.51) is built against numpy 1.x
    (the wheel pins ``numpy<2``): with numpy 2 there, ``pb_utils.Tensor(name, array)`` answers with an
    empty output buffer and ``Tensor.from_dlpack`` fails with "PyCapsule_GetPointer called with incorrect
    name" (measured here; no upstream issue found). scopecast needs numpy 2 (zarr 3), so the server gets
    its own small environment with numpy 1.x and onnxruntime (all the exported models import):
    ``$SCOPECAST_TRITON_ENV``, else ``<this venv>-triton`` (``make test`` creates ``.venv-triton``),
    else this environment (right once the stub takes numpy 2)."""
    env = os.environ.get("SCOPECAST_TRITON_ENV")
    own = Path(env) if env else Path(sys.prefix).with_name(Path(sys.prefix).name + "-triton")
    return own if (own / "bin" / "python3").exists() else Path(sys.executable).parent.parent


def find_tritonserver() -> Path:
    """``$SCOPECAST_TRITONSERVER``, the binary in the nvidia-pytriton wheel, or ``tritonserver`` on PATH."""
    env = os.environ.get("SCOPECAST_TRITONSERVER")
    if env:
        if not Path(env).is_file():
            raise TritonServerUnavailable(f"SCOPECAST_TRITONSERVER={env} is not a file")
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(list(spec.submodule_search_locations)[0]) / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return binary
    which = shutil.which("tritonserver")
    if which:
        return Path(which)
    raise TritonServerUnavailable("no tritonserver: pip install --no-deps nvidia-pytriton (the PyPI server), "
                                  "or set SCOPECAST_TRITONSERVER")


class TritonServer:
    """A ``tritonserver`` process on ``repository``, gRPC on ``127.0.0.1:<grpc_port>``.

    Use as a context manager or call :meth:`start` / :meth:`close`. ``start``
    raises :class:`TritonServerUnavailable` when the server cannot run here
    (no binary, no stub for this Python, no libpython, the process dies before
    it listens) and ``RuntimeError`` with the server's log when it runs but a
    model does not load (a broken repository is an error, not an absent server).
    """

    def __init__(self, repository: str | Path, grpc_port: int | None = None, log_verbose: int = 0) -> None:
        self.repository = Path(repository).resolve()
        self._auto_port = grpc_port is None
        self.grpc_port = grpc_port or free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.log_verbose = log_verbose
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    def _backends(self, binary: Path, root: Path) -> Path | None:
        """A backend directory with the python backend and this interpreter's stub (None: the binary's own)."""
        dist = binary.parent.parent
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not (dist / "python_backend_stubs").is_dir():
            return None  # not the pytriton layout: the server's default backend directory
        if not stub.is_file():
            have = sorted(p.name for p in (dist / "python_backend_stubs").iterdir())
            raise TritonServerUnavailable(f"{dist} has no python-backend stub for Python "
                                          f"{sys.version_info[0]}.{sys.version_info[1]} (has {', '.join(have)})")
        libpython = f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
        try:
            import ctypes

            ctypes.CDLL(libpython)
        except OSError:
            raise TritonServerUnavailable(f"the python-backend stub needs {libpython} (the system's shared "
                                          "libpython of this version), which is not installed") from None
        be = root / "backends" / "python"
        be.mkdir(parents=True)
        for f in (dist / "backends" / "python").iterdir():
            if f.is_file():
                (be / f.name).symlink_to(f)
        shutil.copy2(stub, be / "triton_python_backend_stub")
        return root / "backends"

    def start(self, timeout: float = 60.0) -> TritonServer:
        """Start and wait until ready; an auto-chosen port taken meanwhile is replaced (3 tries)."""
        for attempt in range(3 if self._auto_port else 1):
            try:
                return self._start(timeout)
            except _PortInUse:
                if attempt == 2 or not self._auto_port:
                    raise
                self.grpc_port = free_port()
                self.url = f"127.0.0.1:{self.grpc_port}"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> TritonServer:
        binary = find_tritonserver()
        self._tmp = tempfile.TemporaryDirectory(prefix="scopecast-triton-")
        root = Path(self._tmp.name)
        cmd = [str(binary), f"--model-repository={self.repository}", "--grpc-address=127.0.0.1",
               f"--grpc-port={self.grpc_port}", "--allow-http=false", "--allow-metrics=false",
               "--strict-readiness=true", f"--log-verbose={self.log_verbose}"]
        backends = self._backends(binary, root)
        if backends is not None:
            cmd.append(f"--backend-directory={backends}")
        env = dict(os.environ)
        env["PATH"] = f"{stub_environment() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = binary.parent.parent.parent.parent / "nvidia_pytriton.libs"
        if libs.is_dir():
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (env.get("LD_LIBRARY_PATH"), str(libs)) if p)
        self.log_path = root / "tritonserver.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the process writes it until close()
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        except OSError as e:
            raise TritonServerUnavailable(f"cannot run {binary}: {e}") from None
        finally:
            log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path and self.log_path.is_file() else ""

    def _wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        t_end = time.monotonic() + timeout
        listening = False
        try:
            while True:
                code = self.process.poll() if self.process else None
                if code is not None:
                    log = self.log_tail()
                    if "already in use" in log:
                        raise _PortInUse(f"tritonserver: port {self.grpc_port} is already in use:\n{log}")
                    if listening or "failed to load" in log:
                        raise RuntimeError(f"tritonserver exited ({code}) with a model that did not load:\n{log}")
                    raise TritonServerUnavailable(f"tritonserver exited ({code}) before it listened:\n{log}")
                try:
                    listening = client.is_server_live(client_timeout=1.0) or listening
                    if client.is_server_ready(client_timeout=1.0):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                if time.monotonic() > t_end:
                    raise RuntimeError(f"tritonserver not ready after {timeout:g} s:\n{self.log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
