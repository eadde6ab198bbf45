"""Inputs: one module per family, all yielding `Reading`s through the same interface.

FAMILIES is the registry: each family's `type` (the key of [inputs.NAME]) names its config
class and its input class. The config class, an InputConfig beside its input, carries all
that livegen asks of a family before it runs: its keys with their bounds and checks (read by
config.py's generic loader), the value keys it offers to [[map]] rules (`offered_keys`), and
what `livegen devices` says of it (`describe`, `reachable`). Both classes are named as
'module:Class' and imported on first use: a camera-less rig never loads OpenCV, and a
config module loads nothing heavy (check-config imports no OpenCV, ONNX Runtime or torch).

A new sensor is one module holding both classes, and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from livegen.config import InputConfig
from livegen.inputs.base import Input, Reading

__all__ = ["FAMILIES", "Family", "Input", "Reading", "config_class", "create"]


@dataclass(frozen=True, slots=True)
class Family:
    config: str  # 'module:Class' of its InputConfig (a module light enough for check-config)
    input: str   # 'module:Class' of its Input: called as Class(name, config)


FAMILIES: dict[str, Family] = {
    "sim": Family("livegen.inputs.sim:SimInputConfig", "livegen.inputs.sim:SimInput"),
    "replay": Family("livegen.config:ReplayInputConfig", "livegen.inputs.replay:ReplayInput"),
    "midi": Family("livegen.inputs.midi_in:MidiInputConfig",
                   "livegen.inputs.midi_in:MidiInput"),
    "camera": Family("livegen.inputs.camera:CameraInputConfig",
                     "livegen.inputs.camera:CameraInput"),
    "emg": Family("livegen.inputs.emg.config:EmgInputConfig",
                  "livegen.inputs.emg.input:EmgInput"),
    "osc": Family("livegen.inputs.osc:OscInputConfig", "livegen.inputs.osc:OscInput"),
    "page": Family("livegen.inputs.page:PageInputConfig", "livegen.inputs.page:PageInput"),
}


def _load(address: str) -> Any:
    module_name, class_name = address.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def config_class(type_name: str) -> type[InputConfig]:
    """The config class of input family `type_name` (KeyError when there is none)."""
    return _load(FAMILIES[type_name].config)


def create(name: str, config: InputConfig) -> Input:
    """Build the input named `name` from its [inputs.NAME] table."""
    return _load(FAMILIES[config.type].input)(name, config)
