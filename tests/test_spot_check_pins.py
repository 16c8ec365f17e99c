"""Spot checks find the label-free bundle of the result they check however fast live runs: the ring they took it
from is capped at 256 MiB, half a second of free-running live at 512² on the simulator, and an engine on a busy
core answered later than that, so every check was skipped ('label-free frames gone') and the fidelity alarm could
never fire. The checker now pins the bundles the engine's next result can be of (daemon/spot_check_pins.py)."""

from __future__ import annotations

import numpy as np
import pytest

from scopecast.daemon.frames import Frame, FrameHeader
from scopecast.daemon.recorder import open_recording
from scopecast.daemon.trigger_actions import FrameRing
from tests.test_spot_checks import CYCLE, VS, three_checks_on_live

#: Frames of 256² the ring may hold in these tests: two bundles of the six-channel cycle, what 256 MiB are of a
#: 512² live at 1000 frames/s measured against an engine's latency (the suite's sensor is 256², its model faster).
SMALL_RING_FRAMES = 12


@pytest.fixture
def small_rings(monkeypatch):
    """Every frame ring holds at most :data:`SMALL_RING_FRAMES` frames of 256²."""
    init = FrameRing.__init__

    def small(self, seconds: float, max_bytes: int = 512 << 20) -> None:
        init(self, seconds, min(max_bytes, SMALL_RING_FRAMES * 256 * 256 * 2))

    monkeypatch.setattr(FrameRing, "__init__", small)


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_checks_find_their_bundle_when_the_ring_holds_less_than_the_engine_takes(daemon, client, small_rings):
    # free-running live: the ring holds two bundles, a few ms
    st = three_checks_on_live(daemon, client, 300, {}, dose_per_session=1e6, dose_per_position=1e6)
    assert st["checks"] >= 3 and not st["skipped"], (st["skipped"], st["last_skip"])
    assert st["pinned"]["bundles"] <= 12, st["pinned"]
    for path in st["recordings"]:  # each pair holds the whole bundle of the result it checked
        pair = open_recording(path)
        info = pair.attrs["scopecast"]["spot_check"]
        label_free = [h for h in pair.series[0].frames if h.modality == "label-free"]
        assert [h.channel for h in label_free] == CYCLE, path
        assert {h.bundle_id for h in label_free} == {info["bundle_id"]}, path


def _frame(bundle: int, index: int, acquisition: str = "live") -> Frame:
    h = FrameHeader(acquisition_id=acquisition, seq=bundle * 2 + index, bundle_id=bundle, bundle_index=index,
                    bundle_size=2, channel=f"c{index}", modality="label-free", pattern="", detector="Camera",
                    stage_x_um=0.0, stage_y_um=0.0, stage_z_um=0.0, exposure_ms=1.0, pixel_size_um=1.0,
                    dtype="uint16", shape=(4, 4), position_index=0, t_exposure_start_ns=bundle,
                    t_acquired_ns=bundle * 10 + index)
    return Frame(h, np.zeros((4, 4), np.uint16))


def test_pins_outlive_the_ring_and_are_released_when_the_engine_passes_them():
    from scopecast.daemon.spot_check_pins import PinningRing

    ring = PinningRing(10.0, 2 * 32, candidates=2, max_pinned=3)  # the ring: two frames
    for b in range(3):
        for i in range(2):
            ring(_frame(b, i))
    ring.repin("live", 0, keep=None)  # a result of bundle 0: bundles 1 and 2 may be the next
    for b in range(3, 6):
        for i in range(2):
            ring(_frame(b, i))
    assert len(ring.bundle("live", 1)) == 2 and len(ring.bundle("live", 2)) == 2  # pinned, out of the ring
    assert ring.bundle("live", 3) == []  # neither in the ring nor pinned
    ring.repin("live", 2, keep=("live", 2))  # the next result was of bundle 2: bundle 1 is released
    assert ring.bundle("live", 1) == [] and len(ring.bundle("live", 2)) == 2
    assert ring.pins()["bundles"] == 3  # bundle 2 kept, bundles 4 and 5 (the newest) pinned: at most 3
    ring.repin("other", 0, keep=None)  # another live job: every pin of the first released
    assert ring.bundle("live", 2) == [] and ring.pins()["bundles"] == 0
    ring(_frame(0, 0, "other"))
    ring.repin("other", -1, keep=None)  # a bundle being acquired is pinned and fills up
    ring(_frame(0, 1, "other"))
    for b in range(1, 4):
        for i in range(2):
            ring(_frame(b, i, "other"))
    assert [f.header.bundle_index for f in ring.bundle("other", 0)] == [0, 1]
