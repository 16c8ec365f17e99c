"""Hardware-sequenced DPC (the camera's exposure-out advancing the LED array), its
software-timed fallback, and the simulator's timing model, on a real core."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import SHIPPED_CFG

from scopecast.daemon.backend import load_mmcore_backend
from scopecast.daemon.sequenced import acquire_cycle, acquire_dpc_sequence, plan_dpc_sequence
from scopecast.daemon.sim import sized_config
from tests.helpers import wait_until


@pytest.fixture
def seq_backend(tmp_path):
    b = load_mmcore_backend(sized_config(tmp_path, 64, SHIPPED_CFG))
    b.core.setProperty("Scope", "Sample", "phase-grating")
    b.core.setProperty("Camera", "Noise", "Off")  # expected counts: frames compare exactly
    yield b
    b.close()


def test_burst_frames_are_the_patterns_of_their_channels(seq_backend):
    b, core = seq_backend, seq_backend.core
    plan = plan_dpc_sequence(b)
    assert plan.channels == ("DPC-Top", "DPC-Bottom", "DPC-Left", "DPC-Right"), plan.why
    soft = {c: s.data for c, s in acquire_cycle(b, plan.channels, 5.0, hardware=False)}
    assert not np.array_equal(soft["DPC-Left"], soft["DPC-Right"])  # the grating tells the halves apart
    frames = acquire_dpc_sequence(b, plan, 5.0, cycles=3)
    assert [c for c, _ in frames] == list(plan.channels) * 3
    for channel, snap in frames:
        np.testing.assert_array_equal(snap.data, soft[channel], err_msg=channel)
        assert snap.extra["sequenced"] and snap.exposure_ms == 5.0
    assert core.getProperty("LED", "IlluminationPattern") == "Clear"  # the firmware clears at the end
    assert core.getProperty("LED", "SequenceRunning") == 0 and not core.isSequenceRunning()
    assert not core.getShutterOpen()  # auto-shutter closed after the sequence


def test_burst_frames_under_a_camera_roi_say_where_it_lies_as_snaps_do(seq_backend):
    """A burst's frames carry the ROI's place on the sensor (``extra`` ``roi``, ``sensor``), as a snap's do: a
    recording places them on the sample by it. They carried only ``sequenced``, so a recording put a DPC
    burst's ROI at the stage position, off the sample by the ROI's offset on the sensor."""
    b, core = seq_backend, seq_backend.core
    core.setROI(8, 16, 32, 24)
    plan = plan_dpc_sequence(b)
    snap = dict(acquire_cycle(b, plan.channels, 5.0, hardware=False))["DPC-Top"]
    assert snap.extra == {"roi": [8, 16, 32, 24], "sensor": [64, 64]}
    for channel, burst in acquire_dpc_sequence(b, plan, 5.0):
        assert burst.data.shape == (24, 32) and burst.extra == {"sequenced": True, **snap.extra}, channel


def test_a_cycle_mixes_the_burst_with_software_frames_in_the_requested_order(seq_backend):
    b = seq_backend
    cycle = ["DPC-Left", "BF", "DPC-Right", "DPC-Top", "DF", "DPC-Bottom"]
    soft = dict(acquire_cycle(b, cycle, 5.0, hardware=False))
    mixed = acquire_cycle(b, cycle, 5.0)
    assert [c for c, _ in mixed] == cycle
    for channel, snap in mixed:
        np.testing.assert_array_equal(snap.data, soft[channel].data, err_msg=channel)
    assert [bool(s.extra.get("sequenced")) for _, s in mixed] == [c.startswith("DPC") for c in cycle]


def test_presets_that_differ_beyond_the_pattern_fall_back_to_software(tmp_path):
    text = SHIPPED_CFG.read_text().replace("#py ConfigGroup,Channel,DPC-Bottom,Emission,Label,Open",
                                           "#py ConfigGroup,Channel,DPC-Bottom,Emission,Label,525/50")
    cfg = tmp_path / "differ.cfg"
    cfg.write_text(text)
    b = load_mmcore_backend(sized_config(tmp_path, 64, cfg))
    try:
        plan = plan_dpc_sequence(b)
        assert not plan and "'DPC-Top' and 'DPC-Bottom' differ in more than the LED pattern" in plan.why
        with pytest.raises(ValueError, match="cannot hardware-sequence DPC"):
            acquire_dpc_sequence(b, plan)
        frames = acquire_cycle(b, ["DPC-Top", "DPC-Bottom"], 5.0)
        assert [c for c, _ in frames] == ["DPC-Top", "DPC-Bottom"] and not any(s.extra for _, s in frames)
    finally:
        b.close()
    assert "no Micro-Manager LED array" in plan_dpc_sequence(object()).why


def test_realistic_timing_lower_bounds(seq_backend):
    """The emulation's timing, as lower bounds (a loaded machine only adds): a snap takes
    exposure + readout, a pattern command the serial wait, a burst frame max(exposure, readout)."""
    b, core = seq_backend, seq_backend.core
    core.setProperty("Camera", "TimingModel", "Realistic")
    core.setProperty("LED", "SerialDelayMs", 30)
    readout = 64 * float(core.getProperty("Camera", "LineTimeUs")) / 1000.0
    plan = plan_dpc_sequence(b)
    t = time.perf_counter()
    acquire_cycle(b, plan.channels, 20.0, hardware=False)
    software_ms = (time.perf_counter() - t) * 1000
    assert software_ms >= 4 * (30 + 20 + readout) * 0.95
    t = time.perf_counter()
    acquire_dpc_sequence(b, plan, 20.0, cycles=2)
    burst_ms = (time.perf_counter() - t) * 1000
    assert burst_ms >= (30 + 8 * 20) * 0.95


def test_start_of_first_pattern_waits_for_the_camera(seq_backend):
    core = seq_backend.core
    core.setProperty("LED", "TriggerInput0Mode", "Start of First Pattern")
    core.setProperty("LED", "SequenceDelaySeconds", 0.01)
    core.setProperty("LED", "Sequence", "DPC Patterns")
    wait_until(lambda: core.getProperty("LED", "IlluminationPattern") == "DPC Top", timeout=120, what="first pattern")
    assert core.getProperty("LED", "SequenceRunning") == 1  # held at the first pattern: no trigger yet
    core.snapImage()  # the exposure-out releases it; then the firmware's own timing
    wait_until(lambda: core.getProperty("LED", "SequenceRunning") == 0, timeout=120, what="sequence end")
    assert core.getProperty("LED", "IlluminationPattern") == "Clear"


def test_daemon_live_runs_the_dpc_burst_in_hardware_and_says_so(tmp_path):
    """``start_live(hardware_sequence=True)``: the DPC frames come from one burst per cycle (their
    headers carry ``sequenced``), BF/DF are software-timed, the bundle order is the requested one; a
    cycle without every DPC channel falls back to software and the job says why."""
    from scopecast.daemon.control import ControlClient
    from scopecast.daemon.service import Daemon
    from scopecast.daemon.stream import StreamSubscriber
    from tests.helpers import wait_subscribed

    cfg = sized_config(tmp_path, 64, SHIPPED_CFG)
    d = Daemon(lambda: load_mmcore_backend(cfg), tmp_path / "data", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    sub = StreamSubscriber(d.stream_address, topics=("frame",))
    cycle = ["DPC-Left", "BF", "DPC-Right", "DPC-Top", "DF", "DPC-Bottom"]
    try:
        wait_subscribed(d.publisher, "frame", 1)
        with ControlClient(d.control_address, timeout_s=60) as c:
            job = c.request("start_live", channels=cycle, exposure_ms=5, max_cycles=2, hardware_sequence=True)
            done = c.wait(job["id"], timeout_s=60)
            assert done["status"] == "done" and done["frames"] == 12, done
            assert done["sequenced"] == {"hardware": ["DPC-Top", "DPC-Bottom", "DPC-Left", "DPC-Right"]}
            heads = []
            while len(heads) < 12 and (m := sub.recv(10)) is not None:
                heads.append(m[1])
            assert [h["channel"] for h in heads] == cycle * 2
            assert [bool(h.get("extra", {}).get("sequenced")) for h in heads] == [x.startswith("DPC") for x in cycle] * 2
            assert len({h["bundle_id"] for h in heads}) == 2 and [h["bundle_index"] for h in heads[:6]] == list(range(6))
            job = c.request("start_live", channels=["DPC-Left", "DPC-Right", "BF"], max_cycles=1,
                            hardware_sequence=True)
            done = c.wait(job["id"], timeout_s=60)
            assert done["sequenced"]["hardware"] == [] and "lacks DPC-Top" in done["sequenced"]["why"]
    finally:
        sub.close()
        d.close()
