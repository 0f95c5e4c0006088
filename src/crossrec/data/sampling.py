"""Vectorised in-category negative sampling over a Bundle's training split.

A negative for a positive (user, item, category) is drawn uniformly from that category's items;
draws that hit an item the user has in training are redrawn (a few vectorised rounds, then kept:
with realistic densities almost none remain).

Example:
    >>> sampler = TrainSampler(bundle, batch_size=1024, n_negatives=4, seed=0)  # doctest: +SKIP
    >>> batch = next(iter(sampler)); batch.neg_items.shape                      # doctest: +SKIP
    torch.Size([1024, 4])
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from crossrec.data.batch import Batch
from crossrec.data.bundle import Bundle


class TrainSampler:
    """Yields shuffled training Batches with in-category negatives.

    Args:
        bundle: the prepared data; its train split is sampled.
        batch_size: positives per batch.
        n_negatives: negatives per positive.
        categories: restrict to these category indices (None = all).
        seed: seed of the shuffling and negative draws.
        resample_rounds: redraw rounds for negatives that are training positives.
    """

    def __init__(
        self,
        bundle: Bundle,
        batch_size: int = 2048,
        n_negatives: int = 1,
        categories: Sequence[int] | None = None,
        seed: int = 0,
        resample_rounds: int = 3,
    ) -> None:
        if batch_size < 1 or n_negatives < 1:
            raise ValueError("batch_size and n_negatives must be >= 1")
        rows = bundle.rows("train", categories)
        self.users = torch.from_numpy(rows["user"].to_numpy().astype(np.int64))
        self.items = torch.from_numpy(rows["item"].to_numpy().astype(np.int64))
        self.category = torch.from_numpy(rows["category"].to_numpy().astype(np.int64))
        self.ratings = (
            torch.from_numpy(rows["rating"].fill_null(float("nan")).to_numpy().astype(np.float32))
            if bundle.has_ratings
            else None
        )
        # All items of all categories laid end to end; category c owns [start[c], start[c]+size[c]).
        order, offsets = bundle.items_by_category()
        self.cat_items = torch.from_numpy(order.astype(np.int64))
        self.cat_start = torch.from_numpy(offsets[:-1].astype(np.int64))
        self.cat_size = torch.from_numpy(np.diff(offsets).astype(np.int64))
        self.n_items = bundle.n_items
        # Sorted (user * n_items + item) keys of all training pairs, for membership tests.
        self.seen_keys = torch.unique(self.users * self.n_items + self.items)
        self.batch_size = batch_size
        self.n_negatives = n_negatives
        self.resample_rounds = resample_rounds
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.users) + self.batch_size - 1) // self.batch_size

    @property
    def n_rows(self) -> int:
        return int(len(self.users))

    def _is_seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        pos = torch.searchsorted(self.seen_keys, keys).clamp_max(len(self.seen_keys) - 1)
        return self.seen_keys[pos] == keys

    def sample_negatives(self, users: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """[B, n_negatives] global item ids drawn from each row's category."""
        shape = (len(users), self.n_negatives)
        size = self.cat_size[category].unsqueeze(1).expand(shape)
        start = self.cat_start[category].unsqueeze(1).expand(shape)
        u = users.unsqueeze(1).expand(shape)

        def draw(n: int, sz: torch.Tensor, st: torch.Tensor) -> torch.Tensor:
            r = torch.rand(n, generator=self.generator)
            return self.cat_items[st + (r * sz).long().clamp_max(sz - 1)]

        neg = draw(size.numel(), size.reshape(-1), start.reshape(-1)).view(shape)
        for _ in range(self.resample_rounds):
            bad = self._is_seen(u, neg)
            n_bad = int(bad.sum())
            if n_bad == 0:
                break
            neg[bad] = draw(n_bad, size[bad], start[bad])
        return neg

    def __iter__(self) -> Iterator[Batch]:
        perm = torch.randperm(len(self.users), generator=self.generator)
        for i in range(0, len(perm), self.batch_size):
            idx = perm[i : i + self.batch_size]
            users, cats = self.users[idx], self.category[idx]
            yield Batch(
                users=users,
                pos_items=self.items[idx],
                neg_items=self.sample_negatives(users, cats),
                category=cats,
                ratings=None if self.ratings is None else self.ratings[idx],
            )
