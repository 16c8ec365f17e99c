"""Live paced by its engines: acquire each bundle just in time for the models.

A free-running live cycle acquires as fast as the camera goes; when the model is
slower, the engine receives and drops most bundles (policy ``live``), and on a
small machine the frames nobody uses take CPU from the model
(``benchmarks/bench_in_process.py``: ~95 frames per 512² virtual-staining
result, 1.75 ms of daemon CPU each with the simulated camera). A fixed
``interval_ms`` removes the waste but drifts against the model's varying time,
so bundles wait in the engine's queue.

:class:`EnginePacer` reads the result streams of one or more engines
(``start_live pace_from=[<results address>, ...]``: one or more engines), the ``done``
messages only (each result's header without its pixels: receiving a 4 MiB
super-resolution output over TCP took the daemon's cores ~2 ms and told it of
the result ~4 ms late, so the engine idled that long per bundle), and, as an
:class:`AcquisitionEngine` cycle gate, holds live after cycle *k* until every
engine has published its result of cycle *k − 1* (each then starts on cycle
*k*), then until the last of them will be free again (its result's time plus
its model's time per bundle) minus the time a cycle takes to acquire, so that
cycle *k + 1* is complete when the slowest model is free: one bundle in each
model, the next being acquired, none waiting and none dropped. Several engines
on one live cycle (the demo's virtual staining and super-resolution) are so
paced by the slowest. A model's time is the median of its results'
``t_published_ns − t_dequeued_ns``; the cycle's, the median of the measured
acquisitions.

Pacing never stops acquisition: a result that does not come within
``timeout_s``, or within :data:`SLOW_FACTOR` × that model's time where that is
longer (a U-Net on a 2048² CPU bundle takes seconds), lets live go on (counted
in the job's ``pacing``), and its engine is not waited for again until it
publishes a result (an engine that stopped, or that never receives its
channels, costs one timeout, not one per cycle).
"""

from __future__ import annotations

import collections
import logging
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from .stream import decode, threads_ended
from .security import connect_socket

log = logging.getLogger(__name__)

__all__ = ["EnginePacer"]

MARGIN_S = 0.002  # the next bundle is complete this long before the model is free
#: A result is waited for at most this many times the model's measured time per bundle (at least ``timeout_s``).
SLOW_FACTOR = 4.0


@dataclass
class _Engine:
    """What the pacer knows of one engine's result stream."""

    address: str
    sock: zmq.Socket
    results: int = 0
    timeouts: int = 0
    last: tuple[int, float] = (-1, 0.0)  # (bundle id, arrival time, monotonic) of its newest result
    model_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=9))
    absent: bool = False  # timed out: not waited for until it publishes again

    def model_median(self) -> float:
        return statistics.median(self.model_s) if self.model_s else 0.0

    def status(self) -> dict[str, Any]:
        return {"address": self.address, "results": self.results, "timeouts": self.timeouts,
                "model_ms": round(self.model_median() * 1e3, 2) if self.model_s else None, "absent": self.absent}


