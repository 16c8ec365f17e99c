"""Compatibility name: the recorder lives in :mod:`scopecast.daemon.recording`."""

from .recording import (  # noqa: F401 - re-exported
    JOURNAL, NGFF_VERSIONS, RecordedSeries, Recorder, Recording, RecordingCap, RecordingError, SeriesSpec,
    open_recording,
)

__all__ = ["JOURNAL", "NGFF_VERSIONS", "RecordedSeries", "Recorder", "Recording", "RecordingCap", "RecordingError",
           "SeriesSpec", "open_recording"]
