"""Live paced by an engine: acquire each bundle just in time for the model.

A free-running live cycle acquires as fast as the camera goes; when the model is
slower, the engine receives and drops most bundles (policy ``live``), and on a
small machine the frames nobody uses take CPU from the model
(``benchmarks/bench_in_process.py``: ~95 frames per 512² virtual-staining
result, 1.75 ms of daemon CPU each with the simulated camera). A fixed
``interval_ms`` removes the waste but drifts against the model's varying time,
so bundles wait in the engine's queue.

:class:`EnginePacer` reads the engine's result stream (``start_live
pace_from=<results address>``), the ``done`` messages only (each result's header
without its pixels: receiving a 4 MiB super-resolution output over TCP took the
daemon's cores ~2 ms and told it of the result ~4 ms late, so the engine idled
that long per bundle), and, as an :class:`AcquisitionEngine` cycle gate,
holds live after cycle *k* until the result of cycle *k − 1* has arrived (the
engine then starts on cycle *k*), then until that result's time plus the
model's time per bundle minus the time a cycle takes to acquire, so that cycle
*k + 1* is complete when the model is free again: one bundle in the model, the
next being acquired, none waiting and none dropped. The model's time is the
median of the results' ``t_published_ns − t_dequeued_ns``; the cycle's, the
median of the measured acquisitions. A result that does not come within
``timeout_s``, or within :data:`SLOW_FACTOR` × the model's time where that is longer
(a U-Net on a 2048² CPU bundle takes seconds), lets live go on (an engine that
stopped, or dropped the bundle; counted in the job's ``pacing``), so pacing never
stops acquisition.
"""

from __future__ import annotations

import collections
import logging
import statistics
import threading
import time
from typing import Any

import zmq

from .stream import decode
from .security import connect_socket

log = logging.getLogger(__name__)

__all__ = ["EnginePacer"]

MARGIN_S = 0.002  # the next bundle is complete this long before the model is free
#: A result is waited for at most this many times the model's measured time per bundle (at least ``timeout_s``).
SLOW_FACTOR = 4.0


class EnginePacer:
    """Cycle gate for one live job, paced by the results published at ``address``."""

    def __init__(self, address: str, acquisition_id: str, timeout_s: float = 2.0) -> None:
        self.address, self.acquisition_id, self.timeout_s = address, acquisition_id, timeout_s
        self.results = 0
        self.timeouts = 0
        self.waited_s = 0.0
        self._model_s: collections.deque[float] = collections.deque(maxlen=9)
        self._cycle_s: collections.deque[float] = collections.deque(maxlen=9)
        self._last: tuple[int, float] = (-1, 0.0)  # (bundle id, arrival time, monotonic) of the newest result
        self._t_cycle_start: float | None = None
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"done")  # the result headers alone: pixels would arrive late
        self._sock.setsockopt(zmq.RCVHWM, 16)
        self._sock.setsockopt(zmq.LINGER, 0)
        connect_socket(self._sock, address)
        self._thread = threading.Thread(target=self._receive, name="live-pacer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)

    def status(self) -> dict[str, Any]:
        with self._cv:
            return {"from": self.address, "results": self.results, "timeouts": self.timeouts,
                    "waited_s": round(self.waited_s, 3),
                    "model_ms": None if not self._model_s else round(statistics.median(self._model_s) * 1e3, 2),
                    "cycle_ms": None if not self._cycle_s else round(statistics.median(self._cycle_s) * 1e3, 2)}

    def _receive(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(100):
                continue
            try:
                _, header, _ = decode(self._sock.recv_multipart(copy=False))
            except Exception as e:  # noqa: BLE001 - garbage is logged, not fatal
                log.warning("live pacer: undecodable result from %s: %s", self.address, e)
                continue
            if header.get("acquisition_id") != self.acquisition_id:
                continue  # another job's (or another daemon's) result
            try:
                bundle = int(header["bundle_id"])
                model_s = (int(header["t_published_ns"]) - int(header["t_dequeued_ns"])) / 1e9
            except (KeyError, TypeError, ValueError):
                continue
            with self._cv:
                self.results += 1
                if 0 < model_s < 60:
                    self._model_s.append(model_s)
                if bundle > self._last[0]:
                    self._last = (bundle, time.monotonic())
                self._cv.notify_all()

    def cycle_started(self) -> None:
        self._t_cycle_start = time.perf_counter()

    def gate(self, job: Any, bundle: int, previous: int | None) -> None:
        """After the cycle that made ``bundle`` (the one before made ``previous``): wait as described above."""
        if self._t_cycle_start is not None:
            self._cycle_s.append(time.perf_counter() - self._t_cycle_start)
        if previous is None:
            return  # nothing in the model yet: acquire the next bundle at once
        t0 = time.monotonic()
        with self._cv:
            measured = statistics.median(self._model_s) if self._model_s else 0.0
            deadline = t0 + max(self.timeout_s, SLOW_FACTOR * measured)
            while self._last[0] < previous:
                if job._stop.is_set() or self._stop.is_set():
                    return
                if time.monotonic() >= deadline:
                    self.timeouts += 1
                    self.waited_s += time.monotonic() - t0
                    return
                self._cv.wait(0.05)  # a stop request is seen within 50 ms
            t_result = self._last[1]
            model_s = statistics.median(self._model_s) if self._model_s else 0.0
            cycle_s = statistics.median(self._cycle_s) if self._cycle_s else 0.0
        start_next = t_result + model_s - cycle_s - MARGIN_S
        left = start_next - time.monotonic()
        if left > 0:
            job._stop.wait(min(left, self.timeout_s))
        self.waited_s += time.monotonic() - t0
