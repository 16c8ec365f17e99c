"""``set_pattern`` replies with the pattern the LED array shows, not the one the request named.

IlluminateLedArray (and the simulator that mirrors it) turns ``Manual LED Indicies`` without a ``ManualLedList``
into ``Clear``: the reply said ``Manual LED Indicies`` while every following frame was dark (``status`` and the
frame headers said ``Clear``), as ``set_channel`` would never do (it reads the preset back).
"""

from __future__ import annotations


def test_the_reply_names_the_pattern_the_array_shows(client):
    assert client.request("set_pattern", pattern="DPC Left") == {"pattern": "DPC Left"}
    reply = client.request("set_pattern", pattern="Manual LED Indicies")  # no LED list: the array is cleared
    assert reply == {"pattern": client.request("status")["pattern"]} == {"pattern": "Clear"}
    header, img = client.snap()
    assert header["pattern"] == reply["pattern"]
