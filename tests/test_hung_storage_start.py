"""Starting to record on storage that already hangs (every write blocks: a hung network share) fails naming the
stalled storage within the recorder's stall deadline, instead of hanging: the data directory's write check (a
recorded snap, live or scan request was never answered, each retry holding a control thread until the server
refused every snap) and the recorder's constructor (a recorded job stayed ``running`` for ever with no frame, and
neither ``stop`` nor the daemon's shutdown could end it). Real daemon on the simulated scope; each write the
storage is asked for opens a FIFO for writing, which blocks in the kernel until a reader comes (as in
tests/test_hung_storage.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from scopecast.daemon.control import DaemonError
from scopecast.daemon.recording import writer


@contextlib.contextmanager
def hung_writes(fifo: Path, *, write_check: bool) -> Iterator[None]:
    """Until the block ends, creating a recording store (and, with ``write_check``, the data directory's write
    test) blocks opening ``fifo`` for writing; then the storage is back (the blocked writes fail)."""
    os.mkfifo(fifo)

    def hangs(*_args, **_kwargs):
        with open(fifo, "wb"):  # blocks until a reader opens the FIFO
            pass
        raise OSError("the storage came back too late")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer.zarr, "open_group", hangs)
        if write_check:
            mp.setattr(tempfile, "NamedTemporaryFile", hangs)
        try:
            yield
        finally:
            mp.undo()
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))


def test_a_recorded_snap_on_hung_storage_fails_naming_it(client, monkeypatch, tmp_path):
    monkeypatch.setattr(writer, "_STALL_S", 1.0)
    with hung_writes(tmp_path / "hung", write_check=True):
        t0 = time.monotonic()
        with pytest.raises(DaemonError, match="storage stalled"):  # was: no reply within the client's timeout
            client.request("snap", timeout_s=15, channel="BF", record=True)
        assert time.monotonic() - t0 < 20
    assert client.request("snap", channel="BF")["frame"]["channel"] == "BF"  # the daemon still snaps


def test_a_recorded_job_whose_recording_cannot_be_created_fails_instead_of_hanging(client, monkeypatch, tmp_path):
    monkeypatch.setattr(writer, "_STALL_S", 1.0)
    with hung_writes(tmp_path / "hung", write_check=False):
        job = client.request("start_live", channels=["BF"], exposure_ms=1.0, record=True, max_cycles=5)
        done = wait_until(lambda: (j := client.request("job", job=job["id"]))["finished"] and j, 30,
                          "the job to end while the storage hangs")  # was: running for ever, 0 frames
        st = client.request("status")
    assert done["status"] == "failed" and "storage stalled" in done["error"], done
    assert st["state"] == "idle" and "storage stalled" in st["last_error"], st
