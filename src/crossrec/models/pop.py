"""Most-popular: every user gets the category's items ranked by training interaction count.

Reference: the standard non-personalised baseline (e.g. Cremonesi et al., "Performance of
recommender algorithms on top-N recommendation tasks", RecSys 2010).

Example:
    >>> pop = Pop(PopConfig(), sizes); pop.fit(bundle)   # doctest: +SKIP
    >>> pop.score(torch.tensor([0, 1]), 0).shape        # [2, n_items(0)]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class PopConfig:
    """Popularity has no hyperparameters."""


@register("pop", PopConfig, paper="Cremonesi et al., RecSys 2010 (most-popular baseline)")
class Pop(nn.Module):
    """Ranks a category's items by their number of training interactions."""

    def __init__(self, config: PopConfig, sizes: Sizes) -> None:
        super().__init__()
        self.config = config
        self.sizes = sizes
        self.register_buffer("counts_", torch.zeros(sizes.n_items))
        self.index = CategoryIndex(sizes)

    def fit(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        rows = bundle.rows("train", categories)
        items = rows["item"].to_numpy().astype(np.int64)
        self.counts_ = torch.from_numpy(np.bincount(items, minlength=self.sizes.n_items).astype(np.float32))

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.counts_[self.index[category]].unsqueeze(0).expand(len(users), -1)
