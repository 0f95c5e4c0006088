"""Text-neighbour borrowing: the ID part of an item nobody trained on, lent by the trained items
whose text is nearest to its own.

A `text+id` tower scores an item without training interactions (a cold item, every item of a
zero-shot category, an item added after training) from its text through the adapter, a low-rank
reading of the language model's vector learned to agree with the ID part on average. What it
cannot carry is the identity of a particular trained item: a music video of a franchise is bought
by the franchise's audience, a refill by the buyers of its pen. The language model's full vector
does keep that identity (a title's nearest titles are mostly its own franchise or product line), so
the untrained item takes the ID parts of its `k` nearest trained items by cosine, weighted by a
softmax at temperature `tau` (a kernel regression in text space, as cold-start mappers from
content to collaborative vectors do; Gantner et al., ICDM 2010):

    e_j = sum_n w_jn e_n      b_j = sum_n w_jn b_n      N(u, j) = sum_n w_jn N_cat(n)(u, n)
    w_j = softmax(cos(t_j, t_n) / tau over the k nearest trained n)

for the ID embedding, the ID bias and the neighbourhood term (each neighbour's term read in its own
category). In a category with no training interactions at all (a zero-shot category) the users'
parts for that category (specific embedding, gate, attention query) never trained, so there the
whole score is borrowed instead: s(u, j) = sum_n w_jn s_cat(n)(u, n), each lender scored in its own
category. The item keeps its own text part, and stays `untrained` for the cold offset
(models/crossrec/calibration.py), which is fitted after the borrowing. The borrowed rows are written
into the ID tables, so an item that later gets interactions starts training from them.

What it changed on the zero-shot and cold-item protocols: docs/DESIGN.md (`models`) and the item
text results page of the docs site (generated from benchmarks/results). In categories that did
train, the lenders' scores lost to the parts on anime's cold items (cold-item protocol), so they
are used only where the category itself never trained.

Example:
    >>> nbr, w = text_neighbours(text, trained, text[cold], k=20, temperature=0.05)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools
    from crossrec.models.crossrec.host import Flagship
    from crossrec.models.crossrec.neighbourhood import NeighbourhoodTerm


def text_neighbours(
    text: Tensor, trained: Tensor, query: Tensor, k: int, temperature: float, chunk: int = 2048
) -> tuple[Tensor, Tensor]:
    """The `k` nearest trained items (global ids) of each query text vector by cosine, and their
    softmax weights: text [n_items, t], trained [n_items] bool, query [J, t] -> ([J, k'], [J, k'])
    with k' = min(k, trained items). A query without text (a zero row) gets uniform weights."""
    pool = torch.nonzero(trained).squeeze(1)
    k = min(k, len(pool))
    if k == 0 or len(query) == 0:
        return torch.zeros(len(query), 0, dtype=torch.int64, device=text.device), torch.zeros(
            len(query), 0, device=text.device
        )
    keys = F.normalize(text.index_select(0, pool).float(), dim=1)
    nbr, wts = [], []
    for lo in range(0, len(query), chunk):  # [chunk, n_trained] at a time
        sim = F.normalize(query[lo : lo + chunk].float(), dim=1) @ keys.T
        v, ix = sim.topk(k, dim=1)
        nbr.append(pool.index_select(0, ix.reshape(-1)).view(ix.shape))
        wts.append(torch.softmax(v / temperature, dim=1))
    return torch.cat(nbr), torch.cat(wts)