class EnginePacer:
    """Cycle gate for one live job, paced by the results published at ``addresses`` (one per engine)."""

    def __init__(self, addresses: list[str], acquisition_id: str, timeout_s: float = 2.0) -> None:
        if isinstance(addresses, str) or not addresses:
            raise ValueError(f"pacing needs a list of engine results addresses, got {addresses!r}")
        self.acquisition_id, self.timeout_s = acquisition_id, timeout_s
        self.waited_s = 0.0
        self._cycle_s: collections.deque[float] = collections.deque(maxlen=9)
        self._t_cycle_start: float | None = None
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._engines: list[_Engine] = []
        self._poller = zmq.Poller()
        try:
            for address in dict.fromkeys(addresses):  # once each, in order
                sock = zmq.Context.instance().socket(zmq.SUB)
                self._engines.append(_Engine(address, sock))
                sock.setsockopt(zmq.SUBSCRIBE, b"done")  # the result headers alone: pixels would arrive late
                sock.setsockopt(zmq.RCVHWM, 16)
                sock.setsockopt(zmq.LINGER, 0)
                connect_socket(sock, address)
                self._poller.register(sock, zmq.POLLIN)
        except BaseException:
            for e in self._engines:
                e.sock.close(linger=0)
            raise
        self._thread = threading.Thread(target=self._receive, name="live-pacer", daemon=True)
        self._thread.start()

    @property
    def results(self) -> int:
        """Results seen, all engines together."""
        with self._cv:
            return sum(e.results for e in self._engines)

    @property
    def timeouts(self) -> int:
        """Results waited for in vain, all engines together."""
        with self._cv:
            return sum(e.timeouts for e in self._engines)

    def close(self) -> None:
        self._stop.set()
        if threads_ended([self._thread], "live pacer"):
            for e in self._engines:
                e.sock.close(linger=0)

    def status(self) -> dict[str, Any]:
        """The job's ``pacing``: totals, the slowest model's median ms, the cycle's, and each engine's."""
        with self._cv:
            timed = [e.model_median() for e in self._engines if e.model_s]
            return {"from": [e.address for e in self._engines], "results": sum(e.results for e in self._engines),
                    "timeouts": sum(e.timeouts for e in self._engines), "waited_s": round(self.waited_s, 3),
                    "model_ms": round(max(timed) * 1e3, 2) if timed else None,
                    "cycle_ms": None if not self._cycle_s else round(statistics.median(self._cycle_s) * 1e3, 2),
                    "engines": [e.status() for e in self._engines]}

    def _receive(self) -> None:
        by_socket = {e.sock: e for e in self._engines}
        while not self._stop.is_set():
            for sock, _ in self._poller.poll(100):
                self._take(by_socket[sock])

    def _take(self, engine: _Engine) -> None:
        try:
            _, header, _ = decode(engine.sock.recv_multipart(copy=False))
        except Exception as e:  # noqa: BLE001 - garbage is logged, not fatal
            log.warning("live pacer: undecodable result from %s: %s", engine.address, e)
            return
        if header.get("acquisition_id") != self.acquisition_id:
            return  # another job's (or another daemon's) result
        try:
            bundle = int(header["bundle_id"])
            model_s = (int(header["t_published_ns"]) - int(header["t_dequeued_ns"])) / 1e9
        except (KeyError, TypeError, ValueError):
            return
        with self._cv:
            engine.results += 1
            engine.absent = False
            if 0 < model_s < 60:
                engine.model_s.append(model_s)
            if bundle > engine.last[0]:
                engine.last = (bundle, time.monotonic())
            self._cv.notify_all()

    def cycle_started(self) -> None:
        self._t_cycle_start = time.perf_counter()

    def gate(self, job: Any, bundle: int, previous: int | None) -> None:
        """After the cycle that made ``bundle`` (the one before made ``previous``): wait as described above."""
        if self._t_cycle_start is not None:
            self._cycle_s.append(time.perf_counter() - self._t_cycle_start)
        if previous is None:
            return  # nothing in the models yet: acquire the next bundle at once
        t0 = time.monotonic()
        with self._cv:
            slowest = max((e.model_median() for e in self._engines if not e.absent), default=0.0)
            deadline = t0 + max(self.timeout_s, SLOW_FACTOR * slowest)
            while late := [e for e in self._engines if not e.absent and e.last[0] < previous]:
                if job._stop.is_set() or self._stop.is_set():
                    return
                if time.monotonic() >= deadline:
                    for e in late:  # live goes on; these are not waited for until they publish again
                        e.timeouts += 1
                        e.absent = True
                        log.info("live pacer: no result of bundle %s from %s within %.1f s; not waiting for it "
                                 "until it publishes again", previous, e.address, deadline - t0)
                    self.waited_s += time.monotonic() - t0
                    return
                self._cv.wait(0.05)  # a stop request is seen within 50 ms
            free_at = [e.last[1] + e.model_median() for e in self._engines if not e.absent]
            cycle_s = statistics.median(self._cycle_s) if self._cycle_s else 0.0
        if free_at:  # the slowest model is free then: the next bundle is to be complete just before
            left = max(free_at) - cycle_s - MARGIN_S - time.monotonic()
            if left > 0:
                job._stop.wait(min(left, self.timeout_s))
        self.waited_s += time.monotonic() - t0
