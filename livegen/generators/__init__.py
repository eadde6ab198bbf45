"""The generators livegen can play, by name: one registration each.

A registration names the generator's config class (the keys of its [generators.NAME]
section; a child of config.GeneratorConfig), the function that builds it from that config
and a seed (its model loaded and checked), and its kind: a step generator extends its music
event by event (generators/step.py), a segment generator makes whole bars on the clock's
grid (generators/segment.py). Modules are imported on use, so reading a config costs no
ONNX Runtime.

A generator of your own: `[generators.NAME] plugin = "package.module:Class"`, where Class
has `Config` (its config class), `kind` ("step" or "segment") and `from_config(config, *,
seed)`. The tests play a small arpeggio this way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["step", "segment"]


@dataclass(frozen=True, slots=True)
class Registration:
    config: str   # "module:ConfigClass"
    build: str    # "module:function", called as function(config, seed=...)
    kind: Kind


REGISTRY: dict[str, Registration] = {
    "charrnn": Registration("livegen.config:CharRNNConfig",
                            "livegen.generators.charrnn_step:CharRNNStep.from_config", "step"),
    "dcrnn": Registration("livegen.generators.dcrnn:DCRNNConfig",
                          "livegen.generators:_dcrnn", "segment"),
    "langevin": Registration("livegen.generators.langevin:LangevinConfig",
                             "livegen.generators:_langevin", "segment"),
}


def _dcrnn(config: Any, *, seed: int) -> Any:
    from livegen.generators.dcrnn import DCRNN  # its own seed is in its config

    return DCRNN.from_config(config)


def _langevin(config: Any, *, seed: int) -> Any:
    from livegen.generators.langevin import LangevinGenerator

    return LangevinGenerator(config)


def resolve(spec: str) -> Any:
    """The object `module:attribute.path` names. Raises ImportError or AttributeError."""
    module_name, _, path = spec.partition(":")
    target: Any = importlib.import_module(module_name)
    for name in path.split("."):
        target = getattr(target, name)
    return target


@dataclass(frozen=True, slots=True)
class GeneratorType:
    """A generator as the config and the engine use it."""

    config_class: type
    kind: Kind
    builder: Any  # (config, *, seed) -> generator, or the "module:function" naming it

    def build(self, config: Any, *, seed: int) -> Any:
        """The generator, its model loaded and checked (errors before any note)."""
        builder = resolve(self.builder) if isinstance(self.builder, str) else self.builder
        generator = builder(config, seed=seed)
        warm_up = getattr(generator, "warm_up", None)
        if warm_up is not None:  # first runs are slow: pay for them before the show
            warm_up()
        return generator


def generator_type(type_name: str, plugin: str = "") -> GeneratorType:
    """The registered generator `type_name`, or the plugin class `plugin` names. Raises
    KeyError for an unknown name, ImportError/AttributeError for a plugin not found."""
    if plugin:
        cls = resolve(plugin)
        kind = getattr(cls, "kind", None)
        if kind not in ("step", "segment"):
            raise AttributeError(f"{plugin} has no kind ('step' or 'segment')")
        return GeneratorType(cls.Config, kind, cls.from_config)
    registration = REGISTRY[type_name]
    return GeneratorType(resolve(registration.config), registration.kind, registration.build)


def type_of(name: str, settings: Any) -> GeneratorType:
    """The generator a [generators.NAME] section plays: its `type` (default: NAME) or its
    `plugin`."""
    return generator_type(getattr(settings, "type", "") or name,
                          getattr(settings, "plugin", ""))
