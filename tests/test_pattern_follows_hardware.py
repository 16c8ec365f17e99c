"""The LED pattern as the hardware has it: ``status`` reports it, and a job puts back the pattern it found (one
``set_pattern`` set, which no channel preset matches)."""

from tests.helpers import wait_until


def test_a_job_puts_back_the_pattern_set_before_it(client):
    """Annulus set, one live cycle: the cycle's last channel (DF) was left on, so the next snap was a dark-field
    frame, while a job is to leave the microscope as it found it."""
    client.request("set_pattern", pattern="Annulus")
    assert client.request("describe")["channel"] == ""  # no preset has this pattern
    job = client.request("start_live", max_cycles=1)
    assert client.request("wait", job=job["id"])["status"] == "done"
    assert client.request("describe")["pattern"] == "Annulus"
    frame = client.request("snap")["frame"]
    assert frame["channel"] == "" and frame["pattern"] != "Darkfield"


def test_status_reports_the_pattern_of_a_running_job(client):
    job = client.request("start_live", channels=["DPC-Left"], max_cycles=100000)
    try:
        wait_until(lambda: client.request("status")["pattern"] == "DPC Left", 60, "status pattern DPC Left")
    finally:
        client.request("stop", job=job["id"])
    wait_until(lambda: client.request("status")["pattern"] == "Brightfield", 60, "the pattern found, back")
