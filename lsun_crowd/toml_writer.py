"""Write TOML from values: tables of strings, integers, floats, decimals, booleans and arrays.

The standard library reads TOML (``tomllib``) but does not write it. This writer covers what a
configuration holds; a value TOML cannot hold (``None``, an object) fails with its dotted key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps(table: Mapping[str, Any]) -> str:
    """``table`` as a TOML document: its plain values first, then one ``[section]`` per nested table."""
    lines: list[str] = []
    _write_table(table, (), lines)
    return "\n".join(lines) + "\n"


def quote(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        ESCAPES.get(char, f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char) for char in text
    )
    return f'"{escaped}"'


def key(name: object, path: tuple[str, ...] = ()) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{_dotted(path)}: TOML keys are strings, not {name!r}")
    return name if BARE_KEY.fullmatch(name) else quote(name)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path) or "(top level)"


def _write_table(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    if path:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(key(part, path) for part in path) + "]")
    subtables = []
    for name, value in table.items():
        if isinstance(value, Mapping):
            subtables.append((name, value))
        else:
            lines.append(f"{key(name, path)} = {value_text(value, (*path, str(name)))}")
    for name, value in subtables:
        _write_table(value, (*path, name), lines)


def value_text(value: object, path: tuple[str, ...] = ()) -> str:
    """One value as TOML; tables inside arrays are written inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back as the same float, always with "." or "e"
    if isinstance(value, Decimal):
        if value.is_nan():
            return "nan"
        if value.is_infinite():
            return "inf" if value > 0 else "-inf"
        # Its digits as written, never an exponent ("1E+2" is no TOML number): Decimal("500") reads
        # back as the integer 500 and Decimal("0.50") as 0.50, so a Decimal field gets the same value.
        return format(value, "f")
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{key(name, path)} = {value_text(item, (*path, str(name)))}" for name, item in value.items())
        return f"{{ {pairs} }}" if pairs else "{}"
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return "[" + ", ".join(value_text(item, (*path, f"[{index}]")) for index, item in enumerate(value)) + "]"
    raise TypeError(f"{_dotted(path)}: TOML cannot hold {value!r}")
