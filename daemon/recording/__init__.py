"""Lossless recording to OME-Zarr (NGFF 0.4 on zarr format 2 by default, 0.5 on zarr 3 on request).

One store per acquisition in the ``bioformats2raw`` multi-series layout: series
``0``, ``1``, … (one per stage position and detector), each a ``(t, c, z, y, x)``
image with ``multiscales`` (µm scale, stage translation, measured time step,
when the series began) and ``omero`` (channel names and colours, display
windows from the data) metadata (a series of results also a ``trust`` label
image), all
described by ``OME/METADATA.ome.xml`` (per-plane time, exposure and
position). Every frame's full :class:`~scopecast.daemon.frames.FrameHeader` is
journaled in its series' ``scopecast_frames.jsonl`` once the frame is durable;
:func:`open_recording` reads both back, also from a recording whose process
died, and :func:`repair_recording` finalises such a one from its journal. Frames are written off the acquiring
thread (tensorstore), behind a bounded queue that back-pressures: recording
never drops.
"""

from .cap import RecordingCap
from .ngff import NGFF_VERSIONS, NgffVersion
from .reader import RecordedSeries, Recording, open_recording
from .repair import RecordingInUse, RepairReport, interrupted_recordings, repair_recording
from .writer import JOURNAL, Recorder, RecordingError, SeriesSpec, being_written

__all__ = ["JOURNAL", "NGFF_VERSIONS", "NgffVersion", "RecordedSeries", "Recorder", "Recording", "RecordingCap",
           "RecordingError", "RecordingInUse", "RepairReport", "SeriesSpec", "being_written",
           "interrupted_recordings", "open_recording", "repair_recording"]
