"""Per-category model selection: a composite that answers each category with the candidate model
that scored best there on validation.

Which model serves a category best is a property of the data: where item text is rich, the
flagship whose ID and text parts train together (`item_tower: text+id`) wins, and it is the one
that can score items nobody has bought yet; where text is a few words of a title, it can cost the
users who are new to a category what the ID flagship gives them, and the residual one
(`text.residual`) keeps that. A user cannot know in advance which case a catalogue is in, so
`pick` trains both and lets validation say, category by category.

`Picked` holds the candidates (each a whole trained model, built from its registry spec) and
`choice_`, the candidate of each category; `score(users, c)` is the chosen candidate's. The
choice (`choose`) is made on the validation split's NDCG@10 per category, the mean over the
slices the category has at least `MIN_UNITS` validation units of, among `slices` (default: all
users, users new to the category, cold items: the cold-start slices count as much as the rest).
Test data is never read. Composing trained models is `crossrec.experiment.pick.compose` (an
experiment entry `pick: [labels]` runs it); `crossrec train` cannot train a `pick` model.

Like a single-category model (`PerCategory`) it declares `Recommender` and, when a candidate
reads text, `ReadsText`; it is never `TwoTower`: each category's vectors live in its own
candidate's space, so similar items and explanations are not served from it.

Example:
    >>> picked = Picked(PickConfig(candidates=(spec_a, spec_b)), sizes)   # doctest: +SKIP
    >>> picked.set_choice(choose(tables, categories))                        # doctest: +SKIP
    >>> picked.score(users, 0)   # the validation winner of category 0       # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl
import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.base import Recommender, reads_text, register
from crossrec.models.per_category import build
from crossrec.typed import Checked, ConfigError

MIN_UNITS = 30  # validation units a slice of a category needs to count in its objective
SLICES = ("all", "new_to_category", "cold_item")  # the default objective's slices
METRIC = "ndcg@10"


@dataclass(frozen=True)
class PickConfig(Checked):
    section: ClassVar[str] = "model"
    candidates: tuple[
        dict[str, Any], ...
    ] = ()  # (list) the candidate models, each {label, name, mode, params}: written by `compose` (crossrec.experiment.pick), not by hand
    slices: tuple[str, ...] = SLICES  # (list) the validation slices whose mean NDCG@10 picks each category's candidate

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.candidates:
            raise ConfigError(
                "model pick composes trained models: an experiment entry `pick: [label, ...]` builds it from "
                "the models with those labels (docs/user-guide/item-text.md); crossrec train cannot train one"
            )
        for i, c in enumerate(self.candidates):
            if not {"name", "mode", "params"} <= set(c):
                raise ConfigError(f"model.candidates[{i}]: expected name, mode and params; got {sorted(c)}")
            if c["name"] == "pick":
                raise ConfigError(f"model.candidates[{i}]: a pick model cannot hold another")
        if not self.slices or not set(self.slices) <= {"all", "warm", "new_to_category", "cold_item", "new_items"}:
            raise ConfigError(f"model.slices={list(self.slices)}; expected evaluation slice names")


@register("pick", PickConfig, paper="per-category model selection on validation")
class Picked(nn.Module):
    """The candidates and each category's choice (module docstring)."""

    choice_: Tensor  # [n_categories] the candidate of each category, a buffer (an artifact carries it)

    def __init__(self, cfg: PickConfig, sizes: Sizes, models: Sequence[nn.Module] | None = None) -> None:
        """The candidates are built from their specs, or are `models` (trained ones, in the specs' order)."""
        super().__init__()
        self.config, self.sizes = cfg, sizes
        if models is not None and len(models) != len(cfg.candidates):
            raise ValueError(f"{len(models)} models for {len(cfg.candidates)} candidate specs")
        built = (
            models if models is not None else [build(c["name"], c["mode"], c["params"], sizes) for c in cfg.candidates]
        )
        self.models = nn.ModuleList(built)
        self.register_buffer("choice_", torch.zeros(sizes.n_categories, dtype=torch.long))
        self._choice = [0] * sizes.n_categories  # the buffer on the host: read per call without a sync

    def set_choice(self, choice: Sequence[int]) -> None:
        """Each category's candidate (indexes into `models`)."""
        if len(choice) != len(self._choice) or not all(0 <= int(k) < len(self.models) for k in choice):
            raise ValueError(f"expected {len(self._choice)} candidate indexes below {len(self.models)}; got {choice}")
        self._choice = [int(k) for k in choice]
        self.choice_.copy_(torch.tensor(self._choice))

    def chosen(self, category: int) -> Recommender:
        """The candidate that answers `category`."""
        return self.models[self._choice[category]]  # type: ignore[return-value]

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.chosen(category).score(users, category)

    @property
    def uses_text(self) -> bool:
        """Any candidate reads item text (`ReadsText`: the pipeline encodes it for all of them)."""
        return any(reads_text(m) for m in self.models)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        stored = state_dict.get(prefix + "choice_")
        if stored is not None:
            self._choice = [int(k) for k in stored.tolist()]


def objective(table: pl.DataFrame, category: str, slices: Sequence[str], min_units: int = MIN_UNITS) -> float:
    """The validation objective of one category: the mean NDCG@10 over the `slices` that have at
    least `min_units` units there (slice `all` counts whenever it has units); NaN without any."""
    rows = table.filter(pl.col("category") == category)
    values = [
        float(r[METRIC])
        for r in rows.iter_rows(named=True)
        if r["slice"] in slices and r["n_users"] and (r["n_users"] >= min_units or r["slice"] == "all")
    ]
    return sum(values) / len(values) if values else float("nan")


def choose(
    tables: Sequence[pl.DataFrame], categories: Sequence[str], slices: Sequence[str] = SLICES
) -> tuple[list[int], list[list[float]]]:
    """Each category's candidate: the best `objective` among the candidates' validation tables
    (the first on a tie; a category no candidate has a value for takes the first). Returns the
    choice and the objective values [category][candidate]."""
    values = [[objective(t, c, slices) for t in tables] for c in categories]
    choice = []
    for row in values:
        real = [(v, -i) for i, v in enumerate(row) if v == v]  # NaN != NaN
        choice.append(-max(real)[1] if real else 0)
    return choice, values


__all__ = ["METRIC", "MIN_UNITS", "SLICES", "PickConfig", "Picked", "choose", "objective"]
