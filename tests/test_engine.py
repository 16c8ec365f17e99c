"""Daemon + engine + independent clients over real loopback sockets."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from scopecast.daemon.control import ControlClient, DaemonError
from scopecast.daemon.inference.engine import InferenceEngine
from scopecast.daemon.inference.offline import results_path, run_offline
from scopecast.daemon.inference.package import load_package
from scopecast.daemon.inference.tiling import plan_tiles, run_tiled
from scopecast.daemon.inference.worker import normalize
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.stream import StreamSubscriber
from scopecast.models.synthetic import write_package

from helpers import wait_subscribed, wait_until

CYCLE = ["DPC-Left", "DPC-Right", "BF"]


@pytest.fixture
def model(tmp_path):
    return write_package(tmp_path / "m", CYCLE, ["nuclei", "membrane"], name="tiny", width=8, layers=3, tile=128)


@pytest.fixture
def engine_factory(daemon):
    engines = []

    def make(package, **kw):
        kw.setdefault("warmup_shape", (256, 256))
        joined = daemon.publisher.subscriptions.of("frame")
        e = InferenceEngine(package, daemon.stream_address, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", **kw).start()
        engines.append(e)
        wait_subscribed(daemon.publisher, "frame", joined + 1)  # the engine's SUB has joined
        return e

    yield make
    for e in engines:
        e.close()


def _collect(sub, topic, n, timeout=60.0):
    out, t_end = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < t_end:
        m = sub.recv(0.5)
        if m and m[0] == topic:
            out.append(m)
    return out


class RawClient:
    """A stream client written from docs/protocol.md alone (no scopecast helpers)."""

    def __init__(self, address, topics):
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t)
        self.sock.connect(address)

    def recv(self, timeout=2.0):
        if not self.sock.poll(int(timeout * 1000)):
            return None
        parts = self.sock.recv_multipart()
        topic, head = parts[0].decode("ascii"), json.loads(parts[1].decode("utf-8"))
        if len(parts) == 3:
            dt = np.dtype(head["dtype"]).newbyteorder("<")
            return topic, head, np.frombuffer(parts[2], dtype=dt).reshape(head["shape"])
        return topic, head, None

    def close(self):
        self.sock.close()


def test_end_to_end_with_independent_clients(daemon, client, engine_factory, model):
    engine = engine_factory(model)
    frames_client = RawClient(daemon.stream_address, [b"frame"])
    results_client = RawClient(engine.results_address, [b"result", b"stats", b"done"])
    wait_subscribed(daemon.publisher, "frame", 2)
    for topic in ("result", "stats", "done"):
        wait_subscribed(engine, topic)
    client.request("start_live", channels=CYCLE, record=True, interval_ms=50)
    frames, results, stats, done = {}, [], None, {}
    t_end = time.monotonic() + 120
    # a stats message sent before any result has no latency figures: wait for one that has them
    while ((len(results) < 3 or stats is None or "infer" not in stats["latency_ms"] or results[2][0]["bundle_id"]
            not in done) and time.monotonic() < t_end):
        # the frames client is drained without waiting each time round: one frame a round, while the results client
        # may wait 0.2 s, let the backlog outgrow the socket's HWM (1000) and drop frames checked below
        while (m := frames_client.recv(0)) is not None:
            frames[m[1]["seq"]] = (m[1], m[2])
        m = results_client.recv(0.2)
        if m is None:
            continue
        topic, head, data = m
        if topic == "result":
            results.append((head, data))
        elif topic == "stats":
            stats = head
        elif topic == "done":
            assert data is None  # the header alone: pacing and logging clients do not receive the pixels
            done[head["bundle_id"]] = head
    client.request("stop")
    while (m := frames_client.recv(0.5)) is not None:  # drain what is still queued
        frames[m[1]["seq"]] = (m[1], m[2])
    frames_client.close()
    results_client.close()
    assert len(results) >= 3 and stats is not None and stats["results_published"] >= 1
    assert all(done[h["bundle_id"]] == h for h, _ in results[:3])  # each result's own header, after it
    head, data = results[-1]
    assert head["model"] == "tiny" and head["channels"] == ["nuclei", "membrane"]
    assert data.shape == (2, 256, 256) and data.dtype == np.float32 and np.isfinite(data).all()
    # the result refers to frames the independent client received, in model order
    srcs = [frames[s][0] for s in head["source_seqs"] if s in frames]
    assert [h["channel"] for h in srcs] == CYCLE
    assert all(h["bundle_id"] == head["bundle_id"] for h in srcs)
    for h, img in (frames[s] for s in head["source_seqs"] if s in frames):
        assert img.dtype == np.uint16 and img.shape == (256, 256)
    t = [head[k] for k in ("t_exposure_start_ns", "t_acquired_ns", "t_frame_published_ns", "t_received_ns",
                           "t_dequeued_ns", "t_checked_ns", "t_preprocessed_ns", "t_inferred_ns", "t_postprocessed_ns",
                           "t_published_ns")]
    assert t == sorted(t) and t[0] > 0
    # the cycle's latency starts at its first frame's exposure (the first channel's), not the last's
    assert head["t_bundle_exposure_start_ns"] == min(h["t_exposure_start_ns"] for h in srcs) < t[0]
    assert stats["source"] == "engine" and "infer" in stats["latency_ms"] and stats["results_published"] >= 1
    assert {"guards", "preprocess"} <= set(stats["latency_ms"])  # the input guards timed apart from normalization


def test_slow_engine_drops_only_display_frames_and_counts_them(daemon, client, engine_factory, tmp_path):
    heavy = write_package(tmp_path / "heavy", CYCLE, ["nuclei"], name="heavy", width=48, layers=6, tile=256)
    engine = engine_factory(heavy, runtime="ort-cpu", threads=1)  # slower than the camera on any machine (a GPU
    # ran it faster than the simulator made bundles: nothing to drop)
    sub = StreamSubscriber(engine.results_address, ("result",))
    wait_subscribed(engine, "result")
    job = client.request("start_live", channels=CYCLE, record=True)
    assert len(_collect(sub, "result", 3)) == 3
    stopped = client.request("stop")["stopped"]
    sub.close()
    # stop waits a bounded time; a loaded disk may still be making the recording durable
    stopped = client.wait(stopped["id"], timeout_s=300)
    assert stopped["status"] == "stopped", stopped

    seen = {}

    def settled():  # the daemon sent (or counted) every frame, the engine received every one it sent,
        s1 = engine.status()  # and no bundle is waiting or in a worker
        d = dstatus_now()
        seen.update(daemon=d, engine={k: s1[k] for k in ("frames_received", "queued", "dropped", "results_published")})
        lost = s1["dropped"].get("transport:lost", 0)  # a starved receive thread loses frames at the socket
        return (d["frames_published"] + d["dropped_total"] == stopped["frames"]
                and s1["frames_received"] + lost == d["frames_published"] and s1["queued"] == 0
                and engine.status()["results_published"] == s1["results_published"] and s1)

    def dstatus_now():
        return client.request("status")["stream"]

    try:
        wait_until(settled, 60, "the engine to receive every published frame")
    except AssertionError as e:
        raise AssertionError(f"{e}; job {stopped['frames']} frames; last seen {seen}") from None
    st = engine.status()
    dstatus = client.request("status")["stream"]
    # the camera outran the model: bundles were dropped and counted
    assert st["dropped"].get("engine:superseded", 0) > 0
    # accounting: every published frame was received or counted as dropped at the daemon
    published = dstatus["frames_published"]
    assert published + dstatus["dropped_total"] == stopped["frames"]
    used = st["results_published"] * len(CYCLE)
    # at most one bundle may still be in a worker; the assembler may hold at most 8 incomplete ones
    in_flight = len(CYCLE) + 8 * len(CYCLE)
    lost = st["dropped"].get("transport:lost", 0)  # never received
    assert 0 <= st["frames_received"] - used - (st["dropped_total"] - lost) <= in_flight
    # recording never drops
    rec = open_recording(stopped["path"])
    assert len(rec.frames) == stopped["frames"] >= job["frames"]
    # stop takes effect within one frame: the last cycle may be partial
    assert rec.series[0].data.shape[0] == -(-stopped["frames"] // len(CYCLE))


def test_bundle_without_model_channels_is_reported_and_engine_keeps_serving(daemon, client, engine_factory, model):
    engine = engine_factory(model)
    sub = StreamSubscriber(engine.results_address, ("result", "error"))
    wait_subscribed(engine, "error")
    client.request("start_live", channels=["BF", "DF"])
    errors = _collect(sub, "error", 1)
    client.request("stop")
    assert errors and "needs ['BF', 'DPC-Left', 'DPC-Right']" in errors[0][1]["message"]
    assert engine.status()["dropped"]["engine:mismatch"] >= 2
    client.request("start_live", channels=CYCLE)
    assert len(_collect(sub, "result", 2)) == 2
    client.request("stop")
    sub.close()


def test_a_snap_is_not_a_bundle_a_multi_channel_model_reports(daemon, client, engine_factory, model):
    engine = engine_factory(model)
    client.snap(channel="BF")  # one of the model's channels, alone: not meant for it, not an error
    wait_until(lambda: engine.status()["dropped"].get("engine:unused_channel", 0) >= 1, 60, "the snap to arrive")
    st = engine.status()
    assert "engine:mismatch" not in st["dropped"] and st["errors"] == [], st


def test_nan_model_and_bad_model_switch_keep_engine_serving(daemon, client, engine_factory, model, tmp_path):
    nan = write_package(tmp_path / "nan", CYCLE, ["x"], name="nan", nan_output=True, tile=128, layers=2, width=4)
    engine = engine_factory(nan)
    sub = StreamSubscriber(engine.results_address, ("result", "error"))
    wait_subscribed(engine, "error")
    client.request("start_live", channels=CYCLE)
    err = _collect(sub, "error", 1)
    assert err and "NaN/Inf" in err[0][1]["message"]
    with ControlClient(engine.control.address, timeout_s=120) as ec:  # load_model may be slow on a loaded machine
        corrupt = tmp_path / "corrupt"
        corrupt.mkdir()
        (corrupt / "manifest.json").write_text("{}")
        with pytest.raises(DaemonError, match="invalid manifest"):
            ec.request("load_model", path=str(corrupt))
        twice = write_package(tmp_path / "twice", CYCLE, ["x"], name="twice", scale=2, tile=128, layers=2, width=4)
        m = json.loads((twice / "manifest.json").read_text())
        (twice / "manifest.json").write_text(json.dumps({**m, "scale_factor": 1}))  # its model is 2x
        with pytest.raises(DaemonError, match="the manifest's scale_factor does not match the model"):
            ec.request("load_model", path=str(twice))
        serving = ec.request("status")["model"]
        assert serving["name"] == "nan" and serving["exposure_ms"] is None  # no training exposures recorded
        assert ec.request("load_model", path=str(model))["name"] == "tiny"
    res = _collect(sub, "result", 2)
    client.request("stop")
    sub.close()
    assert len(res) == 2 and res[-1][1]["model"] == "tiny"
    assert engine.status()["dropped"]["engine:nonfinite"] >= 3


def test_workers_share_one_stream_and_tag_results(daemon, client, engine_factory, model):
    engine = engine_factory(model, workers=2, policy="all")
    sub = StreamSubscriber(engine.results_address, ("result",))
    wait_subscribed(engine, "result")
    client.request("start_live", channels=CYCLE, max_cycles=12)
    res = _collect(sub, "result", 12, timeout=90)
    sub.close()
    assert len(res) == 12
    assert {h["worker"] for _, h, _ in res} == {0, 1}
    ids = [h["bundle_id"] for _, h, _ in res]
    assert sorted(ids) == sorted(set(ids)) and len(set(ids)) == 12  # every bundle once, orderable


def test_garbage_on_the_stream_is_counted_not_fatal(model):
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)  # XPUB: the engine's subscription is visible, no sleeping for it
    pub.bind("tcp://127.0.0.1:*")
    addr = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    e = InferenceEngine(load_package(model), addr, "tcp://127.0.0.1:*", None, warmup_shape=None).start()
    sub = StreamSubscriber(e.results_address, ("result",))
    wait_subscribed(e, "result")
    assert pub.poll(60_000) and pub.recv() == b"\x01frame"

    def frame(bundle, ch, i, **over):
        h = {"acquisition_id": "a", "bundle_id": bundle, "bundle_size": 3, "channel": ch, "seq": i,
             "dtype": "uint16", "shape": [32, 32], "t_acquired_ns": 1, "t_published_ns": 1, **over}
        return [b"frame", json.dumps(h).encode(), np.full((32, 32), i, np.uint16).tobytes()]

    try:
        garbage = [
            [b"frame", b"{not json", b"xx"],                                   # undecodable
            [b"frame", b'{"dtype": "uint16", "shape": [4, 4], "x": NaN}', b"\0" * 32],  # NaN: not strict JSON
            [b"frame", json.dumps({"dtype": "uint16", "shape": [4, 4]}).encode(), b"\0" * 32],  # no bundle fields
            frame([1], "BF", 0),                                                # bundle_id of the wrong type
            frame(True, "BF", 0),                                               # a bool is not an id
            frame(1, "BF", 0, dtype="object"),                                  # not a pixel type
            frame(1, "BF", 0, shape=[64, 64]),                                  # buffer disagrees with shape
            frame(1, "BF", 0, shape=[-32, -32]),
            [b"frame", b"{}"],                                                  # no buffer
            [b"frame", b"{}", b"", b"extra"],                                   # too many parts
        ]
        for m in garbage:
            pub.send_multipart(m)
        for i, ch in enumerate(["Nuclei", *CYCLE, "DF"]):                       # two channels the model does not use
            pub.send_multipart(frame(2, ch, i, bundle_size=5))
        assert len(_collect(sub, "result", 1, timeout=60)) == 1                 # the stream goes on
        # the trailing DF comes after its bundle was handed on: it may be counted after the result is out
        wait_until(lambda: e.status()["dropped"].get("engine:unused_channel", 0) >= 2, what="both unused channels")
        d = e.status()["dropped"]
        assert d["receive:undecodable"] == 3
        assert d["receive:bad_header"] == 6 and d["receive:size_mismatch"] == 1
        assert d["engine:unused_channel"] == 2
        assert all(t.is_alive() for t in e._threads)
    finally:
        sub.close()
        e.close()
        pub.close()


def test_offline_mode_matches_the_live_worker(client, model):
    job = client.request("start_live", channels=CYCLE, max_cycles=3, record=True)
    rec_path = client.wait(job["id"], timeout_s=60)["path"]
    report = run_offline(model, rec_path, runtime="ort-cpu")
    assert report.inferred == report.bundles == 3 and not report.skipped
    out = open_recording(report.output)
    s = out.series[0]
    assert s.data.shape == (3, 2, 1, 256, 256) and s.channels == ["nuclei", "membrane"]
    # recompute bundle 1 by hand from the recording
    src = open_recording(rec_path).series[0]
    pkg = load_package(model)
    from scopecast.daemon.inference.runtimes import open_runtime

    x = normalize([src.image(c, t=1) for c in CYCLE], pkg.manifest.normalization)
    y = run_tiled(x, plan_tiles((256, 256), 128, 16, 1), open_runtime(pkg, "ort-cpu").run)
    np.testing.assert_allclose(s.image("membrane", t=1), y[1], rtol=1e-4, atol=1e-5)
    assert s.frames[0].extra["model"] == "tiny"


def test_offline_that_infers_nothing_leaves_nothing_behind(client, model, tmp_path):
    """A recording the model cannot take (another cycle): every bundle is skipped, naming why. The empty results
    store it left beside the recording made the rerun with the right model refuse: 'already exists'."""
    job = client.request("start_live", channels=["BF"], max_cycles=2, record=True)
    rec_path = client.wait(job["id"], timeout_s=60)["path"]
    report = run_offline(model, rec_path, runtime="ort-cpu")
    assert report.bundles == 2 and report.inferred == 0 and len(report.skipped) == 2, report
    assert report.output is None
    assert not results_path(Path(rec_path), load_package(model).manifest.name).exists()  # no empty store beside it
    again = subprocess.run([sys.executable, "-m", "scopecast.daemon.cli", "engine", "--model", str(model), "--offline",
                            rec_path, "--runtime", "ort-cpu"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "0/2 bundles inferred" in again.stdout and "nothing written" in again.stdout, \
        (again.stdout, again.stderr)  # the rerun is refused for what it is, not "already exists"


def test_offline_leaves_ground_truth_frames_out_and_keeps_the_source_version(daemon, client, model):
    """A live recording with a STED channel: the STED series is ground truth, never a model input (the live
    engine drops it as ``engine:unused_channel``); offline used to infer it into a bogus results series. The
    results are written in the source's OME-Zarr version (they were always NGFF 0.4)."""
    daemon.engine.ngff = "0.5"
    job = client.request("start_live", channels=CYCLE + [{"name": "Membrane", "detector": "STED"}], max_cycles=2,
                         record=True)
    rec_path = client.wait(job["id"], timeout_s=120)["path"]
    report = run_offline(model, rec_path, runtime="ort-cpu")
    assert report.inferred == 2 and any("ground-truth detector" in s for s in report.skipped), report.skipped
    out = open_recording(report.output)
    assert len(out.series) == 1 and "STED" not in out.series[0].name, [s.name for s in out.series]
    assert (Path(report.output) / "zarr.json").is_file()


