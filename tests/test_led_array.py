"""The simulated LED array through a real UniMMCore, as any Micro-Manager client sees it:
the property set of Micro-Manager's IlluminateLedArray adapter, its Shutter semantics,
the firmware commands, and firmware-timed sequences."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import small_cfg

from tests.helpers import wait_until

# IlluminateLedArray (mmCoreAndDevices DeviceAdapters/IlluminateLEDArray): name -> (type, allowed, limits)
ADAPTER_PROPERTIES = {
    "IlluminationPattern": ("String", None, None),
    "NumericalAperture": ("Float", (), None),
    "InnerNumericalAperture": ("Float", (), None),
    "AnnulusStartNa": ("Float", (), None),
    "AnnulusWidthNa": ("Float", (), None),
    "ArrayDistanceFromSample": ("Float", (), None),
    "ManualLedList": ("String", (), None),
    "Brightness": ("Integer", (), (0, 255)),
    "ColorBalanceRed": ("Integer", (), (0, 255)),
    "ColorBalanceGreen": ("Integer", (), (0, 255)),
    "ColorBalanceBlue": ("Integer", (), (0, 255)),
    "GlobalShutter": ("Integer", (), (0, 1)),
    "SerialCommand": ("String", (), None),
    "SerialResponse": ("String", (), None),
    "LedCount": ("Integer", (), None),
    "Sequence": ("String", ("", "Individual LEDs (All)", "Individual LEDs (Brightfield)",
                            "Individual LEDs (Darkfield)", "DPC Patterns"), None),
    "SequenceDelaySeconds": ("Float", (), None),
    "SequenceRunCount": ("Integer", (), None),
    "TriggerInput0Mode": ("String", ("Disabled", "Every Pattern Change", "Every Pattern Cycle",
                                     "Start of First Pattern"), None),
    "TriggerOutput0Mode": ("String", ("Disabled", "Every Pattern Change", "Every Pattern Cycle",
                                      "Start of First Pattern"), None),
    "Port": ("String", (), None),
}


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
    return str(small_cfg(tmp_path_factory.mktemp("led"), 64))


@pytest.fixture
def core(cfg_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    c = UniMMCore()
    c.loadSystemConfiguration(cfg_path)
    yield c
    c.unloadAllDevices()


def lit_mean(core, exposure_ms: float = 5.0) -> float:
    core.setExposure(exposure_ms)
    core.snapImage()
    return float(core.getImage().mean()) - float(core.getProperty("Camera", "Offset"))


def test_device_type_name_and_property_set_are_the_adapters(core):
    from pymmcore_plus import DeviceType, PropertyType

    from scopecast.daemon.illumination import PATTERN_NAMES

    assert core.getDeviceType("LED") == DeviceType.Shutter
    assert core.getDeviceName("LED") == "IlluminateLedArray"
    names = set(core.getDevicePropertyNames("LED"))
    assert set(ADAPTER_PROPERTIES) <= names
    for prop, (kind, allowed, limits) in ADAPTER_PROPERTIES.items():
        assert core.getPropertyType("LED", prop) == getattr(PropertyType, kind), prop
        if allowed:
            assert tuple(core.getAllowedPropertyValues("LED", prop)) == allowed, prop
        if limits:
            assert (core.getPropertyLowerLimit("LED", prop), core.getPropertyUpperLimit("LED", prop)) == limits
    assert tuple(core.getAllowedPropertyValues("LED", "IlluminationPattern")) == PATTERN_NAMES
    assert core.isPropertyPreInit("LED", "Port") and core.isPropertyReadOnly("LED", "LedCount")
    assert int(core.getProperty("LED", "LedCount")) == 32 * 32


def test_global_shutter_is_the_shutter_api_and_gates_the_leds(core):
    core.setConfig("Channel", "BF")
    assert core.getShutterOpen("LED") and core.getProperty("LED", "GlobalShutter") == 1
    lit = lit_mean(core)
    assert lit > 500  # auto-shutter opened the path shutter; the array's own shutter is open
    core.setShutterOpen("LED", False)
    assert int(core.getProperty("LED", "GlobalShutter")) == 0
    assert abs(lit_mean(core)) < 2.0  # gs.0: the pattern is set but nothing emits
    core.setProperty("LED", "GlobalShutter", 1)
    assert core.getShutterOpen("LED") and lit_mean(core) == pytest.approx(lit, rel=0.05)


def test_the_led_array_as_the_core_shutter(core):
    """What a real rig does: the LED array is the shutter of its label-free presets."""
    core.setConfig("Channel", "BF")
    core.setShutterOpen("Shutter", True)  # the path shutter stays open
    core.setShutterDevice("LED")
    core.setShutterOpen("LED", False)
    assert lit_mean(core) > 500 and not core.getShutterOpen("LED")  # auto-shutter: opened, closed again
    core.setAutoShutter(False)
    assert abs(lit_mean(core)) < 2.0


def test_brightness_colour_and_patterns_change_the_light(core):
    core.setConfig("Channel", "BF")
    full = lit_mean(core)
    core.setProperty("LED", "Brightness", 64)
    assert lit_mean(core) == pytest.approx(full * 64 / 255, rel=0.05)
    core.setProperty("LED", "Brightness", 255)
    core.setProperty("LED", "ColorBalanceRed", 255)  # red and green emitters: twice the light
    assert lit_mean(core) == pytest.approx(2 * full, rel=0.1)
    core.setProperty("LED", "ColorBalanceRed", 0)
    core.setProperty("LED", "IlluminationPattern", "DPC 000 Deg.")
    assert lit_mean(core) == pytest.approx(full / 2, rel=0.1)
    core.setProperty("LED", "InnerNumericalAperture", 0.2)  # hollow bright-field: fewer LEDs
    core.setProperty("LED", "IlluminationPattern", "Brightfield")
    assert int(core.getProperty("LED", "LitLedCount")) < 32 and lit_mean(core) < full
    core.setProperty("LED", "InnerNumericalAperture", 0.0)
    core.setProperty("LED", "AnnulusStartNa", 0.3)
    core.setProperty("LED", "AnnulusWidthNa", 0.1)
    core.setProperty("LED", "IlluminationPattern", "Half Annulus Left")
    n_half = int(core.getProperty("LED", "LitLedCount"))
    core.setProperty("LED", "IlluminationPattern", "Annulus")
    assert int(core.getProperty("LED", "LitLedCount")) == 2 * n_half > 0
    with pytest.raises(Exception, match="not allowed"):
        core.setProperty("LED", "IlluminationPattern", "dpc.l")  # firmware names are not pattern values
    with pytest.raises(Exception, match="lights no LED"):  # refused; the old setting stays
        core.setProperty("LED", "AnnulusStartNa", 0.99)
    assert float(core.getProperty("LED", "AnnulusStartNa")) == pytest.approx(0.3)


def test_manual_led_list_like_the_adapter(core):
    core.setProperty("LED", "ManualLedList", "0.1.2.3")
    assert core.getProperty("LED", "IlluminationPattern") == "Manual LED Indicies"
    assert int(core.getProperty("LED", "LitLedCount")) == 4
    core.setProperty("LED", "ManualLedList", "")
    assert core.getProperty("LED", "IlluminationPattern") == "Clear"
    core.setProperty("LED", "IlluminationPattern", "Manual LED Indicies")  # no LEDs listed: Clear
    assert core.getProperty("LED", "IlluminationPattern") == "Clear"
    with pytest.raises(Exception, match="LED 5000 is outside 0..1023"):
        core.setProperty("LED", "ManualLedList", "1.5000")


def test_serial_commands_of_the_firmware(core):
    for cmd, pattern in (("bf", "Brightfield"), ("dpc.l", "DPC Left"), ("dpc.120", "DPC 120 Deg."),
                         ("cdpc", "Color DPC"), ("l.0", "Center LED"), ("x", "Clear")):
        core.setProperty("LED", "SerialCommand", cmd)
        assert core.getProperty("LED", "IlluminationPattern") == pattern, cmd
    core.setProperty("LED", "SerialCommand", "na.40")
    assert core.getProperty("LED", "SerialResponse") == "NA.40"
    assert float(core.getProperty("LED", "NumericalAperture")) == pytest.approx(0.4)
    core.setProperty("LED", "SerialCommand", "an.30.15")
    assert core.getProperty("LED", "IlluminationPattern") == "Annulus"
    assert float(core.getProperty("LED", "AnnulusWidthNa")) == pytest.approx(0.15)
    core.setProperty("LED", "SerialCommand", "l.4.5.6")
    assert core.getProperty("LED", "ManualLedList") == "4.5.6"
    core.setProperty("LED", "SerialCommand", "gs.0")
    assert not core.getShutterOpen("LED") and core.getProperty("LED", "SerialResponse") == "GS.0"
    with pytest.raises(Exception, match="unknown command"):
        core.setProperty("LED", "SerialCommand", "rainbow")
    assert core.getProperty("LED", "SerialResponse").startswith("ERROR")


def test_serial_commands_keep_to_the_property_limits(core):
    """A firmware command may not set what the property refuses, and a refusal names the value as typed."""
    core.setProperty("LED", "IlluminationPattern", "Brightfield")
    for cmd, match in (("na.120", "NumericalAperture 1.2 is outside its limits 0.01..1"),
                       ("nai.150", "InnerNumericalAperture 1.5 is outside its limits 0..1"),
                       ("an.30.150", "AnnulusWidthNa 1.5 is outside its limits 0..1"),
                       ("sb.300", "Brightness 300 is outside its limits 0..255"),
                       ("sc.0.300.0", "ColorBalanceGreen 300 is outside its limits 0..255")):
        with pytest.raises(Exception, match=match):
            core.setProperty("LED", "SerialCommand", cmd)
    assert float(core.getProperty("LED", "NumericalAperture")) == pytest.approx(0.25)
    assert core.getProperty("LED", "IlluminationPattern") == "Brightfield"
    assert int(core.getProperty("LED", "Brightness")) == 255
    core.setProperty("LED", "SerialCommand", "sb.128")  # in range: still accepted
    assert int(core.getProperty("LED", "Brightness")) == 128


def test_sequence_runs_with_the_firmware_timing(core):
    core.setProperty("LED", "SequenceDelaySeconds", 0.1)
    core.setProperty("LED", "SequenceRunCount", 2)
    seen: list[str] = []
    t0 = time.monotonic()
    core.setProperty("LED", "Sequence", "DPC Patterns")
    assert core.getProperty("LED", "Sequence") == ""  # the adapter reads back "not running"

    def done() -> bool:
        p = core.getProperty("LED", "IlluminationPattern")
        if not seen or seen[-1] != p:
            seen.append(p)
        return core.getProperty("LED", "SequenceRunning") == 0

    wait_until(done, timeout=120)
    elapsed = time.monotonic() - t0
    assert elapsed >= 8 * 0.1 * 0.95  # 4 patterns x 2 runs, each shown for the delay
    assert seen[-1] == "Clear"  # cleared at the end, like the firmware
    assert {"DPC Top", "DPC Bottom", "DPC Left", "DPC Right"} & set(seen)


def test_individual_led_scan_lights_one_led_at_a_time(core):
    core.setProperty("LED", "SequenceDelaySeconds", 0.0)
    core.setProperty("LED", "Sequence", "Individual LEDs (Brightfield)")
    counts = set()
    wait_until(lambda: counts.add(int(core.getProperty("LED", "LitLedCount")))
               or core.getProperty("LED", "SequenceRunning") == 0, timeout=120)
    assert counts <= {0, 1}
    assert core.getProperty("LED", "IlluminationPattern") == "Clear"


def test_real_adapter_lines_run_unchanged(tmp_path):
    """A config fragment written for the real adapter (Device line swapped) loads and works."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    cfg = tmp_path / "fragment.cfg"
    cfg.write_text("\n".join([
        "Property,Core,Initialize,0",
        "#py pyDevice,Scope,scopecast.daemon.sim.devices,SimScopeHub",
        "#py pyDevice,Camera,scopecast.daemon.sim.devices,SimCamera",
        "#py Property,Camera,SensorWidth,32",
        "#py Property,Camera,SensorHeight,32",
        "#py pyDevice,LedArray,scopecast.daemon.sim.devices,IlluminateLedArray",  # was: Device,LedArray,...
        "Property,LedArray,Port,COM7",
        "Property,Core,Initialize,1",
        "Property,LedArray,ArrayDistanceFromSample,50",
        "Property,LedArray,NumericalAperture,0.25",
        "Property,LedArray,Brightness,255",
        "Property,LedArray,GlobalShutter,0",
        "Property,Core,Camera,Camera",
        "Property,Core,Shutter,LedArray",
        "Property,Core,AutoShutter,1",
        "ConfigGroup,Channel,DPC-Top,LedArray,IlluminationPattern,DPC Top",
        "ConfigGroup,Channel,Ring,LedArray,AnnulusStartNa,0.3",
        "ConfigGroup,Channel,Ring,LedArray,IlluminationPattern,Annulus",
        "Property,Core,ChannelGroup,Channel",
    ]) + "\n")
    core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(cfg))
        assert core.getProperty("LedArray", "Port") == "COM7"
        core.setConfig("Channel", "DPC-Top")
        core.snapImage()
        img = core.getImage().astype(np.float64) - float(core.getProperty("Camera", "Offset"))
        assert img.mean() > 500 and not core.getShutterOpen()
        core.setConfig("Channel", "Ring")
        assert core.getCurrentConfig("Channel") == "Ring" and int(core.getProperty("LedArray", "LitLedCount")) > 0
    finally:
        core.unloadAllDevices()
