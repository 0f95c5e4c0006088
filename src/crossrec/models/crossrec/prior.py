"""The popularity prior of users new to a category (`new_user_prior`), a mixin of `CrossRec`.

A user with no training interactions in category c is scored there from the other categories
alone: the shared embedding, the history encoder and the neighbourhood term read what they did
elsewhere. What such a user does first in c follows the category's bestsellers more than a
regular's choices do, and the towers have no way to say so: the item bias is the same for every
user. The prior adds, for those users only,

    beta_c * log(1 + n_i)        (n_i: item i's training interactions)

with beta_c learned per category, starting at 0. Training teaches it on the rows whose in-category
history category dropout hides (`history.category_dropout`; those rows already read the user as
new to c: no in-category history, no category-specific embedding), and scoring applies it to the
users with no training row in c (`user_cats_`, from setup). It is a rank-1 term, so the serving
index carries it as one more column (inference.py).

Measured before adoption: docs/DESIGN.md ("The popularity prior of users new to a category").

Example:
    >>> w = model.prior_weight(users, category)      # [B]: beta_c where the user is new to c  # doctest: +SKIP
    >>> s = s + w.unsqueeze(1) * model.log_count_[model.index[category]]                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


class NewUserPrior:
    """Mixed into `CrossRec` (models/crossrec/model.py), which owns `new_prior` ([n_categories], or
    None when `new_user_prior` is off), `user_cats_` ([n_users, n_categories] bool: a training row
    of the user in the category) and `log_count_`."""

    def _setup_prior(self: Any, bundle: Bundle) -> None:
        """Which categories each user has training rows in (the users new to a category are the rest)."""
        train = bundle.split("train")
        seen = torch.zeros(self.sizes.n_users, self.sizes.n_categories, dtype=torch.bool)
        users = torch.from_numpy(train["user"].to_numpy().astype(np.int64))
        cats = torch.from_numpy(train["category"].to_numpy().astype(np.int64))
        seen[users, cats] = True
        self.user_cats_ = seen.to(self.log_count_.device)

    def new_to(self: Any, users: Tensor, category: int) -> Tensor:
        """[B] True where the user has no training interaction in `category` (nobody before
        `setup`, and in an artifact written before the prior existed)."""
        return ~self.user_cats_[users, category]

    def prior_weight(self: Any, users: Tensor, category: int) -> Tensor:
        """[B] the prior's weight on log(1 + n_i) for these users in `category`: beta_c where the
        user is new to it, else 0 (all 0 with the prior off)."""
        if self.new_prior is None:
            return torch.zeros(len(users), device=users.device)
        return self.new_to(users, category).float() * self.new_prior[category]

    def row_prior(self: Any, category: Tensor, hide: Tensor | None) -> Tensor | None:
        """[B] training rows' prior weights: beta_c on the rows read as new to their category
        (their in-category history hidden), else 0; None when there is nothing to add."""
        if self.new_prior is None or hide is None:
            return None
        return self.new_prior.index_select(0, category) * hide.float()

    def prior_scores(self: Any, weight: Tensor | None, items: Tensor) -> Tensor | None:
        """weight [B] times log(1 + n_i): items [M] -> [B, M], items [B, n] -> [B, n]; None without weights."""
        if weight is None:
            return None
        pop = self.log_count_.index_select(0, items.clamp_max(self.sizes.n_items - 1).reshape(-1)).view(items.shape)
        pop = pop * (items < self.sizes.n_items)
        return weight.unsqueeze(1) * (pop.unsqueeze(0) if items.dim() == 1 else pop)


__all__ = ["NewUserPrior"]
