"""What the service asks of the flagship beyond `score` (serving/service.py): the user-independent
part of the extra terms (for the index), exact scores of a candidate pool (for the re-rank), each
history item's share of a score (for explanations), the items an untrained item borrowed from, and,
with a text item tower, scores of items known only by their text (added while serving).

`serving_view(model)` is what the service dispatches its capabilities on (the protocols of
models/base.py, by isinstance): `FlagshipServing` / `TextFlagshipServing` over the flagship, the
model itself for every other model (whose methods, e.g. text-kNN's `score_text_items`, are its own).

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

from crossrec.models.crossrec import CrossRec, TextCrossRec
from crossrec.models.crossrec.borrow import borrowed_neighbourhood, text_neighbours


class FlagshipServing:
    """The serving adapter of the ID flagship: it reads the model's history, tables and parts
    (`self.model`) and answers the service's protocols (models/base.py) the model itself does not
    declare (`IndexColumns`, `SparseCandidates`, `ScoresCandidates`, `ScoresHistory`, `Explains`,
    `Borrows`)."""

    def __init__(self, model: CrossRec) -> None:
        self.model = model

    @property
    def history_(self) -> Tensor:
        """[n_users, L] the model's stored histories (`ScoresHistory`: L is the length it reads)."""
        return self.model.history_

    def lenders(self, item: int) -> list[tuple[int, float]]:
        """The (lender, weight) pairs an untrained item borrowed its ID parts from (borrow.py)."""
        return self.model.borrow.lenders(item)

    def index_bias(self, category: int) -> Tensor:
        """[n_items(c)] the part of `extra_scores` that does not depend on the user."""
        m = self.model
        idx = m.index[category]
        b = m.cold.bias(idx, m.cold.seen(idx), category)
        return b + m.global_bias if m.config.loss == "mse" else b

    def index_item_columns(self, category: int) -> Tensor:
        """[n_items(c), e] item columns that, dotted with `index_user_columns`, give every term of
        `score` except the sparse neighbourhood term: the bias, the new-user prior's log counts
        (prior.py), and the content term's text."""
        m = self.model
        cols = [self.index_bias(category).unsqueeze(1)]
        if m.new_prior is not None:
            cols.append(m.log_count_.index_select(0, m.index[category]).unsqueeze(1))
        if m.content_term is not None:
            cols.append(m.items.text_[m.index[category]])
        return torch.cat(cols, 1)

    def index_user_columns(self, users: Tensor, category: int) -> Tensor:
        """[B, e] the user side of `index_item_columns`: 1 for the bias, the prior's weight, the content profile."""
        m = self.model
        cols = [torch.ones(len(users), 1, device=users.device)]
        if m.new_prior is not None:
            cols.append(m.prior.weight(users, category).unsqueeze(1))
        if m.content_term is not None:
            hist = m.history_[users]
            cat = torch.full_like(users, category)
            cols.append(m.content_term.profile(hist, cat, m.item_category_[hist], m.items.text_))
        return torch.cat(cols, 1)

    def sparse_candidates(self, users: Tensor, category: int) -> Tensor | None:
        """Global ids of the category's items whose neighbourhood score may be non-zero for these
        users (the neighbours of their history items), or None without a neighbourhood term. Every
        other item's score is exactly its index score."""
        m = self.model
        if m.neighbours is None:
            return None
        nb = m.neighbours.nbr_[m.history_[users]].flatten()
        idx = m.index[category]
        nb = torch.cat([nb[nb != m.pad], idx[m.borrow.borrowed(idx)]])  # borrowed items: their lenders' terms
        nb = torch.unique(nb)
        return nb[m.item_category_[nb] == category]

    def score_items(self, users: Tensor, category: int, items: Tensor) -> Tensor:
        """[B, n] exact scores of each row's candidate items [B, n] (global ids of category c);
        equal to `score(users, c)` at those items."""
        m = self.model
        cat = torch.full_like(users, category)
        u = m.user_vectors(users, category)  # [B, d]
        seen = m.cold.seen(items)
        s = (u.unsqueeze(1) * m.items(items, seen)).sum(-1) + m.cold.bias(items, seen, category)
        if m.new_prior is not None:
            s = s + m.prior.scores(m.prior.weight(users, category), items)
        if m.side.reads:
            s = s + m.side(m.history_[users], cat, users, items, leave_out=False)
        s = m.borrow.zero_shot(users, category, items, s)
        return s + m.global_bias if m.config.loss == "mse" else s

    def score_history(self, hist: Tensor, category: int) -> Tensor:
        """[B, n_items(c)] scores for users known only by a history [B, L] of item ids (pad =
        n_items; a user who is not in the training data): the history encoder, the item bias and
        the neighbourhood and content terms, without the per-user embeddings they do not have;
        the new-user prior where no history item is in the category."""
        m = self.model
        cat = torch.full((len(hist),), category, dtype=torch.int64, device=hist.device)
        s = self.index_bias(category).unsqueeze(0).expand(len(hist), -1)
        if m.new_prior is not None:
            new = ~(m.item_category_[hist] == category).any(1)
            s = s + m.prior.scores(new.float() * m.new_prior[category], m.index[category])
        if m.encoder is not None:
            s = s + (m._encode(hist, cat) * m.cat_gate[cat]) @ m.item_vectors(category).T
        if m.side.reads:
            s = s + m.side(hist, cat, torch.zeros_like(cat), m.index[category], leave_out=False)
        return s

    def contributions(
        self, user: int, category: int, items: Tensor, center: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The user's stored history items [L'] (pad dropped) and each one's contribution [L', n]
        to score(user, i) for each of `items` [n] in `category` (see the module docstring).
        `center`: the category's mean item vector, if the caller keeps it (a server does)."""
        m = self.model
        hist = m.history_[user]  # [L], oldest first
        keep = hist != m.pad
        length, dev = len(hist), hist.device
        single = torch.full((length, length), m.pad, dtype=hist.dtype, device=dev)
        slots = torch.arange(length, device=dev)
        single[slots, slots] = hist  # row l: only history item l, in its own recency slot
        cat = torch.full((length,), category, dtype=torch.int64, device=dev)
        items = items.to(dev)
        total = torch.zeros(length, len(items), device=dev)
        if m.neighbours is not None:
            users = torch.full((length,), user, dtype=torch.int64, device=dev)
            total = total + m.neighbours.at(single, cat, users, items, leave_out=False)
            total = m.borrow.side(single, users, items, total)  # a borrowed item: its lenders' terms
        if m.content_term is not None:
            prof = m.content_term.profile(single, cat, m.item_category_[single], m.items.text_)
            total = total + prof @ m.items.text_[items].T / keep.sum().clamp_min(1)
        if m.encoder is not None:
            if center is None:
                center = m.item_vectors(category).mean(0)
            total = total + self.encoder_shares(hist, category, items, center)
        return hist[keep], total[keep]

    def encoder_shares(self, hist: Tensor, category: int, items: Tensor, center: Tensor) -> Tensor:
        """[L, n] each history item's first-order share of what lifts each item above the
        category's average item: the encoder's output with only that history item present, minus
        its output with none, dotted with v_i - mean_j v_j (so the same history item does not
        explain every recommendation equally)."""
        m = self.model
        length = len(hist)
        rows = torch.full((length + 1, length), m.pad, dtype=hist.dtype, device=hist.device)
        slots = torch.arange(length, device=hist.device)
        rows[slots, slots] = hist
        enc = m._encode(rows, torch.full((length + 1,), category, dtype=torch.int64, device=hist.device))
        v = (m.items(items) - center) * m.cat_gate[category]  # [n, d]
        return ((enc[:-1] - enc[-1]) @ v.T) * (hist != m.pad).unsqueeze(1)


