"""Build typed (frozen) dataclasses from plain dicts: unknown keys and wrong types are errors.

Example:
    >>> from_dict(MFConfig, {"dim": 32})   # doctest: +SKIP
    MFConfig(dim=32, ...)
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, cast

from crossrec.errors import ConfigError  # defined there; importable from here too

_LITERALS: dict[type, list[tuple[str, Any]]] = {}


@dataclass(frozen=True)
class Bounds:
    """A field's value constraint, declared beside the field in its annotation, the one place it
    is written: `dim: Size = 64`, `dropout: Share = 0.1`, `lr: Annotated[float, Bounds(gt=0)]`.
    `from_dict` checks it with the config path (`model.dim=-3; expected an integer >= 1`), and so
    does `Checked` for a config built directly in Python. Numbers must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` ("expected ..."), or None when it fits."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the type check speaks for other types
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        noun = (
            "an integer"
            if isinstance(value, int)
            and self.ge is not None
            and float(self.ge).is_integer()
            and self.gt is None
            and self.le is None
            and self.lt is None
            else "a value"
        )
        if self.ge is not None and self.lt is not None and not (self.ge <= value < self.lt):
            return f"expected a share in [{self.ge:g}, {self.lt:g})"
        for bound, ok, sign in (
            (self.ge, lambda b: value >= b, ">="),
            (self.gt, lambda b: value > b, ">"),
            (self.le, lambda b: value <= b, "<="),
            (self.lt, lambda b: value < b, "<"),
        ):
            if bound is not None and not ok(bound):
                return f"expected {noun} {sign} {bound:g}"
        return None


Size = Annotated[int, Bounds(ge=1)]  # sizes and counts: at least 1
Share = Annotated[float, Bounds(ge=0.0, lt=1.0)]  # dropouts, ratios: in [0, 1)
Positive = Annotated[float, Bounds(gt=0.0)]  # temperatures, rates: divided by or multiplied in
NonNegative = Annotated[float, Bounds(ge=0.0)]
Count = Annotated[int, Bounds(ge=0)]  # counts that may be 0 (off)

_BOUNDS: dict[type, dict[str, Bounds]] = {}


def bounds_of(cls: type) -> dict[str, Bounds]:
    """{field name: its declared Bounds} of a dataclass (from `Annotated[..., Bounds(...)]`)."""
    if cls not in _BOUNDS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _BOUNDS[cls] = {f.name: b for f in fields(cls) for b in _bounds_in(hints[f.name])}
    return _BOUNDS[cls]


def _bounds_in(tp: Any) -> list[Bounds]:
    if typing.get_origin(tp) is Annotated:
        return [m for m in typing.get_args(tp)[1:] if isinstance(m, Bounds)]
    return [b for a in typing.get_args(tp) if a is not type(None) for b in _bounds_in(a)]


def check_bounds(cls: type, values: dict[str, Any], prefix: str = "") -> None:
    """Raise ConfigError naming `prefix + field` for the first value outside its declared Bounds."""
    for name, bound in bounds_of(cls).items():
        if name in values and (problem := bound.problem(values[name])) is not None:
            raise ConfigError(f"{prefix}{name}={values[name]}; {problem}")


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
            _LITERALS[cls] = [
                (f.name, hints[f.name])
                for f in fields(cast(Any, cls))  # a dataclass (subclasses are)
                if _has_literal(hints[f.name])
            ]
        prefix = f"{cls.section}." if cls.section else ""
        for name, tp in _LITERALS[cls]:
            check_type(getattr(self, name), tp, prefix + name)
        check_bounds(cls, {f.name: getattr(self, f.name) for f in fields(cast(Any, cls))}, prefix)


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
                        raise ConfigError(
                            f"{source}:{key_node.start_mark.line + 1}: YAML merge keys (<<) are not "
                            "allowed in configs; write the keys out"
                        )
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
        if isinstance(tp, type) and is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key + ".", hook)
        else:
            kwargs[name] = check_type(value, tp, key)
    check_bounds(cls, kwargs, prefix)  # with the config path; Checked repeats it for Python-built configs
    return cls(**kwargs)
