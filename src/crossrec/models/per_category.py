""""single" mode: one independent model per category behind the same `score` contract.

This is the before-transfer reference: model c sees only category c's training data, so nothing
learned in one category reaches another.

Example:
    >>> m = PerCategory([build_model("mf", cfg, sizes) for _ in sizes.categories], sizes.item_category)  # doctest: +SKIP
    >>> m.score(users, 1)   # answered by the category-1 model                               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.base import build_model, config_from_dict


class PerCategory(nn.Module):
    """Holds one sub-model per category; `score(users, c)` is answered by sub-model c."""

    def __init__(self, models: Sequence[nn.Module], item_category: Sequence[int]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.register_buffer("_item_category", torch.tensor(list(item_category)), persistent=False)

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.models[category].score(users, category)

    @property
    def predicts_ratings(self) -> bool:
        return all(getattr(m, "predicts_ratings", False) for m in self.models)

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
        raise ValueError(f"model.mode={mode!r}; expected single or pooled")
    cfg = config_from_dict(name, params)
    if mode == "pooled":
        return build_model(name, cfg, sizes)
    return PerCategory([build_model(name, cfg, sizes) for _ in sizes.categories], sizes.item_category)
