"""`livegen devices`: what this machine offers livegen, and whether the config can use it.

Lists cameras, serial ports (with the devices livegen knows by USB id), MIDI ports for each
MIDI system rtmidi was built with (saying plainly when none is reachable), the OSC
listeners of the config, ONNX Runtime's execution providers, and for each configured input
whether it is reachable now: what its family's config says of itself (`describe`,
`reachable`; see livegen.inputs). It only looks: no port is opened for long, no camera is
started, nothing is sent.
"""

from __future__ import annotations

import argparse
import logging
import os
import tomllib
from pathlib import Path

from livegen import config as config_module
from livegen import toml_writer
from livegen.config import Config, InputConfig
from livegen.errors import LivegenError
from livegen.inputs.base import Check
from livegen.inputs.osc import OscInputConfig

log = logging.getLogger(__name__)

# USB ids of hardware livegen has profiles for (devices/*.toml, devices/99-livegen.rules).
KNOWN_USB = {
    (0x2458, 0x0001): "BLED112 Bluetooth dongle (Myo: protocol myo-bled112)",
    (0x0403, 0x6015): "FTDI FT231X (the OpenBCI dongle: protocol cyton)",
    (0x2341, 0x0043): "Arduino Uno (MyoWare sketch: protocol csv)",
    (0x2341, 0x0001): "Arduino Uno (MyoWare sketch: protocol csv)",
    (0x1A86, 0x7523): "CH340 serial (Arduino clone: protocol csv)",
}
STABLE_NAMES = ("livegen-myo", "livegen-cyton", "livegen-emg", "livegen-jevois",
                "livegen-camera")


def devices_command(args: argparse.Namespace) -> int:
    """Print the report. Exit 0 even when something is missing: this is a look, not a
    test (a config that cannot load is reported and the hardware is listed anyway)."""
    config: Config | None = None
    try:
        config = config_module.load(args.config)
    except LivegenError as exc:
        print(f"config: {str(exc).splitlines()[0]}")
    print(report(config), end="")
    return 0


def report(config: Config | None) -> str:
    """The whole report as text."""
    lines: list[str] = []
    if config is not None:
        lines.append(f"config: {config.source}")
    for title, section in (("cameras", cameras()), ("serial ports", serial_ports()),
                           ("MIDI", midi()), ("OSC", osc(config)),
                           ("ONNX Runtime", onnx_runtime()),
                           ("configured inputs", configured_inputs(config))):
        lines += ["", title]
        lines += [f"  {line}" for line in section]
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------- cameras

def cameras() -> list[str]:
    video = Path("/sys/class/video4linux")
    if not video.is_dir():
        return ["none listed (no /sys/class/video4linux: not Linux, or no video devices); "
                "a camera input still tries its device index"]
    lines = []
    for node in sorted(video.iterdir(), key=lambda p: _number(p.name)):
        name = _read(node / "name") or "?"
        index = _read(node / "index")
        device = Path("/dev") / node.name
        # UVC cameras make two nodes each; the one with index 0 gives frames.
        role = "" if index in ("0", "") else "  (metadata node, not for capture)"
        lines.append(f"{device}  {name}  -> device = {_number(node.name)}{role}"
                     f"{_access_hint(device, 'video')}")
    return lines or ["none found (no /dev/video* devices)"]


def _number(name: str) -> int:
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _access_hint(device: Path, group: str) -> str:
    if device.exists() and not os.access(device, os.R_OK | os.W_OK):
        return f"  [no permission: add your user to group '{group}' (devices/99-livegen.rules)]"
    return ""


# ---------------------------------------------------------------- serial ports

def serial_ports() -> list[str]:
    from serial.tools import list_ports

    lines = []
    for port in sorted(list_ports.comports(), key=lambda p: p.device):
        known = KNOWN_USB.get((port.vid, port.pid)) if port.vid is not None else None
        usb = f"  USB {port.vid:04x}:{port.pid:04x}" if port.vid is not None else ""
        description = port.description if port.description not in ("n/a", "") else ""
        if port.vid is None and not description:
            continue  # a built-in UART with nothing behind it (ttyS0..ttyS31)
        lines.append(f"{port.device}  {description}{usb}"
                     f"{'  <- ' + known if known else ''}"
                     f"{_access_hint(Path(port.device), 'dialout')}")
    for name in STABLE_NAMES:
        link = Path("/dev") / name
        if link.is_symlink():
            lines.append(f"{link} -> {os.path.realpath(link)}  (udev name)")
    return lines or ["none found (plug in the dongle; its udev name appears once "
                     "devices/99-livegen.rules is installed)"]


# ---------------------------------------------------------------- MIDI

def midi() -> list[str]:
    try:
        from livegen.ports import midi_systems
    except ImportError as exc:
        return [f"python-rtmidi is not importable ({exc}): no MIDI at all"]
    lines = []
    systems = midi_systems()
    for system in systems:
        if system.unreachable:
            lines.append(f"{system.name}: {system.unreachable}")
            continue
        lines.append(f"{system.name}: reachable; {len(system.outputs)} output(s), "
                     f"{len(system.inputs)} input(s)")
        lines += [f"  out  {port}" for port in system.outputs]
        lines += [f"  in   {port}" for port in system.inputs]
    if all(system.unreachable for system in systems):
        lines.append("no MIDI system is reachable: `livegen run` can still record to a file "
                     "(output.record), but nothing will sound")
    return lines


# ---------------------------------------------------------------- OSC, ONNX Runtime

def osc(config: Config | None) -> list[str]:
    listeners = {name: c for name, c in (config.inputs.items() if config else [])
                 if isinstance(c, OscInputConfig)}
    if not listeners:
        return ["no OSC input configured (add [inputs.NAME] with type = 'osc')"]
    return [f"inputs.{name}: udp {c.host}:{c.port}, messages {c.prefix}/NAME f... -> "
            f"{c.reachable().line()}" for name, c in listeners.items()]


def onnx_runtime() -> list[str]:
    try:
        import onnxruntime
    except ImportError as exc:
        return [f"not importable ({exc}): the generators cannot run"]
    providers = onnxruntime.get_available_providers()
    return [f"version {onnxruntime.__version__}; execution providers: {', '.join(providers)}"]


# ---------------------------------------------------------------- configured inputs

def configured_inputs(config: Config | None) -> list[str]:
    if config is None:
        return ["(no config loaded)"]
    if not config.inputs:
        return ["none configured"]
    lines = []
    for name, input_config in config.inputs.items():
        check = input_config.reachable() or Check(True, "no check for this input type")
        lines.append(f"inputs.{name} ({input_config.describe()}): {check.line()}")
        lines += [f"    {line}" for line in profile_mappings(name, input_config)]
    return lines


def profile_mappings(name: str, c: InputConfig) -> list[str]:
    """The profile's suggested [[map]] rules, with this input's name filled in."""
    if c.profile is None:
        return []
    try:
        profile = tomllib.loads(c.profile.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    rules = profile.get("map", [])
    if not rules:
        return []
    lines = [f"suggested mappings from {c.profile.name} (paste into the config):"]
    for rule in rules:
        if isinstance(rule, dict) and "source" in rule:
            items = {**rule, "source": f"{name}.{rule['source']}"}
            lines.append("[[map]]")
            lines += toml_writer.assignments(items)
    return lines