def borrowed_neighbourhood(term: NeighbourhoodTerm, hist: Tensor, users: Tensor, nbr: Tensor, w: Tensor) -> Tensor:
    """[B, J] sum_n w_jn N_cat(n)(u, n): the neighbourhood term (models/crossrec/neighbourhood.py)
    of each borrowed item's lenders, each read in its own category. nbr, w [J, k]."""
    uniq, inv = torch.unique(nbr, return_inverse=True)
    vals = torch.zeros(len(hist), len(uniq), device=hist.device)
    cats = term.item_category_.index_select(0, uniq)
    for c in torch.unique(cats).tolist():
        cols = torch.nonzero(cats == c).squeeze(1)  # ascending ids: distinct, as `scores` wants
        vals[:, cols] = term.scores(hist, torch.full_like(users, c), users, uniq.index_select(0, cols), leave_out=False)
    return (vals.index_select(1, inv.reshape(-1)).view(len(hist), *nbr.shape) * w).sum(-1)


class Borrowing:
    """The borrowed rows and their use: a part `CrossRec` owns (`model.borrow`, models/crossrec/model.py)
    and the first of its post-training steps (`calibrate`; calling the part runs the borrowing).

    Buffers (registered on the model, under the names artifacts store): `borrow_row_` [n_items] (row
    in the tables below, -1: not borrowed), `borrow_nbr_` [J, k] lenders' global ids, `borrow_w_`
    [J, k] their weights.
    """

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def __call__(self) -> None:
        """After training (the first post-training step): lend every item without training
        interactions that has text the ID parts of its nearest trained items (module docstring);
        a no-op unless the tower reads text and IDs and `text.borrow` > 0."""
        m = self.model
        cfg, tower = m.config.text, m.items
        if not (tower.use_text and tower.use_id and tower.has_text) or cfg.borrow <= 0 or m.config.loss == "mse":
            return
        n = m.sizes.n_items
        has_text = tower.text_.abs().sum(1) > 0
        cold = torch.nonzero((m.log_count_ == 0) & has_text).squeeze(1)
        nbr, w = text_neighbours(
            tower.text_, self.lending(), tower.text_.index_select(0, cold), cfg.borrow, cfg.borrow_temperature
        )
        dev = m.log_count_.device
        row = torch.full((n,), -1, dtype=torch.int64, device=dev)
        if nbr.shape[1]:
            with torch.no_grad():
                tower.emb.weight[cold] = (w.unsqueeze(-1) * tower.emb.weight[nbr]).sum(1)
                tower.bias[cold] = (w * tower.bias[nbr]).sum(1)
            row[cold] = torch.arange(len(cold), device=dev)
        m.borrow_row_, m.borrow_nbr_, m.borrow_w_ = row, nbr.to(dev), w.to(dev)

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """The post-training step: borrow (first: the later steps read the borrowed parts)."""
        self()

    def lenders(self, item: int) -> list[tuple[int, float]]:
        """The trained items (global ids) whose ID parts `item` borrowed, with their weights,
        heaviest first; empty for an item that borrowed nothing (explanations name them)."""
        m = self.model
        row = int(m.borrow_row_[item]) if m.borrow_nbr_.numel() and 0 <= item < m.sizes.n_items else -1
        if row < 0:
            return []
        w, order = torch.sort(m.borrow_w_[row], descending=True, stable=True)
        return list(zip(m.borrow_nbr_[row][order].tolist(), w.tolist()))

    def lending(self) -> Tensor:
        """[n_items] True for the items that lend: training interactions and text."""
        return (self.model.log_count_ > 0) & (self.model.items.text_.abs().sum(1) > 0)

    def borrowed(self, items: Tensor) -> Tensor:
        """[...] True where an item's ID part is borrowed (pad: False)."""
        m = self.model
        if not m.borrow_nbr_.numel():
            return torch.zeros(items.shape, dtype=torch.bool, device=items.device)
        return (
            m.borrow_row_.index_select(0, items.clamp_max(m.sizes.n_items - 1).reshape(-1)).view(items.shape) >= 0
        ) & (items < m.pad)

    def at_borrowed(self, items: Tensor, values: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor] | None:
        """`values(lenders [U, k], weights [U, k]) -> [B, U]`, computed once per distinct borrowed
        item among `items`, and where those cells are: items [M] -> (columns [J], values [B, J]);
        items [B, n] -> (mask [B, n], values [B, n], meaningful where the mask is set). None: no
        borrowed item."""
        m = self.model
        mine = self.borrowed(items)
        if not bool(mine.any()):
            return None
        uniq, inv = torch.unique(items[mine], return_inverse=True)
        rows = m.borrow_row_.index_select(0, uniq)
        vals = values(m.borrow_nbr_[rows], m.borrow_w_[rows])  # [B, U]
        if items.dim() == 1:
            return torch.nonzero(mine).squeeze(1), vals.index_select(1, inv)
        pos = torch.zeros(items.shape, dtype=torch.int64, device=items.device)
        pos[mine] = inv
        return mine, vals.gather(1, pos)

    def side(self, hist: Tensor, users: Tensor, items: Tensor, out: Tensor) -> Tensor:
        """Add the borrowed items' neighbourhood term into `out` (inference; items [M] -> out [B, M],
        items [B, n] -> out [B, n]); returns `out`, changed in place when autograd is off."""
        term = self.model.neighbours
        if term is None or self.model.training:
            return out
        got = self.at_borrowed(items, lambda nbr, w: borrowed_neighbourhood(term, hist, users, nbr, w))
        if got is None:
            return out
        where, vals = got
        if items.dim() == 2:
            return out + vals * where
        return out.index_add(1, where, vals) if torch.is_grad_enabled() else out.index_add_(1, where, vals)

    # ---------------------------------------------------------------- categories nobody trained on
    def lender_scores(self, users: Tensor, nbr: Tensor, w: Tensor) -> Tensor:
        """[B, J] sum_n w_jn score_cat(n)(u, n): each lender scored in its own category (towers,
        bias and history terms, as `score` gives it). nbr, w [J, k]."""
        m = self.model
        uniq, inv = torch.unique(nbr, return_inverse=True)
        vals = torch.zeros(len(users), len(uniq), device=users.device)
        cats = m.item_category_.index_select(0, uniq)
        hist = m.history_[users]
        for c in torch.unique(cats).tolist():
            cols = torch.nonzero(cats == c).squeeze(1)
            items = uniq.index_select(0, cols)
            seen = m.cold.seen(items)
            s = m.user_vectors(users, c) @ m.items(items, seen).T + m.cold.bias(items, seen, c)
            if m.new_prior is not None:
                s = s + m.prior.scores(m.prior.weight(users, c), items)
            if m.side.reads:
                s = s + m.side(hist, torch.full_like(users, c), users, items, leave_out=False)
            vals[:, cols] = s
        return (vals.index_select(1, inv.reshape(-1)).view(len(users), *nbr.shape) * w).sum(-1)

    def untrained_category(self, category: int) -> bool:
        """No training interactions in the category (a zero-shot category): its users' category
        parts (specific embedding, gate, attention query) never trained."""
        return bool(self.model.borrow_nbr_.numel()) and float(self.model.log_cat_rows_[category]) == 0.0

    def zero_shot(self, users: Tensor, category: int, items: Tensor, s: Tensor) -> Tensor:
        """In a category without training interactions, a borrowed item's score is its lenders'
        scores, each read in its own category (module docstring), plus the cold offset: the
        user's representation there is untrained. items [M] -> s [B, M], items [B, n] -> s [B, n];
        `s` is returned, changed in place when autograd is off."""
        if not self.untrained_category(category):
            return s
        offset = self.model.cold_offset_[category]
        got = self.at_borrowed(items, lambda nbr, w: self.lender_scores(users, nbr, w) + offset)
        if got is None:
            return s
        where, lent = got
        if items.dim() == 2:
            return torch.where(where, lent, s)
        if torch.is_grad_enabled():
            return s.index_copy(1, where, lent)
        s[:, where] = lent
        return s


__all__ = ["text_neighbours", "borrowed_neighbourhood", "Borrowing"]
