"""Load-time checks of a trigger configuration against the microscope and the result streams, so that
``load_triggers`` refuses what could only fail when a trigger fires (``ValueError`` naming the trigger, the field
and the value); the triggers already loaded stay as they were. The configuration's own bounds are its fields'
(:mod:`.triggers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import useq

if TYPE_CHECKING:
    from .triggers import ActionSpec, TriggerConfig

__all__ = ["Hardware", "check_hardware", "check_sources", "z_stack_span_um"]


class Hardware(Protocol):
    """What :func:`check_hardware` asks of the microscope (a :class:`~scopecast.daemon.backend.MicroscopeBackend`)."""

    def channels(self) -> dict[str, Any]: ...
    def check_exposure_ms(self, value: float, detector: str | None = None) -> None: ...
    def travel_um(self) -> dict[str, tuple[float, float]]: ...


def z_stack_span_um(a: ActionSpec) -> float:
    """From the lowest to the highest plane of a ``z_stack`` action (µm): useq's ``ZRangeAround`` planes."""
    planes = list(useq.ZRangeAround(range=a.z_range_um, step=a.z_step_um))
    return max(planes) - min(planes) if planes else 0.0


def check_hardware(config: TriggerConfig, hardware: Hardware) -> None:
    """Raise ``ValueError`` naming the trigger, field and value unless every action can run on ``hardware``:
    its ``channels`` and ``live_channels`` are channel presets of the microscope, the ``exposure_ms`` of an
    action that takes frames is within the camera's range (actions take frames on the main camera), and a
    ``z_stack``'s planes span no more than the focus travel the backend declares (``travel_um``; a stack that
    fits the travel but not around where the focus is when it fires is refused then, before live is stopped)."""
    known = hardware.channels()
    z_travel = hardware.travel_um().get("z")
    for t in config.triggers:
        for i, a in enumerate(t.actions):
            where = f"trigger {t.name!r} actions[{i}] ({a.kind})"
            fields = {"channels": a.channels if a.uses_channels() else [], "live_channels": a.live_channels or []}
            for name, channels in fields.items():
                unknown = [c for c in channels if c not in known]
                if unknown:
                    raise ValueError(f"{where} {name} = {channels}: unknown channel(s) {unknown}; the microscope has "
                                     f"{sorted(known)}")
            if a.uses_channels():
                try:
                    hardware.check_exposure_ms(a.exposure_ms)
                except ValueError as e:
                    raise ValueError(f"{where} exposure_ms = {a.exposure_ms:g}: {e}") from None
            if a.kind == "z_stack" and z_travel is not None and z_stack_span_um(a) > z_travel[1] - z_travel[0]:
                raise ValueError(f"{where} z_range_um = {a.z_range_um:g}: its planes span {z_stack_span_um(a):g} µm, "
                                 f"more than the whole focus travel [{z_travel[0]:g}, {z_travel[1]:g}] µm "
                                 f"({z_travel[1] - z_travel[0]:g} µm): it could never run")


def check_sources(config: TriggerConfig, sources: dict[str, str]) -> None:
    """Raise ``ValueError`` unless every trigger's model has a result stream in ``sources`` (model -> ZeroMQ
    address) and each address is one."""
    missing = {t.model for t in config.triggers} - set(sources)
    if missing:
        raise ValueError(f"no result stream given for model(s) {sorted(missing)}; sources: {sorted(sources)}")
    for model, address in sources.items():
        if not isinstance(address, str) or not address.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"sources[{model!r}] = {address!r}: not a ZeroMQ address "
                             "(expected e.g. tcp://127.0.0.1:5557)")
