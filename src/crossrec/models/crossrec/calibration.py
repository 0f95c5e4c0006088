"""The cold offset of a `text+id` flagship: how far to lift the items it scores from text alone.

An item without training interactions (and one added after training) is scored with its ID part
hidden, as ID dropout trained the tower to (models/crossrec/towers.py). Its score is then a guess
from text, while a trained item's score also carries what its interactions said. The two kinds
compete in one ranking, and nothing in training says how they compare: ID dropout hides the ID of
items that do have interactions (their neighbourhood, their co-occurrence with the history), and
how often users pick items nobody has bought yet is a property of the data, not of the items.

So after training, when the validation split holds positives on items without training
interactions (the cold-start item protocol puts some there: `prepare.cold_item_valid_share`), one
offset per category is fitted there, as temperature scaling fits a temperature (Guo et al., ICML
2017): delta_c maximises the validation log-likelihood of the positives under the softmax over the
category's candidates (each user's training items masked), with delta_c added to the untrained items:

    max_delta  sum_(u, i) [ s_ui + delta [i untrained] - log( sum_(j trained) e^s_uj + e^delta sum_(j untrained) e^s_uj ) ]

It is concave in delta; its optimum is where the model's probability mass on untrained items equals
their share of the validation positives. Per unit only two sums matter (over trained and over
untrained candidates), so one scoring pass gives them and the 1-D problem is solved by bisection on
the gradient. A category with fewer than `MIN_PAIRS` such positives uses the offset fitted on all
categories together, or none.

`ColdOffset` is the part of `CrossRec` (`model.cold`) that runs it as the last post-training step.

Example:
    >>> offsets = fit_cold_offsets(model, bundle)   # [n_categories]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools, Recommender
    from crossrec.models.crossrec.host import Flagship

MIN_PAIRS = 30  # validation positives on untrained items a category needs for its own offset
BOUND = 20.0  # the offset is searched in [-BOUND, BOUND]


def _unit_sums(model: Recommender, bundle: Bundle, c: int, batch_size: int) -> tuple[np.ndarray, ...] | None:
    """Per validation (unit, positive) pair: the positive's score, whether it is untrained, and its
    unit's log-sum-exp over trained and over untrained candidates. None: no untrained positive."""
    valid, train = bundle.csr("valid", c), bundle.csr("train", c)
    untrained = train.getnnz(axis=0) == 0  # [n_items(c)]
    if not untrained[valid.indices].any():
        return None
    users = np.flatnonzero(np.diff(valid.indptr))
    cold_t = torch.from_numpy(untrained)
    pos_s, pos_h, lse_w, lse_c = [], [], [], []
    with torch.no_grad():
        for lo in range(0, len(users), batch_size):
            part = users[lo : lo + batch_size]
            s = model.score(torch.from_numpy(part).long(), c).detach().float().cpu().clone()  # [B, n_items(c)]
            seen = train[part]
            s[
                torch.from_numpy(np.repeat(np.arange(len(part)), np.diff(seen.indptr))),
                torch.from_numpy(seen.indices.astype(np.int64)),
            ] = float("-inf")
            pos = valid[part]
            rows = np.repeat(np.arange(len(part)), np.diff(pos.indptr))
            items = pos.indices.astype(np.int64)
            pos_s.append(s[torch.from_numpy(rows), torch.from_numpy(items)].numpy())
            pos_h.append(untrained[items])
            w = torch.logsumexp(s.masked_fill(cold_t, float("-inf")), 1)
            u = torch.logsumexp(s.masked_fill(~cold_t, float("-inf")), 1)
            lse_w.append(w.numpy()[rows])
            lse_c.append(u.numpy()[rows])
    return tuple(np.concatenate(x) for x in (pos_s, pos_h, lse_w, lse_c))


def _solve(pos_h: np.ndarray, lse_w: np.ndarray, lse_c: np.ndarray) -> float:
    """The delta where the gradient sum(h) - sum(sigmoid(lse_c + delta - lse_w)) crosses zero."""
    ok = np.isfinite(lse_c) & np.isfinite(lse_w)
    h, gap = pos_h[ok].astype(np.float64), (lse_c[ok] - lse_w[ok]).astype(np.float64)
    target = h.sum()
    lo, hi = -BOUND, BOUND
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        mass = (1.0 / (1.0 + np.exp(-(gap + mid)))).sum()
        lo, hi = (mid, hi) if mass < target else (lo, mid)
    return 0.5 * (lo + hi)


def fit_cold_offsets(
    model: Recommender, bundle: Bundle, categories: Sequence[int] | None = None, batch_size: int = 1024
) -> Tensor:
    """[n_categories] the fitted offsets (0 where validation has too few untrained positives);
    the model's scores are read with its current offsets set to zero."""
    n_cat = bundle.n_categories
    cats = list(range(n_cat)) if categories is None else list(categories)
    per: dict[int, tuple[np.ndarray, ...]] = {}
    for c in cats:
        if bundle.split("valid", c).height == 0:
            continue
        sums = _unit_sums(model, bundle, c, batch_size)
        if sums is not None:
            per[c] = sums
    out = torch.zeros(n_cat)
    if not per:
        return out
    pooled_h = np.concatenate([v[1] for v in per.values()])
    pooled = None
    if pooled_h.sum() >= MIN_PAIRS:
        pooled = _solve(
            pooled_h, np.concatenate([v[2] for v in per.values()]), np.concatenate([v[3] for v in per.values()])
        )
    for c in cats:
        if c in per and per[c][1].sum() >= MIN_PAIRS:
            out[c] = _solve(per[c][1], per[c][2], per[c][3])
        elif pooled is not None:
            out[c] = pooled
    return out


class ColdOffset:
    """Items without training interactions at scoring time: which they are, whether their ID part
    is read, and the offset their bias gets. A part `CrossRec` owns (`model.cold`) and the last of
    its post-training steps; the offsets stay the model's `cold_offset_` buffer (the name artifacts
    store)."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def untrained(self, items: Tensor) -> Tensor:
        """[...] True for items without training interactions."""
        m = self.model
        return m.log_count_[items.clamp_max(m.sizes.n_items - 1)] == 0

    def seen(self, items: Tensor) -> Tensor | None:
        """[...] 1 where an item's ID part is read: it has training interactions, or its text
        neighbours lent it theirs (borrow.py); else 0, and it is scored from its text alone, ID
        hidden, as ID dropout trained the tower to. None without text+id."""
        m = self.model
        if not (m.items.use_text and m.items.use_id):
            return None
        return (~self.untrained(items) | m.borrow.borrowed(items)).float()

    def bias(self, items: Tensor, seen: Tensor | None, category: Tensor | int) -> Tensor:
        """[...] the items' biases at scoring time: the tower's, plus the category's cold offset
        for items without training interactions."""
        m = self.model
        b = m.items.bias_of(items, seen)
        if seen is None:
            return b
        off = (
            m.cold_offset_[category]
            if isinstance(category, int)
            else m.cold_offset_.index_select(0, category.reshape(-1)).view(category.shape)
        )
        return b + self.untrained(items).float() * off

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """Fit `cold_offset_` on the validation split (`text.calibrate_cold`, a text+id tower; the
        scores read are the final ones: after borrowing, shrinkage and the prior's pick)."""
        m = self.model
        if not (m.items.use_text and m.items.use_id and m.config.text.calibrate_cold and m.config.loss != "mse"):
            return
        m.cold_offset_.zero_()
        m.cold_offset_.copy_(fit_cold_offsets(m, bundle, categories).to(m.cold_offset_.device))
