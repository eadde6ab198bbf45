"""Presets: numbered sets of controls and generator settings in a TOML file beside the
config (`engine.presets`, default presets.toml).

    [presets.3]
    name = "high and sparse"
    generator = "lead"          # switch mode: the generator that sounds
    pitch = 0.8
    density = 0.2
    key = 0
    temperature = 1.0
    top_p = 0.95
    velocity = 0.75
    tempo = 120.0
    noise = { 0 = 0.5, 3 = -0.25 }   # noise[i] that are not 0

    [presets.3.generators.lead]      # what holds for one generator alone
    temperature = 0.8

Storing writes what the controls are now (a temporary file, then a rename, so a crash
never leaves half a file). Recalling turns a preset into the values of one reading of the
source `preset` (config.PRESET_SOURCE), which the mapper holds until each target's own
rule moves. A key left out of a preset leaves that control as it is, so a preset written
by hand may hold only what it means to change. Storing rewrites the file: comments in it
are not kept.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from livegen import toml_writer
from livegen.config import SCOPED_TARGETS, TARGETS
from livegen.control import Controls
from livegen.errors import LivegenError

log = logging.getLogger(__name__)

FIRST, LAST = 1, 128  # preset numbers: program change 0..127 recalls preset 1..128
SHARED = ("pitch", "density", "key", "temperature", "top_p", "velocity", "tempo")
HEADER = ("# livegen presets: written by /livegen/preset/store N (OSC) and the monitor page;\n"
          "# edit freely (a key left out leaves that control as it is; comments are not "
          "kept).\n")


class PresetError(LivegenError):
    """A preset that cannot be stored or recalled; the message names the fix."""


def check_number(number: int) -> int:
    if not FIRST <= number <= LAST:
        raise PresetError(f"preset {number}: preset numbers run {FIRST}..{LAST}")
    return number


def control_values(controls: Controls) -> dict[str, Any]:
    """The controls as a preset holds them: shared targets, the generator, the noise that
    is not 0, and each generator's own values."""
    table: dict[str, Any] = {"generator": controls.generator}
    for target in SHARED:
        value = getattr(controls, target)
        table[target] = value if isinstance(value, int) else round(float(value), 6)
    noise = {str(i): round(v, 6) for i, v in enumerate(controls.noise) if v != 0.0}
    if noise:
        table["noise"] = noise
    own: dict[str, dict[str, Any]] = {}
    for generator, target, index, value in controls.scoped:
        entry = own.setdefault(generator, {})
        if target == "noise":
            entry.setdefault("noise", {})[str(index)] = round(value, 6)
        else:
            entry[target] = round(value, 6)
    if own:
        table["generators"] = own
    return table


def load(path: Path) -> dict[int, dict[str, Any]]:
    """Every preset in the file by number ({} when there is no file yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"{path}: cannot read the presets ({exc}); check the file, or "
                          "point engine.presets elsewhere") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc}); fix it or move it away") from None
    presets = table.get("presets", {})
    if not isinstance(presets, dict):
        raise PresetError(f"{path}: 'presets' must hold tables like [presets.1]")
    numbered: dict[int, dict[str, Any]] = {}
    for key, preset in presets.items():
        if not (key.isdigit() and FIRST <= int(key) <= LAST and isinstance(preset, dict)):
            log.warning("%s: presets.%s is not a preset (numbers %d..%d, each a table); "
                        "skipped", path, key, FIRST, LAST)
            continue
        numbered[int(key)] = preset
    return numbered


def store(path: Path, number: int, controls: Controls, name: str = "") -> None:
    """Write the controls as preset `number`, keeping the file's other presets."""
    check_number(number)
    presets = load(path)
    table = control_values(controls)
    table = {"name": name or presets.get(number, {}).get("name") or f"preset {number}",
             **table}
    presets[number] = table
    text = HEADER + "".join(_preset_toml(n, presets[n]) for n in sorted(presets))
    _write_atomically(path, text)
    log.info("preset %d stored in %s", number, path)


