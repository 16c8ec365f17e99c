"""The inference engine service: frames in from the daemon's stream, results out.

::

    SUB (daemon frames) -> receiver thread -> BundleAssembler -> BundleQueue
        -> N InferenceWorker threads -> PUB (results, stats, errors)
    REP (engine control: status, load_model, set_policy)

Policy ``live`` keeps only the newest complete bundle waiting: a bundle that
is replaced before a worker takes it is dropped and counted
(``engine:superseded``). Policy ``all`` queues every bundle; when the queue is
full the receiver waits, so this engine's queue at the daemon's socket fills
and the frames the socket then drops are counted here (``transport:lost``).

Every drop and error is counted by ``stage:reason`` and sent in ``stats``
messages once a second; errors (a bundle the model cannot use, NaN output, a
model that fails to load) are also sent as ``error`` messages. The engine keeps
serving after any of them. The receive path cannot die: a malformed message
(``receive:undecodable``, ``receive:bad_header``, ``receive:size_mismatch``),
a frame of a channel the model does not use (``engine:unused_channel``) or
frames lost on the way (``transport:lost``: gaps in ``stream_seq``, and frames the
daemon's next ``stats`` message says it sent after the last one received) are
counted and the stream goes on.

``load_model`` reads only packages inside the directories the operator allowed
(``model_dirs``: by default the first package's parent and the shipped packages).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..confine import confined
from ..control import ControlServer
from ..frames import now_ns
from ..security import bind_socket, connect_socket, watch_handshakes
from ..shm_results import SharedResultRing
from ..stream import BadMessage, DropCounter, SubscriptionCounter, bound_subscriptions, decode, threads_ended
from ..wire import dumps_strict
from .package import ModelPackage, load_package
from .runtimes import default_threads, open_runtime
from .worker import BundleMismatch, InferenceWorker, NonFiniteOutput, Result, StreamFrame

__all__ = [
    "DEFAULT_ENGINE_CONTROL_ADDRESS", "DEFAULT_RESULTS_ADDRESS", "BundleAssembler", "BundleQueue",
    "InferenceEngine", "LatencyStats", "TrustSummary",
]

log = logging.getLogger(__name__)

DEFAULT_RESULTS_ADDRESS = "tcp://127.0.0.1:5557"
DEFAULT_ENGINE_CONTROL_ADDRESS = "tcp://127.0.0.1:5558"

STAGES = ("acquire", "publish", "transport", "queue", "guards", "preprocess", "infer", "postprocess",
          "result_publish", "end_to_end")


class BundleAssembler:
    """Group stream frames into bundles and release those the model can use.

    A bundle is released when it holds every channel the model needs; frames of
    it that arrive later (channels the model does not use) are ignored. Bundles
    older than a released one that never completed are dropped
    (``engine:incomplete``); a bundle whose frames all arrived without the
    needed channels is dropped (``engine:mismatch``) and raises
    :class:`BundleMismatch` once per acquisition, unless it was not meant for
    the model (``engine:unused_channel``): it shares no channel with it, or it is
    one frame (a snap) and the model needs several. Each plane of a scan's z-stack
    (the frames' ``index.z``) is a model input of its own, as offline: a bundle's
    planes are assembled apart, so no input mixes frames of different planes. A
    mismatch found when a bundle's last frame also completes one of its planes (a
    scan's plane that has the model's channels, beside planes that lack them) is
    kept for :meth:`take_mismatch`, as :meth:`add` returns that plane.
    """

    def __init__(self, needed: list[str], drops: DropCounter, max_open: int = 8) -> None:
        self.needed = set(needed)
        self.drops = drops
        self.max_open = max_open
        self._reported: set[str] = set()  # acquisitions whose mismatch was already raised
        self._released: collections.deque[tuple] = collections.deque(maxlen=64)  # bundles already handed on
        # open planes: (acquisition, bundle, z) -> frames; frames seen per bundle (all planes), to know its end
        self._open: collections.OrderedDict[tuple, list[StreamFrame]] = collections.OrderedDict()
        self._seen: collections.OrderedDict[tuple, int] = collections.OrderedDict()
        self._mismatch: BundleMismatch | None = None  # found while a plane was released; see take_mismatch

    def add(self, frame: StreamFrame) -> list[StreamFrame] | None:
        h = frame.header
        bundle = (h["acquisition_id"], h["bundle_id"])
        key = (*bundle, int((h.get("index") or {}).get("z", 0)))
        self._seen[bundle] = self._seen.pop(bundle, 0) + 1  # every frame counts towards its bundle's end
        while len(self._seen) > 4 * self.max_open:
            self._seen.popitem(last=False)
        size = h.get("bundle_size", 1 << 30)
        # a ground-truth detector's frame (never a model input), or a channel the model does not use after its
        # plane left
        if h.get("modality") == "super-resolution" or key in self._released:
            self.drops.add("engine:unused_channel")
            if (mismatch := self._end(bundle, size)) is not None:
                raise mismatch
            return None
        frames = self._open.setdefault(key, [])
        frames.append(frame)
        if self.needed <= {f.header["channel"] for f in frames}:
            del self._open[key]
            self._released.append(key)
            for k in list(self._open):  # older bundles can no longer be the newest
                if k[0] == key[0] and k[1] < key[1]:
                    self.drops.add("engine:incomplete", len(self._open.pop(k)))
            used = [f for f in frames if f.header["channel"] in self.needed]
            if len(used) < len(frames):
                self.drops.add("engine:unused_channel", len(frames) - len(used))
            self._mismatch = self._end(bundle, size) or self._mismatch
            return used
        if (mismatch := self._end(bundle, size)) is not None:
            raise mismatch
        while len({k[:2] for k in self._open}) > self.max_open:  # bundles, not planes: a deep z-stack fits
            _, old = self._open.popitem(last=False)
            self.drops.add("engine:incomplete", len(old))
        return None

    def take_mismatch(self) -> BundleMismatch | None:
        """The mismatch the last :meth:`add` found while it released a plane (once), or None."""
        mismatch, self._mismatch = self._mismatch, None
        return mismatch

    def _end(self, bundle: tuple, size: int) -> BundleMismatch | None:
        """Once all ``size`` frames of ``bundle`` came: drop its planes still open, as not meant for the model
        (no needed channel, or a one-frame bundle) or as a mismatch (returned once per acquisition)."""
        if self._seen.get(bundle, 0) < size:
            return None
        del self._seen[bundle]
        frames = [f for k in [k for k in self._open if k[:2] == bundle] for f in self._open.pop(k)]
        have = {f.header["channel"] for f in frames}
        if not frames:
            return None
        if not self.needed & have or size == 1:  # not meant for this model (e.g. a snap)
            self.drops.add("engine:unused_channel", len(frames))
            return None
        self.drops.add("engine:mismatch", len(frames))
        if bundle[0] in self._reported:
            return None
        self._reported.add(bundle[0])
        return BundleMismatch(f"bundle {bundle[1]} of {bundle[0]} is complete with channels {sorted(have)} but "
                              f"the model needs {sorted(self.needed)}")


class BundleQueue:
    """Bundles waiting for a worker, under the ``live`` or ``all`` policy."""

    def __init__(self, policy: str, drops: DropCounter, capacity: int = 32) -> None:
        self.policy = policy
        self.drops = drops
        self.capacity = capacity
        self._items: collections.deque[list[StreamFrame]] = collections.deque()
        self._cv = threading.Condition()
        self.closed = False

    def put(self, bundle: list[StreamFrame]) -> None:
        with self._cv:
            if self.policy == "live":
                while self._items:
                    self.drops.add("engine:superseded", len(self._items.popleft()))
            else:
                while len(self._items) >= self.capacity and not self.closed:
                    self._cv.wait(0.1)
            self._items.append(bundle)
            self._cv.notify_all()

    def get(self, timeout: float = 0.1) -> list[StreamFrame] | None:
        with self._cv:
            if not self._items:
                self._cv.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class LatencyStats:
    """Rolling per-stage latency (ms) over the last ``window`` results."""

    def __init__(self, window: int = 1000) -> None:
        self._d: dict[str, collections.deque[float]] = {s: collections.deque(maxlen=window) for s in STAGES}
        self._times: collections.deque[float] = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, h: dict[str, Any]) -> None:
        def ms(a: str, b: str) -> float:
            return (h[b] - h[a]) / 1e6

        vals = {
            "acquire": ms("t_exposure_start_ns", "t_acquired_ns"),
            "publish": ms("t_acquired_ns", "t_frame_published_ns"),
            "transport": ms("t_frame_published_ns", "t_received_ns"),
            "queue": ms("t_received_ns", "t_dequeued_ns"),
            "guards": ms("t_dequeued_ns", "t_checked_ns"),  # the input guards
            "preprocess": ms("t_checked_ns", "t_preprocessed_ns"),  # what normalizing has left after the guards
            "infer": ms("t_preprocessed_ns", "t_inferred_ns"),
            "postprocess": ms("t_inferred_ns", "t_postprocessed_ns"),
            "result_publish": ms("t_postprocessed_ns", "t_published_ns"),
            "end_to_end": ms("t_acquired_ns", "t_published_ns"),
        }
        with self._lock:
            for k, v in vals.items():
                self._d[k].append(v)
            self._times.append(time.monotonic())

    def summary(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for k, d in self._d.items():
                if d:
                    a = np.fromiter(d, float)
                    out[k] = {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
                              "p99": float(np.percentile(a, 99)), "n": len(a)}
            t = [x for x in self._times if x > time.monotonic() - 5.0]
            rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        return {"latency_ms": out, "results_per_s": rate}


class TrustSummary:
    """The trust state of one model's published results (for ``status``).

    ``trusted``/``untrusted``: counts since the model was loaded; ``last``: the
    last result's ``trust`` (``ok``, ``score``, ``reasons``); ``top_reasons``:
    the most frequent reason *kinds* (the text before the first ``:``, e.g.
    ``saturated``) over the last ``window`` results, each with its count and
    the latest full reason of that kind.
    """

    def __init__(self, window: int = 200, top: int = 5) -> None:
        self.window, self.top = window, top
        self.trusted = 0
        self.untrusted = 0
        self.last: dict[str, Any] | None = None
        self._recent: collections.deque[list[str]] = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, trust: Any) -> None:
        ok = isinstance(trust, dict) and trust.get("ok") is True
        reasons = [str(r) for r in trust.get("reasons") or []] if isinstance(trust, dict) else ["no trust verdict"]
        with self._lock:
            if ok:
                self.trusted += 1
            else:
                self.untrusted += 1
            self.last = {"ok": ok, "score": trust.get("score") if isinstance(trust, dict) else None,
                         "reasons": reasons}
            self._recent.append(reasons)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            counts: collections.Counter[str] = collections.Counter()
            latest: dict[str, str] = {}
            for reasons in self._recent:
                for r in reasons:
                    kind = r.split(":", 1)[0].strip()
                    counts[kind] += 1
                    latest[kind] = r
            return {"trusted": self.trusted, "untrusted": self.untrusted, "last": self.last,
                    "window": len(self._recent),
                    "top_reasons": [{"reason": k, "count": n, "latest": latest[k]}
                                    for k, n in counts.most_common(self.top)]}


_HEADER_TYPES: dict[str, type | tuple[type, ...]] = {
    "acquisition_id": str, "bundle_id": int, "bundle_size": int, "channel": str,
}


def _check_frame_header(header: dict[str, Any], data: Any) -> None:
    """Raise :class:`BadMessage` unless ``header`` has what bundling needs, with the right types."""
    if data is None or data.ndim != 2:
        raise BadMessage("bad_header", "a stream frame needs a 2-D pixel buffer")
    for key, typ in _HEADER_TYPES.items():
        v = header.get(key)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise BadMessage("bad_header", f"stream frame header field {key!r} must be {typ.__name__}, "
                             f"got {str(v)[:40]!r}")
    if header["bundle_size"] < 1:
        raise BadMessage("bad_header", "stream frame header field 'bundle_size' must be at least 1")


class InferenceEngine:
    """Serve one model package on a frame stream."""

    def __init__(
        self, package: ModelPackage | str | Path, stream_address: str,
        results_address: str = DEFAULT_RESULTS_ADDRESS,
        control_address: str | None = DEFAULT_ENGINE_CONTROL_ADDRESS,
        workers: int = 1, runtime: str = "auto", policy: str = "live",
        warmup_shape: tuple[int, int] | None = (512, 512), batch: int = 4, threads: int | None = None,
        model_dirs: list[str | Path] | None = None, uncertainty: int = 0, precision: str = "fp32",
        uncertainty_budget: float = 0.025, uncertainty_morphology: str | None = None,
    ) -> None:
        if policy not in ("live", "all"):
            raise ValueError(f"unknown policy {policy!r}; use 'live' (newest bundle) or 'all' (keep every bundle)")
        self.ctx = zmq.Context.instance()
        self.drops = DropCounter()
        self.latency = LatencyStats()
        self.queue = BundleQueue(policy, self.drops)
        self.runtime_pref = runtime
        self.n_workers = workers
        self.threads = threads or default_threads(workers)
        self.batch = batch
        self.uncertainty = uncertainty  # dihedral TTA copies per bundle (0: off; worker.py, uncertainty.py)
        self.uncertainty_budget = uncertainty_budget  # the checks' share of inference time (0: off; worker.py)
        self.uncertainty_morphology = uncertainty_morphology  # whose validated threshold (None: the ceiling)
        self.warmup_shape = warmup_shape
        self.frames_received = 0
        self.bundles_ready = 0
        self.results_published = 0
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._stop = threading.Event()
        self._model_lock = threading.Lock()
        self._pub_lock = threading.Lock()
        self.stream_address = stream_address
        self._last_stream_seq: int | None = None
        # results: XPUB so subscriptions are countable (clients wait for them); per-subscriber queues
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, 64)
        self.pub.setsockopt(zmq.XPUB_VERBOSER, 1)
        self.pub.setsockopt(zmq.LINGER, 0)
        bound_subscriptions(self.pub)
        self.results_address = bind_socket(self.pub, results_address)
        self.subscriptions = SubscriptionCounter()
        self.shm: SharedResultRing | None = None  # results in shared memory, once a client subscribes to `shm`
        self.precision = package.precision if isinstance(package, ModelPackage) else precision
        first = package if isinstance(package, ModelPackage) else load_package(package, precision)
        from scopecast.models import packages_root

        self.model_dirs = [Path(d) for d in (model_dirs or [Path(first.path).resolve().parent, packages_root()])]
        self._install(first)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 64)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        self.sub.setsockopt(zmq.SUBSCRIBE, b"stats")  # the daemon's count of frames sent: losses at the end
        # a stream whose CurveZMQ handshake fails (keys on one side only, a key not admitted) sends nothing:
        # say so in the errors (log, status, the `error` topic) instead of waiting in silence. Watched before
        # connecting: ZeroMQ does not retry after a failed handshake, so its one event must not be missed
        self._handshakes = watch_handshakes(
            self.sub, stream_address, lambda why: self._error(f"frame stream: {why}"), self._stop)
        connect_socket(self.sub, stream_address)
        self.control: ControlServer | None = None
        if control_address:
            self.control = ControlServer(
                {"status": self.status, "load_model": self.load_model, "set_policy": self.set_policy},
                control_address, self.ctx, inline=("status", "set_policy"),
            )
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ model
    def _install(self, package: ModelPackage) -> None:
        """Open runtimes and warm up workers for ``package``, then switch to it."""
        workers = []
        for i in range(self.n_workers):
            rt = open_runtime(package, self.runtime_pref, threads=self.threads)
            w = InferenceWorker(package, rt, worker_id=i, batch=self.batch, uncertainty=self.uncertainty,
                                uncertainty_budget=self.uncertainty_budget,
                                uncertainty_morphology=self.uncertainty_morphology)
            if self.warmup_shape:
                ms = w.warm_up(self.warmup_shape)
                log.info("worker %d warmed up in %.1f ms", i, ms)
            workers.append(w)
        with self._model_lock:
            self.package = package
            self.workers = workers
            self.trust = TrustSummary()  # per model: a new model starts a new summary
            self.latency = LatencyStats()  # and new latency figures (the viewer's table names the model)
            self.assembler = BundleAssembler(package.manifest.inputs, self.drops)

    def load_model(self, path: str) -> dict[str, Any]:
        """Switch to another model package (a directory inside ``model_dirs``);
        on failure the current model keeps serving."""
        try:
            self._install(load_package(confined(path, self.model_dirs, kind="dir", what="model package"),
                                       self.precision))
        except Exception as e:
            self._error(f"load_model {path}: {e}")
            raise
        return self.describe_model()

    def set_policy(self, policy: str) -> dict[str, Any]:
        """Set how bundles wait for a worker: ``live`` (only the newest waits; an older one is dropped,
        counted as ``engine:superseded``) or ``all`` (every bundle is inferred, up to 32 queued)."""
        if policy not in ("live", "all"):
            raise ValueError(f"unknown policy {policy!r}; use 'live' or 'all'")
        self.queue.policy = policy
        return {"policy": policy}

    def describe_model(self) -> dict[str, Any]:
        m = self.package.manifest
        return {"name": m.name, "path": str(Path(self.package.path).resolve()),  # what a restart loads again
                "task": m.task, "sha256": m.sha256, "inputs": m.inputs, "outputs": m.outputs,
                "scale_factor": m.scale_factor, "precision": self.package.precision,
                "exposure_ms": m.trained_exposure_ms,  # for its inputs: inside what it was trained on
                "runtime": self.workers[0].runtime.describe(),
                "skipped_runtimes": getattr(self.workers[0].runtime, "skipped", [])}

    # ------------------------------------------------------------------ run
    def start(self) -> InferenceEngine:
        specs = [("engine-recv", self._receive), ("engine-stats", self._stats_loop)]
        specs += [(f"engine-worker-{i}", lambda i=i: self._work(i)) for i in range(self.n_workers)]
        for name, target in specs:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.control is not None:
            self.control.start()
        log.info("engine: model %s, stream %s, results %s", self.package.manifest.name,
                 self.stream_address, self.results_address)
        return self

    def close(self) -> None:
        self._stop.set()
        self.queue.close()
        ended = threads_ended(self._threads + ([self._handshakes] if self._handshakes else []), "engine")
        if self.control is not None:
            self.control.stop()
        if ended:
            self.sub.close(linger=0)
            self.pub.close(linger=0)
        if self.shm is not None:
            self.shm.close()

    def _receive(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if poller.poll(100):
                    self._receive_one(self.sub.recv_multipart(copy=False))
            except Exception as e:  # noqa: BLE001 - the receive thread must never die
                self.drops.add("receive:error")
                self._error(f"receive path: {type(e).__name__}: {e}")

    def _receive_one(self, parts: list[zmq.Frame]) -> None:
        t_rx = now_ns()
        try:
            topic, header, data = decode(parts)
            if topic == "stats":
                self._count_lost_before(header.get("frames_published"))
                return
            _check_frame_header(header, data)
        except BadMessage as e:
            self.drops.add(f"receive:{e.reason}")
            self._error(str(e))
            return
        self.frames_received += 1
        self._count_lost(header.get("stream_seq"))
        try:
            bundle = self.assembler.add(StreamFrame(header, data, t_rx))
        except BundleMismatch as e:
            self._error(str(e))
            return
        if (mismatch := self.assembler.take_mismatch()) is not None:
            self._error(str(mismatch))
        if bundle is not None:
            self.bundles_ready += 1
            self.queue.put(bundle)

    def _count_lost(self, stream_seq: Any) -> None:
        """Frames the stream sent this engine but it never received (its queue was full)."""
        if not isinstance(stream_seq, int):
            return
        last, self._last_stream_seq = self._last_stream_seq, stream_seq
        if last is not None and stream_seq > last + 1:
            self.drops.add("transport:lost", stream_seq - last - 1)

    def _count_lost_before(self, frames_published: Any) -> None:
        """The daemon's ``stats``: it had sent ``frames_published`` frames before this message, so every one
        after the last received is lost (a gap alone shows a loss only once a later frame arrives). Nothing
        is counted before this engine has received a frame (it joined the stream then)."""
        last = self._last_stream_seq
        if isinstance(frames_published, int) and last is not None and frames_published - 1 > last:
            self.drops.add("transport:lost", frames_published - 1 - last)
            self._last_stream_seq = frames_published - 1

    def _work(self, index: int) -> None:
        while not self._stop.is_set():
            bundle = self.queue.get(0.1)
            if bundle is None:
                continue
            t_deq = now_ns()
            with self._model_lock:  # the worker and its model's trust summary and latency, from one model
                worker, trust, latency = self.workers[index], self.trust, self.latency
            refs: list[dict[str, Any]] = []
            try:
                result = worker.process(bundle, t_deq,
                                        self._shm_slot(refs) if self.subscriptions.receiving("shm") else None)
            except (BundleMismatch, NonFiniteOutput) as e:
                self.drops.add("engine:mismatch" if isinstance(e, BundleMismatch) else "engine:nonfinite", len(bundle))
                self._error(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a failing bundle must not stop the worker
                self.drops.add("engine:error", len(bundle))
                self._error(f"inference failed: {type(e).__name__}: {e}")
                continue
            self.publish(result, refs[0] if refs else None, trust, latency)

    def _shm_slot(self, refs: list[dict[str, Any]]) -> Any:
        """An ``out`` for :meth:`InferenceWorker.process`: the next slot of the shared-memory result ring
        (its reference appended to ``refs``), so the worker writes the result where local clients read it."""
        def slot(shape: tuple[int, int, int]) -> np.ndarray:
            with self._pub_lock:
                self.shm = self.shm or SharedResultRing(min_slots=max(4, 2 * self.n_workers + 2))
            data, ref = self.shm.reserve(shape)
            refs.append(ref)
            return data
        return slot

    def publish(self, result: Result, shm_ref: dict[str, Any] | None = None,
                trust: TrustSummary | None = None, latency: LatencyStats | None = None) -> None:
        """Send a result, then its header alone as ``done`` (docs/protocol.md: a client that only needs to
        know when a result was published, such as live pacing, does not receive its pixels: a 1024² output
        is 4 MiB per subscriber). The engine's own counts (``status``: results, latency, trust) take it
        first, so a client that has received a result never reads a status that does not include it.

        ``shm_ref``: the result was written into the shared-memory ring: its header goes out on ``shm`` too,
        and the inline ``result`` copies the pixels (the slot is reused while a slow subscriber's queue may
        still hold the message), which the zero-copy send of a result the worker owns does not need.

        ``trust``: the trust summary of the model that computed the result, taken with its worker (default: the
        current model's): a bundle in flight when ``load_model`` switched models is not counted in the new
        model's summary. ``latency``: likewise, the latency figures of the model that computed it."""
        result.header["t_published_ns"] = now_ns()
        head = dumps_strict(result.header)
        self.results_published += 1
        (self.latency if latency is None else latency).add(result.header)
        (self.trust if trust is None else trust).add(result.header.get("trust"))
        with self._pub_lock:
            ref = self.shm.commit(shm_ref) if shm_ref is not None and self.shm is not None else None
            if ref is not None:
                self.pub.send_multipart([b"shm", dumps_strict({**result.header, "shm": ref})], flags=zmq.NOBLOCK)
            if shm_ref is None or self.subscriptions.receiving("result"):
                self.pub.send_multipart([b"result", head, result.data], flags=zmq.NOBLOCK, copy=shm_ref is not None)
            self.pub.send_multipart([b"done", head], flags=zmq.NOBLOCK)

    def _error(self, message: str) -> None:
        log.warning("engine: %s", message)
        self.errors.append(message)
        msg = {"source": "engine", "t_ns": now_ns(), "message": message[:2000]}
        with self._pub_lock:
            self.pub.send_multipart([b"error", dumps_strict(msg)], flags=zmq.NOBLOCK)

    def status(self) -> dict[str, Any]:
        """The engine stats: model, policy, counters, drops, latency per stage, trust state, recent errors
        (answered at once, never waits)."""
        return {
            "source": "engine", "t_ns": now_ns(), "model": self.describe_model(), "policy": self.queue.policy,
            "workers": self.n_workers, "frames_received": self.frames_received,
            "bundles_ready": self.bundles_ready, "results_published": self.results_published,
            "queued": len(self.queue), "dropped": self.drops.snapshot(), "dropped_total": self.drops.total,
            "subscribers": self.subscriptions.count, "subscribers_cut": dict(self.subscriptions.cut),
            "errors": list(self.errors)[-5:], **self.latency.summary(),
            "trust": {"model": self.package.manifest.name, **self.trust.summary()},
            "control": None if self.control is None else self.control.counters(),
        }

    def _stats_loop(self) -> None:
        """Take in result-stream subscriptions every 50 ms; send ``stats`` every second."""
        next_stats = time.monotonic() + 1.0
        while not self._stop.wait(0.05):
            with self._pub_lock:
                self.subscriptions.drain(self.pub)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 1.0
                msg = dumps_strict(self.status())
                with self._pub_lock:
                    self.pub.send_multipart([b"stats", msg], flags=zmq.NOBLOCK)
