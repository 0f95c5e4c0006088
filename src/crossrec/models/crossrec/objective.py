"""The flagship's objective: the category weighting w_c of sum_c w_c L_c, the gradient-reversal
layer of the optional adversarial category classifier, the per-user views that the transfer and
adversarial losses read, and (loss.py) the parts `CrossRec` owns that compute the loss.

w_c is `uniform` (every interaction counts the same), `inverse_frequency` (every category counts
the same: w_c = n / (C_active * n_c)) or `learned` (homoscedastic uncertainty weighting,
exp(-s_c) L_c + s_c, Kendall, Gal & Cipolla, CVPR 2018).

Example:
    >>> w = CategoryWeighting("inverse_frequency", n_categories=3); w.setup(train_counts)  # doctest: +SKIP
    >>> w(row_losses, row_categories)                                                      # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


class CategoryWeighting(nn.Module):
    """sum_c w_c L_c from per-row losses [B] and their categories [B]."""

    cat_weight_: Tensor

    def __init__(self, mode: str, n_categories: int) -> None:
        super().__init__()
        self.mode, self.n_categories = mode, n_categories
        self.log_var = nn.Parameter(torch.zeros(n_categories)) if mode == "learned" else None
        self.register_buffer("cat_weight_", torch.ones(n_categories))

    def setup(self, counts: np.ndarray) -> None:
        """Inverse-frequency weights from the training rows per category [n_categories]."""
        counts = counts.astype(np.float64)
        w = np.zeros_like(counts)
        nz = counts > 0
        # Every category contributes equally in expectation: w_c = n / (C_active * n_c).
        w[nz] = counts.sum() / (nz.sum() * counts[nz])
        self.cat_weight_ = torch.from_numpy(w.astype(np.float32)).to(self.cat_weight_.device)

    def forward(self, row_loss: Tensor, category: Tensor) -> Tensor:
        if self.mode == "uniform":
            return row_loss.mean()
        if self.mode == "inverse_frequency":
            return (self.cat_weight_[category] * row_loss).mean()
        n_cat = self.n_categories
        sums = torch.zeros(n_cat, device=row_loss.device).index_add(0, category, row_loss)
        counts = torch.zeros(n_cat, device=row_loss.device).index_add(0, category, torch.ones_like(row_loss))
        present = counts > 0
        per_cat = sums[present] / counts[present]
        s = self.log_var[present]  # type: ignore[index]
        return (torch.exp(-s) * per_cat + s).sum() / max(int(present.sum()), 1)


class GradReverse(torch.autograd.Function):
    """Identity forward, -scale * grad backward (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def first_views(
    history: Tensor, users: Tensor, cat: Tensor, item_category: Tensor, pad: int, limit: int = 256
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For the first row of each (user, category) in a batch (at most `limit`): the user's stored
    history [n, L], its target category [n] and masks of in-category / other-category items [n, L].

    `history` [n_users, L] (pad = `pad`), `item_category` [n_items + 1] (pad -> n_categories).
    """
    key = users * (int(item_category[-1]) + 1) + cat
    uniq, inv = torch.unique(key, return_inverse=True)
    first = torch.full((len(uniq),), len(key), dtype=torch.int64, device=key.device)
    rows = first.scatter_reduce(0, inv, torch.arange(len(key), device=key.device), reduce="amin")[:limit]
    c, hist = cat[rows], history[users[rows]]
    real, hcat = hist != pad, item_category[hist]
    return hist, c, (hcat == c.unsqueeze(1)) & real, (hcat != c.unsqueeze(1)) & real
