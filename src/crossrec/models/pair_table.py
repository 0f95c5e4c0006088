"""A table with one row per (user, category) pair that has training rows, for models whose
category-specific user part starts at zero (CMF's offsets s_{u,c}): memory grows with the observed
pairs, not with users x categories.

`keys_` (a buffer, in artifacts) holds the sorted keys `user * n_categories + category`; row k of
`emb` belongs to key k. A pair without a key reads zero, exactly what its untrained row read in a
dense zero-initialised table, so scores are the same. `add_keys` (each `setup`, `crossrec update`
included) adds the pairs of the rows being trained: rows of pairs it had keep their values, new
pairs start at zero (or, with `init_std`, from normal(0, init_std): DTCDR, EMCDR and BiTGCF draw
their per-category user rows so). An artifact written with the dense table (`<prefix>weight`,
[n_users * n_categories, d]) loads: its non-zero rows become the keys; `migrate_masked` takes them
from a model's old [n_users, n_categories] activity mask instead.

Example:
    >>> table = PairTable(n_categories=4, dim=8)                       # doctest: +SKIP
    >>> table.set_keys(torch.tensor([1, 6]))                           # doctest: +SKIP
    >>> table(torch.tensor([0, 1]), torch.tensor([1, 3])).shape        # [2, 8]; row 2 is zero  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.io import CorruptFileError


def lookup(keys: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of `query` keys in the sorted `keys` and whether each is there ([B], [B] bool;
    a missing key's position is 0)."""
    if len(keys) == 0:
        return torch.zeros_like(query), torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
    found = keys.index_select(0, pos.flatten()).view_as(pos) == query
    return torch.where(found, pos, torch.zeros_like(pos)), found


def pair_keys(users: np.ndarray, categories: np.ndarray, n_categories: int) -> Tensor:
    """The sorted distinct keys `user * n_categories + category` of these rows."""
    return torch.from_numpy(np.unique(users.astype(np.int64) * n_categories + categories.astype(np.int64)))


class PairTable(nn.Module):
    """Zero-based rows for observed (user, category) pairs (see the module docstring)."""

    keys_: Tensor  # a buffer (nn.Module's attribute lookup cannot type it)

    def __init__(self, n_categories: int, dim: int, init_std: float = 0.0, sparse: bool = True) -> None:
        super().__init__()
        self.n_categories = n_categories
        self.init_std = init_std  # new rows: zero, or normal(0, init_std)
        self.emb = nn.Embedding(0, dim, sparse=sparse)
        self.register_buffer("keys_", torch.zeros(0, dtype=torch.long))

    @property
    def weight(self) -> nn.Parameter:
        """The table's parameter ([pairs, d])."""
        return cast(nn.Parameter, self.emb.weight)  # torch types an Embedding's weight as Tensor

    def add_keys(self, keys: Tensor) -> None:
        """Rows for these pairs too (sorted or not): every pair it had keeps its row (a later
        transfer stage on other categories, or an update, loses nothing); new ones start anew."""
        self.set_keys(torch.unique(torch.cat([self.keys_, keys.to(self.keys_.device)])))

    def set_keys(self, keys: Tensor) -> None:
        """Re-index to `keys` (sorted): known pairs keep their rows, new ones start at zero (or are
        drawn, `init_std`). The Parameter object is kept (resized), so an optimiser group or
        freezing flag on it holds."""
        keys = keys.to(self.keys_.device)
        old = self.emb.weight.detach()
        if torch.equal(keys, self.keys_):
            return
        table = torch.zeros(len(keys), old.shape[1], dtype=old.dtype, device=old.device)
        pos, found = lookup(self.keys_, keys)
        if self.init_std > 0:
            table[~found] = (
                torch.randn(int((~found).sum()), old.shape[1], dtype=old.dtype).to(old.device) * self.init_std
            )
        table[found] = old[pos[found]]
        self.emb.weight.data = table
        self.emb.num_embeddings = len(keys)
        self.keys_ = keys

    def has(self, users: Tensor, category: Tensor | int) -> Tensor:
        """Whether each (user, category) pair has a row (shapes broadcast, like `forward`)."""
        return lookup(self.keys_, users * self.n_categories + category)[1]

    def rows(self, users: Tensor, category: Tensor | int) -> tuple[Tensor, Tensor]:
        """([*, d] rows of these (user, category) pairs, zero where the pair has none; [*] whether
        it has one). `users` and `category` broadcast: [B, 1] users and [N] categories give [B, N, d]."""
        query = torch.as_tensor(users * self.n_categories + category)
        pos, found = lookup(self.keys_, query.flatten())
        out = self.emb.weight.new_zeros(len(pos), self.emb.embedding_dim)
        hit = torch.nonzero(found).squeeze(1)
        out[hit] = self.emb(pos[hit])  # only the pairs' own rows are read (and get gradients)
        return out.view(*query.shape, self.emb.embedding_dim), found.view(query.shape)

    def forward(self, users: Tensor, category: Tensor | int) -> Tensor:
        """[B, d] rows of these (user, category) pairs; zero where the pair has none."""
        return self.rows(users, category)[0]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        dense = state_dict.pop(prefix + "weight", None)
        if dense is not None and prefix + "keys_" not in state_dict:  # written with the dense table
            found = torch.nonzero(dense.abs().sum(1) > 0).squeeze(1)
            state_dict[prefix + "keys_"], state_dict[prefix + "emb.weight"] = found, dense.index_select(0, found)
        rows, keys = state_dict.get(prefix + "emb.weight"), state_dict.get(prefix + "keys_")
        if rows is not None and keys is not None:
            if rows.ndim != 2 or len(rows) != len(keys):
                raise CorruptFileError(
                    f"model tensor {prefix + 'emb.weight'!r} has shape {tuple(rows.shape)} for "
                    f"{len(keys)} pair keys ({prefix + 'keys_'!r}); expected one row per key"
                )
            self.emb.weight.data = self.emb.weight.data.new_zeros(tuple(rows.shape))
            self.emb.num_embeddings = len(rows)
            self.keys_ = torch.zeros_like(keys)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def migrate_masked(
    state_dict: dict[str, Any], prefix: str, mask: str, table: str, n_users: int, n_categories: int
) -> Tensor | None:
    """An artifact written before the pair index by a model with a dense [n_users * n_categories]
    table `<table>.weight` and a [n_users, n_categories] activity mask `mask`: the marked pairs
    become the keys of the `PairTable` at `table` and keep their rows; returns the keys (None:
    anything else, left alone). A dense table of another shape is refused (`CorruptFileError`)."""
    marked = state_dict.pop(prefix + mask, None)
    dense_key = prefix + table + ".weight"
    if marked is None or dense_key not in state_dict or prefix + table + ".keys_" in state_dict:
        return None
    dense = state_dict.pop(dense_key)
    if tuple(marked.shape) != (n_users, n_categories) or dense.ndim != 2 or len(dense) != n_users * n_categories:
        raise CorruptFileError(
            f"model tensors {dense_key!r} {tuple(dense.shape)} and {prefix + mask!r} {tuple(marked.shape)} "
            f"do not fit {n_users} users x {n_categories} categories (an artifact written before the pair "
            "index): train it again"
        )
    keys = torch.nonzero(marked.flatten()).squeeze(1)
    state_dict[prefix + table + ".keys_"] = keys
    state_dict[prefix + table + ".emb.weight"] = dense.index_select(0, keys)
    return keys


__all__ = ["PairTable", "lookup", "migrate_masked", "pair_keys"]
