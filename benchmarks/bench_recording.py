"""Recording throughput at 2048² uint16 (a sCMOS at 100 frames/s needs 839 MB/s), blosc-lz4.

Writers, side by side on the same frames (``--frames`` of them, ``--rounds`` rounds):

- ``scopecast Recorder``: the daemon's recorder (tensorstore chunk writes off the
  caller's thread, bounded queue, journal once durable). ``accepted`` is the rate
  the acquiring thread sees (``write`` returns), ``durable`` includes waiting for
  the last chunk to be committed (fsync'ed) and the close (metadata, OME-XML).
- ``zarr-python, synchronous``: the recorder before issue 14 (one zarr-python
  chunk write plus a journal line per frame, on the acquiring thread).
- ``ome-writers (tensorstore)``: ome-writers' OME-Zarr stream, same codec.
- ``tifffile``: one uncompressed BigTIFF, the sequential-write ceiling.
- ``daemon live, near-free camera``: the acquisition engine's live job recording
  through the recorder, with a backend that returns a prebuilt frame at once, so
  the figure is what recording lets the daemon sustain.

    python benchmarks/bench_recording.py [--frames 180] [--rounds 3] [--size 2048] [--dir DIR] [--back-memory GIB]

``--back-memory GIB`` is a diagnostic for virtual machines that hand free memory back to the host (a
virtio balloon with free page reporting, as on the development machine): there the page cache a writer
fills lands on memory the host must back anew, and the kernel's copy into it runs at ~0.4 GB/s instead of
~4.4 GB/s. Touching and freeing GIB of memory right before each writer makes its page cache land on backed
memory, as on a physical machine; the host takes freed memory back within ~20 s, so it is done every time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scopecast.daemon.backend import ChannelInfo, Snap
from scopecast.daemon.frames import Frame, FrameHeader, now_ns
from scopecast.daemon.recording import Recorder, SeriesSpec, open_recording

CAMERA_NEED_MB_S = 2048 * 2048 * 2 * 100 / 1e6  # sCMOS, 2048², 100 frames/s


def _frames(size: int, n: int = 8) -> list[np.ndarray]:
    """``n`` distinct camera-like frames: a smooth specimen (1-15 k counts) plus shot noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 1000 + 14000 * (0.5 + 0.5 * np.sin(12 * x) * np.cos(9 * y)) ** 2
    return [np.clip(rng.poisson(base), 0, 65535).astype(np.uint16) for _ in range(n)]


def _header(i: int, size: int) -> FrameHeader:
    t = now_ns()
    return FrameHeader(acquisition_id="bench", seq=i, bundle_id=i, bundle_index=0, bundle_size=1, channel="BF",
                       modality="label-free", pattern="bf", detector="Camera", stage_x_um=0.0, stage_y_um=0.0,
                       stage_z_um=0.0, exposure_ms=10.0, pixel_size_um=0.65, dtype="uint16", shape=(size, size),
                       position_index=0, t_exposure_start_ns=t, t_acquired_ns=t)


