""" "single" mode: one independent model per category behind the same `score` contract.

This is the before-transfer reference: model c sees only category c's training data, so nothing
learned in one category reaches another.

Example:
    >>> m = PerCategory([build_model("mf", cfg, sizes) for _ in sizes.categories], sizes.item_category)  # doctest: +SKIP
    >>> m.score(users, 1)   # answered by the category-1 model                               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self, cast

import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import (
    RatingPredictor,
    Recommender,
    build_model,
    config_from_dict,
    reads_text,
)


class PerCategory(nn.Module):
    """Holds one sub-model per category; `score(users, c)` is answered by sub-model c.

    It declares what it forwards and no more (models/base.py's protocols): `Recommender`; a
    `RatingPredictor` exactly when every sub-model is one (`PerCategory(...)` then gives a
    `PerCategoryRatings`); `ReadsText` with `uses_text` true when any sub-model reads text. It is
    never `TwoTower`: each category's vectors live in their own model's space, so they do not
    compare across categories.
    """

    def __new__(cls, models: Sequence[nn.Module] = (), item_category: Sequence[int] = ()) -> Self:
        ratings = cls is PerCategory and len(models) > 0 and all(isinstance(m, RatingPredictor) for m in models)
        return cast(Self, super().__new__(PerCategoryRatings if ratings else cls))

    _item_category: Tensor  # a buffer (nn.Module's attribute lookup cannot type it)

    def __init__(self, models: Sequence[nn.Module], item_category: Sequence[int]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.register_buffer("_item_category", torch.tensor(list(item_category)), persistent=False)

    def score(self, users: Tensor, category: int) -> Tensor:
        return cast(Recommender, self.models[category]).score(users, category)

    @property
    def uses_text(self) -> bool:
        """Any sub-model reads item text (`ReadsText`: the pipeline encodes it for all of them)."""
        return any(reads_text(m) for m in self.models)


class PerCategoryRatings(PerCategory):
    """A `PerCategory` of rating predictors: each (user, item) rating is answered by the item's
    category model."""

    @property
    def predicts_ratings(self) -> bool:
        return all(m.predicts_ratings for m in self.models)

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] ratings, each (user, item) pair answered by the item's category model."""
        cats = self._item_category.to(items.device)[items]
        out = torch.empty(len(items), dtype=torch.float32, device=items.device)
        for c in torch.unique(cats).tolist():
            m = cats == c
            out[m] = self.models[c].predict_rating(users[m], items[m]).float()
        return out


def build(name: str, mode: str, params: dict[str, Any], sizes: Sizes) -> nn.Module:
    """Build a registered model; mode 'single' gives one independent model per category."""
    if mode not in ("single", "pooled"):
        raise ConfigError(f"model.mode={mode!r}; expected single or pooled")
    cfg = config_from_dict(name, params)
    if mode == "pooled":
        return build_model(name, cfg, sizes)
    return PerCategory([build_model(name, cfg, sizes) for _ in sizes.categories], sizes.item_category)
