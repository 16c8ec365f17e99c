"""What close says when it gives up on a writer whose storage hangs must be what happened: the storage has
not come back (tests/test_hung_storage.py's FIFO emulates the hung chunk write)."""

from __future__ import annotations

import logging
import os

from helpers import wait_until

from scopecast.daemon.frames import Frame
from scopecast.daemon.recording import Recorder, SeriesSpec, writer
from test_recording import POSITIONS, _header, _plane


def test_a_writer_given_up_on_does_not_say_the_storage_resumed(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(writer, "_STALL_S", 0.5)
    rec = Recorder(tmp_path / "s.ome.zarr", "s", {})
    s = rec.add_series(SeriesSpec("s", ("BF", "Nuclei"), ("label-free", "fluorescence"), (64, 64), "uint16",
                                  0.65, POSITIONS[0]))
    rec.write(Frame(_header(0, 0, 0, POSITIONS[0]), _plane(0, 0, 0)), s, 0, 0)
    assert rec.flush(60)
    lock = rec.path / "0" / "0" / "0" / "1" / "0" / "0" / "0.__lock"  # chunk (t 0, c 1) hangs
    lock.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(lock)
    try:
        with caplog.at_level(logging.WARNING, logger=writer.__name__):
            rec.write(Frame(_header(1, 0, 1, POSITIONS[0]), _plane(0, 0, 1)), s, 0, 1)
            assert "writer stalled" in rec.close()
            wait_until(lambda: not rec._thread.is_alive(), 30, "the writer left behind to end")
    finally:  # the storage comes back only now
        os.close(os.open(lock, os.O_RDONLY | os.O_NONBLOCK))
    said = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert said and not any("resumed" in m or "answered" in m for m in said), said
    assert "still not committed its 1 frames" in said[-1], said
