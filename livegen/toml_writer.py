"""Writing TOML, in one spelling for everything livegen writes: the effective config
(`livegen check-config`), presets, EMG calibrations, a profile's suggested mappings.

livegen reads TOML with tomllib, which cannot write. What it writes is small: strings,
booleans, numbers, paths, dates, arrays and inline tables (mappings, dataclasses). Whatever is
written here, tomllib reads back as it went in: floats by their shortest repr, strings with
quotes, backslashes and control characters escaped, the rest of Unicode as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def key(name: str) -> str:
    """A key as TOML spells it: bare where it can be (letters, digits, '_', '-'), else
    quoted."""
    return name if _BARE_KEY.fullmatch(name) else string(name)


def string(text: str) -> str:
    """A basic string (double quotes)."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def value(item: Any) -> str:
    """One value, inline: a mapping or a dataclass becomes an inline table (a dataclass's
    None fields left out, as TOML has no null). Raises TypeError for anything else."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isfinite(item):
            return repr(item)
        return "nan" if math.isnan(item) else ("inf" if item > 0 else "-inf")
    if isinstance(item, str):
        return string(item)
    if isinstance(item, PurePath):
        return string(str(item))
    if isinstance(item, datetime.date | datetime.time):  # as tomllib reads them from a file
        return item.isoformat()
    if isinstance(item, list | tuple):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        item = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)
                if getattr(item, f.name) is not None}
    if isinstance(item, Mapping):
        if not item:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + " }"
    raise TypeError(f"cannot write {item!r} as TOML")


def assignments(table: Mapping[str, Any]) -> list[str]:
    """`key = value` lines, one per item of a flat table."""
    return [f"{key(name)} = {value(item)}" for name, item in table.items()]
