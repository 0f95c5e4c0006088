"""CMF: Collective Matrix Factorization, one user factor matrix shared by every category's relation.

Singh & Gordon factorise several relations that share an entity type at once: with users shared,
X_c ~ f(U V_c^T) for every category c, the objective a weighted sum of the relations' losses
(weights alpha_c). For N categories every user has one factor row p_u that all N relations train,
and every item its own row q_i (an item belongs to one category, so the rows of category c's items
are V_c). A user new to category c is therefore scored with factors learnt from their other
categories. Optional extras: a per-category user offset s_{u,c} (zero-initialised, so a user
with no history in c is scored from p_u alone; rows only for the (user, category) pairs with
training rows, models/pair_table.py) and a per-item bias b_i.

    score(u, i) = <p_u + s_{u,c(i)}, q_i> + b_i

The loss is BPR, BCE or sampled softmax over the batch's in-category negatives; the relation
weights alpha_c are uniform (every interaction counts the same) or balanced (every category counts
the same: alpha_c proportional to 1 / n_c, from the training counts in `setup`).

Reference: Singh & Gordon, "Relational Learning via Collective Matrix Factorization", KDD 2008.

Example:
    >>> cmf = CMF(CMFConfig(dim=64, category_offset=True), sizes)  # doctest: +SKIP
    >>> cmf.score(torch.tensor([0, 1]), category=2).shape           # [2, n_items(2)]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.models.base import BiasedDotModel, BiasedItems, register, user_item_tables
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.models.pair_table import PairTable, pair_keys
from crossrec.typed import Checked, Size

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class CMFConfig(Checked):
    dim: Size = 64  # (int) latent factors (the shared user rows and the item rows)
    loss: Literal["bpr", "bce", "softmax"] = "bpr"  # (str) bpr | bce | softmax over in-category sampled negatives
    category_offset: bool = False  # (bool) add a per-category user offset s_{u,c} to the shared p_u
    item_bias: bool = True  # (bool) per-item bias b_i (folded into the two-tower vectors)
    weights: Literal["uniform", "balanced"] = (
        "uniform"  # (str) relation weights alpha_c: uniform | balanced (1 / n_c, set in setup)
    )
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    offset_reg: float = 1e-3  # (float) extra L2 on the batch's offsets: they stay deviations from p_u
    init_std: float = 0.01  # (float) normal init std of the user and item factors


@register("cmf", CMFConfig, paper="Singh & Gordon, KDD 2008 (Collective Matrix Factorization)")
class CMF(BiasedDotModel):
    """Shared user factors, per-item factors; a two-tower model (user_vectors / item_vectors).

    With `item_bias`, the towers carry it as one extra dimension ([p_u, 1] and [q_i, b_i]), so
    `user_vectors(u, c) @ item_vectors(c).T == score(u, c)` exactly.

    Example:
        >>> m = CMF(CMFConfig(dim=8), sizes)                          # doctest: +SKIP
        >>> m.user_vectors(torch.tensor([0]), 1) @ m.item_vectors(1).T  # == m.score(...)  # doctest: +SKIP
    """

    alpha_: Tensor  # a buffer (nn.Module's attribute lookup cannot type it)

    def __init__(self, config: CMFConfig, sizes: Sizes) -> None:
        super().__init__()
        self.config = config
        self.sizes = sizes
        n_cat = sizes.n_categories
        # p_u (shared by all categories) and q_i
        self.user_emb, item_emb = user_item_tables(sizes.n_users, sizes.n_items, config.dim, config.init_std)
        # s_{u,c}: rows only for the (user, category) pairs with training rows (setup); zero, so an
        # untrained pair adds nothing to p_u (models/pair_table.py).
        self.user_offset: PairTable | None = PairTable(n_cat, config.dim) if config.category_offset else None
        self.items = BiasedItems(item_emb, config.item_bias, sizes)
        self.register_buffer("alpha_", torch.ones(n_cat))  # relation weights (setup), mean 1 per interaction

    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Offset rows for the training pairs of `categories` (None = all); relation weights from
        their training counts (uniform: all ones)."""
        rows = bundle.rows("train", categories)
        if self.user_offset is not None:
            users, cats = rows["user"].to_numpy(), rows["category"].to_numpy()
            self.user_offset.add_keys(pair_keys(users, cats, self.sizes.n_categories))
        if self.config.weights == "uniform":
            return
        counts = np.bincount(rows["category"].to_numpy().astype(np.int64), minlength=self.sizes.n_categories)
        alpha = np.zeros(self.sizes.n_categories)
        nz = counts > 0
        # Every category contributes equally in expectation: alpha_c = n / (C_active * n_c).
        alpha[nz] = counts.sum() / (nz.sum() * counts[nz])
        self.alpha_ = torch.from_numpy(alpha.astype(np.float32)).to(self.alpha_.device)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared': user and item factors; 'specific': the per-category user offsets; 'heads': item biases."""
        # torch types an Embedding's weight as Tensor; it is an nn.Parameter
        shared = [cast(nn.Parameter, self.user_emb.weight), cast(nn.Parameter, self.items.emb.weight)]
        specific = [self.user_offset.weight] if self.user_offset is not None else []
        heads = [self.items.bias] if self.items.bias is not None else []
        return {"shared": shared, "specific": specific, "heads": heads}

    def _users(self, users: Tensor, category: Tensor | int) -> Tensor:
        """[B, d] user factors for target categories (an int or [B])."""
        u = self.user_emb(users)
        if self.user_offset is not None:
            u = u + self.user_offset(users, category)
        return u

    def loss(self, batch: Batch) -> Tensor:
        pos, neg, p, n = self.items.pair_scores(self._users(batch.users, batch.category), batch)
        c = self.config
        if c.weights == "uniform":
            fit = pair_loss(c.loss, pos, neg)
        else:
            fit = (self.alpha_[batch.category] * pair_loss(c.loss, pos, neg, reduction="none")).mean()
        reg = c.reg * l2_penalty(self.user_emb(batch.users), p, n)
        if self.user_offset is not None:
            off = self.user_offset(batch.users, batch.category)
            reg = reg + (c.reg + c.offset_reg) * l2_penalty(off)
        return fit + reg