def bench_recorder(d: Path, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    size = frames[0].shape[0]
    rec = Recorder(d / "rec.ome.zarr", "bench", {"kind": "bench"})
    s = rec.add_series(SeriesSpec("bench", ("BF",), ("label-free",), (size, size), "uint16", 0.65, (0.0, 0.0, 0.0)))
    t0 = time.perf_counter()
    for i in range(n):
        rec.write(Frame(_header(i, size), frames[i % len(frames)]), s, i, 0)
    accepted = time.perf_counter() - t0
    rec.close()
    durable = time.perf_counter() - t0
    assert len(open_recording(d / "rec.ome.zarr").frames) == n
    return accepted, durable


def bench_zarr_sync(d: Path, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    import zarr
    from zarr.codecs.numcodecs import Blosc  # noqa: F401 - numcodecs codecs for zarr 2 arrays

    size = frames[0].shape[0]
    root = zarr.open_group(str(d / "sync.zarr"), mode="w-", zarr_format=2)
    arr = root.create_array("0", shape=(16, 1, 1, size, size), chunks=(1, 1, 1, size, size), dtype="uint16",
                            fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                            compressors=[{"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}])
    journal = open(d / "sync.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    t0 = time.perf_counter()
    for i in range(n):
        if i >= arr.shape[0]:
            arr.resize((arr.shape[0] + 16, *arr.shape[1:]))
        arr[i, 0, 0] = frames[i % len(frames)]
        journal.write(json.dumps(_header(i, size).to_dict()) + "\n")
        journal.flush()
    journal.close()
    dt = time.perf_counter() - t0
    return dt, dt


def bench_ome_writers(d: Path, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    import ome_writers as ow

    size = frames[0].shape[0]
    settings = ow.AcquisitionSettings(
        root_path=str(d / "ow.ome.zarr"),
        dimensions=[ow.Dimension(name="t", count=n, chunk_size=1, type="time"),
                    ow.Dimension(name="y", count=size, chunk_size=size, type="space"),
                    ow.Dimension(name="x", count=size, chunk_size=size, type="space")],
        dtype="uint16", format=ow.OmeZarrFormat(backend="tensorstore"), compression="blosc-lz4")
    stream = ow.create_stream(settings)
    t0 = time.perf_counter()
    for i in range(n):
        stream.append(frames[i % len(frames)])
    accepted = time.perf_counter() - t0
    stream.close()
    return accepted, time.perf_counter() - t0


def bench_tifffile(d: Path, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    import tifffile

    t0 = time.perf_counter()
    with tifffile.TiffWriter(d / "t.tif", bigtiff=True) as tw:
        for i in range(n):
            tw.write(frames[i % len(frames)], contiguous=True, metadata=None)
    dt = time.perf_counter() - t0
    return dt, dt


class FreeCamera:
    """A backend whose camera returns a prebuilt frame at once (the acquisition costs ~nothing)."""

    main_camera = "Camera"

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.lock = threading.RLock()
        self._frames, self._i = frames, 0

    def channels(self) -> dict[str, ChannelInfo]:
        return {"BF": ChannelInfo("BF", "label-free", "bf")}

    def patterns(self) -> tuple[str, ...]:
        return ("bf",)

    def detectors(self) -> tuple[str, ...]:
        return ("Camera",)

    def current_channel(self) -> str:
        return "BF"

    def current_pattern(self) -> str:
        return "bf"

    def set_channel(self, name: str) -> None: ...
    def set_pattern(self, name: str) -> None: ...

    def exposure_ms(self, detector: str | None = None) -> float:
        return 1.0

    def set_exposure_ms(self, value: float, detector: str | None = None) -> None: ...

    def exposure_range_ms(self, detector: str | None = None) -> tuple[float, float]:
        return (0.01, 1e4)

    def check_exposure_ms(self, value: float, detector: str | None = None) -> None: ...

    def position_um(self) -> tuple[float, float, float]:
        return (0.0, 0.0, 0.0)

    def move_um(self, x: float | None = None, y: float | None = None, z: float | None = None) -> None: ...

    def pixel_size_um(self, detector: str | None = None) -> float:
        return 0.65

    def snap(self, detector: str | None = None, exposure_ms: float | None = None) -> Snap:
        self._i += 1
        t = now_ns()
        return Snap(self._frames[self._i % len(self._frames)], "Camera", t, t, 1.0, {})

    def describe(self) -> dict:
        return {"image_shape": list(self._frames[0].shape), "channels": {"BF": {}}}

    def close(self) -> None: ...


def bench_daemon(d: Path, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    from scopecast.daemon.acquisition import AcquisitionEngine
    from scopecast.daemon.plans import ChannelSpec, LivePlan

    engine = AcquisitionEngine(FreeCamera(frames), d)
    t0 = time.perf_counter()
    job = engine.start_live(LivePlan(channels=[ChannelSpec(name="BF")], max_cycles=n, record=True))
    engine.wait(job.id)
    dt = time.perf_counter() - t0
    assert job.status == "done" and engine.frames_recorded == n, (job.status, job.error, engine.frames_recorded)
    return dt, dt  # the job ends once its recording is closed (durable)


WRITERS: dict[str, Callable[[Path, list[np.ndarray], int], tuple[float, float]]] = {
    "scopecast Recorder": bench_recorder,
    "zarr-python, synchronous (before)": bench_zarr_sync,
    "ome-writers (tensorstore)": bench_ome_writers,
    "tifffile (uncompressed)": bench_tifffile,
    "daemon live, near-free camera": bench_daemon,
}


def back_memory(gib: float) -> float:
    """Touch and free ``gib`` GiB of anonymous memory (see ``--back-memory``); seconds it took."""
    t0 = time.perf_counter()
    a = np.ones(int(gib * 2**30) // 8)
    del a
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=180)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    ap.add_argument("--only", nargs="*", default=None, help="writer names to run (substring match)")
    ap.add_argument("--back-memory", type=float, default=0.0, metavar="GIB",
                    help="before each writer, touch and free this much memory (a VM diagnostic: see above)")
    args = ap.parse_args(argv)
    frames = _frames(args.size)
    mb = args.frames * frames[0].nbytes / 1e6
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in WRITERS
                                                   if not args.only or any(o in k for o in args.only)}
    for r in range(args.rounds):  # rounds interleave the writers, so load affects them alike
        for name in rows:
            d = Path(tempfile.mkdtemp(prefix="bench-rec-", dir=args.dir))
            if args.back_memory:
                back_memory(args.back_memory)
            try:
                rows[name].append(WRITERS[name](d, frames, args.frames))
            except Exception as e:  # noqa: BLE001 - a missing optional writer skips its row
                print(f"  {name}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            if rows[name]:
                a, dur = rows[name][-1]
                print(f"  round {r + 1} {name}: {mb / a:.0f} MB/s accepted, {mb / dur:.0f} MB/s durable", file=sys.stderr)
    print(f"\n{args.frames} frames of {args.size}² uint16 ({mb:.0f} MB), blosc-lz4 where compressed, "
          f"{args.rounds} rounds; camera need at 100 frames/s: {CAMERA_NEED_MB_S:.0f} MB/s"
          + (f"; {args.back_memory:g} GiB of memory touched and freed before each writer" if args.back_memory
             else "") + "\n")
    print("| writer | MB/s durable (min–max) | frames/s durable (median) | MB/s accepted (min–max) | vs camera need |")
    print("| --- | --- | --- | --- | --- |")
    fps_per_mb = args.frames / mb

    def rate(x: float) -> str:  # an asynchronous append that only queues is not a write rate
        return f"{x:.0f}" if x < 10_000 else ">10k"

    for name, res in rows.items():
        if not res:
            print(f"| {name} | skipped | | | |")
            continue
        acc = [mb / a for a, _ in res]
        dur = [mb / b for _, b in res]
        med = statistics.median(dur)
        print(f"| {name} | {min(dur):.0f}–{max(dur):.0f} | {med * fps_per_mb:.0f} | "
              f"{rate(min(acc))}–{rate(max(acc))} | {med / CAMERA_NEED_MB_S:.2f}× |")
    print("\ndurable: until the writer's close returned (scopecast and ome-writers' tensorstore fsync every "
          "chunk; tifffile and zarr-python leave it to the page cache); accepted: until the last write call "
          "returned (what the acquiring thread waits for).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
