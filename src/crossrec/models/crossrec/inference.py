"""What the service asks of the flagship beyond `score` (serving/service.py): the user-independent
part of the extra terms (for the index), exact scores of a candidate pool (for the re-rank), and
each history item's share of a score (for explanations).

Contributions of a user's history items h to score(u, i), for target category c:
    neighbourhood  w[c, cat(h)] exp(r[c, slot(h)]) cos(h, i)           (exact: the term is a sum over h;
                   for an item that borrowed its ID parts, the weighted sum over its lenders n of
                   the same with cos(h, n), each in n's category: borrow.py)
    content        a[c, cat(h)] s_c <t_h, t_i> / |history|              (exact, likewise)
    encoder        <Enc({h}) - Enc({}), v_i - mean_j v_j>                (a first-order reading)
They are the model's own terms, so an explanation ("because you liked X in Books") names the
history items that moved this item up, not ones picked after the fact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from crossrec.models.crossrec.borrow import borrowed_neighbourhood, text_neighbours


class FlagshipInference:
    """Mixed into `CrossRec` (models/crossrec/model.py)."""

    def index_bias(self: Any, category: int) -> Tensor:
        """[n_items(c)] the part of `extra_scores` that does not depend on the user."""
        idx = self.index[category]
        b = self._item_bias(idx, self._seen(idx), category)
        return b + self.global_bias if self.config.loss == "mse" else b

    def index_item_columns(self: Any, category: int) -> Tensor:
        """[n_items(c), e] item columns that, dotted with `index_user_columns`, give every term of
        `score` except the sparse neighbourhood term: the bias, the new-user prior's log counts
        (prior.py), and the content term's text."""
        cols = [self.index_bias(category).unsqueeze(1)]
        if self.new_prior is not None:
            cols.append(self.log_count_.index_select(0, self.index[category]).unsqueeze(1))
        if self.content_term is not None:
            cols.append(self.items.text_[self.index[category]])
        return torch.cat(cols, 1)

    def index_user_columns(self: Any, users: Tensor, category: int) -> Tensor:
        """[B, e] the user side of `index_item_columns`: 1 for the bias, the prior's weight, the content profile."""
        cols = [torch.ones(len(users), 1, device=users.device)]
        if self.new_prior is not None:
            cols.append(self.prior_weight(users, category).unsqueeze(1))
        if self.content_term is not None:
            hist = self.history_[users]
            cat = torch.full_like(users, category)
            cols.append(self.content_term.profile(hist, cat, self.item_category_[hist], self.items.text_))
        return torch.cat(cols, 1)

    def sparse_candidates(self: Any, users: Tensor, category: int) -> Tensor | None:
        """Global ids of the category's items whose neighbourhood score may be non-zero for these
        users (the neighbours of their history items), or None without a neighbourhood term. Every
        other item's score is exactly its index score."""
        if self.neighbours is None:
            return None
        nb = self.neighbours.nbr_[self.history_[users]].flatten()
        idx = self.index[category]
        nb = torch.cat([nb[nb != self.pad], idx[self._borrowed(idx)]])  # borrowed items: their lenders' terms
        nb = torch.unique(nb)
        return nb[self.item_category_[nb] == category]

    def score_items(self: Any, users: Tensor, category: int, items: Tensor) -> Tensor:
        """[B, n] exact scores of each row's candidate items [B, n] (global ids of category c);
        equal to `score(users, c)` at those items."""
        cat = torch.full_like(users, category)
        u = self.user_vectors(users, category)  # [B, d]
        seen = self._seen(items)
        s = (u.unsqueeze(1) * self.items(items, seen)).sum(-1) + self._item_bias(items, seen, category)
        if self.new_prior is not None:
            s = s + self.prior_scores(self.prior_weight(users, category), items)
        if self._reads_side:
            s = s + self._side(self.history_[users], cat, users, items, leave_out=False)
        s = self._zero_shot(users, category, items, s)
        return s + self.global_bias if self.config.loss == "mse" else s

    def score_text_items(self: Any, users: Tensor, category: int, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[B, n] scores of items known only by their text vectors [n, k] (added after training; a
        text item tower only), with image vectors [n, k'] where the tower reads them: what `score`
        would give them as items without training rows."""
        lent = self.borrowed_parts(text)  # (lenders, weights, their ID vectors and biases) or None
        if lent is not None and self._untrained_category(category):  # as `score` there (borrow.py)
            return self._lender_scores(users, lent[0], lent[1]) + self.cold_offset_[category]
        v, b = self.items.from_text(text, image, None if lent is None else lent[2])
        if self.items.use_id:  # scored as an item without training rows
            b = b + self.cold_offset_[category] + (0.0 if lent is None else lent[3])
        s = self.user_vectors(users, category) @ v.T + b
        if lent is not None and self.neighbours is not None:
            s = s + borrowed_neighbourhood(self.neighbours, self.history_[users], users, lent[0], lent[1])
        if self.content_term is not None:
            hist = self.history_[users]
            cat = torch.full_like(users, category)
            s = s + self.content_term.profile(hist, cat, self.item_category_[hist], self.items.text_) @ text.float().T
        return s + self.global_bias if self.config.loss == "mse" else s

    def text_item_vectors(self: Any, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[n, d] item-tower vectors of items known by their text vectors [n, k] (and image
        vectors [n, k']), with the ID parts they borrow where they do: what `similar` compares."""
        lent = self.borrowed_parts(text)
        return self.items.from_text(text, image, None if lent is None else lent[2])[0]

    def borrowed_parts(self: Any, text: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """For items known by their text vectors [n, k]: their lenders [n, m], weights [n, m] and
        the borrowed ID vectors [n, d] and biases [n] (borrow.py), or None where nothing is borrowed."""
        if not (self.items.use_id and self.borrow_nbr_.numel()):
            return None
        cfg = self.config.text
        nbr, w = text_neighbours(self.items.text_, self._lenders(), text.to(self.log_count_.device),
                                 cfg.borrow, cfg.borrow_temperature)
        vec = (w.unsqueeze(-1) * self.items.emb.weight[nbr]).sum(1)
        return nbr, w, vec, (w * self.items.bias[nbr]).sum(1)

    def score_history(self: Any, hist: Tensor, category: int) -> Tensor:
        """[B, n_items(c)] scores for users known only by a history [B, L] of item ids (pad =
        n_items; a user who is not in the training data): the history encoder, the item bias and
        the neighbourhood and content terms, without the per-user embeddings they do not have;
        the new-user prior where no history item is in the category."""
        cat = torch.full((len(hist),), category, dtype=torch.int64, device=hist.device)
        s = self.index_bias(category).unsqueeze(0).expand(len(hist), -1)
        if self.new_prior is not None:
            new = ~(self.item_category_[hist] == category).any(1)
            s = s + self.prior_scores(new.float() * self.new_prior[category], self.index[category])
        if self.encoder is not None:
            s = s + (self._encode(hist, cat) * self.cat_gate[cat]) @ self.item_vectors(category).T
        if self._reads_side:
            s = s + self._side(hist, cat, torch.zeros_like(cat), self.index[category], leave_out=False)
        return s

    def contributions(self: Any, user: int, category: int, items: Tensor,
                      center: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The user's stored history items [L'] (pad dropped) and each one's contribution [L', n]
        to score(user, i) for each of `items` [n] in `category` (see the module docstring).
        `center`: the category's mean item vector, if the caller keeps it (a server does)."""
        hist = self.history_[user]  # [L], oldest first
        keep = hist != self.pad
        length, dev = len(hist), hist.device
        single = torch.full((length, length), self.pad, dtype=hist.dtype, device=dev)
        slots = torch.arange(length, device=dev)
        single[slots, slots] = hist  # row l: only history item l, in its own recency slot
        cat = torch.full((length,), category, dtype=torch.int64, device=dev)
        items = items.to(dev)
        total = torch.zeros(length, len(items), device=dev)
        if self.neighbours is not None:
            users = torch.full((length,), user, dtype=torch.int64, device=dev)
            total = total + self.neighbours.at(single, cat, users, items, leave_out=False)
            total = self._borrowed_side(single, users, items, total)  # a borrowed item: its lenders' terms
        if self.content_term is not None:
            prof = self.content_term.profile(single, cat, self.item_category_[single], self.items.text_)
            total = total + prof @ self.items.text_[items].T / keep.sum().clamp_min(1)
        if self.encoder is not None:
            if center is None:
                center = self.item_vectors(category).mean(0)
            total = total + self._encoder_shares(hist, category, items, center)
        return hist[keep], total[keep]

    def _encoder_shares(self: Any, hist: Tensor, category: int, items: Tensor, center: Tensor) -> Tensor:
        """[L, n] each history item's first-order share of what lifts each item above the
        category's average item: the encoder's output with only that history item present, minus
        its output with none, dotted with v_i - mean_j v_j (so the same history item does not
        explain every recommendation equally)."""
        length = len(hist)
        rows = torch.full((length + 1, length), self.pad, dtype=hist.dtype, device=hist.device)
        slots = torch.arange(length, device=hist.device)
        rows[slots, slots] = hist
        enc = self._encode(rows, torch.full((length + 1,), category, dtype=torch.int64, device=hist.device))
        v = (self.items(items) - center) * self.cat_gate[category]  # [n, d]
        return ((enc[:-1] - enc[-1]) @ v.T) * (hist != self.pad).unsqueeze(1)


__all__ = ["FlagshipInference"]
