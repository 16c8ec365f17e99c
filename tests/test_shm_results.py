"""Results in shared memory (the ``shm`` topic): the ring, its readers, and a real engine serving both ways."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from scopecast.daemon import shm_results
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.runtimes import open_runtime
from scopecast.daemon.inference.worker import InferenceWorker, StreamFrame
from scopecast.daemon.shm_results import SharedResultReader, SharedResultRing, SharedResults, ShmError, is_local
from scopecast.daemon.stream import StreamSubscriber, decode
from scopecast.daemon.wire import dumps_strict
from scopecast.models.synthetic import write_package

from helpers import wait_subscribed, wait_until

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


@pytest.fixture
def model(tmp_path):
    return write_package(tmp_path / "m", CYCLE, ["nuclei", "membrane"], name="tiny", width=8, layers=3, tile=128)


def test_a_reader_sees_what_the_ring_wrote_and_knows_when_the_slot_was_reused(tmp_path):
    ring = SharedResultRing(min_slots=2, directory=tmp_path)
    reader = SharedResultReader(tmp_path)
    try:
        refs, k = [], 0
        while k <= ring.slots:  # one more result than the ring has slots (known once the first is sized)
            data, ref = ring.reserve((2, 8, 8))
            data[...] = k
            refs.append({"shape": [2, 8, 8], "shm": ring.commit(ref)})
            k += 1
        assert ring.slots == 64  # RING_BYTES holds more than 64 such tiny results: the cap
        assert oct(os.stat(ring.path).st_mode & 0o777) == "0o600"  # the engine's user alone
        newest = refs[-1]
        view = reader.view(newest)
        assert not view.flags.writeable and (view == ring.slots).all() and reader.valid(newest)
        assert (reader.read(refs[1]) == 1).all()
        # the first slot now holds the newest result: a reader still on the first one finds out
        assert not reader.valid(refs[0]) and reader.read(refs[0]) is None
        # a slot being written (stamp 0 until committed) is not valid either
        _, pending = ring.reserve((2, 8, 8))
        assert not reader.valid({"shape": [2, 8, 8], "shm": pending})
    finally:
        reader.close()
        ring.close()
    assert not list(tmp_path.iterdir())  # the engine's segment is gone with it


def test_a_larger_result_gets_a_new_segment_and_readers_follow(tmp_path):
    ring = SharedResultRing(directory=tmp_path)
    reader = SharedResultReader(tmp_path)
    try:
        small, ref = ring.reserve((1, 4, 4))
        small[...] = 1
        first = {"shape": [1, 4, 4], "shm": ring.commit(ref)}
        big, ref = ring.reserve((1, 64, 64))
        big[...] = 2
        second = {"shape": [1, 64, 64], "shm": ring.commit(ref)}
        assert first["shm"]["segment"] != second["shm"]["segment"]
        assert [p.name for p in tmp_path.iterdir()] == [second["shm"]["segment"]]  # the old one is unlinked
        assert (reader.read(second) == 2).all()
    finally:
        reader.close()
        ring.close()


@pytest.mark.parametrize("ref, shape, says", [
    ({"segment": "../../etc/passwd", "offset": 0, "nbytes": 256}, [1, 8, 8], "not a scopecast result segment"),
    ({"segment": "scopecast-results-1-0", "offset": 0, "nbytes": 256}, [1, 8, 8], "cannot be opened here"),
    ({"segment": "scopecast-results-1-1", "offset": 0, "nbytes": 256}, [1, 8, 8], "cannot be mapped"),
    (None, [1, 8, 8], "no 'shm' reference"),
    ("real", [1, 4096, 4096], "does not fit"),
    ("real-offset", [1, 8, 8], "does not fit"),
    ("real-type", [1, 8, 8], "integer 'offset'"),
])
def test_a_bad_reference_is_refused_with_what_is_wrong(tmp_path, ref, shape, says):
    ring = SharedResultRing(directory=tmp_path)
    reader = SharedResultReader(tmp_path)
    (tmp_path / "scopecast-results-1-1").write_bytes(b"")  # an empty file of a segment's name
    try:
        _, real = ring.reserve((1, 8, 8))
        ring.commit(real)
        if ref == "real":
            ref = real
        elif ref == "real-offset":
            ref = {**real, "offset": 1 << 40}
        elif ref == "real-type":
            ref = {**real, "offset": "0"}
        with pytest.raises(ShmError, match=says):
            reader.view({"shape": shape, **({"shm": ref} if ref is not None else {})})
        if ref is not real:  # valid() asks only whether the slot still holds that result
            assert not reader.valid({"shape": shape, "shm": ref})
    finally:
        reader.close()
        ring.close()


def test_segments_of_engines_no_longer_running_are_removed_at_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"scopecast-results-{int(dead.stdout)}-0"
    alive = tmp_path / f"scopecast-results-{os.getppid()}-0"
    other = tmp_path / "unrelated-file"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    SharedResultRing(directory=tmp_path).close()
    assert not stale.exists() and alive.exists() and other.exists()


def test_engines_of_one_process_get_segments_of_their_own(tmp_path):
    """The demo runs its engines in one process: each ring takes its own name (they once both took
    ``<pid>-0``, and the second engine's results failed), and a name already taken, such as a file a dead
    process left under a pid now reused, is skipped and left alone."""
    a, b = SharedResultRing(directory=tmp_path), SharedResultRing(directory=tmp_path)
    reader = SharedResultReader(tmp_path)
    try:
        da, ra = a.reserve((1, 8, 8))
        db, rb = b.reserve((1, 8, 8))
        assert ra["segment"] != rb["segment"]
        da[...], db[...] = 1.0, 2.0
        a.commit(ra), b.commit(rb)
        assert (reader.read({"shape": [1, 8, 8], "shm": ra}) == 1.0).all()
        assert (reader.read({"shm": rb, "shape": [1, 8, 8]}) == 2.0).all()
        n = int(rb["segment"].rsplit("-", 1)[1])
        taken = [tmp_path / f"scopecast-results-{os.getpid()}-{n + i}" for i in (1, 2)]
        for p in taken:
            p.write_bytes(b"not a ring")
        c = SharedResultRing(directory=tmp_path)
        _, rc = c.reserve((1, 8, 8))
        pid, m = rc["segment"].rsplit("-", 2)[1:]
        assert int(pid) == os.getpid() and int(m) >= n + 3  # past the taken names (others may count too)
        c.close()
        assert all(p.read_bytes() == b"not a ring" for p in taken)
    finally:
        reader.close()
        a.close()
        b.close()


def test_which_addresses_are_local():
    assert is_local("ipc:///run/scopecast/results") and is_local("tcp://127.0.0.1:5557")
    assert is_local("tcp://localhost:5557") and is_local("tcp://[::1]:5557")
    assert not is_local("tcp://10.0.0.7:5557") and not is_local("tcp://scope-pc.lab:5557")


def _bundle(shape, level, offset=100):
    rng = np.random.default_rng(level)
    return [StreamFrame({"channel": c, "acquisition_id": "a", "bundle_id": 1, "pixel_size_um": 0.65,
                         "exposure_ms": 10.0},
                        (offset + level * rng.random(shape)).astype(np.uint16)) for c in CYCLE]


def _untimed(d):
    """``d`` without its timings (``ms``): the same verdict computed twice differs only in those."""
    return {k: _untimed(v) for k, v in d.items() if k != "ms"} if isinstance(d, dict) else d


@pytest.mark.parametrize("uncertainty", [0, 2])
def test_the_worker_writes_into_the_given_array_exactly_what_it_returns_otherwise(tmp_path, model, uncertainty):
    """The fused write (output scaling straight into the ring's slot) changes nothing in the result,
    for an inferred bundle, with the uncertainty map's channels, and for a withheld one (dark frames)."""
    pkg = load_package(model)
    worker = InferenceWorker(pkg, open_runtime(pkg, "ort-cpu"), uncertainty=uncertainty, uncertainty_budget=0)
    ring = SharedResultRing(directory=tmp_path)
    try:
        for level in (3000, 0):
            frames = _bundle((96, 128), level)
            plain = worker.process(frames)
            given = []

            def out(shape):
                data, ref = ring.reserve(shape)
                given.append(data)
                return data

            shared = worker.process(frames, out=out)
            assert len(given) == 1 and shared.data is given[0]
            assert shared.data.shape == plain.data.shape == (2 * (1 + (uncertainty > 0)), 96, 128)
            np.testing.assert_array_equal(shared.data, plain.data)
            assert _untimed(shared.header["trust"]) == _untimed(plain.header["trust"])
            assert (level == 0) == (plain.header["trust"]["guards"]["action"] == "withheld")
    finally:
        ring.close()


def test_an_engine_serves_local_clients_by_shared_memory_and_others_inline(daemon, client, model):
    engine = InferenceEngine(model, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                             warmup_shape=(256, 256)).start()
    shared = StreamSubscriber(engine.results_address, ("result",))
    inline = zmq.Context.instance().socket(zmq.SUB)
    inline.setsockopt(zmq.LINGER, 0)
    inline.setsockopt(zmq.SUBSCRIBE, b"result")
    inline.connect(engine.results_address)
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_until(lambda: engine.subscriptions.of("shm") >= 1 and engine.subscriptions.of("result") >= 1, 60,
                   "a shared-memory and an inline result subscriber")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        by_shm, by_inline = {}, {}
        t_end = time.monotonic() + 120
        while not (set(by_shm) & set(by_inline) and len(by_shm) >= 3) and time.monotonic() < t_end:
            m = shared.recv(0.2)
            if m is not None and m[0] == "result":
                by_shm[m[1]["bundle_id"]] = m
            if inline.poll(10):
                _, h, data = decode(inline.recv_multipart())
                by_inline[h["bundle_id"]] = (h, data.copy())
        client.request("stop")
        both = sorted(set(by_shm) & set(by_inline))
        assert both and len(by_shm) >= 3, (sorted(by_shm), sorted(by_inline))
        for b in both:
            (_, hs, ds), (hi, di) = by_shm[b], by_inline[b]
            assert hs["shm"]["segment"].startswith(f"scopecast-results-{os.getpid()}-") and "shm" not in hi
            assert {k: v for k, v in hs.items() if k != "shm"} == hi
            np.testing.assert_array_equal(ds, di)  # bit for bit the inline pixels
        assert shared.results.overwritten == 0 and shared.results.fallback is None and shared.results.shared
        # switched: the engine sends pixels inline to the inline client alone
        wait_until(lambda: engine.subscriptions.of("result") == 1 and engine.subscriptions.of("shm") == 1, 60,
                   "the shared-memory client to drop its inline subscription")
        path = engine.shm.path
        assert path is not None and path.exists()
    finally:
        shared.close()
        inline.close(linger=0)
        engine.close()
    assert not path.exists()  # unlinked with the engine


def test_a_client_that_cannot_open_the_segment_falls_back_to_inline(daemon, client, model, tmp_path):
    """An engine whose shared memory this client cannot see (another container, another /dev/shm): the
    first result is lost, the reason kept, and every later one comes inline."""
    engine = InferenceEngine(model, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                             warmup_shape=(256, 256)).start()
    sub = StreamSubscriber(engine.results_address, ("result",))
    sub.results.reader.directory = tmp_path  # not where the engine writes
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(engine, "shm")
        client.request("start_live", channels=CYCLE, interval_ms=50)
        got = wait_until(lambda: sub.recv(0.2), 120, "a result")
        client.request("stop")
        assert got[0] == "result" and got[2].shape == (2, 256, 256) and "shm" not in got[1]
        assert "cannot be opened here" in sub.results.fallback and sub.results.reader is None
    finally:
        sub.close()
        engine.close()


def test_resolve_passes_other_topics_through(tmp_path):
    sock = zmq.Context.instance().socket(zmq.SUB)
    try:
        r = SharedResults(sock, "tcp://10.1.2.3:5557")
        assert r.reader is None  # not local: inline
        assert r.resolve("stats", {"a": 1}, None) == ("stats", {"a": 1}, None)
        assert r.resolve("shm", {"shm": {}}, None) is None
    finally:
        sock.close(linger=0)


def test_an_engine_that_offers_no_shared_memory_is_read_inline():
    """A result publisher written from docs/protocol.md without the ``shm`` topic, on this machine: the
    results still arrive, inline."""
    pub = zmq.Context.instance().socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    sub = StreamSubscriber(pub.getsockopt(zmq.LAST_ENDPOINT).decode(), ("result",))
    try:
        assert pub.poll(60_000) and pub.recv()[0] == 1  # a subscription has arrived
        head = {"kind": "result", "bundle_id": 1, "shape": [1, 2, 2], "dtype": "float32"}
        data = np.arange(4, dtype=np.float32).reshape(1, 2, 2)
        got = wait_until(lambda: pub.send_multipart([b"result", dumps_strict(head), data]) or sub.recv(0.1), 60,
                         "an inline result")
        assert got[0] == "result" and got[1] == head and (got[2] == data).all() and not sub.results.shared
    finally:
        sub.close()
        pub.close(linger=0)


SECRET = 31337.0


def _result(segment: str, bundle_id: int) -> bytes:
    t = time.time_ns()
    return dumps_strict({
        "kind": "result", "model": "m", "channels": ["nuclei"], "shape": [1, 2, 4], "dtype": "float32",
        "acquisition_id": "x-live-1", "bundle_id": bundle_id, "source_seqs": [0], "stage_x_um": 0.0,
        "stage_y_um": 0.0, "stage_z_um": 0.0, "pixel_size_um": 1.0, "t_exposure_start_ns": t, "t_acquired_ns": t,
        "trust": {"ok": True, "score": 1.0, "reasons": [], "guards": {}},
        "shm": {"segment": segment, "offset": 0, "nbytes": 32, "seq": 0}})


@pytest.mark.parametrize("planted", ["symlink", "hardlink", "fifo"])
def test_a_link_or_fifo_under_a_segment_name_is_not_read(daemon, client, tmp_path, monkeypatch, planted):
    shm = tmp_path / "shm"  # the shared-memory directory (/dev/shm), here one no engine of another test cleans
    shm.mkdir()
    monkeypatch.setattr(shm_results, "shm_directory", lambda: shm)
    secret = shm / "secret.bin" if planted == "hardlink" else tmp_path / "secret.bin"  # not the daemon's to read
    np.concatenate([np.zeros(16, np.float32), np.full(16, SECRET, np.float32)]).tofile(secret)
    segment = "scopecast-results-4000000000-1"
    {"symlink": lambda p: p.symlink_to(secret), "hardlink": lambda p: os.link(secret, p),
     "fifo": lambda p: os.mkfifo(p)}[planted](shm / segment)

    pub = zmq.Context.instance().socket(zmq.XPUB)  # a result stream the client named
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    subscriptions: list[bytes] = []

    def subscribed(topic: bytes) -> bool:
        while pub.poll(0):
            subscriptions.append(pub.recv())
        return topic in subscriptions

    cfg = {"triggers": [{"name": "t", "model": "m", "measurement": {"kind": "max", "channel": "nuclei"},
                         "condition": {"above": 1000}, "actions": []}]}
    try:
        log = Path(client.request("load_triggers", config=cfg,
                                  sources={"m": pub.getsockopt(zmq.LAST_ENDPOINT).decode()})["log"])
        wait_until(lambda: subscribed(b"\x01shm"), 60, "the triggers to subscribe to shared-memory results")
        pub.send_multipart([b"shm", _result(segment, 1)])
        # either it read the planted file (a result seen), or it refused it and went back to inline results
        wait_until(lambda: client.request("triggers")["results"] >= 1 or subscribed(b"\x00shm"), 60,
                   "the result to be read or refused")
        status = client.request("triggers")
        assert (status["results"], status["fired"]) == (0, 0), status
        assert not log.exists() or str(SECRET) not in log.read_text()
    finally:
        client.request("unload_triggers")  # returns: the receiving thread never blocked on a FIFO
        pub.close(linger=0)
