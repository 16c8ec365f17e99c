"""The frame header: what every acquired frame carries, on disk and on the wire.

A :class:`FrameHeader` is a flat record of JSON-native values (documented field
by field in ``docs/protocol.md``). It is built once per frame in the
acquisition thread; keep it cheap.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["PROTOCOL_VERSION", "Frame", "FrameHeader", "now_ns"]

#: Version of the header / wire format. Bumped on incompatible changes.
PROTOCOL_VERSION = 1


def now_ns() -> int:
    """Wall-clock nanoseconds since the Unix epoch (comparable across processes)."""
    return time.time_ns()


@dataclass
class FrameHeader:
    """Metadata of one frame. Units are in the field names."""

    acquisition_id: str
    seq: int  # monotonically increasing per daemon run, across acquisitions
    bundle_id: int  # frames that form one model input share a bundle id
    bundle_index: int  # position of this frame in its bundle
    bundle_size: int
    channel: str  # channel preset name, e.g. "DPC-Left", "Nuclei"
    modality: str  # "label-free" | "fluorescence" | "super-resolution"
    pattern: str  # LED pattern for label-free frames ("dpc.l"), "" otherwise
    detector: str  # camera device label
    stage_x_um: float
    stage_y_um: float
    stage_z_um: float
    exposure_ms: float
    pixel_size_um: float
    dtype: str
    shape: tuple[int, ...]
    position_index: int = 0  # index of the stage position within the acquisition
    t_exposure_start_ns: int = 0
    t_acquired_ns: int = 0
    t_published_ns: int = 0  # set by the stream publisher just before sending
    series: str = ""  # recording series this frame was written to ("" if not recorded)
    index: dict[str, int] = field(default_factory=dict)  # t/c/z index in the series
    extra: dict[str, Any] = field(default_factory=dict)  # detector-specific (e.g. emitters)
    version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameHeader:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in known}
        data["shape"] = tuple(data.get("shape", ()))
        return cls(**data)


@dataclass
class Frame:
    """One acquired image and its header."""

    header: FrameHeader
    data: np.ndarray
