"""The experiment spec: what an experiment YAML says, parsed and checked before anything trains.

An experiment YAML has the sections of a run config (`data`, `prepare`, `train`, `eval`, and
`transfer` where the run config has it) plus:

    seeds: [0, 1, 2]
    metrics: [ndcg@10, recall@10]
    models:
      - {label: pop, name: pop, single_category: true}
      - {label: bprmf-single, name: mf, mode: single, dim: 128}
      - {label: crossrec, name: crossrec, dim: 64, flagship: true, train: {lr: 0.002}}

Each model entry (`ModelRun`) has a `label`, a registry `name`, a `mode` (single | pooled),
optional `train`, `transfer` (the transfer paradigm) and `encoder` (e.g. `{finetune: lora}`)
overrides, optional `params` (model options
whose name collides with an entry key), optional `baseline` (the label of the single-category model
its gain is measured against; default: the best single-category model of each row), optional
`single_category` (a single-category reference; default: `mode: single`), optional `flagship`
(the model the report's acceptance check is about; default: false), optional `seeds` (a subset for
an expensive baseline; its cells then say how many seeds), optional `grid` (model options -> lists
of values: every combination is trained with the first seed and scored on the validation split, and
the best one runs the seeds; `{label: ials, name: ials, grid: {factors: [64, 128]}}`), optional
`search` (`crossrec tune`'s search space, experiment/space.py; default: the model's), optional
`pick` (labels of earlier entries: per seed, their trained models are composed into one that
answers each category with the one that did best there on validation, models/pick.py; `name`
is then `pick`, and may be left out); every other key is a model option.

Example:
    >>> cfg = load_experiment("configs/experiments/anime-mal.yaml", ["--seeds=[0]"])  # doctest: +SKIP
    >>> select(cfg, ["pop", "crossrec"]).models                                       # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from crossrec.config import (
    RunConfig,
    merge_dicts,
    model_spec_hook,
    parse_overrides,
    validate_run_config,
)
from crossrec.models.base import Fittable, Trainable, config_from_dict, get_entry
from crossrec.typed import ConfigError, check_type, from_dict, read_config_file

RUN_SECTIONS = ("data", "prepare", "train", "eval", "transfer", "encoder")
LABEL = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}"  # a model label, also a folder name


@dataclass(frozen=True)
class ModelRun:
    """One model of an experiment (see the module docstring)."""

    label: str
    name: str
    mode: Literal["single", "pooled"] = "pooled"
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    single_category: bool = False  # a single-category reference: the gains of the others are measured against it
    flagship: bool = False  # the model the acceptance check is about
    train: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)  # this model's `encoder:` options (e.g. finetune: lora)
    seeds: tuple[int, ...] | None = None  # this model's seeds (e.g. an expensive baseline: [0]); None = all
    grid: dict[str, list[Any]] = field(
        default_factory=dict
    )  # model options searched on the validation split before the seeds run
    search: dict[str, Any] = field(
        default_factory=dict
    )  # `crossrec tune`'s search space (experiment/space.py); empty = the model's default
    pick: tuple[str, ...] = ()  # labels of earlier entries: this entry composes their trained models (models/pick.py)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values (the entry's own options fill the rest)."""
        keys = sorted(self.grid)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))]

    @property
    def closed_form(self) -> bool:
        """Fitted without a loss (popularity, ItemKNN): seeds cannot change its result."""
        cls = get_entry(self.name).cls
        return issubclass(cls, Fittable) and not issubclass(cls, Trainable)


