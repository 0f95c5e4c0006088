"""Search spaces for `crossrec tune`: what an experiment entry's `search:` says, and the defaults.

A model entry of an experiment YAML may carry a `search:` mapping from option paths to ranges:

    - label: bprmf-single
      name: mf
      mode: single
      search:
        dim: [32, 64, 128]                              # a list: one of these values
        reg: {low: 1.0e-6, high: 1.0e-2, log: true}     # float bounds: a float in [low, high]
        train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        neighbourhood.k: {low: 10, high: 200}           # int bounds: an int in [low, high]

A path is a model option (`dim`; a dotted path reaches into a section: `history.length`) or, with
the `train.` prefix, a training option of that model's runs. Bounds that are both ints draw ints
(`type: float` forces floats); `log: true` draws on a log scale (`low` > 0).

An entry without `search:` gets its model's documented default (`default_space`): the spaces in
`DEFAULT_SPACES` for the models people tune most, and for every other trainable model the generic
one, built from the options its config has (`dim`, `reg`, `train.lr`). A model with nothing to tune
(popularity, text-kNN) has an empty space and is run as configured.

Example:
    >>> space = parse_space({"dim": [32, 64], "train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "mf")
    >>> sorted(space)
    ['dim', 'train.lr']
    >>> split_point({"dim": 64, "train.lr": 0.003, "history.length": 10})
    ({'dim': 64, 'history': {'length': 10}}, {'lr': 0.003})
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from crossrec.config import merge_dicts
from crossrec.models.base import Trainable, config_from_dict, get_entry
from crossrec.typed import ConfigError


@dataclass(frozen=True)
class Param:
    """One searched option: `choices` (categorical) or `low`..`high` (int or float, maybe log)."""

    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this option's value from an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def to_json(self) -> Any:
        if self.choices:
            return list(self.choices)
        return {"low": self.low, "high": self.high, "log": self.log, "type": "int" if self.integer else "float"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_param(key: str, raw: Any) -> Param:
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{key}: expected a non-empty list of values or {{low, high[, log]}}")
        for v in raw:
            if not isinstance(v, (int, float, str, bool)) and v is not None:
                raise ConfigError(f"{key}: a listed value must be a number, string or bool, got {v!r}")
        return Param(choices=tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: expected a list of values or {{low, high[, log, type]}}, got {raw!r}")
    unknown = sorted(set(raw) - {"low", "high", "log", "type"})
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; expected low, high, log, type")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{key}: a range needs both low and high")
    low, high, log, kind = raw["low"], raw["high"], raw.get("log", False), raw.get("type")
    if not _is_number(low) or not _is_number(high):
        raise ConfigError(f"{key}: low and high must be numbers, got {low!r} and {high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log: expected true or false, got {log!r}")
    if kind not in (None, "int", "float"):
        raise ConfigError(f"{key}.type: expected int or float, got {kind!r}")
    integer = kind == "int" or (kind is None and _is_int(low) and _is_int(high))
    if not low <= high:
        raise ConfigError(f"{key}: low={low} is above high={high}")
    if log and low <= 0:
        raise ConfigError(f"{key}: log: true needs low > 0, got {low}")
    if integer and (low != int(low) or high != int(high)):
        raise ConfigError(f"{key}: type int needs whole-number bounds, got {low} and {high}")
    return Param(low=low, high=high, log=log, integer=integer)


def parse_space(raw: Any, where: str) -> dict[str, Param]:
    """Parse a `search:` mapping (see the module docstring); errors name `where` and the key."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.search: expected a mapping of option -> values or range, got {raw!r}")
    return {str(k): _parse_param(f"{where}.search.{k}", v) for k, v in raw.items()}


def _nest(path: str, value: Any) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    return {head: _nest(rest, value) if rest else value}


def split_point(point: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A drawn point as (model options, train options), dotted paths nested into sections."""
    params: dict[str, Any] = {}
    train: dict[str, Any] = {}
    for key, value in point.items():
        if key.startswith("train."):
            train = merge_dicts(train, _nest(key[len("train.") :], value))
        else:
            params = merge_dicts(params, _nest(key, value))
    return params, train


def _lr() -> Param:
    return Param(low=1e-4, high=1e-2, log=True)


def _reg() -> Param:
    return Param(low=1e-6, high=1e-2, log=True)


# The documented defaults for the models people tune most (the ranges of RecBole's and Rendle et
# al.'s tuning studies, narrowed to what runs on a laptop). Every other model gets `generic_space`.
DEFAULT_SPACES: dict[str, dict[str, Param]] = {
    "itemknn": {
        "k": Param(low=10, high=1000, log=True, integer=True),
        "shrink": Param(low=0.0, high=200.0),
        "normalize_user": Param(choices=(False, True)),
    },
    "ials": {
        "factors": Param(choices=(32, 64, 128, 256, 512)),
        "regularization": Param(low=1e-3, high=10.0, log=True),
        "alpha": Param(low=0.1, high=100.0, log=True),
    },
    "mf": {"dim": Param(choices=(32, 64, 128)), "reg": _reg(), "train.lr": _lr()},
    "lightgcn": {
        "dim": Param(choices=(32, 64)),
        "n_layers": Param(low=1, high=4, integer=True),
        "reg": _reg(),
        "train.lr": _lr(),
    },
    "sasrec": {
        "dim": Param(choices=(32, 64)),
        "n_layers": Param(low=1, high=3, integer=True),
        "dropout": Param(low=0.0, high=0.5),
        "train.lr": Param(low=3e-4, high=5e-3, log=True),
    },
    "crossrec": {
        "dim": Param(choices=(32, 64, 128)),
        "reg": _reg(),
        "train.lr": Param(low=5e-4, high=5e-3, log=True),
        "history.length": Param(choices=(10, 25, 50)),
        "history.category_dropout": Param(low=0.0, high=0.6),
        "neighbourhood.k": Param(choices=(0, 20, 50, 100)),
    },
    "pop": {},
    "textknn": {},
}


def generic_space(name: str) -> dict[str, Param]:
    """The default for a model without its own entry: `dim`, `reg` and `train.lr`, where it has them."""
    entry = get_entry(name)
    if not issubclass(entry.cls, Trainable):  # fitted in closed form, or composed (pick): nothing to tune
        return {}
    have = {f.name for f in fields(entry.config_cls)}
    space: dict[str, Param] = {}
    if "dim" in have:
        space["dim"] = Param(choices=(32, 64, 128))
    if "reg" in have:
        space["reg"] = _reg()
    space["train.lr"] = _lr()
    return space


def default_space(name: str) -> dict[str, Param]:
    """The search space an entry without `search:` gets (see the module docstring)."""
    return dict(DEFAULT_SPACES[name]) if name in DEFAULT_SPACES else generic_space(name)


def check_space(name: str, params: dict[str, Any], space: dict[str, Param], where: str) -> None:
    """Every searched model option must exist with a usable value at both ends of its range (train
    options are checked when the run config is built)."""
    for key, p in space.items():
        if key.startswith("train."):
            continue
        ends = p.choices or (p.low, p.high)
        for value in ends:
            model_part, _ = split_point({key: int(value) if p.integer else value})
            try:
                config_from_dict(name, merge_dicts(dict(params), model_part))
            except ConfigError as e:
                raise ConfigError(f"{where}.search.{key}={value!r}: {e}") from None


__all__ = ["DEFAULT_SPACES", "Param", "check_space", "default_space", "generic_space", "parse_space", "split_point"]
