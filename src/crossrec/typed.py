"""Build typed (frozen) dataclasses from plain dicts: unknown keys and wrong types are errors.

Example:
    >>> from_dict(MFConfig, {"dim": 32})   # doctest: +SKIP
    MFConfig(dim=32, ...)
"""

from __future__ import annotations

import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

from crossrec.errors import ConfigError  # defined there; importable from here too


_LITERALS: dict[type, list[tuple[str, Any]]] = {}


class Checked:
    """Base of config dataclasses: `Literal[...]` fields are checked on construction too.

    `from_dict` checks every field with its config path; this catches a config built directly in
    Python (`MFConfig(loss="bprr")`) with a `ConfigError` that lists the choices. Choices live in
    the annotation, the one place they are written.
    """

    section: typing.ClassVar[str] = ""  # the config section, for messages (e.g. "train")

    def __post_init__(self) -> None:
        cls = type(self)
        if cls not in _LITERALS:
            hints = typing.get_type_hints(cls)
            _LITERALS[cls] = [(f.name, hints[f.name]) for f in fields(cls)  # type: ignore[arg-type]
                              if _has_literal(hints[f.name])]
        prefix = f"{cls.section}." if cls.section else ""
        for name, tp in _LITERALS[cls]:
            check_type(getattr(self, name), tp, prefix + name)


def _has_literal(tp: Any) -> bool:
    if typing.get_origin(tp) is typing.Literal:
        return True
    return any(_has_literal(a) for a in typing.get_args(tp) if a is not type(None))


MAX_CONFIG_BYTES = 1 << 20  # a config larger than this is refused (nobody writes 1 MB of YAML)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML config text safely: no Python objects, no aliases, bounded size.

    Anchors and aliases (`&a` / `*a`) are refused, so a small file cannot expand into a huge
    structure ("billion laughs"), and so is a key repeated in one mapping (YAML would silently
    keep the last). Errors name `source` and the line.

    Raises:
        ConfigError: too large, not valid YAML, using an alias or a merge key (`<<`), or repeating a key.
    """
    import yaml

    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} bytes; a config may hold at most {MAX_CONFIG_BYTES}")

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{source}:{mark.line + 1}: YAML aliases (*name) are not allowed in configs")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":  # kin to aliases: keys from elsewhere
                        raise ConfigError(f"{source}:{key_node.start_mark.line + 1}: YAML merge keys (<<) are not "
                                          "allowed in configs; write the keys out")
                    if not isinstance(key_node, yaml.ScalarNode):
                        continue  # a complex key: the constructor handles it as usual
                    key = self.construct_object(key_node)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:  # unhashable: the constructor says so
                        continue
                    if first is not None:
                        shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:56] + "..."
                        raise ConfigError(f"{source}:{line}: duplicate key {shown} (first at line {first})")
                    seen[key] = line
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        col = f" (column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {e.problem or e.context}{col}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {str(e)[:200]}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a mapping; missing, unreadable or malformed files are ConfigErrors."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; expected a YAML config file")
    if not path.is_file():  # a device (/dev/zero), a FIFO, a socket: never read without end
        raise ConfigError(f"{path}: is not a regular file; expected a YAML config file")
    try:
        with path.open("rb") as f:  # at most one byte over the cap: a huge file is never read whole
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: expected UTF-8 YAML text") from None
    loaded = load_yaml(text, str(path))
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping (section: ...) at the top level, got {type(loaded).__name__}")
    return loaded


def check_type(value: Any, tp: Any, key: str) -> Any:
    """Return `value` coerced to `tp` where that is lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own message is the clearer one
            return check_type(value, real[0], key)
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
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise ConfigError(f"{key}={value!r}; expected one of {', '.join(repr(c) for c in choices)}")
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


