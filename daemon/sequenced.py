"""Hardware-sequenced label-free cycles on an illuminate LED array, software-timed as the fallback.

Software-timed, every frame of a cycle costs a pattern change over the serial
line (Micro-Manager's ``IlluminateLedArray`` adapter waits 30 ms for each
answer) before the exposure. Hardware-sequenced, the four DPC frames are one
camera sequence: the array runs the firmware's DPC sequence (``Sequence`` =
``DPC Patterns``) with ``TriggerInput0Mode`` = ``Every Pattern Change``, so the
camera's exposure-out signal advances the pattern between frames (wire the
camera's exposure output to the array's trigger input 0) and the cycle runs at
the camera's frame rate. Channels the firmware cannot sequence (BF, DF, ...)
are taken in software around the burst.

The simulator emulates both with realistic timing when asked to
(``Camera-TimingModel`` = ``Realistic``, ``LED-SerialDelayMs`` = 30);
``benchmarks/bench_sequenced_cycle.py`` measures both. Not every rig can
sequence: :func:`plan_dpc_sequence` says why not, and :func:`acquire_cycle`
then falls back to software for the whole cycle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .backend import MMCoreBackend, Snap
from .frames import now_ns

__all__ = ["DPC_SEQUENCE_ORDER", "SequencePlan", "acquire_cycle", "acquire_dpc_sequence", "plan_dpc_sequence"]

#: Pattern order of the firmware's DPC sequence (``rdpc``) as the simulator runs it.
#: Check it on real hardware once (snap the four frames of one burst with a tilted
#: sample); scopecast labels each burst frame with the channel of this position.
DPC_SEQUENCE_ORDER: tuple[str, ...] = ("DPC Top", "DPC Bottom", "DPC Left", "DPC Right")
_TRIGGER_MODE = "Every Pattern Change"


@dataclass(frozen=True)
class SequencePlan:
    """Whether a DPC burst can run in hardware: ``channels`` in burst order, or ``why`` not."""

    channels: tuple[str, ...] = ()
    why: str = ""

    def __bool__(self) -> bool:
        return bool(self.channels)


def plan_dpc_sequence(backend: Any) -> SequencePlan:
    """The four DPC channels in burst order when this microscope can hardware-sequence them.

    Needs an LED array with the adapter's ``Sequence`` (``DPC Patterns``) and
    ``TriggerInput0Mode`` (``Every Pattern Change``), one channel preset per DPC
    pattern, and presets that differ in nothing but the pattern (the burst
    changes nothing else between frames).
    """
    if not isinstance(backend, MMCoreBackend) or not backend.led_device:
        return SequencePlan(why="no Micro-Manager LED array")
    core, led = backend.core, backend.led_device
    for prop, value in (("Sequence", "DPC Patterns"), ("TriggerInput0Mode", _TRIGGER_MODE)):
        if not core.hasProperty(led, prop) or value not in core.getAllowedPropertyValues(led, prop):
            return SequencePlan(why=f"{led} has no {prop} '{value}' (not an IlluminateLedArray with triggers)")
    by_pattern = {c.pattern: c.name for c in backend.channels().values() if c.modality == "label-free"}
    missing = [p for p in DPC_SEQUENCE_ORDER if p not in by_pattern]
    if missing:
        return SequencePlan(why=f"no channel preset for {', '.join(missing)}")
    channels = tuple(by_pattern[p] for p in DPC_SEQUENCE_ORDER)
    prop = backend.led_controller.property

    def rest(channel: str) -> set:
        return {(d, p, v) for d, p, v in core.getConfigData(backend.channel_group, channel) if (d, p) != (led, prop)}

    first = rest(channels[0])
    for c in channels[1:]:
        if rest(c) != first:
            return SequencePlan(why=f"presets {channels[0]!r} and {c!r} differ in more than the LED pattern")
    return SequencePlan(channels)


def acquire_dpc_sequence(backend: MMCoreBackend, plan: SequencePlan, exposure_ms: float | None = None,
                         cycles: int = 1, timeout_s: float = 30.0) -> list[tuple[str, Snap]]:
    """``cycles`` DPC cycles as one camera sequence with the array triggered by the camera.

    Returns ``(channel, snap)`` in acquisition order. The array's input trigger
    stays in ``Every Pattern Change`` (it acts only while a sequence runs); a
    failure stops the camera and clears the array.
    """
    if not plan:
        raise ValueError(f"cannot hardware-sequence DPC: {plan.why}")
    core, led = backend.core, backend.led_device
    n = len(plan.channels) * cycles
    out: list[tuple[str, Snap]] = []
    with backend.lock:
        # the presets' shared settings, property by property: the pattern itself is the
        # sequence's, and every unneeded serial command costs a round-trip
        prop = backend.led_controller.property
        for dev, name, value in core.getConfigData(backend.channel_group, plan.channels[0]):
            if (dev, name) != (led, prop) and str(core.getProperty(dev, name)) != str(value):
                core.setProperty(dev, name, value)
        if exposure_ms is not None and exposure_ms != backend.exposure_ms():
            backend.set_exposure_ms(exposure_ms)
        exposure = backend.exposure_ms()
        camera = core.getCameraDevice()
        extra = {"sequenced": True, **backend.roi_extra(camera), **backend.bit_depth_extra()}  # as a snap says
        if core.getProperty(led, "TriggerInput0Mode") != _TRIGGER_MODE:
            # left armed afterwards: the trigger input only matters while a sequence runs
            core.setProperty(led, "TriggerInput0Mode", _TRIGGER_MODE)
        try:
            core.setProperty(led, "SequenceRunCount", cycles)
            core.setProperty(led, "Sequence", "DPC Patterns")
            core.startSequenceAcquisition(n, 0.0, True)
            deadline = time.monotonic() + timeout_s
            while len(out) < n:
                if core.getRemainingImageCount() > 0:
                    img = core.popNextImage().copy()
                    t1 = now_ns()
                    channel = plan.channels[len(out) % len(plan.channels)]
                    out.append((channel, Snap(img, camera, t1 - int(exposure * 1e6), t1, exposure, dict(extra))))
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"hardware-sequenced DPC: {len(out)} of {n} frames after {timeout_s:g} s")
                else:
                    time.sleep(0.0005)
        finally:
            if core.isSequenceRunning():
                core.stopSequenceAcquisition()
            if len(out) < n:
                core.setProperty(led, "Reset", "Reset")
    return out


def acquire_cycle(backend: Any, channels: list[str] | tuple[str, ...], exposure_ms: float | None = None,
                  hardware: bool = True) -> list[tuple[str, Snap]]:
    """One cycle over ``channels``, in that order: the DPC channels as a hardware burst
    when ``hardware`` and the microscope can (:func:`plan_dpc_sequence`), the rest --
    or everything, as the fallback -- software-timed (set the preset, snap)."""
    plan = plan_dpc_sequence(backend) if hardware else SequencePlan(why="software timing requested")
    frames: dict[str, Snap] = {}
    if plan and set(plan.channels) <= set(channels):
        frames.update(acquire_dpc_sequence(backend, plan, exposure_ms))
    for c in channels:
        if c not in frames:
            backend.set_channel(c)
            frames[c] = backend.snap(exposure_ms=exposure_ms)
    return [(c, frames[c]) for c in channels]
