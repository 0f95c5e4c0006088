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

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec import kernels
from crossrec.data.batch import Sizes
from crossrec.data.sampling import KeySet
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
        self.train_pairs: KeySet | None = None  # training (user * n_items + item) keys, from setup
        item_cat = torch.tensor(list(sizes.item_category) + [n_cat], dtype=torch.int64)
        self.register_buffer("item_category_", item_cat, persistent=False)  # [n_items + 1], pad -> n_cat
        self.weight = nn.Parameter(torch.ones(n_cat, n_cat + 1))  # [target c, history item's category]
        self.recency = nn.Parameter(torch.zeros(n_cat, history_len))  # [target c, slot]
        self.compiled = True  # on CPU, the compiled kernels (the tensor path is the reference, and CUDA's)

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
        self.train_pairs = KeySet(torch.from_numpy(users * n_i + items).to(dev))

    def scores(self, hist: Tensor, category: Tensor, users: Tensor, candidates: Tensor, leave_out: bool) -> Tensor:
        """[B, M] neighbourhood scores of candidate items [M] (distinct) for history rows [B, L];
        a candidate of another category than the row's scores 0 (no model reads such a cell).

        leave_out (training): when (u, j) is a training pair, cos(h, j) is recomputed without it,
        (co(h, j) - 1) / (sqrt(n_h (n_j - 1)) + shrink), as if j were the unseen held-out item.
        """
        n_i, shrink, dev = self.n_items, self.shrink, hist.device
        # Candidate columns by (row category, item): an item scores only in its own category (a
        # cross-category cell is never read: in-batch softmax masks it), so entries for another
        # category's candidates are dropped before any per-entry work.
        n_cat = self.n_categories
        col_of = torch.full((n_cat, n_i + 1), -1, dtype=torch.int64, device=dev)
        col_of[self.item_category_[candidates], candidates] = torch.arange(len(candidates), device=dev)
        table = self.weight.unsqueeze(2) * torch.exp(self.recency).unsqueeze(1)  # [n_cat, n_cat + 1, hl]
        if dev.type == "cpu" and self.compiled:  # the same sum, walked row by row (crossrec/kernels.py)
            keys = self.train_pairs.keys if leave_out and self.train_pairs is not None else hist.new_zeros(0)
            return _Compiled.apply(table.reshape(-1), hist, category, users, col_of, self, keys, len(candidates))
        # Entries in (row, slot, neighbour) order, built with flat index_selects (advanced indexing
        # is several times slower on CPU): real history items first, then their neighbours that
        # are candidates of the row's category.
        b, length = hist.shape
        kk = self.nbr_.shape[1]
        at = torch.nonzero(hist.reshape(-1) != n_i).squeeze(1)  # real (not pad) history entries
        hr, hl = at // length, at % length
        hv = hist.reshape(-1).index_select(0, at)
        nb = self.nbr_.index_select(0, hv)  # [E, k]
        base = (category.index_select(0, hr) * (n_i + 1)).unsqueeze(1)
        col = col_of.view(-1).index_select(0, (base + nb).view(-1))  # [E * k]
        q = torch.nonzero(col >= 0).squeeze(1)
        e, k = q // kk, q % kk
        r, l, h = hr.index_select(0, e), hl.index_select(0, e), hv.index_select(0, e)
        j, col = nb.view(-1).index_select(0, q), col.index_select(0, q)
        co = self.nbr_co_.view(-1).index_select(0, h * kk + k)
        n_h, n_j = self.item_users_.index_select(0, h), self.item_users_.index_select(0, j)
        if leave_out and self.train_pairs is not None and len(self.train_pairs):
            mine = self.train_pairs.contains(users.index_select(0, r) * n_i + j).float()
            co, n_j = co - mine, n_j - mine
        sim = co / (torch.sqrt(n_h * n_j) + shrink + 1e-8)
        # One weight per (target category, history item's category, recency slot): the small table
        # w[c, cat(h)] exp(r[c, slot]) is built first, then looked up per entry. Lookups and the
        # sum by index_add have deterministic backward passes on CPU (advanced-indexing backward
        # accumulates in a thread-dependent order).
        c, hlen = category.index_select(0, r), self.history_len
        slot = l + hlen - length
        cat_h = self.item_category_.index_select(0, h)
        w = F.embedding((c * (n_cat + 1) + cat_h) * hlen + slot, table.reshape(-1, 1)).squeeze(1)
        m = len(candidates)
        out = torch.zeros(b * m, device=dev).index_add(0, r * m + col, w * sim)
        return out.view(b, m)

    def at(self, hist: Tensor, category: Tensor, users: Tensor, items: Tensor, leave_out: bool) -> Tensor:
        """Scores of given items: items [M] -> [B, M] (every row the same columns), items [B, n] ->
        [B, n] (each row its own)."""
        uniq, inv = torch.unique(items, return_inverse=True)
        n = self.scores(hist, category, users, uniq, leave_out)
        return n.index_select(1, inv) if items.dim() == 1 else n.gather(1, inv)


class _Compiled(torch.autograd.Function):
    """`NeighbourhoodTerm.scores` by the compiled kernels: the output is linear in the weight
    table, so the backward walks the same entries and sums grad_out * cos per weight."""

    @staticmethod
    def forward(ctx: Any, table: Tensor, hist: Tensor, category: Tensor, users: Tensor, col_of: Tensor,
                term: NeighbourhoodTerm, keys: Tensor, m: int) -> Tensor:
        kernels.threads()
        args = (hist.numpy(), category.numpy(), users.numpy(), col_of.numpy(), term.nbr_.numpy(),
                term.nbr_co_.numpy(), term.item_users_.numpy(), term.item_category_.numpy(), keys.numpy(),
                len(keys) > 0)
        consts = (float(term.shrink), term.history_len, term.n_categories, term.n_items)
        ctx.args, ctx.consts, ctx.n_table = args, consts, table.numel()
        out = kernels.get("neighbourhood_forward")(table.detach().numpy(), *args, m, *consts)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad = None
        if ctx.needs_input_grad[0]:
            n_b = ctx.args[0].shape[0]
            g = grad_out.contiguous().float().numpy()
            grad = torch.from_numpy(kernels.get("neighbourhood_backward")(
                g, ctx.n_table, *ctx.args, *ctx.consts, min(kernels.threads() * 4, max(n_b, 1))))
        return (grad,) + (None,) * 7