def test_offline_infers_every_plane_of_a_z_stack_at_its_own_z(client, model):
    """A scan's bundle holds its whole z-stack: offline inference infers each plane (not only the last) and
    the results series has the source's planes, each placed at the z it was taken at."""
    client.request("move_stage", x=0, y=0, z=0)
    job = client.request("run_scan", sequence={"channels": [{"config": c, "exposure": 5} for c in CYCLE],
                                               "z_plan": {"range": 4, "step": 2}})
    rec_path = client.wait(job["id"], timeout_s=120)["path"]
    report = run_offline(model, rec_path, runtime="ort-cpu")
    assert report.inferred == report.bundles == 3 and not report.skipped
    src, out = open_recording(rec_path).series[0], open_recording(report.output).series[0]
    assert out.data.shape == (1, 2, 3, 256, 256) and len(out.frames) == 6
    scale, translation = (t[k] for t, k in zip(out.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"],
                                               ("scale", "translation"), strict=True))
    for h in out.frames:
        assert translation[2] + h.index["z"] * scale[2] == pytest.approx(h.stage_z_um)
    pkg = load_package(model)
    from scopecast.daemon.inference.runtimes import open_runtime

    for z in range(3):  # each output plane is the model of its own input plane
        x = normalize([src.image(c, z=z) for c in CYCLE], pkg.manifest.normalization)
        y = run_tiled(x, plan_tiles((256, 256), 128, 16, 1), open_runtime(pkg, "ort-cpu").run)
        np.testing.assert_allclose(out.image("membrane", z=z), y[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis_order, planes", [("tpgcz", 3), ("tpgzc", 3), ("tpgcz", 12)])
def test_each_plane_of_a_z_stack_is_inferred_from_its_own_frames(daemon, client, tmp_path, axis_order, planes):
    """(12 planes, channel outer: more planes open at once than the assembler keeps bundles open.)"""
    package = write_package(tmp_path / "tiny", CYCLE, ["nuclei"], name="tiny", width=4, layers=2, tile=128)
    engine = InferenceEngine(package, daemon.stream_address, "tcp://127.0.0.1:*", None, policy="all",
                             warmup_shape=(256, 256)).start()
    results = StreamSubscriber(engine.results_address, ("result",))
    got: list[dict] = []
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(engine, "result")
        job = client.request("run_scan", sequence={"channels": [{"config": c} for c in CYCLE],
                                                   "z_plan": {"range": 2 * (planes - 1), "step": 2},
                                                   "axis_order": axis_order})
        rec = client.wait(job["id"], timeout_s=300)["path"]

        def all_published() -> bool:
            """Every frame reached the engine and every result it made reached us."""
            m = results.recv(0.1)
            if m is not None:
                got.append(m[1])
            st = engine.status()
            return (st["frames_received"] == planes * len(CYCLE) and not st["queued"]
                    and len(got) == st["bundles_ready"] == st["results_published"])

        wait_until(all_published, 300, "the engine to take every frame and publish its results")
    finally:
        results.close()
        engine.close()
    frames = {h.seq: h for h in open_recording(rec).frames}
    inputs = [{frames[s].index["z"] for s in r["source_seqs"]} for r in got]
    assert inputs == [{z} for z in range(planes)], inputs  # was [{0, 2}] (tpgcz) or [{0}] (tpgzc)
    z_um = [2.0 * z - (planes - 1) for z in range(planes)]
    assert [r["stage_z_um"] for r in got] == [frames[r["source_seqs"][0]].stage_z_um for r in got] == z_um


def test_a_result_in_flight_at_load_model_is_not_counted_for_the_new_model(daemon, client, tmp_path):
    """The trust summary counts the results of the model it names: a bundle the old model was computing when
    load_model switched used to be counted in the new model's summary."""
    old = write_package(tmp_path / "old", CYCLE, ["nuclei"], name="old", width=4, layers=2, tile=128)
    new = write_package(tmp_path / "new", CYCLE, ["nuclei"], name="new", width=4, layers=2, tile=128)
    engine = InferenceEngine(old, daemon.stream_address, "tcp://127.0.0.1:*", None, warmup_shape=(256, 256)).start()
    sub = StreamSubscriber(engine.results_address, ("done",))
    try:
        wait_subscribed(daemon.publisher, "frame")
        wait_subscribed(engine, "done")
        held, release = threading.Event(), threading.Event()
        worker = engine.workers[0]
        process = worker.process

        def in_flight(*args, **kwargs):
            """The old model computing a bundle: it finishes only once the new model is in."""
            held.set()
            release.wait(120)
            return process(*args, **kwargs)

        worker.process = in_flight
        client.request("start_live", channels=CYCLE)
        try:
            wait_until(held.is_set, 120, "a bundle in the old model's worker")
        finally:
            client.request("stop")
        assert engine.load_model(str(new))["name"] == "new"
        release.set()
        headers: list[dict] = []

        def counted() -> dict | None:
            """The new model's summary, once the old model's result is out and every new result was received."""
            if (m := sub.recv(0.1)) is not None:
                headers.append(m[1])
            trust = engine.status()["trust"]
            new_results = sum(h["model"] == "new" for h in headers)
            old_out = any(h["model"] == "old" for h in headers)
            return old_out and trust["trusted"] + trust["untrusted"] == new_results and trust

        trust = wait_until(counted, 60, "the new model's trust summary to count only the new model's results")
        assert trust["model"] == "new"
    finally:
        sub.close()
        engine.close()
