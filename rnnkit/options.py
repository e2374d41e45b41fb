"""Options as plain dataclasses: one declaration gives the default, the type, the
help text of the CLI flag and the TOML key; :func:`parse_options` checks values
against it at the edge (CLI, TOML, checkpoint metadata)."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import ConfigError


def option(default: Any, help: str) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with the help text its CLI flag shows."""
    return dataclasses.field(default=default, metadata={"help": help})


def option_help(cls: type, name: str) -> str:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.metadata.get("help", "")


def option_types(cls: type, name: str) -> tuple[type, ...]:
    """The types a field accepts: ``int | None`` -> ``(int, NoneType)``."""
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def coerce(section: str, cls: type, key: str, value: Any) -> Any:
    """``value`` as the field's type (an int where a float is expected is fine), or a
    ConfigError naming the key. Floats must be finite: NaN and inf are never a setting."""
    allowed = option_types(cls, key)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"config: [{section}] {key} must be a finite number, got {value!r}")
            return float(value)
        if t is not type(None) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    raise ConfigError(f"config: [{section}] {key} must be {names}, got {type(value).__name__} {shown}")


def parse_options(section: str, cls: type, values: dict[str, Any], exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check ``values`` against the fields of ``cls`` (minus ``exclude``): unknown keys
    and wrong types are a ConfigError; returns the coerced values."""
    known = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    for key in values:
        if key not in known:
            raise ConfigError(f"config: unknown key {key!r} in [{section}]; known keys: {', '.join(sorted(known))}")
    return {k: coerce(section, cls, k, v) for k, v in values.items()}


def require(checks: list[tuple[bool, str]], where: str) -> None:
    """Raise a ConfigError ``"{where} {message}"`` for the first failed ``(ok, message)``."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{where} {message}")
