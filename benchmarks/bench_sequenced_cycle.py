"""Label-free cycle rate: software-timed vs hardware-sequenced (LED array triggered by the camera).

The simulator runs with realistic timing: the camera takes exposure + readout
per snap and paces a sequence at max(exposure, readout) (rolling-shutter line
time 9.74 us, ORCA-Flash4.0-like), and every serial command to the LED array
costs the adapter's 30 ms answer wait (SERIAL_DELAY_MS). Cycles:

- DPC (4 frames): software (4 x [pattern command + snap]) vs one hardware burst
  per cycle (one Sequence command + 4 triggered frames) vs 10 cycles per burst;
- virtual-staining input (DPC x4 + BF + DF): software vs the DPC burst + BF, DF in software.

Run: python benchmarks/bench_sequenced_cycle.py [--size 256] [--exposure 10] [--repeats 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import tempfile
import time

logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)

VS_CYCLE = ("DPC-Left", "DPC-Right", "DPC-Top", "DPC-Bottom", "BF", "DF")
SERIAL_MS = 30.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="camera sensor size (pixels)")
    ap.add_argument("--exposure", type=float, default=10.0, help="exposure per frame, ms")
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()

    from scopecast.daemon.backend import load_mmcore_backend
    from scopecast.daemon.sequenced import acquire_cycle, acquire_dpc_sequence, plan_dpc_sequence
    from scopecast.daemon.sim import sized_config

    b = load_mmcore_backend(sized_config(tempfile.mkdtemp(), args.size))
    core = b.core
    core.setProperty("Camera", "TimingModel", "Realistic")
    core.setProperty("LED", "SerialDelayMs", SERIAL_MS)
    plan = plan_dpc_sequence(b)
    assert plan, plan.why
    exp = args.exposure
    readout = args.size * float(core.getProperty("Camera", "LineTimeUs")) / 1000.0
    acquire_cycle(b, VS_CYCLE, exp, hardware=False)  # warm the optics cache (one position)

    def timed(fn, per: int = 1) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000.0 / per)
        return statistics.median(times)

    dpc = list(plan.channels)
    rows = [
        ("DPC x4, software-timed", timed(lambda: acquire_cycle(b, dpc, exp, hardware=False)),
         4 * (SERIAL_MS + exp + readout)),
        ("DPC x4, hardware burst per cycle", timed(lambda: acquire_dpc_sequence(b, plan, exp)),
         SERIAL_MS + 4 * max(exp, readout)),
        ("DPC x4, hardware burst of 10 cycles", timed(lambda: acquire_dpc_sequence(b, plan, exp, cycles=10), per=10),
         (SERIAL_MS + 40 * max(exp, readout)) / 10),
        ("DPC x4 + BF + DF, software-timed", timed(lambda: acquire_cycle(b, VS_CYCLE, exp, hardware=False)),
         6 * (SERIAL_MS + exp + readout)),
        ("DPC x4 + BF + DF, DPC burst + BF, DF software", timed(lambda: acquire_cycle(b, VS_CYCLE, exp)),
         SERIAL_MS + 4 * max(exp, readout) + 2 * (SERIAL_MS + exp + readout)),
    ]
    b.close()
    print(f"# {platform.node()} ({os.cpu_count()} cores), {args.size}x{args.size} px, exposure {exp:g} ms, "
          f"readout {readout:.2f} ms, serial {SERIAL_MS:g} ms/command, median of {args.repeats}")
    print("| cycle | ms / cycle | cycles / s | timing model, ms |")
    print("|---|---|---|---|")
    for name, ms, model in rows:
        print(f"| {name} | {ms:.1f} | {1000.0 / ms:.1f} | {model:.1f} |")


if __name__ == "__main__":
    main()
