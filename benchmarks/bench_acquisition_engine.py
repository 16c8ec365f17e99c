"""Per-frame cost of scopecast's own scan executor vs pymmcore-plus's ``MDARunner``.

The same useq ``MDASequence`` (channels x time points, one position) runs on the
simulated scope (sized sensor, short exposure, so per-frame overhead is visible
next to the camera model) five ways:

- ``core loop``: ``setConfig`` + ``snapImage`` + ``getImage`` (the floor);
- ``own acquire``: scopecast's per-frame path without recording
  (``AcquisitionEngine.acquire``: channel, stage read, snap, pixel size, header);
- ``own scan``: ``AcquisitionEngine.run_sequence`` -- the whole executor, with
  the OME-Zarr recording and frame journal it always writes;
- ``mda.run``: ``core.mda.run(seq)`` with a counting ``frameReady`` handler;
- ``mda.run + header``: the same, with a handler that builds scopecast's
  ``FrameHeader`` from ``(img, event, meta)`` (what an MDARunner-based executor
  would add before recording and publishing).

Reported per frame: wall time (min and median of ``--repeats`` runs, taken round-robin)
and the process's CPU time (all threads: the recorder's writer included), which a
loaded shared machine disturbs far less than wall time; overhead = CPU over the floor.
Run: python benchmarks/bench_acquisition_engine.py [--size 64] [--time-points 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import useq

logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

CHANNELS = ("BF", "DF", "DPC-Left")


def _sequence(time_points: int, exposure_ms: float, x: float, y: float, z: float) -> useq.MDASequence:
    return useq.MDASequence(
        channels=[useq.Channel(config=c, exposure=exposure_ms) for c in CHANNELS],
        time_plan={"interval": 0, "loops": time_points},
        stage_positions=[useq.Position(x=x, y=y, z=z)],
        axis_order="tpcz",
    )


def run(size: int, time_points: int, exposure_ms: float, repeats: int) -> dict[str, tuple[float, float, float]]:
    from scopecast.daemon.acquisition import AcquisitionEngine
    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.frames import FrameHeader
    from scopecast.daemon.plans import ChannelSpec
    from scopecast.daemon.sim import sized_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-acq-"))
    backend = load_mmcore_backend(sized_config(tmp, size))
    core = backend.core
    engine = AcquisitionEngine(backend, tmp / "data")
    seq = _sequence(time_points, exposure_ms, *backend.position_um())
    n = len(list(seq.iter_events()))
    channels = backend.channels()

    def core_loop() -> None:
        for _ in range(time_points):
            for c in CHANNELS:
                core.setConfig("Channel", c)
                core.setExposure(exposure_ms)
                core.snapImage()
                core.getImage()

    def own_acquire() -> None:
        bundle = itertools.count()
        for ev in seq.iter_events():
            backend.move_um(ev.x_pos, ev.y_pos, ev.z_pos)
            engine.acquire(ChannelSpec(name=ev.channel.config, exposure_ms=ev.exposure), acquisition_id="b",
                           bundle_id=next(bundle) // len(CHANNELS), bundle_index=ev.index.get("c", 0),
                           bundle_size=len(CHANNELS))

    def own_scan() -> None:
        job = engine.run_sequence(seq)
        engine.wait(job.id)
        assert job.status == "done" and job.frames == n, (job.status, job.error)

    def mda(build_header: bool) -> None:
        got = []
        seq_n = itertools.count()

        def frame_ready(img, event, meta) -> None:
            if build_header:
                info = channels[event.channel.config]
                pos = meta.get("position", {})
                got.append(FrameHeader(
                    acquisition_id="b", seq=next(seq_n), bundle_id=event.index.get("t", 0),
                    bundle_index=event.index.get("c", 0), bundle_size=len(CHANNELS), channel=info.name,
                    modality=info.modality, pattern=info.pattern, detector=meta.get("camera_device", ""),
                    stage_x_um=float(pos.get("x", 0.0)), stage_y_um=float(pos.get("y", 0.0)),
                    stage_z_um=float(pos.get("z", 0.0)), exposure_ms=float(meta.get("exposure_ms", 0.0)),
                    pixel_size_um=float(meta.get("pixel_size_um", 0.0)), dtype=img.dtype.name,
                    shape=img.shape))
            else:
                got.append(None)

        core.mda.events.frameReady.connect(frame_ready)
        try:
            core.mda.run(seq)
        finally:
            core.mda.events.frameReady.disconnect(frame_ready)
        assert len(got) == n, (len(got), n)

    cases = {
        "core loop": core_loop, "own acquire": own_acquire, "own scan (recorded)": own_scan,
        "mda.run": lambda: mda(False), "mda.run + header": lambda: mda(True),
    }
    for fn in cases.values():  # warm-up: optics caches, imports, first writes
        fn()
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):  # round-robin, so a burst of load on a shared machine hits every path
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - t0) * 1000 / n)
            cpu[name].append((time.process_time() - c0) * 1000 / n)
    out = {k: (min(wall[k]), statistics.median(wall[k]), statistics.median(cpu[k])) for k in cases}
    backend.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="sensor side (px)")
    p.add_argument("--time-points", type=int, default=40)
    p.add_argument("--exposure-ms", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    res = run(args.size, args.time_points, args.exposure_ms, args.repeats)
    floor = res["core loop"]
    print(f"{platform.processor() or platform.machine()}, {args.size}x{args.size} px, "
          f"{args.exposure_ms:g} ms exposure, {args.time_points} x {len(CHANNELS)} frames, {args.repeats} runs each")
    print(f"{'path':<22}{'wall min':>10}{'wall p50':>10}{'CPU p50':>10}   ms/frame; CPU over floor")
    for name, (lo, med, c) in res.items():
        print(f"{name:<22}{lo:>10.3f}{med:>10.3f}{c:>10.3f}   {c - floor[2]:+.3f}")

if __name__ == "__main__":
    main()
