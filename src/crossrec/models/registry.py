"""The model registry: `register` a model class under a name with its config dataclass, build its
config from a plain dict (`config_from_dict`, every option checked) and the model (`build_model`).
`models/base.py` re-exports these names, where models have always imported them from.

Example:
    >>> @register("mymodel", MyConfig)                    # doctest: +SKIP
    ... class MyModel(nn.Module): ...
    >>> model = build_model("mymodel", MyConfig(), sizes) # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, TypeVar

from torch import nn

from crossrec.data.batch import Sizes
from crossrec.errors import UnknownNameError
from crossrec.typed import ConfigError, bounds_of, from_dict


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type
    paper: str
    # the class a given config builds, where options change what the model can do (the flagship
    # with a text item tower scores text; the ID one does not): a subclass of `cls`
    variant: Callable[[Any], type[nn.Module]] | None = None


REGISTRY: dict[str, ModelEntry] = {}

M = TypeVar("M", bound=type[nn.Module])


def register(
    name: str, config_cls: type, paper: str = "", variant: Callable[[Any], type[nn.Module]] | None = None
) -> Callable[[M], M]:
    """Class decorator: register a model under a lowercase name with its config dataclass
    (`variant(config)`: the subclass that config builds, where options add capabilities)."""
    if hasattr(config_cls, "section"):
        config_cls.section = "model"  # its options are `model.*` in a run config

    def deco(cls: M) -> M:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = ModelEntry(name, cls, config_cls, paper, variant)
        return cls

    return deco


def _migrate_hook(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`from_dict` hook: a config class may refuse renamed keys with a message (`migrate_check`)."""
    check = getattr(cls, "migrate_check", None)
    if check is not None:
        check(data)
    return data


def _check_values(cfg: Any, prefix: str = "") -> None:
    """The model options' default rule: a number whose field declares no `Bounds` (typed.py:
    `Size`, `Share`, `Positive`, ... beside the field, checked by `from_dict`) must be finite and
    >= 0."""
    declared = bounds_of(type(cfg))
    for f in fields(cfg):
        value, path = getattr(cfg, f.name), prefix + f.name
        if is_dataclass(value):
            _check_values(value, path + ".")
            continue
        if f.name in declared or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        key = f"model.{path}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value}; expected a finite number")
        if value < 0:
            raise ConfigError(f"{key}={value}; expected a value >= 0")


def config_from_dict(name: str, params: dict[str, Any]) -> Any:
    """Build a model's config dataclass (sections nest) from a plain dict.

    Unknown keys, wrong types and impossible values are `ConfigError`s: each field's `Bounds` are
    declared beside it (sizes `Size` >= 1, dropouts `Share` in [0, 1), temperatures `Positive`);
    every other number must be finite and >= 0.
    """
    cfg = from_dict(get_entry(name).config_cls, params, prefix="model.", hook=_migrate_hook)
    _check_values(cfg)
    return cfg


def get_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown model {name!r}; registered: {sorted(REGISTRY)}") from None


def build_model(name: str, config: Any, sizes: Sizes) -> nn.Module:
    """Instantiate a registered model."""
    entry = get_entry(name)
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"model {name!r} expects {entry.config_cls.__name__}, got {type(config)}")
    cls = entry.variant(config) if entry.variant is not None else entry.cls
    return cls(config, sizes)
