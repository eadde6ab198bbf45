"""Inputs: one module per family, all yielding `Reading`s through the same interface."""

from __future__ import annotations

import importlib

from livegen.config import InputConfig
from livegen.inputs.base import Input, Reading

__all__ = ["Input", "Reading", "create"]

# config `type` -> module.Class; imported on use, so a camera-less rig never loads OpenCV.
FAMILIES = {
    "sim": "livegen.inputs.sim:SimInput",
    "replay": "livegen.inputs.replay:ReplayInput",
    "midi": "livegen.inputs.midi_in:MidiInput",
    "camera": "livegen.inputs.camera:CameraInput",
    "emg": "livegen.inputs.emg.input:EmgInput",
    "osc": "livegen.inputs.osc:OscInput",
    "page": "livegen.inputs.page:PageInput",
}


def create(name: str, config: InputConfig) -> Input:
    """Build the input named `name` from its [inputs.NAME] table."""
    module_name, class_name = FAMILIES[config.type].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name, config)
