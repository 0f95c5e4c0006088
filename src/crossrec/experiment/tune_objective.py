"""What a `crossrec tune` trial is scored by (experiment/tune.py): the experiment's first metric on
the validation split, ALL categories, averaged with equal weights over the evaluation slices of the
objective (`--objective`, default `all`; the names are the evaluator's `SLICES`).

- `check_names`: the objective names distinct, known slices.
- `check_slices`: every slice of the objective has units in validation (before the first trial, so
  no trial scores on fewer slices than named).
- `check_study`: a new study records its objective; a resumed one must have the same.
- `score`: a validation table -> (per category on `all`, per slice on ALL, the trial's value).
- `objective_label`: the value's name in messages and tuning.md.

Example:
    >>> score(valid.evaluate(model).table, "ndcg@10", ("all", "new_to_category"))[2]   # doctest: +SKIP
    0.0613
"""

from __future__ import annotations

from typing import Any

import polars as pl

from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import SLICES, Evaluator
from crossrec.typed import ConfigError


def check_names(objective: tuple[str, ...]) -> None:
    """Raises ConfigError unless `objective` is one or more distinct slice names of `SLICES`."""
    bad = [s for s in objective if s not in SLICES]
    if bad or not objective or len(set(objective)) < len(objective):
        raise ConfigError(
            f"--objective {','.join(objective)}: expected distinct, comma-separated slice names among "
            f"{', '.join(SLICES)}" + (f" (unknown: {', '.join(map(repr, bad))})" if bad else "")
        )


class _Flat:
    """Scores every item 0: evaluating it shows which slices a split has (that depends on the data only)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    def score(self, users: Any, category: int) -> Any:
        import torch

        return torch.zeros(len(users), self.bundle.n_items_in(category))


def check_slices(valid: Evaluator, objective: tuple[str, ...]) -> None:
    """Raises ConfigError when a slice of `objective` has no units in `valid`'s split (one ranking
    pass of a constant scorer; none when the objective is `all` alone: the split is not empty)."""
    if set(objective) <= {"all"}:
        return
    table = valid.evaluate(_Flat(valid.bundle)).table
    have = set(table.filter(pl.col("category") == "ALL")["slice"].to_list())
    missing = [s for s in objective if s not in have]
    if missing:
        raise ConfigError(
            f"--objective {','.join(objective)}: the validation split has no {', '.join(missing)} units "
            f"(it has {', '.join(s for s in SLICES if s in have)}); the prepare protocol must put such users "
            "or items in validation (new_to_category: prepare.cold_user_valid_fraction > 0; cold_item, "
            "new_items: prepare.cold_item_fraction > 0 with prepare.cold_item_valid_share > 0)"
        )


def check_study(study: Any, objective: tuple[str, ...]) -> None:
    """A new study records `objective` (study user attribute `objective`); a resumed one must have
    the same, else ConfigError: values of different objectives are not comparable. A study stored
    before objectives were recorded was scored on `all`."""
    have = study.user_attrs.get("objective", ["all"] if study.get_trials(deepcopy=False) else None)
    if have is None:
        study.set_user_attr("objective", list(objective))
    elif tuple(have) != tuple(objective):
        raise ConfigError(
            f"--objective {','.join(objective)}: the study of {study.study_name} was scored by --objective "
            f"{','.join(have)}, and values of different objectives are not comparable; rerun with that "
            "objective or tune into another --out"
        )


def score(
    table: pl.DataFrame, metric: str, objective: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, float], float]:
    """(`metric` per category on slice `all`, `metric` per slice on ALL categories, the mean of the
    latter over `objective`; NaN where a slice is missing)."""
    rows = table.filter(pl.col("slice") == "all")
    per_cat = {str(r["category"]): float(r[metric]) for r in rows.iter_rows(named=True)}
    rows = table.filter(pl.col("category") == "ALL")
    by_slice = {str(r["slice"]): float(r[metric]) for r in rows.iter_rows(named=True)}
    return per_cat, by_slice, sum(by_slice.get(s, float("nan")) for s in objective) / len(objective)


def objective_label(metric: str, objective: tuple[str, ...]) -> str:
    """`valid ndcg@10`, or with slices besides `all`: `valid ndcg@10 (mean of all, new_to_category)`."""
    return f"valid {metric}" if tuple(objective) == ("all",) else f"valid {metric} (mean of {', '.join(objective)})"


__all__ = ["check_names", "check_slices", "check_study", "objective_label", "score"]
