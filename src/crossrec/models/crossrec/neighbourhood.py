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

    nbr_: Tensor
    nbr_co_: Tensor
    item_users_: Tensor
    item_category_: Tensor

    def __init__(self, sizes: Sizes, k: int, shrink: float, history_len: int) -> None:
        super().__init__()
        n_i, n_cat = sizes.n_items, sizes.n_categories
        self.n_users, self.n_items, self.n_categories = sizes.n_users, n_i, n_cat
        self.k, self.shrink, self.history_len = k, shrink, history_len
        self.register_buffer("nbr_", torch.full((n_i + 1, k), n_i, dtype=torch.int64))  # pad row/entries
        self.register_buffer("nbr_co_", torch.zeros(n_i + 1, k))  # co-occurrence counts
        self.register_buffer("item_users_", torch.zeros(n_i + 1))  # training users per item
        self.train_pairs: KeySet | None = None  # training (user * n_items + item) keys, from setup
        self.user_starts = np.zeros(0, dtype=np.int64)  # [n_users + 1] each user's first key in train_pairs
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
        # Where each user's keys start in the sorted keys (the kernels search one user's range)
        self.user_starts = np.searchsorted(self.train_pairs.keys.cpu().numpy(), np.arange(self.n_users + 1) * n_i)

    def kernel_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kernels' copy of the neighbour lists: each item's neighbours grouped by category
        (int32 ids, their co-occurrence counts) and offsets [n_items + 1, n_categories + 2] with
        `off[h, c]:off[h, c + 1]` the neighbours of h in category c (pads last). Made once per table
        (setup and loading replace or rewrite the buffers)."""
        key = (id(self.nbr_), self.nbr_._version, id(self.nbr_co_), self.nbr_co_._version)
        cached = getattr(self, "_kernel_tables", None)
        if cached is None or cached[0] != key:
            nbr, co = self.nbr_.cpu().numpy(), self.nbr_co_.cpu().numpy()
            cat = self.item_category_.cpu().numpy()[nbr]  # [n_items + 1, k]; pads -> n_categories
            order = np.argsort(cat, axis=1, kind="stable")
            off = np.zeros((len(nbr), self.n_categories + 2), dtype=np.int64)
            for c in range(self.n_categories + 1):
                off[:, c + 1] = (cat <= c).sum(1)
            tables = (
                np.take_along_axis(nbr, order, 1).astype(np.int32),
                np.ascontiguousarray(np.take_along_axis(co, order, 1)),
                off,
            )
            self._kernel_tables = (key, tables)
        return self._kernel_tables[1]

    def scores(
        self,
        hist: Tensor,
        category: Tensor,
        users: Tensor,
        candidates: Tensor,
        leave_out: bool,
        out: Tensor | None = None,
    ) -> Tensor:
        """[B, M] neighbourhood scores of candidate items [M] (distinct) for history rows [B, L];
        a candidate of another category than the row's scores 0 (no model reads such a cell).
        `out` [B, M] (autograd off): the scores are added into it, and it is returned (a full-ranking
        block needs no second block of its size).

        leave_out (training): when (u, j) is a training pair, cos(h, j) is recomputed without it,
        (co(h, j) - 1) / (sqrt(n_h (n_j - 1)) + shrink), as if j were the unseen held-out item.
        """
        n_i, dev = self.n_items, hist.device
        # Each candidate item's column ([n_items + 1], -1: not a candidate). An item scores only in
        # its own category (a cross-category cell is never read: in-batch softmax masks it), so a
        # row reads only the neighbours in its own category: one table of O(items) serves every
        # row, whatever the number of categories.
        col_of = torch.full((n_i + 1,), -1, dtype=torch.int32, device=dev)
        col_of[candidates] = torch.arange(len(candidates), device=dev, dtype=torch.int32)
        table = self.weight.unsqueeze(2) * torch.exp(self.recency).unsqueeze(1)  # [n_cat, n_cat + 1, hl]
        if dev.type == "cpu" and self.compiled:  # the same sum, walked row by row (crossrec/kernels/)
            keys = self.train_pairs.keys if leave_out and self.train_pairs is not None else hist.new_zeros(0)
            if out is not None and not torch.is_grad_enabled() and out.dtype == torch.float32 and out.is_contiguous():
                _walk(self, table, hist, category, users, col_of, keys, out.numpy())
                return out
            n = _Compiled.apply(table.reshape(-1), hist, category, users, col_of, self, keys, len(candidates))
            return n if out is None else out.add_(n)
        n = self._tensor_scores(hist, category, users, col_of, table, leave_out, len(candidates))
        return n if out is None else out.add_(n)

    def _tensor_scores(
        self, hist: Tensor, category: Tensor, users: Tensor, col_of: Tensor, table: Tensor, leave_out: bool, m: int
    ) -> Tensor:
        """`scores` on tensor ops (the compiled kernel's reference, and CUDA's path): [B, m]."""
        n_i, shrink, dev, n_cat = self.n_items, self.shrink, hist.device, self.n_categories
        # Entries in (row, slot, neighbour) order, built with flat index_selects (advanced indexing
        # is several times slower on CPU): real history items first, then their neighbours that
        # are candidates of the row's category.
        b, length = hist.shape
        kk = self.nbr_.shape[1]
        at = torch.nonzero(hist.reshape(-1) != n_i).squeeze(1)  # real (not pad) history entries
        hr, hl = at // length, at % length
        hv = hist.reshape(-1).index_select(0, at)
        nb = self.nbr_.index_select(0, hv)  # [E, k]
        col = col_of.index_select(0, nb.view(-1)).long()  # [E * k]
        own = self.item_category_.index_select(0, nb.view(-1)) == category.index_select(0, hr).repeat_interleave(kk)
        col = torch.where(own, col, torch.full_like(col, -1))  # a neighbour in the row's category only
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
        return torch.zeros(b * m, device=dev).index_add(0, r * m + col, w * sim).view(b, m)

    def at(
        self, hist: Tensor, category: Tensor, users: Tensor, items: Tensor, leave_out: bool, out: Tensor | None = None
    ) -> Tensor:
        """Scores of given items: items [M] -> [B, M] (every row the same columns), items [B, n] ->
        [B, n] (each row its own); with `out`, added into it (see `scores`)."""
        if items.dim() == 1 and bool((items[1:] > items[:-1]).all()):  # already distinct (a category's catalogue)
            return self.scores(hist, category, users, items, leave_out, out)
        uniq, inv = torch.unique(items, return_inverse=True)
        n = self.scores(hist, category, users, uniq, leave_out)
        n = n.index_select(1, inv) if items.dim() == 1 else n.gather(1, inv)
        return n if out is None else out.add_(n)


def _walk(
    term: NeighbourhoodTerm,
    table: Tensor,
    hist: Tensor,
    category: Tensor,
    users: Tensor,
    col_of: Tensor,
    keys: Tensor,
    out: np.ndarray,
    starts: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Run the forward kernel, adding the scores into `out` [B, M]; with `starts`, record the hits
    (returned: column, weight index, cosine, count per row) for the backward."""
    n_threads = kernels.threads()
    nbr, co, off = term.kernel_tables()
    return kernels.get("neighbourhood_forward")(
        table.detach().reshape(-1).numpy(),
        hist.numpy(),
        category.numpy(),
        users.numpy(),
        col_of.numpy(),
        nbr,
        co,
        off,
        term.item_users_.numpy(),
        term.item_category_.numpy(),
        keys.numpy(),
        term.user_starts,
        float(term.shrink),
        term.history_len,
        term.n_categories,
        term.n_items,
        np.zeros(0, dtype=np.int64) if starts is None else starts,
        out,
        min(n_threads * 4, max(len(hist), 1)),
    )


