"""The types that travel from data to models: `Sizes` (what a model is built for) and `Batch`.

They live in `data/` because the sampler produces batches and the Bundle defines the sizes;
models import them from here (models may import data types, data never imports models).

Example:
    >>> sizes = Sizes.from_bundle(bundle)      # doctest: +SKIP
    >>> batch = next(iter(TrainSampler(bundle, 1024)))   # a Batch  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class Sizes:
    """Data-derived sizes a model is built with (filled in once, where pieces are wired together).

    Args:
        n_users: number of users.
        n_items: number of items over all categories (global ids).
        item_category: [n_items] category index of each item.
        item_local: [n_items] position of each item within its category.
        categories: category names, in index order.
    """

    n_users: int
    n_items: int
    item_category: tuple[int, ...]
    item_local: tuple[int, ...]
    categories: tuple[str, ...]

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Sizes:
        return cls(
            n_users=bundle.n_users,
            n_items=bundle.n_items,
            item_category=tuple(int(x) for x in bundle.item_category),
            item_local=tuple(int(x) for x in bundle.item_local),
            categories=tuple(bundle.categories),
        )

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @cached_property
    def _item_indexes(self) -> tuple[np.ndarray, ...]:
        # One pass over all items: order by (category, local position), then cut per category.
        cat = np.asarray(self.item_category, dtype=np.int64)
        order = np.lexsort((np.asarray(self.item_local, dtype=np.int64), cat))
        bounds = np.searchsorted(cat[order], np.arange(self.n_categories + 1))
        return tuple(order[bounds[c] : bounds[c + 1]] for c in range(self.n_categories))

    def item_index(self, category: int) -> np.ndarray:
        """Global ids of one category's items, in local order (computed once for all categories)."""
        return self._item_indexes[category]

    def to_json(self) -> dict[str, Any]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "item_category": list(self.item_category),
            "item_local": list(self.item_local),
            "categories": list(self.categories),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sizes:
        return cls(
            n_users=int(d["n_users"]),
            n_items=int(d["n_items"]),
            item_category=tuple(int(x) for x in d["item_category"]),
            item_local=tuple(int(x) for x in d["item_local"]),
            categories=tuple(d["categories"]),
        )


@dataclass
class Batch:
    """One training batch; all ids are global.

    Args:
        users: [B] user ids.
        pos_items: [B] observed items.
        neg_items: [B, n_neg] sampled items from the same category as the positive.
        category: [B] category of each row.
        ratings: [B] explicit ratings, or None for implicit feedback.
    """

    users: Tensor
    pos_items: Tensor
    neg_items: Tensor
    category: Tensor
    ratings: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            users=self.users.to(device, non_blocking=True),
            pos_items=self.pos_items.to(device, non_blocking=True),
            neg_items=self.neg_items.to(device, non_blocking=True),
            category=self.category.to(device, non_blocking=True),
            ratings=None if self.ratings is None else self.ratings.to(device, non_blocking=True),
        )

    def pin_memory(self) -> Batch:
        return Batch(
            users=self.users.pin_memory(),
            pos_items=self.pos_items.pin_memory(),
            neg_items=self.neg_items.pin_memory(),
            category=self.category.pin_memory(),
            ratings=None if self.ratings is None else self.ratings.pin_memory(),
        )

    def __len__(self) -> int:
        return int(self.users.shape[0])
