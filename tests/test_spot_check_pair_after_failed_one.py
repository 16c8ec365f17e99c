"""A spot-check pair that could not be written (a disk full for a moment) left its directory behind, and the next
pair took the same name (numbered by the pairs written): every later check failed with FileExistsError after its
light was spent, with no figures and no alarm, for the rest of the session."""

from __future__ import annotations

import errno

import pytest

from tests.test_spot_checks import VS, three_checks_on_live


@pytest.fixture
def disk_full_once(monkeypatch):
    """The first spot-check pair's writer fails (no space left); the disk has room again after it."""
    from scopecast.daemon.recording import writer

    submit, failed = writer.Recorder._submit, []

    def fails_once(self, item):
        if not failed and "spotcheck" in self.path.name:
            failed.append(self.path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return submit(self, item)

    monkeypatch.setattr(writer.Recorder, "_submit", fails_once)
    return failed


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_checks_after_a_pair_that_could_not_be_written_go_on(daemon, client, disk_full_once):
    st = three_checks_on_live(daemon, client, 180, {"interval_ms": 50}, channels={"nuclei": "Nuclei"})
    assert disk_full_once, "no pair recording failed"
    assert st["checks"] >= 3 and not st["skipped"], (st["skipped"], st["last_skip"])
    assert st["recordings_written"] == st["checks"] - 1  # all but the first, which says why
    assert disk_full_once[0].name.endswith("spotcheck-1.ome.zarr") and str(disk_full_once[0]) not in st["recordings"]
