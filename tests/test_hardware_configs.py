"""The shipped Micro-Manager configurations: grammar, the presets scopecast needs, and
the real-rig examples run against the simulator with only their Device lines changed.

Three checks per file: a strict line-by-line parser of the ``.cfg`` grammar
(MMCore's ``loadSystemConfiguration`` commands, argument counts, every device
declared before use, pixel-size presets with a size, the channel group
defined); pymmcore-plus's own configuration parser (``Microscope.create_from_config``,
which reads a file without loading any device); and, for the example rigs,
loading them into a real ``UniMMCore`` after swapping the hardware for the
simulator: the ``IlluminateLedArray`` device becomes the simulated one and
every one of its ``Property``/``ConfigGroup``/``ConfigPixelSize`` lines runs
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "hardware_configs"
ALL = sorted(CONFIGS.glob("*.cfg"))
RIGS = sorted(CONFIGS.glob("rig-*.cfg"))

LABEL_FREE = {"BF": "Brightfield", "DF": "Darkfield", "DPC-Left": "DPC Left", "DPC-Right": "DPC Right",
              "DPC-Top": "DPC Top", "DPC-Bottom": "DPC Bottom"}  # what the virtual-staining package reads
FLUORESCENCE = {"Nuclei", "Membrane"}  # spot-check ground truth, the super-resolution input

# command -> allowed argument counts (MMCore's loadSystemConfigurationImpl; pyDevice is UniMMCore's)
ARGS = {"Device": {3}, "pyDevice": {3}, "Property": {2, 3}, "Delay": {2}, "FocusDirection": {2}, "Label": {3},
        "ConfigGroup": {1, 4, 5}, "Config": {4, 5}, "ConfigPixelSize": {4}, "PixelSize_um": {2},
        "PixelSizeAffine": {7}, "PixelSizedxdz": {2}, "PixelSizedydz": {2}, "PixelSizeOptimalZUm": {2},
        "Parent": {2}}


@dataclass
class Line:
    n: int
    command: str
    args: list[str]
    text: str


def parse_cfg(text: str) -> list[Line]:
    """Strict reading of a Micro-Manager ``.cfg``: raises ``ValueError`` naming the line."""
    out: list[Line] = []
    devices = {"Core"}
    pixel_presets: dict[str, bool] = {}
    init = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r").strip()
        if line.startswith("#py "):
            line = line[4:].lstrip()
        if not line or line.startswith("#"):
            continue
        command, *args = line.split(",")
        if command not in ARGS:
            raise ValueError(f"line {n}: unknown command {command!r}")
        if len(args) not in ARGS[command]:
            raise ValueError(f"line {n}: {command} takes {sorted(ARGS[command])} arguments, got {len(args)}")
        if any(a != a.strip() for a in args):
            raise ValueError(f"line {n}: stray whitespace around a field: {line!r}")
        if command in ("Device", "pyDevice"):
            if init != "0":
                raise ValueError(f"line {n}: devices must be declared after Property,Core,Initialize,0")
            if args[0] in devices:
                raise ValueError(f"line {n}: device label {args[0]!r} declared twice")
            devices.add(args[0])
        elif command == "Property" and args[:2] == ["Core", "Initialize"]:
            init = args[2]
        else:
            used = {"Property": args[:1], "Label": args[:1], "Delay": args[:1], "FocusDirection": args[:1],
                    "Parent": args, "ConfigGroup": args[2:3], "Config": args[1:2],
                    "ConfigPixelSize": args[1:2]}.get(command, [])
            for dev in used:
                if dev not in devices:
                    raise ValueError(f"line {n}: device {dev!r} is used before it is declared")
            if command == "Property" and args[0] == "Core" and args[1] in ("Camera", "Shutter", "Focus", "XYStage") \
                    and args[2] and args[2] not in devices:
                raise ValueError(f"line {n}: core role {args[1]} names an undeclared device {args[2]!r}")
            if command == "ConfigPixelSize":
                pixel_presets.setdefault(args[0], False)
            if command == "PixelSize_um":
                if args[0] not in pixel_presets:
                    raise ValueError(f"line {n}: PixelSize_um for undefined pixel-size preset {args[0]!r}")
                pixel_presets[args[0]] = float(args[1]) > 0
        out.append(Line(n, command, args, raw))
    if init != "1":
        raise ValueError("the file never initializes its devices (Property,Core,Initialize,1)")
    missing = [p for p, ok in pixel_presets.items() if not ok]
    if missing:
        raise ValueError(f"pixel-size presets without a size: {missing}")
    groups = {ln.args[0] for ln in out if ln.command == "ConfigGroup"}
    channel_group = [ln.args[2] for ln in out if ln.command == "Property" and ln.args[:2] == ["Core", "ChannelGroup"]]
    if channel_group and channel_group[-1] not in groups:
        raise ValueError(f"channel group {channel_group[-1]!r} is not defined")
    return out


def test_the_strict_parser_catches_mistakes():
    good = "Property,Core,Initialize,0\nDevice,C,DemoCamera,DCam\nProperty,Core,Initialize,1\nProperty,C,Exposure,10\n"
    assert parse_cfg(good)[-1].args == ["C", "Exposure", "10"]
    for bad, why in ((good + "Propery,C,Exposure,10\n", "unknown command 'Propery'"),
                     (good + "Property,Cam,Exposure,10\n", "'Cam' is used before it is declared"),
                     (good + "Label,C,1\n", r"Label takes \[3\] arguments"),
                     (good + "ConfigPixelSize,Res,C,Binning,1\n", "without a size"),
                     (good.replace("Initialize,1", "Initialize,2"), "never initializes"),
                     (good + "Property,Core,ChannelGroup,Channel\n", "'Channel' is not defined")):
        with pytest.raises(ValueError, match=why):
            parse_cfg(bad)


@pytest.mark.parametrize("cfg", ALL, ids=lambda p: p.name)
def test_every_shipped_config_is_well_formed(cfg, tmp_path):
    from pymmcore_plus.model import Microscope

    lines = parse_cfg(cfg.read_text())
    # pymmcore-plus's own parser (no device loaded); it reads Python devices' '#py' lines
    # as the C++ core does (comments), so they are unwrapped for it
    plain = tmp_path / cfg.name
    plain.write_text(cfg.read_text().replace("#py pyDevice,", "Device,").replace("#py ", ""))
    model = Microscope.create_from_config(str(plain))
    declared = {ln.args[0] for ln in lines if ln.command in ("Device", "pyDevice")}
    assert {d.name for d in model.devices} == declared
    assert set(model.config_groups["Channel"].presets) == {ln.args[1] for ln in lines
                                                           if ln.command == "ConfigGroup" and ln.args[0] == "Channel"}


def _presets(lines: list[Line]) -> dict[str, dict[tuple[str, str], str]]:
    out: dict[str, dict[tuple[str, str], str]] = {}
    for ln in lines:
        if ln.command == "ConfigGroup" and ln.args[0] == "Channel" and len(ln.args) >= 4:
            out.setdefault(ln.args[1], {})[(ln.args[2], ln.args[3])] = ln.args[4] if len(ln.args) > 4 else ""
    return out


@pytest.mark.parametrize("cfg", [*RIGS, CONFIGS / "sim-ledarray.cfg"], ids=lambda p: p.name)
def test_configs_have_the_presets_scopecast_needs(cfg):
    from scopecast.daemon.illumination import PATTERN_NAMES

    lines = parse_cfg(cfg.read_text())
    led = {ln.args[0] for ln in lines if ln.command in ("Device", "pyDevice")
           and ln.args[2] in ("IlluminateLedArray", "SimLedArray")}
    assert len(led) == 1, "one IlluminateLedArray"
    (led,) = led
    presets = _presets(lines)
    assert set(LABEL_FREE) | FLUORESCENCE <= set(presets)
    for channel, pattern in LABEL_FREE.items():
        assert presets[channel][(led, "IlluminationPattern")] == pattern
    for channel in FLUORESCENCE:  # not label-free: the LED array is dark or untouched
        assert presets[channel].get((led, "IlluminationPattern"), "Clear") == "Clear"
    values = [ln.args[2] for ln in lines if ln.command == "Property" and ln.args[:2] == [led, "IlluminationPattern"]]
    assert set(values) <= set(PATTERN_NAMES)
    roles = {ln.args[1]: ln.args[2] for ln in lines if ln.command == "Property" and ln.args[0] == "Core"}
    assert {"Camera", "Shutter", "XYStage", "Focus"} <= set(roles) and roles["ChannelGroup"] == "Channel"
    assert any(ln.command == "PixelSize_um" for ln in lines)


# ------------------------------------------------------ the rigs, on the simulator
SIM = "scopecast.daemon.sim.devices"
# (adapter library, device) -> simulated stand-in; None: not simulated (serial ports, epi light)
STAND_INS = {
    ("IlluminateLedArray", "IlluminateLedArray"): "IlluminateLedArray",
    ("HamamatsuHam", "HamamatsuHam_DCAM"): "SimCamera",
    ("AndorSDK3", "Andor sCMOS Camera"): "SimCamera",
    ("ASIStage", "XYStage"): "SimXYStage",
    ("ASIStage", "ZStage"): "SimZStage",
    ("Prior", "XYStage"): "SimXYStage",
    ("Prior", "ZStage"): "SimZStage",
}


def on_simulator(text: str, size: int = 64) -> tuple[str, str]:
    """A rig config with its hardware swapped for the simulator; returns (config, LED label).

    The LED array's Device line becomes the simulated ``IlluminateLedArray``, and all
    its other lines stay as they are. Other devices become simulated ones (their
    hardware-specific property lines dropped) or go (serial ports, the epi light);
    preset rows that make a device that went the core shutter go with it. Rows that
    make the LED array the core shutter stay (UniMMCore 0.18.1 needs
    ``daemon/sim/unicore_workarounds.py`` for them).
    """
    kept: dict[str, str] = {}
    gone: set[str] = set()
    led = ""
    out = []
    for raw in text.splitlines():
        parts = raw.split(",")
        cmd = parts[0]
        if cmd == "Device":
            label, lib, dev = parts[1:]
            stand_in = STAND_INS.get((lib, dev))
            if stand_in is None:
                gone.add(label)
                continue
            kept[label] = stand_in
            if stand_in == "IlluminateLedArray":
                led = label
            if not any(v == "SimScopeHub" for v in kept.values()):
                kept["SimHub"] = "SimScopeHub"
                out.append(f"#py pyDevice,SimHub,{SIM},SimScopeHub")
            out.append(f"#py pyDevice,{label},{SIM},{stand_in}")
            if stand_in == "SimCamera":
                out += [f"#py Property,{label},SensorWidth,{size}", f"#py Property,{label},SensorHeight,{size}"]
            continue
        dev = {"Property": 1, "Label": 1, "Parent": 1, "ConfigPixelSize": 2}.get(cmd)
        if cmd == "ConfigGroup" and len(parts) >= 5:
            dev = 3
            if parts[3] == "Core" and parts[4] == "Shutter" and parts[5] in gone:
                continue
        if dev is not None and len(parts) > dev:
            label = parts[dev]
            if label in gone or (label in kept and label != led and cmd in ("Property", "Label", "Parent")):
                continue
            if cmd == "Property" and parts[1] == "Core" and parts[2] in ("Shutter", "Camera", "XYStage", "Focus") \
                    and parts[3] in gone:
                continue
        out.append(raw)
    return "\n".join(out) + "\n", led


@pytest.mark.parametrize("cfg", RIGS, ids=lambda p: p.name)
def test_rig_runs_on_the_simulator_changing_only_device_lines(cfg, tmp_path):
    from pymmcore_plus.experimental.unicore import UniMMCore

    from scopecast.daemon.backend import MMCoreBackend

    text, led = on_simulator(cfg.read_text())
    original_led = [ln for ln in cfg.read_text().splitlines() if f",{led}," in ln and not ln.startswith("Device,")]
    assert original_led and all(ln in text.splitlines() for ln in original_led)  # every LED line unchanged
    path = tmp_path / cfg.name
    path.write_text(text)
    core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(path))
        assert core.getDeviceName(led) == "IlluminateLedArray" and core.getShutterDevice() == led
        b = MMCoreBackend(core)
        channels = b.channels()
        assert {c: channels[c].pattern for c in LABEL_FREE} == LABEL_FREE
        assert all(channels[c].modality == "fluorescence" for c in FLUORESCENCE)  # presets set Clear
        assert b.pixel_size_um() == pytest.approx(0.65)
        core.setProperty("SimHub", "Sample", "cells")
        offset = float(core.getProperty("Camera", "Offset"))
        means = {}
        switches = any(",Core,Shutter," in ln for ln in text.splitlines() if ln.startswith("ConfigGroup,Channel,"))
        for channel in LABEL_FREE:
            core.setShutterDevice("")
            b.set_channel(channel)
            if switches:  # the preset's Core,Shutter row made the LED array the core shutter again
                assert core.getShutterDevice() == led, channel
            else:
                core.setShutterDevice(led)
            means[channel] = b.snap(exposure_ms=10).data.mean() - offset
        assert means["BF"] > 1000 and means["DPC-Left"] == pytest.approx(means["BF"] / 2, rel=0.1)
        assert means["DF"] < 0.1 * means["BF"]
        assert not core.getShutterOpen()  # auto-shutter: the LED array's global shutter closed again
        b.set_channel("Nuclei")
        assert b.snap(exposure_ms=10).data.mean() - offset < 2.0  # no epi light simulated; LEDs Clear
    finally:
        core.unloadAllDevices()


def test_a_declared_led_controller_is_recognized(tmp_path):
    """Another controller (here a DemoCamera state device standing in for an LED ring
    selector) is declared in the .cfg; its 'off' preset is not label-free."""
    from scopecast.daemon.backend import BackendError, load_mmcore_backend

    demo = (CONFIGS / "demo-camera.cfg").read_text()
    text = demo.replace("Device,Z,DemoCamera,DStage", "Device,Z,DemoCamera,DStage\nDevice,Ring,DemoCamera,DStateDevice")
    text = text.replace("Parent,Z,DHub", "Parent,Z,DHub\nParent,Ring,DHub")
    text += ("Label,Ring,0,Off\nLabel,Ring,1,Inner\nLabel,Ring,2,Outer\n"
             "ConfigGroup,Channel,BF,Ring,Label,Inner\nConfigGroup,Channel,DF,Ring,Label,Outer\n"
             "ConfigGroup,Channel,DAPI,Ring,Label,Off\n"
             "#scopecast led-pattern,Ring,Label,Off\n")
    path = tmp_path / "ring.cfg"
    path.write_text(text)
    try:
        b = load_mmcore_backend(path)
    except BackendError as e:
        if "not found" in str(e):
            pytest.skip(f"DemoCamera adapters not installed (pip install mm-test-adapters): {e}")
        raise
    try:
        ch = b.channels()
        assert (ch["BF"].modality, ch["BF"].pattern, ch["DF"].pattern) == ("label-free", "Inner", "Outer")
        assert ch["DAPI"].modality == "fluorescence" and ch["FITC"].modality == "fluorescence"
        assert b.led_device == "Ring" and "Outer" in b.patterns()
    finally:
        b.close()
    path.write_text(text.replace("#scopecast led-pattern,Ring,Label,Off", "#scopecast led-pattern,Ring,Colour,Off"))
    with pytest.raises(BackendError, match="declared LED controller Ring-Colour is not a loaded device"):
        load_mmcore_backend(path)
    path.write_text(text.replace("#scopecast led-pattern,Ring,Label,Off", "#scopecast led-pattern,Ring"))
    with pytest.raises(BackendError, match=r"line \d+: .*use '#scopecast led-pattern,<Device>,<Property>"):
        load_mmcore_backend(path)