def recall(path: Path, number: int, generators: Sequence[str]) -> tuple[str, dict[str, float]]:
    """Preset `number` as (its name, the values of a PRESET_SOURCE reading): target ->
    value, the generator as its index in `generators`. Keys it cannot use are logged and
    skipped; a preset that is not there is an error."""
    check_number(number)
    presets = load(path)
    if number not in presets:
        stored = ", ".join(map(str, sorted(presets))) or "none yet"
        raise PresetError(f"preset {number} is not in {path} (stored: {stored}); store it "
                          f"first (/livegen/preset/store {number})")
    preset = presets[number]
    values: dict[str, float] = {}
    where = f"{path}: presets.{number}"
    for key, value in preset.items():
        if key == "name":
            continue
        if key == "generator":
            if value in generators:
                values["generator"] = float(list(generators).index(value))
            else:
                log.warning("%s.generator: %r does not run (running: %s); skipped", where,
                            value, ", ".join(generators))
        elif key == "generators" and isinstance(value, dict):
            for generator, own in value.items():
                if generator not in generators or not isinstance(own, dict):
                    log.warning("%s.generators.%s: no such generator runs; skipped", where,
                                generator)
                    continue
                _targets(own, f"{generator}.", SCOPED_TARGETS, values, f"{where}.{generator}")
        else:
            _targets({key: value}, "", (*SHARED, "noise"), values, where)
    return str(preset.get("name", f"preset {number}")), values


def _targets(table: dict[str, Any], scope: str, allowed: Sequence[str],
             values: dict[str, float], where: str) -> None:
    for target, value in table.items():
        if target == "noise" and "noise" in allowed and isinstance(value, dict):
            for index, level in value.items():
                if index.isdigit() and _number(level) is not None:
                    values[f"{scope}noise[{int(index)}]"] = float(level)
                else:
                    log.warning("%s.noise.%s: not noise[i] = a number; skipped", where, index)
        elif target in allowed and target in TARGETS and _number(value) is not None:
            values[f"{scope}{target}"] = float(value)
        else:
            log.warning("%s.%s: not a control this preset can set (%s, as numbers); "
                        "skipped", where, target, ", ".join(allowed))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _preset_toml(number: int, preset: dict[str, Any]) -> str:
    lines = [f"\n[presets.{number}]"]
    nested = {k: v for k, v in preset.items() if k == "generators" and isinstance(v, dict)}
    lines += toml_writer.assignments({k: v for k, v in preset.items() if k not in nested})
    for generator, own in nested.get("generators", {}).items():
        lines.append(f"\n[presets.{number}.generators.{toml_writer.key(generator)}]")
        lines += toml_writer.assignments(own)
    return "\n".join(lines) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: a reader sees
    the old file or the new one, never half of one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise PresetError(f"{path}: cannot write the presets ({exc.strerror}); point "
                          "engine.presets at a writable place") from None
    try:
        # mkstemp makes the file private; keep the mode the presets file had.
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise PresetError(f"{path}: cannot write the presets ({exc.strerror}); point "
                          "engine.presets at a writable place") from None


def values_now(controls: Controls, keys: dict[str, float],
               generators: Sequence[str]) -> dict[str, float]:
    """What `controls` hold now for each key of a preset's reading (`pitch`,
    `noise[3]`, `lead.temperature`, `generator`): where a morph starts from."""
    now: dict[str, float] = {}
    for key in keys:
        scope, _, target = key.rpartition(".") if "." in key else ("", "", key)
        held = controls.for_generator(scope) if scope else controls
        if target == "generator":
            now[key] = float(list(generators).index(held.generator)) \
                if held.generator in generators else 0.0
        elif target.startswith("noise[") and target.endswith("]"):
            now[key] = float(held.noise[int(target[6:-1])])
        elif hasattr(held, target):
            now[key] = float(getattr(held, target))
    return now
