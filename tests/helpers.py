"""Shared by the tests: waiting for conditions (never for fixed times), package copies with an edited
``validated`` section, and small gathered datasets."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def wait_until(cond: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll ``cond`` until it is truthy (returning its value); fail naming ``what`` after ``timeout`` s.

    The timeout is a generous upper bound for a loaded machine, never an expected duration.
    """
    t_end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def wait_subscribed(publisher, topic: str, at_least: int = 1, timeout: float = 60.0) -> None:
    """Wait until ``publisher`` (a FramePublisher or InferenceEngine) has ``at_least``
    subscriptions to ``topic`` (instead of sleeping for ZeroMQ's slow joiner). ``result`` counts ``shm`` too:
    a result subscriber on the engine's machine takes its results by shared memory."""
    topics = ("result", "shm") if topic == "result" else (topic,)
    wait_until(lambda: publisher.subscriptions.of(*topics) >= at_least, timeout,
               f"{at_least} subscription(s) to {topic!r}")


def spin(app, cond: Callable[[], object], timeout: float = 60.0) -> bool:
    """Process Qt events of ``app`` until ``cond()`` holds; False after ``timeout`` s (a bound for a loaded
    machine, never an expected duration)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.02)
    return False


def package_with_validated(src: Path, dst: Path, key: str, section: dict[str, Any] | None) -> Any:
    """A copy of the package folder ``src`` at ``dst`` whose manifest's ``validated[key]`` is ``section`` (None:
    removed), loaded as the engine loads it."""
    from scopecast.daemon.inference.package import load_package

    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    m = json.loads(path.read_text())
    m["validated"].pop(key, None)
    if section is not None:
        m["validated"][key] = section
    path.write_text(json.dumps(m))
    return load_package(dst)


class StandInEngine:
    """A stand-in engine: answers each complete live bundle of the daemon's ``stream`` with a trusted result of
    model ``m`` (one output ``channel``, every pixel ``value``; 8×8, or the camera's shape with ``full_frame``)
    carrying the bundle's timestamps, ``model_s`` after its last frame arrived (a model that takes that long).
    No model is needed to test what the daemon does with results. ``frames``: every frame header seen; ``extra``:
    header fields added to (or replacing those of) each result from now on (e.g. ``model_sha256``)."""

    def __init__(self, stream: str, model_s: float = 0.0, value: float = 0.0, channel: str = "c",
                 task: str | None = None, full_frame: bool = False) -> None:
        import threading

        import zmq

        from scopecast.daemon.stream import StreamSubscriber

        self.value, self.model_s, self.channel, self.task, self.full_frame = value, model_s, channel, task, full_frame
        self.frames: list[dict] = []
        self.extra: dict = {}
        self.pub = zmq.Context.instance().socket(zmq.XPUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind("tcp://127.0.0.1:*")
        self.address = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sub = StreamSubscriber(stream, ("frame",))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def wait_subscriber(self) -> None:
        """The trigger runner's subscription has reached this publisher."""
        assert self.pub.poll(60_000), "the trigger runner never subscribed to the results"
        assert self.pub.recv()[0] == 1

    def _run(self) -> None:
        import numpy as np

        from scopecast.daemon.wire import dumps_strict

        bundles: dict[tuple, list[dict]] = {}
        while not self._stop.is_set():
            m = self.sub.recv(0.1)
            if m is None:
                continue
            h = m[1]
            self.frames.append(h)
            got = bundles.setdefault((h["acquisition_id"], h["bundle_id"]), [])
            got.append(h)
            if len(got) < h["bundle_size"] or "-live-" not in h["acquisition_id"]:
                continue
            last = max(got, key=lambda f: f["t_acquired_ns"])
            t = time.time_ns()
            if self.model_s:
                time.sleep(self.model_s)  # the model computing (this stand-in's only cost)
            shape = [1, *h["shape"]] if self.full_frame else [1, 8, 8]
            header = {
                "kind": "result", "model": "m", "channels": [self.channel], "shape": shape, "dtype": "float32",
                "acquisition_id": h["acquisition_id"], "bundle_id": h["bundle_id"],
                "source_seqs": [f["seq"] for f in got], "stage_x_um": h["stage_x_um"], "stage_y_um": h["stage_y_um"],
                "stage_z_um": h["stage_z_um"], "pixel_size_um": h["pixel_size_um"],
                "t_exposure_start_ns": last["t_exposure_start_ns"], "t_acquired_ns": last["t_acquired_ns"],
                "t_frame_published_ns": max(f["t_published_ns"] for f in got), "t_received_ns": t,
                "t_dequeued_ns": t, "t_preprocessed_ns": t, "t_inferred_ns": t, "t_postprocessed_ns": time.time_ns(),
                "t_published_ns": time.time_ns(), "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}},
            }
            if self.task:
                header["task"] = self.task
            header.update(self.extra)
            self.pub.send_multipart([b"result", dumps_strict(header), np.full(shape, self.value, np.float32)])

    def __enter__(self) -> StandInEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)  # generous: a starved thread must be done before its sockets are closed
        self.sub.close()
        self.pub.close(linger=0)


@contextlib.contextmanager
def live_under_triggers(daemon, client, config: dict, channels: list | None = None,
                        **engine: Any) -> Iterator[Path]:
    """Triggers ``config`` watching a :class:`StandInEngine` (``engine``: its arguments; the model key ``m``) while
    live runs over ``channels`` (BF at 5 ms): yields the decision log's path. Live is stopped when the block ends
    without an error, and the triggers are unloaded in any case."""
    with StandInEngine(daemon.stream_address, **engine) as stand_in:
        wait_subscribed(daemon.publisher, "frame")
        log = Path(client.request("load_triggers", config=config, sources={"m": stand_in.address})["log"])
        try:
            stand_in.wait_subscriber()
            client.request("start_live", channels=channels or [{"name": "BF", "exposure_ms": 5}])
            yield log
            client.request("stop")
        finally:
            client.request("unload_triggers")


@contextlib.contextmanager
def engine_beside_a_bare_stream(package: Path) -> Iterator[Any]:
    """A real :class:`~scopecast.daemon.inference.engine.InferenceEngine` serving ``package``, subscribed to a bare
    PUB socket no frame comes on (its control socket is what is under test); closed with it at the end."""
    import zmq

    from scopecast.daemon.inference.engine import InferenceEngine

    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    engine = InferenceEngine(package, pub.getsockopt_string(zmq.LAST_ENDPOINT), "tcp://127.0.0.1:*",
                             "tcp://127.0.0.1:*", warmup_shape=None).start()
    try:
        yield engine
    finally:
        engine.close()
        pub.close(linger=0)


def log_lines(log: Path) -> list[dict]:
    """The JSON lines of a trigger decision log written so far (none before it exists)."""
    return [json.loads(t) for t in log.read_text().splitlines()] if log.exists() else []


def gather_small(out: Path, task: str, size: int, n_train: int, n_val: int, seed: int) -> Path:
    """``out``: a dataset of ``task`` gathered (``models.dataset.gather``) from a daemon on the simulator with a
    ``size``² sensor, its recordings beside it in ``out``'s parent."""
    from conftest import small_cfg

    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.service import Daemon
    from scopecast.models.dataset import gather

    d = Daemon(load_mmcore_backend(small_cfg(out.parent, size)), out.parent / f"{out.name}-recordings",
               "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    try:
        gather(d.control_address, task, out, n_train=n_train, n_val=n_val, seed=seed)
    finally:
        d.close()
    return out
