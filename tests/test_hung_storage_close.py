"""Storage where every write hangs (chunks, array metadata, OME-XML: a hung network share) must not hang the job
that records to it, nor its ``stop`` or the daemon's shutdown: the job fails naming the stalled storage within
bounded time, and what was durable reads back once the storage returns. Hangs are emulated FUSE-free as in
tests/test_hung_storage.py: a FIFO where a file is opened for writing blocks that open until a reader comes."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

from helpers import wait_until

from scopecast.daemon.recording import Recorder, RecordingError, SeriesSpec, being_written, open_recording, writer


@contextlib.contextmanager
def hung(*paths: Path):
    """Every open for writing of ``paths`` blocks until the context ends; then the storage is back."""
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(p)
    try:
        yield
    finally:  # a reader releases a blocked open (that write fails: not a regular file); later writes work
        for p in paths:
            os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
            p.unlink(missing_ok=True)  # a writer that failed on it may have removed it already


def storage_of(recording: Path) -> list[Path]:
    """The writes series 0 of a recording of two channels makes from time point 16 on, and its OME-XML."""
    chunks = [recording / "0" / "0" / str(t) / "0" / "0" / "0" / "0.__lock" for t in range(16, 48)]
    return [*chunks, recording / "0" / "0" / ".zarray.__lock", recording / "OME" / "METADATA.ome.xml.tmp"]


def test_a_job_on_storage_that_hangs_entirely_ends_failed_in_bounded_time(daemon, client, monkeypatch):
    monkeypatch.setattr(writer, "_STALL_S", 2.0)
    monkeypatch.setattr(writer, "DEFAULT_QUEUE_BYTES", 16 * 256 * 256 * 2)  # 16 frames of the 256² sensor
    job = client.request("start_live", channels=["BF", "DF"], exposure_ms=1.0, record=True, max_cycles=5000)
    path = Path(job["path"])
    wait_until(lambda: client.request("status")["frames_recorded"] >= 2, what="the first durable frames")
    with hung(*storage_of(path)):
        t0 = time.monotonic()
        done = wait_until(lambda: (j := client.request("job", job=job["id"]))["finished"] and j, 40,
                          "the job to end while the storage hangs")
        assert time.monotonic() - t0 < 30
        st = client.request("status")
        assert client.request("stop")["stopped"] is None  # nothing left running
    assert done["status"] == "failed" and "storage stalled" in done["error"], done
    assert "storage stalled" in st["last_error"] and st["state"] == "idle", st
    wait_until(lambda: not being_written(path), what="the late metadata writes to end once the storage is back")
    back = open_recording(path)
    assert len(back.frames) == st["frames_recorded"] >= 2  # what was durable is kept


def test_add_series_on_storage_that_hangs_raises_storage_stalled(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "_STALL_S", 1.0)
    rec = Recorder(tmp_path / "s.ome.zarr", "s", {})
    spec = SeriesSpec("s", ("BF",), ("label-free",), (64, 64), "uint16", 0.65, (0.0, 0.0, 0.0))
    rec.add_series(spec)
    outcome: list[BaseException | int] = []

    def add() -> None:  # on the acquiring thread, which must not hang
        try:
            outcome.append(rec.add_series(spec))
        except BaseException as e:  # noqa: BLE001 - checked below
            outcome.append(e)

    with hung(rec.path / "1" / "0" / ".zarray.__lock", rec.path / "OME" / "METADATA.ome.xml.tmp"):
        threading.Thread(target=add, daemon=True).start()
        returned = wait_until(lambda: outcome, 20, "add_series to return")
        t0 = time.monotonic()
        assert rec.close() is not None
        assert time.monotonic() - t0 < 20
    assert isinstance(returned[0], RecordingError) and "storage stalled" in str(returned[0]), returned
