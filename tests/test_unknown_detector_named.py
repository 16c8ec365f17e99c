"""A request naming a detector the rig does not have, with an exposure, is refused naming the detectors.

It was refused with Micro-Manager's ``RuntimeError: No device with label "Nope"`` (snap with ``exposure_ms``,
``start_spot_checks`` with a channel on that detector): no word of a detector, nor which ones there are."""

from __future__ import annotations

import pytest

from scopecast.daemon.control import DaemonError

NAMED = r"^ValueError: unknown detector 'Nope'; detectors: Camera, STED$"


def test_snap_with_an_exposure_on_an_unknown_detector_names_the_detectors(client):
    with pytest.raises(DaemonError, match=NAMED):
        client.request("snap", detector="Nope", exposure_ms=5.0)
    assert client.request("status")["frames_acquired"] == 0


def test_spot_checks_on_an_unknown_detector_name_the_detectors(client):
    with pytest.raises(DaemonError, match=NAMED):
        client.request("start_spot_checks", model="m", results="tcp://127.0.0.1:1",
                       channels={"nuclei": {"channel": "Nuclei", "detector": "Nope"}})
    assert client.request("spot_checks") == {"models": {}}


def test_the_backend_refuses_an_unknown_detector_as_a_bad_argument(backend):
    with pytest.raises(ValueError, match="unknown detector 'Nope'"):
        backend.exposure_range_ms("Nope")
    backend.check_exposure_ms(5.0, "STED")  # a detector it has: as before
