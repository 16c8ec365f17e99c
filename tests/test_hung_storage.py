"""Storage that hangs (a chunk write that never returns, as on a stalled network share) must not hang the
acquisition: the recording back-pressures, then the job fails naming the stalled storage, and what was made
durable before reads back. The hang is real and FUSE-free: tensorstore writes each chunk through
``<chunk>.__lock`` (opened for writing, then renamed), and a FIFO there blocks that open until a reader comes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from helpers import wait_until

from scopecast.daemon.recording import open_recording, writer


@contextlib.contextmanager
def hung_chunk(recording: Path, t: int):
    """Make the write of chunk ``(t, 0, 0)`` of series 0 block until the context ends (then it fails)."""
    lock = recording / "0" / "0" / str(t) / "0" / "0" / "0" / "0.__lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(lock)
    try:
        yield
    finally:  # the storage comes back (the write fails: not a regular file), so no thread stays blocked
        os.close(os.open(lock, os.O_RDONLY | os.O_NONBLOCK))


def test_hung_storage_fails_the_live_job_instead_of_hanging_it(daemon, client, monkeypatch):
    monkeypatch.setattr(writer, "_STALL_S", 2.0)
    monkeypatch.setattr(writer, "DEFAULT_QUEUE_BYTES", 16 * 256 * 256 * 2)  # 16 frames of the 256² sensor
    job = client.request("start_live", channels=["BF", "DF"], exposure_ms=1.0, record=True, max_cycles=5000)
    path = Path(job["path"])
    wait_until(lambda: (path / writer.WRITING_LOCK).exists(), what="the recording to be created")
    with hung_chunk(path, 40):
        done = wait_until(lambda: (j := client.request("job", job=job["id"]))["finished"] and j, 120,
                          "the job to end")
        st = client.request("status")
    assert done["status"] == "failed" and "storage stalled" in done["error"], done
    assert "storage stalled" in st["last_error"] and st["state"] == "idle", st
    back = open_recording(path)
    info = back.attrs["scopecast"]
    assert info["complete"] is False and "storage stalled" in info["error"], info
    assert len(back.frames) == info["frames_written"] == st["frames_recorded"] >= 80  # t 0-39 of 2 channels