MODEL_KEYS = tuple(f.name for f in fields(ModelRun))  # the entry keys; every other key is a model option


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment: the shared run sections, the models, the seeds and the reported metrics."""

    run: dict[str, Any]  # the run-config sections shared by every model (data, prepare, train, eval, ...)
    models: tuple[ModelRun, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    metrics: tuple[str, ...] = ("ndcg@10", "recall@10")
    out: str = "runs/experiment"
    name: str = "experiment"

    def run_config(self, model: ModelRun, seed: int) -> RunConfig:
        """The full RunConfig of one (model, seed) run."""
        data = {k: v for k, v in self.run.items() if k in RUN_SECTIONS}
        data["train"] = merge_dicts(dict(data.get("train", {})), dict(model.train)) | {"seed": seed}
        for section in ("transfer", "encoder"):
            if getattr(model, section):
                data[section] = merge_dicts(dict(data.get(section, {})), dict(getattr(model, section)))
        data["model"] = {"name": model.name, "mode": model.mode, **model.params}
        data["seed"] = seed
        data["out"] = str(Path(self.out) / "models" / model.label / f"seed-{seed}")
        return from_dict(RunConfig, data, hook=model_spec_hook)


def _entry_defaults(entry: dict[str, Any]) -> dict[str, Any]:
    """The defaults of a model entry that follow from its other keys: `single_category` from
    `mode: single`; empty `train`, `transfer` and `params` (`null` included) mean none."""
    out = {k: entry[k] for k in MODEL_KEYS if k in entry}
    if out.get("single_category") is None:
        out["single_category"] = out.get("mode", "pooled") == "single"
    for k in ("params", "train", "transfer", "encoder", "grid", "search"):
        out[k] = out.get(k) or {}
    return out


def _parse_model(i: int, entry: Any) -> ModelRun:
    key = f"models[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: expected a mapping with label and name, got {entry!r}")
    if "pick" in entry:
        entry = {"name": "pick", **entry}
    for req in ("label", "name"):
        if req not in entry:
            raise ConfigError(f"{key}: missing '{req}'")
    run: ModelRun = from_dict(
        ModelRun, _entry_defaults(entry), f"{key}."
    )  # types (and mode's choices) of the entry keys
    if not re.fullmatch(LABEL, run.label):  # a label names folders (models/<label>/seed-<n>): never a path
        raise ConfigError(
            f"{key}.label={run.label[:60]!r}: expected letters, digits, '.', '_', '-' "
            "(at most 64, not starting with '.')"
        )
    get_entry(run.name)  # unknown model names fail here, listing the registry
    # Model options: the entry's other keys, plus an explicit `params` mapping for options whose name
    # is an entry key (e.g. BiTGCF's own `transfer` option).
    params = {k: v for k, v in entry.items() if k not in MODEL_KEYS} | run.params
    if run.pick or run.name == "pick":  # its options are checked once its candidates are known (`_picks`)
        if run.name != "pick" or not run.pick or run.grid or run.search or run.mode != "pooled":
            raise ConfigError(
                f"{key} ({run.label}): a pick entry has `pick: [labels]`, name pick (or none), mode pooled, "
                "and no grid or search"
            )
        return replace(run, params=params)
    try:
        config_from_dict(run.name, params)  # unknown or mistyped model options fail before anything trains
        for point in run.grid_points():
            config_from_dict(run.name, merge_dicts(params, point))
    except ConfigError as e:
        raise ConfigError(f"{key} ({run.label}): {e}") from None
    if any(not isinstance(v, list) or not v for v in run.grid.values()):
        raise ConfigError(f"{key}.grid: every option maps to a non-empty list of values")
    if run.search:
        from crossrec.experiment.space import check_space, parse_space

        if run.grid:
            raise ConfigError(f"{key} ({run.label}): grid and search both pick options; give one")
        check_space(run.name, params, parse_space(run.search, key), key)
    return replace(run, params=params)


def _picks(runs: tuple[ModelRun, ...], seeds: tuple[int, ...]) -> tuple[ModelRun, ...]:
    """The pick entries with their candidates' specs in their options, checked: each label names an
    earlier entry that is not a pick, and every seed of the pick runs with every candidate."""
    out = []
    for i, m in enumerate(runs):
        if m.pick:
            earlier = {r.label: r for r in runs[:i]}
            bad = [x for x in m.pick if x not in earlier or earlier[x].pick]
            if bad or len(set(m.pick)) < max(2, len(m.pick)):
                raise ConfigError(
                    f"models[{i}].pick={list(m.pick)}: expected two or more distinct labels of earlier entries "
                    f"that are not picks themselves (have {[r.label for r in runs[:i] if not r.pick]})"
                )
            for x in m.pick:
                lacking = sorted(set(own_seeds(m, seeds)) - set(own_seeds(earlier[x], seeds)))
                if lacking and not earlier[x].closed_form:
                    raise ConfigError(f"models[{i}] ({m.label}): candidate {x} does not run seed(s) {lacking}")
            specs = [
                {"label": x, "name": earlier[x].name, "mode": earlier[x].mode, "params": earlier[x].params}
                for x in m.pick
            ]
            params = {**m.params, "candidates": specs}
            try:
                config_from_dict("pick", params)
            except ConfigError as e:
                raise ConfigError(f"models[{i}] ({m.label}): {e}") from None
            m = replace(m, params=params)
        out.append(m)
    return tuple(out)


def own_seeds(m: ModelRun, seeds: tuple[int, ...]) -> list[int]:
    """The seeds entry `m` runs (its own subset of the experiment's)."""
    return [s for s in seeds if m.seeds is None or s in m.seeds] or list(m.seeds or seeds)


def load_experiment(
    path: str | Path | None = None, overrides: list[str] | None = None, data: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read an experiment YAML (or a dict) and apply dotted overrides (e.g. --seeds=[0])."""
    raw: dict[str, Any] = dict(data or {})
    if path is not None:
        raw = merge_dicts(raw, read_config_file(path))
    if overrides:
        raw = merge_dicts(raw, parse_overrides(overrides))
    known = set(RUN_SECTIONS) | {"models", "seeds", "metrics", "out", "name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown experiment key(s) {unknown}; known: {sorted(known)}")
    models = raw.get("models") or []
    if not isinstance(models, list) or not models:
        raise ConfigError("models: expected a non-empty list of {label, name, ...} entries")
    runs = tuple(_parse_model(i, m) for i, m in enumerate(models))
    labels = [m.label for m in runs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"models: duplicate label(s) {dupes}")
    for m in runs:
        if m.baseline is not None and m.baseline not in labels:
            raise ConfigError(
                f"models[{labels.index(m.label)}].baseline={m.baseline!r} is not a model label; have {labels}"
            )
    cfg = ExperimentConfig(
        run={k: raw[k] for k in RUN_SECTIONS if k in raw},
        models=runs,
        seeds=tuple(check_type(raw.get("seeds", [0, 1, 2]), tuple[int, ...], "seeds")),
        metrics=tuple(check_type(raw.get("metrics", ["ndcg@10", "recall@10"]), tuple[str, ...], "metrics")),
        out=check_type(raw.get("out", "runs/experiment"), str, "out"),
        name=check_type(raw.get("name", Path(path).stem if path else "experiment"), str, "name"),
    )
    if not cfg.seeds:
        raise ConfigError("seeds: expected at least one seed")
    runs = _picks(runs, cfg.seeds)
    cfg = replace(cfg, models=runs)
    for m in runs:  # every run config must be valid before anything trains
        try:
            validate_run_config(cfg.run_config(m, cfg.seeds[0]))
        except ConfigError as e:
            raise ConfigError(f"models[{labels.index(m.label)}] ({m.label}): {e}") from None
    return cfg


def select(cfg: ExperimentConfig, labels: list[str]) -> ExperimentConfig:
    """The experiment restricted to some model labels (in the config's order)."""
    have = [m.label for m in cfg.models]
    unknown = [x for x in labels if x not in have]
    if unknown:
        raise ConfigError(f"--only: unknown model label(s) {unknown}; have {have}")
    models = tuple(m for m in cfg.models if m.label in labels)
    missing = sorted({m.baseline for m in models if m.baseline and m.baseline not in labels})
    if missing:
        raise ConfigError(f"--only: the selected models compare with {missing}; select them too")
    missing = sorted({x for m in models for x in m.pick if x not in labels})
    if missing:
        raise ConfigError(f"--only: the selected pick models compose {missing}; select them too")
    return replace(cfg, models=models)


__all__ = ["MODEL_KEYS", "RUN_SECTIONS", "ExperimentConfig", "ModelRun", "load_experiment", "own_seeds", "select"]
