"""Transport of 8 MiB frames on loopback: scopecast's zero-copy multipart vs pickled numpy.

Sender and receiver are separate processes connected PUSH -> PULL over
``tcp://127.0.0.1`` and over ``ipc://`` (a Unix socket: what a local engine
uses with ``--stream ipc://PATH``; the receiver must get every frame for a throughput
figure; the frame stream's PUB/XPUB adds only subscription filtering). Each
message carries its send time; the receiver reports GB/s (sender flat out)
and one-way latency percentiles (sender paced at ``--rate`` frames/s, so the
figure is transport, not queueing). Both encodings run back to back in one run.

Run: python benchmarks/bench_transport.py [--frames 400] [--mib 8]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pickle
import shutil
import tempfile
import time

import numpy as np
import zmq


def _sender(addr: str, mode: str, n: int, shape: tuple[int, int], ready, rate: float) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 16)
    s.connect(addr)
    ready.wait()
    frame = np.random.default_rng(0).integers(0, 4096, shape, dtype=np.uint16)
    t_start = time.perf_counter()
    for i in range(n):
        if rate:
            delay = t_start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if mode == "scopecast":
            head = json.dumps({"seq": i, "dtype": "uint16", "shape": list(shape), "t_ns": time.time_ns()}).encode()
            s.send_multipart([b"frame", head, frame], copy=False)
        else:
            s.send(pickle.dumps({"seq": i, "t_ns": time.time_ns(), "frame": frame}, protocol=pickle.HIGHEST_PROTOCOL))
    s.close(linger=-1)
    ctx.term()


def _receive(sock: zmq.Socket, mode: str) -> tuple[int, int]:
    if mode == "scopecast":
        parts = sock.recv_multipart(copy=False)
        head = json.loads(parts[1].bytes)
        img = np.frombuffer(parts[2].buffer, dtype=head["dtype"]).reshape(head["shape"])
        t = head["t_ns"]
    else:
        msg = pickle.loads(sock.recv())
        img, t = msg["frame"], msg["t_ns"]
    return img.nbytes, time.time_ns() - t


def run(mode: str, n: int, shape: tuple[int, int], rate: float = 0.0, transport: str = "tcp") -> dict[str, float]:
    ctx = zmq.Context()
    r = ctx.socket(zmq.PULL)
    r.setsockopt(zmq.RCVHWM, 16)
    tmp = None
    if transport == "ipc":
        tmp = tempfile.mkdtemp(prefix="scopecast-bench-")
        addr = f"ipc://{tmp}/stream"
        r.bind(addr)
    else:
        addr = f"tcp://127.0.0.1:{r.bind_to_random_port('tcp://127.0.0.1')}"
    ready = mp.Event()
    p = mp.Process(target=_sender, args=(addr, mode, n, shape, ready, rate))
    p.start()
    ready.set()
    lat, total = [], 0
    _receive(r, mode)  # first message: connection set-up
    t0 = time.perf_counter()
    for _ in range(n - 1):
        nbytes, dt = _receive(r, mode)
        total += nbytes
        lat.append(dt / 1e6)
    elapsed = time.perf_counter() - t0
    p.join()
    r.close()
    ctx.term()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    a = np.array(lat)
    return {"GB/s": total / elapsed / 1e9, "frames/s": (n - 1) / elapsed, "p50 ms": float(np.percentile(a, 50)),
            "p99 ms": float(np.percentile(a, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--rate", type=float, default=50.0, help="frames/s for the latency run (both encodings keep up)")
    args = ap.parse_args()
    side = int(np.sqrt(args.mib * 1024 * 1024 / 2))
    shape = (side, side)
    print(f"{args.frames} frames of {shape[0]}x{shape[1]} uint16 ({args.mib} MiB), separate processes")
    cases = [("scopecast", "tcp"), ("scopecast", "ipc"), ("pickle", "tcp")]
    flat = {c: run(*c[:1], args.frames, shape, transport=c[1]) for c in cases}
    paced = {c: run(c[0], max(args.frames // 2, 50), shape, args.rate, transport=c[1]) for c in cases}
    names = {"scopecast": "scopecast (JSON + raw buffer)", "pickle": "pickled numpy array"}
    print(f"\n{'encoding':<28} {'transport':<9} {'GB/s':>7} {'frames/s':>9} | at {args.rate:g} frames/s: "
          f"{'p50 ms':>7} {'p99 ms':>7}")
    for c in cases:
        f, p = flat[c], paced[c]
        print(f"{names[c[0]]:<28} {c[1]:<9} {f['GB/s']:7.2f} {f['frames/s']:9.1f} | {'':>17}"
              f"{p['p50 ms']:7.2f} {p['p99 ms']:7.2f}")
    tcp, ipc, pkl = (flat[c]["GB/s"] for c in cases)
    print(f"\nthroughput scopecast / pickle (tcp): {tcp / pkl:.2f}x; ipc / tcp: {ipc / tcp:.2f}x; "
          f"p99 one-way latency pickle / scopecast (tcp): "
          f"{paced[cases[2]]['p99 ms'] / paced[cases[0]]['p99 ms']:.2f}x")


if __name__ == "__main__":
    main()