class TextFlagshipServing(FlagshipServing):
    """The serving adapter of the text flagship: `FlagshipServing` plus the scores and vectors of
    items known only by their text (`ScoresText`, `EmbedsText`)."""

    def __init__(self, model: TextCrossRec) -> None:
        super().__init__(model)

    def score_text_items(self, users: Tensor, category: int, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[B, n] scores of items known only by their text vectors [n, k] (added after training; a
        text item tower only), with image vectors [n, k'] where the tower reads them: what `score`
        would give them as items without training rows."""
        m = self.model
        lent = self.borrowed_parts(text)  # (lenders, weights, their ID vectors and biases) or None
        if lent is not None and m.borrow.untrained_category(category):  # as `score` there (borrow.py)
            return m.borrow.lender_scores(users, lent[0], lent[1]) + m.cold_offset_[category]
        v, b = m.items.from_text(text, image, None if lent is None else lent[2])
        if m.items.use_id:  # scored as an item without training rows
            b = b + m.cold_offset_[category] + (0.0 if lent is None else lent[3])
        s = m.user_vectors(users, category) @ v.T + b
        if lent is not None and m.neighbours is not None:
            s = s + borrowed_neighbourhood(m.neighbours, m.history_[users], users, lent[0], lent[1])
        if m.content_term is not None:
            hist = m.history_[users]
            cat = torch.full_like(users, category)
            s = s + m.content_term.profile(hist, cat, m.item_category_[hist], m.items.text_) @ text.float().T
        return s + m.global_bias if m.config.loss == "mse" else s

    def text_item_vectors(self, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[n, d] item-tower vectors of items known by their text vectors [n, k] (and image
        vectors [n, k']), with the ID parts they borrow where they do: what `similar` compares."""
        m = self.model
        lent = self.borrowed_parts(text)
        return m.items.from_text(text, image, None if lent is None else lent[2])[0]

    def borrowed_parts(self, text: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """For items known by their text vectors [n, k]: their lenders [n, m], weights [n, m] and
        the borrowed ID vectors [n, d] and biases [n] (borrow.py), or None where nothing is borrowed."""
        m = self.model
        if not (m.items.use_id and m.borrow_nbr_.numel()):
            return None
        cfg = m.config.text
        nbr, w = text_neighbours(
            m.items.text_, m.borrow.lending(), text.to(m.log_count_.device), cfg.borrow, cfg.borrow_temperature
        )
        vec = (w.unsqueeze(-1) * m.items.emb.weight[nbr]).sum(1)
        return nbr, w, vec, (w * m.items.bias[nbr]).sum(1)


def serving_view(model: Any) -> Any:
    """What the service dispatches its capabilities on: the flagship's adapter, or the model itself."""
    if isinstance(model, TextCrossRec):
        return TextFlagshipServing(model)
    if isinstance(model, CrossRec):
        return FlagshipServing(model)
    return model


__all__ = ["FlagshipServing", "TextFlagshipServing", "serving_view"]
