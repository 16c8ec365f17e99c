"""How much a live recording may write: a cap in bytes and/or frames, with a warning before it."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DISK_RESERVE_BYTES", "RecordingCap"]

#: Free space a recording always leaves on the data disk.
DISK_RESERVE_BYTES = 1 << 30


class RecordingCap(BaseModel):
    """Limits of one recording, counted in raw (uncompressed) pixel bytes and frames.

    Whatever is configured, a recording also stops before the data disk's free
    space (measured at its start, less :data:`DISK_RESERVE_BYTES`) would be
    used up by raw frames: compression only makes that margin larger.
    """

    model_config = ConfigDict(extra="forbid")

    max_bytes: int | None = Field(default=None, ge=1, description="raw pixel bytes")
    max_frames: int | None = Field(default=None, ge=1)
    warn_fraction: float = Field(default=0.9, gt=0, le=1, description="warn once this share is used")

    def merged(self, other: RecordingCap | None) -> RecordingCap:
        """The tighter of two caps (a request's cap may only lower the configured one)."""
        if other is None:
            return self

        def low(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return RecordingCap(max_bytes=low(self.max_bytes, other.max_bytes),
                            max_frames=low(self.max_frames, other.max_frames),
                            warn_fraction=min(self.warn_fraction, other.warn_fraction))

    def limits(self, data_dir: str | Path) -> tuple[int, int | None, str]:
        """``(max_bytes, max_frames, what limits the bytes)`` for a recording starting now in ``data_dir``."""
        disk = max(shutil.disk_usage(data_dir).free - DISK_RESERVE_BYTES, 0)
        if self.max_bytes is not None and self.max_bytes <= disk:
            return self.max_bytes, self.max_frames, "cap"
        return disk, self.max_frames, "free disk space"

    def require_frames(self, data_dir: str | Path, frames: int, height: int, width: int) -> None:
        """:meth:`require_room` for ``frames`` uint16 camera frames of ``height`` x ``width`` pixels."""
        what = f"one {height}x{width} uint16 frame" if frames == 1 else f"{frames} {height}x{width} uint16 frames"
        self.require_room(data_dir, frames * height * width * 2, what)

    def require_room(self, data_dir: str | Path, nbytes: int, what: str) -> None:
        """Raise ``ValueError`` naming the limit when a recording starting now could not hold ``nbytes``."""
        max_bytes, _, limited_by = self.limits(data_dir)
        if max_bytes >= nbytes:
            return
        if limited_by == "cap":
            why = f"its byte cap is {max_bytes} bytes"
        else:
            why = (f"the data disk has {shutil.disk_usage(data_dir).free / 2**20:.0f} MiB free and a recording "
                   f"always leaves {DISK_RESERVE_BYTES / 2**20:.0f} MiB free")
        raise ValueError(f"cannot record: {why}, less than {what} ({nbytes} bytes)")

