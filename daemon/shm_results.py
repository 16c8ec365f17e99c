"""Results in shared memory, for clients on the engine's machine (the ``shm`` topic, docs/protocol.md).

A result sent inline (``result``: header + pixels) crosses two kernel copies and both sides' ZeroMQ I/O
threads; a 2× super-resolved 512² frame is 4 MiB, and on a machine whose cores run the model that took
~2–3 ms to reach a client. Here the engine's worker writes each result once into a ring of slots in a
file under ``/dev/shm`` (tmpfs: memory, never a disk) and publishes only its header, which names the
slot; every local client maps the same file read-only and reads the pixels where they lie.

Layout of a segment (little-endian): ``slots`` blocks of ``SLOT_HEADER + capacity`` bytes; a block
starts with a uint64 *stamp*, then the result's float32 pixels at ``SLOT_HEADER``. The writer sets the
stamp to 0, writes the pixels, then sets it to the result's ``seq`` (1, 2, …, per ring); the header
carries ``seq``. A reader that has used a slot checks that the stamp still equals ``seq``
(:meth:`SharedResultReader.valid`): a slot reused for a newer result while the reader was on it — a
reader more than ``slots - 1`` results behind — fails the check and the reader drops that result.

A segment is named ``scopecast-results-<pid>-<n>`` (``n`` counts the segments of the engine's process: a
process may run several engines, as the demo does, and a larger result needs a larger segment; a name
already taken, say by a file a crashed process left under a pid now reused, is skipped) and is created by
the engine's user alone (mode 0600). The engine unlinks
its segments on close and, at start, those of engines that are no longer running. A reader opens only
names of that form, inside the shared-memory directory, read-only, and only what the file holds; and only a
regular file with one name (the shared-memory directory is writable by every local user: a symbolic or hard
link planted there under a segment's name would make a client read another file, a FIFO would block it).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import re
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SLOT_HEADER", "SharedResultReader", "SharedResultRing", "SharedResults", "ShmError", "is_local", "shm_directory",
]

#: Bytes before a slot's pixels: the uint64 stamp, padded to a cache line.
SLOT_HEADER = 64
#: A ring takes as many slots as fit this many bytes (at least its minimum, at most 64): a client may fall
#: that far behind before it loses a result (16 slots of a 2× super-resolved 512² frame, 32 of two 512²
#: stains). Memory of a tmpfs file, taken as the slots are first written.
RING_BYTES = 64 << 20
_NAME = re.compile(r"^scopecast-results-(\d{1,10})-(\d{1,10})$")
_SEGMENTS = itertools.count()  # ``n`` of the segment names: one count for every ring of the process


class ShmError(ValueError):
    """A shared-memory reference that cannot be read (names what is wrong)."""


def shm_directory() -> Path:
    """Where segments live: ``/dev/shm`` (tmpfs) where the system has it, else the temporary directory."""
    p = Path("/dev/shm")
    return p if p.is_dir() and os.access(p, os.W_OK) else Path(tempfile.gettempdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True


class SharedResultRing:
    """The engine's side: a ring of result buffers in a shared-memory file (:data:`RING_BYTES` of them, at
    least ``min_slots``).

    :meth:`reserve` hands out the next slot as a float32 array of the result's shape (its stamp set to 0);
    the caller fills it and :meth:`commit` stamps it and returns the header's ``shm`` reference. Slots are
    taken in turn, under a lock, so several workers may write at once (``min_slots`` must exceed them).
    """

    def __init__(self, min_slots: int = 4, directory: Path | None = None) -> None:
        if min_slots < 2:
            raise ValueError(f"a result ring needs at least 2 slots, got {min_slots}")
        self.min_slots = self.slots = min_slots
        self.directory = directory or shm_directory()
        self._lock = threading.Lock()
        self._seq = 0
        self._next = 0
        self._capacity = 0
        self._mm: mmap.mmap | None = None
        self.name = ""
        self.path: Path | None = None
        self._remove_stale()

    def _remove_stale(self) -> None:
        """Unlink the segments of engines that are no longer running (a crash leaves them behind)."""
        for p in self.directory.glob("scopecast-results-*"):
            m = _NAME.match(p.name)
            if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _grow(self, nbytes: int) -> None:
        """A new segment whose slots hold ``nbytes``; the old one is unlinked (readers keep their maps)."""
        self._close_segment()
        self._capacity = -(-nbytes // SLOT_HEADER) * SLOT_HEADER
        self.slots = max(self.min_slots, min(64, RING_BYTES // (SLOT_HEADER + self._capacity)))
        self._next = 0
        for _ in range(1000):
            name = f"scopecast-results-{os.getpid()}-{next(_SEGMENTS)}"
            try:
                fd = os.open(self.directory / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                break
            except FileExistsError:  # not ours: never write into it, never unlink it
                continue
        else:
            raise ShmError(f"no free shared-memory segment name in {self.directory}: 1000 names of process "
                           f"{os.getpid()} already taken")
        self.name, self.path = name, self.directory / name
        try:
            os.ftruncate(fd, self.slots * (SLOT_HEADER + self._capacity))
            self._mm = mmap.mmap(fd, self.slots * (SLOT_HEADER + self._capacity))
        finally:
            os.close(fd)

    def reserve(self, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any]]:
        """The next slot as a float32 array of ``shape`` and its (not yet valid) reference."""
        nbytes = int(np.prod(shape)) * 4
        with self._lock:
            if nbytes > self._capacity or self._mm is None:
                self._grow(nbytes)
            assert self._mm is not None
            slot = self._next
            self._next = (self._next + 1) % self.slots
            self._seq += 1
            offset = slot * (SLOT_HEADER + self._capacity)
            stamp = np.frombuffer(self._mm, np.uint64, 1, offset)
            stamp[0] = 0
            data = np.frombuffer(self._mm, np.float32, nbytes // 4, offset + SLOT_HEADER).reshape(shape)
            return data, {"segment": self.name, "offset": offset, "nbytes": nbytes, "seq": self._seq}

    def commit(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        """Stamp the slot of ``ref`` (written in full by now): readers may use it. Returns ``ref``, or None
        when its segment was replaced meanwhile (a larger result came from another worker)."""
        with self._lock:
            if ref["segment"] != self.name or self._mm is None:
                return None
            np.frombuffer(self._mm, np.uint64, 1, ref["offset"])[0] = ref["seq"]
        return ref

    def _close_segment(self) -> None:
        if self._mm is not None:
            with contextlib.suppress(BufferError):  # an array still views it: the map goes with the last one
                self._mm.close()
            self._mm = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None

    def close(self) -> None:
        with self._lock:
            self._close_segment()


class SharedResultReader:
    """A client's side: reads results whose header carries an ``shm`` reference.

    :meth:`view` maps the named segment (once) and returns the result's pixels where they lie, read-only;
    use them, then :meth:`valid` says whether the slot still held that result throughout (else drop it).
    :meth:`read` does both and returns a copy the caller owns, or None when the slot was reused.
    """

    def __init__(self, directory: Path | None = None, keep: int = 2) -> None:
        self.directory = directory or shm_directory()
        self.keep = keep
        self._maps: dict[str, mmap.mmap] = {}

    def _map(self, name: Any) -> mmap.mmap:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ShmError(f"shm segment {str(name)[:64]!r} is not a scopecast result segment name")
        mm = self._maps.get(name)
        if mm is None:
            try:
                fd = os.open(self.directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as e:
                raise ShmError(f"shm segment {name} cannot be opened here ({e.strerror}): "
                               "the engine runs on another machine, or has stopped") from None
            try:
                _check_segment(os.fstat(fd))
                mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            except (OSError, ValueError) as e:  # e.g. an empty file: nothing an engine would have sent
                raise ShmError(f"shm segment {name} cannot be mapped: {e}") from None
            finally:
                os.close(fd)
            self._maps[name] = mm
            while len(self._maps) > self.keep:  # an engine replaces a segment when results outgrow it
                old = self._maps.pop(next(iter(self._maps)))
                with contextlib.suppress(BufferError):  # a caller still holds a view: it goes with the view
                    old.close()
        return mm

    def view(self, header: dict[str, Any]) -> np.ndarray:
        """The result's pixels in the engine's ring (read-only, ``header``'s ``shape``); raises
        :class:`ShmError` naming what is wrong with the reference."""
        ref, shape = header.get("shm"), header.get("shape")
        if not isinstance(ref, dict):
            raise ShmError("result header has no 'shm' reference")
        mm = self._map(ref.get("segment"))
        offset, nbytes = ref.get("offset"), ref.get("nbytes")
        if not (isinstance(offset, int) and isinstance(nbytes, int) and isinstance(shape, list)
                and all(isinstance(n, int) and n > 0 for n in shape)):
            raise ShmError("shm reference needs integer 'offset' and 'nbytes' and the header a 'shape'")
        if offset < 0 or offset % 8 or nbytes != int(np.prod(shape)) * 4 or offset + SLOT_HEADER + nbytes > len(mm):
            raise ShmError(f"shm reference offset {offset} + {nbytes} bytes does not fit segment "
                           f"{ref['segment']} ({len(mm)} bytes) or the result's shape {shape}")
        return np.frombuffer(mm, np.float32, nbytes // 4, offset + SLOT_HEADER).reshape(shape)

    def valid(self, header: dict[str, Any]) -> bool:
        """Whether the slot still holds the result of ``header`` (check after using :meth:`view`)."""
        ref = header.get("shm")
        mm = self._maps.get(ref.get("segment")) if isinstance(ref, dict) else None
        if mm is None or not isinstance(ref.get("offset"), int) or not 0 <= ref["offset"] <= len(mm) - 8:
            return False
        return int(np.frombuffer(mm, np.uint64, 1, ref["offset"])[0]) == ref.get("seq")

    def read(self, header: dict[str, Any]) -> np.ndarray | None:
        """A copy of the result's pixels, or None when the engine reused the slot before the copy ended."""
        data = self.view(header).copy()
        return data if self.valid(header) else None

    def close(self) -> None:
        for mm in self._maps.values():
            with contextlib.suppress(BufferError):
                mm.close()
        self._maps.clear()


def _check_segment(st: os.stat_result) -> None:
    """:class:`ShmError` unless the opened segment is a regular file with one name, as an engine makes it."""
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise ShmError("not a regular file with one name, as an engine makes a segment (a link or a FIFO put there "
                       "under a segment's name?): not read")


def is_local(address: str) -> bool:
    """Whether a stream address is on this machine: ``ipc://``, or TCP to a loopback host."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    host = address.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class SharedResults:
    """A result client's side of the choice: on a local ``address``, take results from the engine's
    shared-memory ring (``shm``) where the engine offers it, else inline (``result``).

    ``sock`` is subscribed to both at first; the first ``shm`` message switches it to ``shm`` alone (the
    engine then stops sending this client pixels inline), and until one comes — an engine that does not
    offer shared memory, or one that has not yet taken in the subscription — results come inline as ever.
    :meth:`resolve` turns a decoded ``shm`` message into ``("result", header, pixels)`` (a copy the caller
    owns; ``copy=False``: a read-only view, valid until :meth:`SharedResultReader.valid` says otherwise),
    drops the inline duplicates still queued at the switch, and passes every other message through. It
    returns None for those duplicates, for a result whose slot the engine reused before it was read
    (counted in ``overwritten``), and for the message on which the segment proved unreadable (an engine in
    another container or on another machine): from then on the socket takes ``result`` alone
    (``fallback`` says why). Off this machine it takes ``result`` alone from the start.
    """

    def __init__(self, sock: Any, address: str) -> None:
        import zmq

        self.sock = sock
        self.reader: SharedResultReader | None = SharedResultReader() if is_local(address) else None
        self.shared = False  # results come by shared memory (the first `shm` message arrived)
        self.overwritten = 0
        self.fallback: str | None = None
        sock.setsockopt(zmq.SUBSCRIBE, b"result")
        if self.reader is not None:
            sock.setsockopt(zmq.SUBSCRIBE, b"shm")

    def resolve(self, topic: str, header: dict[str, Any], data: Any,
                copy: bool = True) -> tuple[str, dict[str, Any], Any] | None:
        import zmq

        if topic == "result" and self.shared:  # sent inline too before the engine saw the switch
            return None
        if topic != "shm":
            return topic, header, data
        if self.reader is None:  # queued before the fallback
            return None
        if not self.shared:
            self.shared = True
            self.sock.setsockopt(zmq.UNSUBSCRIBE, b"result")
        try:
            if copy:
                pixels = self.reader.read(header)
            else:
                pixels = self.reader.view(header)
                pixels = pixels if self.reader.valid(header) else None
        except ShmError as e:
            self.fallback = str(e)
            self.shared = False
            self.sock.setsockopt(zmq.SUBSCRIBE, b"result")
            self.sock.setsockopt(zmq.UNSUBSCRIBE, b"shm")
            self.reader.close()
            self.reader = None
            return None
        if pixels is None:
            self.overwritten += 1
            return None
        return "result", header, pixels

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
