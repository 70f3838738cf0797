"""Reading one config section into its frozen dataclass, with named errors (shared by config and sd3_config)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigParseError


def section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigParseError(f"config section '{where}' must be an object, got {type(raw).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigParseError(f"config section '{where}' has unknown keys: {', '.join(unknown)}")
    kwargs = {}
    for name, f in names.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigParseError(f"config section '{where}' lacks the required key '{name}'")
            continue
        kwargs[name] = coerce(raw[name], f.type, f"{where}.{name}")
    return cls(**kwargs)


def coerce(value: Any, type_name: Any, where: str) -> Any:
    t = str(type_name)
    if t == "bool":
        if not isinstance(value, bool):
            raise ConfigParseError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigParseError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigParseError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if t == "str":
        if not isinstance(value, str):
            raise ConfigParseError(f"config key '{where}' must be a string, got {value!r}")
        return value
    if t.startswith("tuple[int"):
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigParseError(f"config key '{where}' must be a list of integers, got {value!r}")
        return tuple(value)
    if t.startswith("tuple[str"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigParseError(f"config key '{where}' must be a list of strings")
        return tuple(value)
    if t.startswith("dict[str, tuple[int"):
        if not isinstance(value, dict):
            raise ConfigParseError(f"config key '{where}' must be an object of block lists")
        return {str(k): coerce(v, "tuple[int, ...]", f"{where}.{k}") for k, v in value.items()}
    raise ConfigParseError(f"config key '{where}' has an unsupported type {t}")
