"""The compact index of (user, category) pairs with training rows: the flagship's part
`model.pairs`. Memory grows with the observed pairs, not with users x categories.

`pair_keys_` (a buffer, in artifacts): the sorted keys `user * n_categories + category` of every
pair with a training row. The category-specific user table `user_cat_emb` has one row per key, in
key order; a pair without a row reads a zero vector, as a user new to the category (and as a hidden
row under category dropout) does. The new-user prior's "users new to c" are the pairs without a key.

`setup` (each fit, `crossrec update` included) rebuilds the keys from the training split and
re-indexes the table: the rows of pairs it had keep their values, new pairs start from the
initialisation's distribution. An artifact written before the index (a dense [n_users * n_categories]
table and a `user_cats_` mask) loads through `migrate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from crossrec.io import CorruptFileError
from crossrec.models.pair_table import lookup, pair_keys

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.crossrec.host import Flagship


class UserCategoryPairs:
    """The (user, category) pair index (see the module docstring)."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def setup(self, bundle: Bundle) -> None:
        """Keys of the training split's pairs; the category-specific table re-indexed to them."""
        m = self.model
        train = bundle.split("train")
        keys = pair_keys(train["user"].to_numpy(), train["category"].to_numpy(), m.sizes.n_categories)
        keys = keys.to(m.pair_keys_.device)
        if m.user_cat_emb is not None:
            self._reindex(keys)
        m.pair_keys_ = keys

    def _reindex(self, keys: Tensor) -> None:
        m = self.model
        assert m.user_cat_emb is not None
        old = m.user_cat_emb.weight.detach()
        if torch.equal(keys, m.pair_keys_) and len(old) == len(keys):
            return  # the same pairs (a resumed or repeated setup): keep the parameter itself
        table = torch.empty(len(keys), m.config.dim, device=old.device).normal_(std=m.config.init_std)
        pos, found = lookup(m.pair_keys_, keys)
        table[found] = old[pos[found]]
        # the same Parameter, resized: a freezing policy's flag on it (training/transfer.py) holds
        m.user_cat_emb.weight.data = table
        m.user_cat_emb.num_embeddings = len(keys)

    def rows(self, users: Tensor, category: Tensor) -> tuple[Tensor, Tensor]:
        """[B] rows of the category-specific table for these (user, category) pairs and [B] whether
        the pair has one (trained in the category)."""
        return lookup(self.model.pair_keys_, users * self.model.sizes.n_categories + category)

    def has(self, users: Tensor, category: int) -> Tensor:
        """[B] True where the user has a training row in `category`."""
        return self.rows(users, torch.full_like(users, category))[1]


def migrate(state_dict: dict[str, Any], prefix: str, n_users: int, n_categories: int) -> None:
    """An artifact written before the pair index: its `user_cats_` mask (absent: every pair) gives
    the keys, and its dense [n_users * n_categories] table keeps the rows of those pairs. A table
    of any other shape without keys is refused (`CorruptFileError`)."""
    table_key, keys_key = prefix + "user_cat_emb.weight", prefix + "pair_keys_"
    mask = state_dict.pop(prefix + "user_cats_", None)
    if keys_key in state_dict:
        return
    if mask is None:
        mask = torch.ones(n_users, n_categories, dtype=torch.bool)
    keys = torch.nonzero(mask.flatten()).squeeze(1)
    state_dict[keys_key] = keys
    if table_key in state_dict:
        table = state_dict[table_key]
        if len(table) != n_users * n_categories:
            raise CorruptFileError(
                f"model tensor {table_key!r} has {len(table)} rows and no pair index "
                f"({keys_key!r}); expected {n_users} users x {n_categories} categories = "
                f"{n_users * n_categories} (an artifact written before the pair index) or both tensors"
            )
        state_dict[table_key] = table.index_select(0, keys)


__all__ = ["UserCategoryPairs", "lookup", "migrate"]
