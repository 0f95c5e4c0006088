"""The flagship's neighbourhood term (Koren, "Factorization meets the neighborhood", KDD 2008).

N_c(u, j) = sum over the user's history items h (all categories) of
w[c, cat(h)] * exp(r[c, slot(h)]) * cos(h, j), with cos the shrunk cosine of training
co-occurrence, kept for each item's top-k neighbours (pooled, so an Arts item can vouch for an
Office item), and weights learned per (target, history) category pair and recency slot. The latent
part needs several interactions per item before its vectors mean much; this term works from the
first co-occurrence. In training a row's own pair is left out of the similarity, so the model does
not learn to trust a co-occurrence that the row itself created.

Example:
    >>> term = NeighbourhoodTerm(sizes, k=50, shrink=10.0, history_len=25); term.setup(bundle)  # doctest: +SKIP
    >>> term.scores(hist, category, users, candidates, leave_out=False).shape   # [B, M]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.itemknn import binary_matrix, cosine_top_k

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


class NeighbourhoodTerm(nn.Module):
    """Top-k co-occurrence neighbours (buffers, from `setup`) and their learned weights."""

    def __init__(self, sizes: Sizes, k: int, shrink: float, history_len: int) -> None:
        super().__init__()
        n_i, n_cat = sizes.n_items, sizes.n_categories
        self.n_users, self.n_items, self.n_categories = sizes.n_users, n_i, n_cat
        self.k, self.shrink, self.history_len = k, shrink, history_len
        self.register_buffer("nbr_", torch.full((n_i + 1, k), n_i, dtype=torch.int64))  # pad row/entries
        self.register_buffer("nbr_co_", torch.zeros(n_i + 1, k))  # co-occurrence counts
        self.register_buffer("item_users_", torch.zeros(n_i + 1))  # training users per item
        self.register_buffer("train_keys_", torch.zeros(0, dtype=torch.int64), persistent=False)  # sorted u*n_i+i
        item_cat = torch.tensor(list(sizes.item_category) + [n_cat], dtype=torch.int64)
        self.register_buffer("item_category_", item_cat, persistent=False)  # [n_items + 1], pad -> n_cat
        self.weight = nn.Parameter(torch.ones(n_cat, n_cat + 1))  # [target c, history item's category]
        self.recency = nn.Parameter(torch.zeros(n_cat, history_len))  # [target c, slot]

    def setup(self, bundle: Bundle) -> None:
        """Top-k cosine neighbours (all categories) of every item over the training co-occurrence."""
        train = bundle.split("train")
        users = train["user"].to_numpy().astype(np.int64)
        items = train["item"].to_numpy().astype(np.int64)
        n_i, k, shrink = self.n_items, self.k, self.shrink
        top, norms = cosine_top_k(binary_matrix(users, items, self.n_users, n_i), k, shrink)
        n = np.rint(norms**2)  # users per item
        rows = np.repeat(np.arange(n_i), np.diff(top.indptr))
        rank = np.arange(len(rows)) - top.indptr[rows]
        counts = np.rint(top.data * (norms[rows] * norms[top.indices] + shrink + 1e-8))  # users in common
        nbr = np.full((n_i + 1, k), n_i, dtype=np.int64)
        nbr_co = np.zeros((n_i + 1, k), dtype=np.float32)
        nbr[rows, rank] = top.indices
        nbr_co[rows, rank] = counts
        dev = self.weight.device
        self.nbr_ = torch.from_numpy(nbr).to(dev)
        self.nbr_co_ = torch.from_numpy(nbr_co).to(dev)
        self.item_users_ = torch.from_numpy(np.append(n, 0.0).astype(np.float32)).to(dev)
        self.train_keys_ = torch.from_numpy(np.unique(users * n_i + items)).to(dev)

    def scores(self, hist: Tensor, category: Tensor, users: Tensor, candidates: Tensor, leave_out: bool) -> Tensor:
        """[B, M] neighbourhood scores of candidate items [M] (distinct) for history rows [B, L].

        leave_out (training): when (u, j) is a training pair, cos(h, j) is recomputed without it,
        (co(h, j) - 1) / (sqrt(n_h (n_j - 1)) + shrink), as if j were the unseen held-out item.
        """
        n_i, shrink = self.n_items, self.shrink
        col_of = torch.full((n_i + 1,), -1, dtype=torch.int64, device=hist.device)
        col_of[candidates] = torch.arange(len(candidates), device=hist.device)
        nb = self.nbr_[hist]  # [B, L, k] (pad history rows have only pad neighbours)
        col = col_of[nb]
        r, l, k = torch.nonzero(col >= 0, as_tuple=True)
        h, j = hist[r, l], nb[r, l, k]
        co, n_h, n_j = self.nbr_co_[h, k], self.item_users_[h], self.item_users_[j]
        if leave_out and len(self.train_keys_):
            key = users[r] * n_i + j
            at = torch.searchsorted(self.train_keys_, key).clamp_max(len(self.train_keys_) - 1)
            mine = (self.train_keys_[at] == key).float()
            co, n_j = co - mine, n_j - mine
        sim = co / (torch.sqrt(n_h * n_j) + shrink + 1e-8)
        # Per-entry weights by embedding lookups and the sum by index_add: both have deterministic
        # backward passes on CPU (advanced-indexing backward accumulates in a thread-dependent order).
        c, n_cat, hl = category[r], self.n_categories, self.history_len
        w = F.embedding(c * (n_cat + 1) + self.item_category_[h], self.weight.view(-1, 1)).squeeze(1)
        w = w * torch.exp(F.embedding(c * hl + l + hl - hist.shape[1], self.recency.view(-1, 1)).squeeze(1))
        m = len(candidates)
        out = torch.zeros(len(hist) * m, device=hist.device).index_add(0, r * m + col[r, l, k], w * sim)
        return out.view(len(hist), m)

    def at(self, hist: Tensor, category: Tensor, users: Tensor, items: Tensor, leave_out: bool) -> Tensor:
        """Scores of given items: items [M] -> [B, M] (every row the same columns), items [B, n] ->
        [B, n] (each row its own)."""
        uniq, inv = torch.unique(items, return_inverse=True)
        n = self.scores(hist, category, users, uniq, leave_out)
        return n[:, inv] if items.dim() == 1 else n.gather(1, inv)
