"""A pycro-manager acquisition that streams its frames to a scopecast inference engine.

Your own pycro-manager script keeps running the microscope; an image-processing
hook (``image_process_fn``) publishes every image it acquires, with scopecast's
frame header (docs/protocol.md, "Frame header"), on a ZeroMQ socket the engine
subscribes to -- the engine cannot tell it from the scopecast daemon. Frames
taken at one time point / position / z form one *bundle* (the model input), in
the order of ``channels``.

Run it (pycromanager's Python backend, the DemoCamera of ``pip install mm-test-adapters``)::

    # a model whose inputs are the channels you acquire (here DAPI and FITC)
    scopecast engine --model path/to/package --stream tcp://127.0.0.1:5556 --policy all
    python docs/examples/pycromanager_to_engine.py --config hardware_configs/demo-camera.cfg \\
        --channels DAPI FITC --time-points 10 --stream tcp://127.0.0.1:5556

With the Java backend (a running Micro-Manager application with its ZMQ server
on) leave out ``--config`` and start nothing: ``Acquisition`` then runs in
Micro-Manager, and the hook below works the same.
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time
import uuid
from typing import Any

import numpy as np
from pycromanager import Acquisition, Core, multi_d_acquisition_events, start_headless, stop_headless

from scopecast.daemon.frames import Frame, FrameHeader, now_ns
from scopecast.daemon.stream import FramePublisher


class EngineStream:
    """pycro-manager hooks that publish each acquired image as a scopecast frame.

    Pass ``image_process_fn=stream, post_hardware_hook_fn=stream.post_hardware``
    to ``Acquisition``. ``post_hardware`` runs once the hardware is set for an
    event, just before the camera exposes: it stamps the time and stage position
    that go into that event's header. ``__call__`` builds the header and hands
    the frame to ``publish`` (a :class:`~scopecast.daemon.stream.FramePublisher`,
    which never blocks the acquisition). With ``keep=False`` the image is not
    also kept in pycro-manager's dataset (nothing piles up in RAM).
    """

    def __init__(self, publish: Any, channels: list[str], modality: str = "fluorescence",
                 keep: bool = False) -> None:
        self.publish = publish
        self.channels = list(channels)
        self.modality = modality
        self.keep = keep
        self.acquisition_id = f"pycromanager-{uuid.uuid4().hex[:8]}"
        self.published = 0
        self._seq = itertools.count()
        self._bundles: dict[tuple, int] = {}  # non-channel axes -> bundle id
        self._stamps: dict[tuple, tuple[int, tuple[float, float, float]]] = {}
        self._lock = threading.Lock()
        self._core = Core()

    @staticmethod
    def _key(axes: dict[str, Any]) -> tuple:
        return tuple(sorted(axes.items()))

    def post_hardware(self, event: dict[str, Any] | list[dict[str, Any]]) -> Any:
        core, now = self._core, now_ns()  # pycromanager's snake_case core API (either backend)
        x, y = (core.get_x_position(), core.get_y_position()) if core.get_xy_stage_device() else (0.0, 0.0)
        z = core.get_position() if core.get_focus_device() else 0.0
        with self._lock:
            for e in event if isinstance(event, list) else [event]:
                self._stamps[self._key(e.get("axes", {}))] = (now, (float(x), float(y), float(z)))
        return event

    def __call__(self, image: np.ndarray, metadata: dict[str, Any]) -> Any:
        t_acquired = now_ns()
        axes = dict(metadata.get("Axes", {}))
        channel = str(axes.get("channel", ""))
        rest = {k: v for k, v in axes.items() if k != "channel"}
        with self._lock:
            t_start, (x, y, z) = self._stamps.pop(self._key(axes), (t_acquired, (0.0, 0.0, 0.0)))
            bundle_id = self._bundles.setdefault(self._key(rest), len(self._bundles))
        header = FrameHeader(
            acquisition_id=self.acquisition_id, seq=next(self._seq), bundle_id=bundle_id,
            bundle_index=self.channels.index(channel) if channel in self.channels else 0,
            bundle_size=len(self.channels) or 1, channel=channel, modality=self.modality, pattern="",
            detector=str(metadata.get("Camera", "")), stage_x_um=x, stage_y_um=y, stage_z_um=z,
            exposure_ms=float(metadata.get("Exposure", 0.0)),
            pixel_size_um=float(metadata.get("PixelSize_um", 0.0)),
            dtype=image.dtype.name, shape=tuple(image.shape), position_index=int(axes.get("position", 0)),
            t_exposure_start_ns=t_start, t_acquired_ns=t_acquired,
            index={"t": int(axes.get("time", 0)), "c": self.channels.index(channel) if channel in self.channels
                   else 0, "z": int(axes.get("z", 0))},
        )
        self.publish(Frame(header, np.ascontiguousarray(image)))
        self.published += 1
        return (image, metadata) if self.keep else None


def stream_acquisition(publisher: FramePublisher, channels: list[str], time_points: int,
                       exposure_ms: float, channel_group: str = "Channel") -> EngineStream:
    """Acquire ``time_points`` x ``channels`` with pycro-manager (whichever backend is
    running) and publish every image on ``publisher``; returns the hook (its
    ``acquisition_id`` and ``published`` count)."""
    stream = EngineStream(publisher, channels)
    events = multi_d_acquisition_events(num_time_points=time_points, channel_group=channel_group,
                                        channels=channels, channel_exposures_ms=[exposure_ms] * len(channels),
                                        order="tc")
    with Acquisition(image_process_fn=stream, post_hardware_hook_fn=stream.post_hardware) as acq:
        acq.acquire(events)
    return stream


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="Micro-Manager .cfg for pycromanager's Python backend "
                   "(leave out to use a running Micro-Manager application)")
    p.add_argument("--mm-path", help="device adapter folder (default: pymmcore_plus.find_micromanager())")
    p.add_argument("--stream", default="tcp://127.0.0.1:5556", help="address the engine subscribes to")
    p.add_argument("--channels", nargs="+", default=["DAPI", "FITC"])
    p.add_argument("--time-points", type=int, default=10)
    p.add_argument("--exposure-ms", type=float, default=10.0)
    p.add_argument("--wait-engine-s", type=float, default=30.0, help="wait this long for the engine to subscribe")
    args = p.parse_args(argv)
    if args.config:
        from pymmcore_plus import find_micromanager

        # an absolute path: pycromanager reads a relative one inside the adapter folder
        start_headless(args.mm_path or find_micromanager(), os.path.abspath(args.config), python_backend=True)
    publisher = FramePublisher(args.stream)
    try:
        t_end = time.monotonic() + args.wait_engine_s  # ZeroMQ drops what is sent before anyone subscribed
        while publisher.subscriptions.of("frame") == 0 and time.monotonic() < t_end:
            time.sleep(0.05)
        stream = stream_acquisition(publisher, args.channels, args.time_points, args.exposure_ms)
        t_end = time.monotonic() + 10  # let the sender finish before closing the socket
        while publisher.stats.published + publisher.stats.drops.total < stream.published and time.monotonic() < t_end:
            time.sleep(0.01)
        print(f"{stream.published} frames of {stream.acquisition_id} published on {publisher.address}")
    finally:
        publisher.close()
        if args.config:
            stop_headless()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
