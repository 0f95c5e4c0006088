"""Build typed (frozen) dataclasses from plain dicts: unknown keys and wrong types are errors.

Example:
    >>> from_dict(MFConfig, {"dim": 32})   # doctest: +SKIP
    MFConfig(dim=32, ...)
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration key or value that is unknown or of the wrong type."""


def check_type(value: Any, tp: Any, key: str) -> Any:
    """Return `value` coerced to `tp` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_type(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not match {tp}")
    if tp is Any:
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        out = [check_type(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # yaml reads "1e-3" (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(
    cls: type,
    data: dict[str, Any],
    prefix: str = "",
    hook: Callable[[type, dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    if not is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    if hook is not None:
        data = hook(cls, data)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        if is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key + ".", hook)
        else:
            kwargs[name] = check_type(value, tp, key)
    return cls(**kwargs)


