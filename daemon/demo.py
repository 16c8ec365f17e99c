"""The README's main job, headless: the daemon on the simulated scope, driven as a client would."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backend import BackendError, load_mmcore_backend
from .control import ControlClient
from .recorder import open_recording
from .service import Daemon
from .snapshot import autoscale, montage, write_png


def run_demo(config: str, out_dir: Path, seconds: float = 5.0) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        backend = load_mmcore_backend(config)
    except BackendError as e:
        print(f"scopecast demo: {e}")
        return 2
    daemon = Daemon(backend, out_dir / "recordings", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    print(f"daemon up: {config}, control {daemon.control_address}")
    try:
        with ControlClient(daemon.control_address, timeout_s=120) as client:
            info = client.request("describe")
            print(f"channels: {', '.join(info['channels'])}; pixel {info['pixel_size_um']:.3f} µm; "
                  f"frame {info['image_shape'][1]}x{info['image_shape'][0]}")

            tiles, names = [], []
            for name in info["channels"]:
                t0 = time.perf_counter()
                header, img = client.snap(channel=name, exposure_ms=50.0 if info["channels"][name]["modality"] == "fluorescence" else 10.0)
                dt = (time.perf_counter() - t0) * 1e3
                print(f"  snap {name:<11} pattern {header['pattern'] or '-':<6} mean {img.mean():8.1f} ADU  "
                      f"({dt:6.1f} ms incl. first render at this position)")
                tiles.append(autoscale(img))
                names.append(name)
            snap_path = write_png(out_dir / "snapshot.png", montage(tiles, columns=4))
            print(f"snapshot of every channel: {snap_path}  ({', '.join(names)})")

            client.request("set_exposure", exposure_ms=10.0)
            job = client.request("start_live")
            print(f"live cycle started ({job['id']}); {seconds:g} s:")
            last_n, last_t = 0, time.perf_counter()
            t_end = last_t + seconds
            while time.perf_counter() < t_end:
                time.sleep(1.0)
                st = client.request("status")
                now = time.perf_counter()
                n = st["job"]["frames"] if st["job"] else last_n
                print(f"  acquired {n:6d} frames  {(n - last_n) / (now - last_t):7.1f} frames/s")
                last_n, last_t = n, now
            client.request("stop")

            job = client.request("capture_pairs", grid={"rows": 2, "columns": 2})
            print(f"dual-modality pairs on a 2x2 grid ({job['total']} frames) ...")
            done = client.wait(job["id"], timeout_s=600)
            rec = open_recording(done["path"])
            print(f"recorded {len(rec.frames)} frames in {len(rec.series)} series: {done['path']}")
            for s in rec.series:
                f0 = s.frames[0]
                print(f"  {s.name}: {s.data.shape} channels {s.channels} at "
                      f"({f0.stage_x_um:.1f}, {f0.stage_y_um:.1f}) µm")
            lat = np.array([(f.t_acquired_ns - f.t_exposure_start_ns) / 1e6 for f in rec.frames])
            print(f"per-frame acquire latency (snap call): p50 {np.percentile(lat, 50):.1f} ms, "
                  f"p99 {np.percentile(lat, 99):.1f} ms (includes first render at each new position)")
            client.request("shutdown")
    finally:
        daemon.close()
    return 0