class _Compiled(torch.autograd.Function):
    """`NeighbourhoodTerm.scores` by the compiled kernels: the output is linear in the weight
    table, so the backward walks the same entries and sums grad_out * cos per weight."""

    @staticmethod
    def forward(
        ctx: Any,
        table: Tensor,
        hist: Tensor,
        category: Tensor,
        users: Tensor,
        col_of: Tensor,
        term: NeighbourhoodTerm,
        keys: Tensor,
        m: int,
    ) -> Tensor:
        starts = None
        if ctx.needs_input_grad[0]:  # room for every real history item's k neighbours, per row
            starts = np.zeros(len(hist) + 1, dtype=np.int64)
            starts[1:] = ((hist != term.n_items).sum(1) * term.nbr_.shape[1]).cumsum(0).numpy()
        out = np.zeros((len(hist), m), dtype=np.float32)
        ctx.hits = _walk(term, table, hist, category, users, col_of, keys, out, starts)
        ctx.starts, ctx.n_table = starts, table.numel()
        # A row of category c reads only c's block of the [n_cat, n_cat + 1, hl] table: the
        # backward sums into the blocks of the rows' categories alone (one category per call in
        # training), not into a partial table of every category per thread.
        block = table.numel() // term.n_categories
        ctx.w_lo = int(category.min()) * block if len(category) else 0
        ctx.n_part = (int(category.max()) + 1) * block - ctx.w_lo if len(category) else 0
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad = None
        if ctx.needs_input_grad[0]:
            col, w_at, sim, n_hits = ctx.hits
            n_b = len(n_hits)
            part = kernels.get("neighbourhood_backward")(
                grad_out.contiguous().float().numpy(),
                ctx.w_lo,
                ctx.n_part,
                ctx.starts,
                n_hits,
                col,
                w_at,
                sim,
                min(kernels.threads() * 4, max(n_b, 1)),
            )
            grad = torch.zeros(ctx.n_table)
            grad[ctx.w_lo : ctx.w_lo + ctx.n_part] = torch.from_numpy(part)
        return (grad,) + (None,) * 7
