"""The popularity prior of users new to a category (`new_user_prior`), a part `CrossRec` owns.

A user with no training interactions in category c is scored there from the other categories
alone: the shared embedding, the history encoder and the neighbourhood term read what they did
elsewhere. What such a user does first in c follows the category's bestsellers more than a
regular's choices do, and the towers have no way to say so: the item bias is the same for every
user. The prior adds, for those users only,

    beta_c * log(1 + n_i)        (n_i: item i's training interactions)

with beta_c learned per category, starting at 0. Training teaches it on the rows whose in-category
history category dropout hides (`history.category_dropout`; those rows already read the user as
new to c: no in-category history, no category-specific embedding), and scoring applies it to the
users with no training row in c (the pair index, pairs.py). It is a rank-1 term, so the serving
index carries it as one more column (serving/flagship.py).

Training underestimates beta_c: the rows category dropout hides belong to users whose shared
embedding their own in-category rows trained, so they read less new than a real newcomer. Where the
validation split holds users new to c (`prepare.cold_user_valid_fraction`), `NewUserPrior.fit`
picks it again after training (`prior_fit`, on by default; a post-training step), as the epoch is picked: the value of `GRID` with
the best validation NDCG@10 of those users (their scores are computed once; each value re-ranks
them), the curve smoothed over neighbouring values against the noise of a few hundred users. A
category with fewer than `MIN_USERS` such users takes the value picked on all categories together.
The validation log-likelihood of their positives (the cold offset's criterion, calibration.py) was
tried first: it kept beta close to where training had it, while
NDCG@10 peaked at larger values on validation and test alike (docs/DESIGN.md).

Measured before adoption: docs/DESIGN.md ("The popularity prior of users new to a category").

Example:
    >>> w = model.prior.weight(users, category)      # [B]: beta_c where the user is new to c  # doctest: +SKIP
    >>> s = s + w.unsqueeze(1) * model.log_count_[model.index[category]]                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools
    from crossrec.models.crossrec.host import Flagship

log = logging.getLogger(__name__)
MIN_USERS = 200  # validation users new to a category that its own pick needs (else the pooled one)
GRID = np.round(np.arange(-0.5, 2.01, 0.1), 2)  # the values of beta tried
K = 10  # the cut-off of the NDCG it is picked on


class NewUserPrior:
    """The prior, a part `CrossRec` owns (`model.prior`, models/crossrec/model.py) and one of its
    post-training steps (`calibrate`). Its tensors stay registered on the model, under the names
    artifacts store: `new_prior` ([n_categories], or None when `new_user_prior` is off),
    and `log_count_`; the part reads them there, and the pair index (`model.pairs`, pairs.py)
    for who is new to a category."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def new_to(self, users: Tensor, category: int) -> Tensor:
        """[B] True where the user has no training interaction in `category` (nobody before
        `setup`, and in an artifact written before the prior existed)."""
        return ~self.model.pairs.has(users, category)

    def weight(self, users: Tensor, category: int) -> Tensor:
        """[B] the prior's weight on log(1 + n_i) for these users in `category`: beta_c where the
        user is new to it, else 0 (all 0 with the prior off)."""
        beta = self.model.new_prior
        if beta is None:
            return torch.zeros(len(users), device=users.device)
        return self.new_to(users, category).float() * beta[category]

    def rows(self, category: Tensor, hide: Tensor | None) -> Tensor | None:
        """[B] training rows' prior weights: beta_c on the rows read as new to their category
        (their in-category history hidden), else 0; None when there is nothing to add."""
        beta = self.model.new_prior
        if beta is None or hide is None:
            return None
        return beta.index_select(0, category) * hide.float()

    def scores(self, weight: Tensor, items: Tensor) -> Tensor:
        """weight [B] times log(1 + n_i): items [M] -> [B, M], items [B, n] -> [B, n]."""
        m = self.model
        pop = m.log_count_.index_select(0, items.clamp_max(m.sizes.n_items - 1).reshape(-1)).view(items.shape)
        pop = pop * (items < m.sizes.n_items)
        return weight.unsqueeze(1) * (pop.unsqueeze(0) if items.dim() == 1 else pop)

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """The post-training step: `fit`, where `prior_fit` is on (before the cold offset, which is
        fitted on the final scores)."""
        if self.model.config.prior_fit:
            self.fit(bundle, categories, tools)

    def fit(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools, batch_size: int = 512) -> None:
        """Pick `new_prior` again on validation's users new to each category (no-op without them)."""
        m, beta = self.model, self.model.new_prior
        if beta is None:
            return
        cats = list(range(m.sizes.n_categories)) if categories is None else list(categories)
        curves = {c: v for c in cats if (v := self._curve(bundle, c, tools, batch_size)) is not None}
        if not curves:
            return
        pooled = None
        if sum(n for _, n in curves.values()) >= MIN_USERS:
            pooled = pick(cast(np.ndarray, sum(v for v, _ in curves.values())))  # same order of additions
        learned = beta.detach().cpu().tolist()
        with torch.no_grad():
            for c in cats:
                if c in curves and curves[c][1] >= MIN_USERS:
                    beta[c] = pick(curves[c][0])
                elif pooled is not None:
                    beta[c] = pooled
        log.info(
            "new-user prior picked on validation: %s",
            ", ".join(
                f"{c}: {learned[c]:.3f} -> {beta[c].item():.3f} ({curves[c][1] if c in curves else 0} users)"
                for c in cats
            ),
        )

    def _curve(self, bundle: Bundle, c: int, tools: PickTools, batch_size: int) -> tuple[np.ndarray, int] | None:
        """Summed validation NDCG@K of the users new to c at each value of `GRID`, and their number;
        None where there are none."""
        m, beta = self.model, self.model.new_prior
        assert beta is not None
        valid = bundle.csr("valid", c)  # (users new to c have no training item in c to mask)
        # only positives on trained items: untrained ones (log count 0) are the cold offset's job
        # (calibration.py), and counting them made the pick favour unpopular items (docs/DESIGN.md)
        trained = (m.log_count_.index_select(0, m.index[c]) > 0).cpu().numpy()
        if not trained.all():
            valid = valid.multiply(trained[None, :].astype(valid.dtype)).tocsr()
            valid.eliminate_zeros()
        users = np.flatnonzero(np.diff(valid.indptr))
        users = users[self.new_to(torch.from_numpy(users).to(m.pair_keys_.device), c).cpu().numpy()]
        if len(users) == 0:
            return None
        p = m.log_count_.index_select(0, m.index[c]).detach().float().cpu()
        total = np.zeros(len(GRID))
        learned = beta[c].item()
        with torch.no_grad():
            beta[c] = 0.0
            try:
                for lo in range(0, len(users), batch_size):
                    part = users[lo : lo + batch_size]
                    s = m.score(torch.from_numpy(part).long().to(m.pair_keys_.device), c).detach().float().cpu()
                    pos = valid[part]
                    rel = torch.zeros(s.shape, dtype=torch.bool)
                    rel[
                        torch.from_numpy(np.repeat(np.arange(len(part)), np.diff(pos.indptr))),
                        torch.from_numpy(pos.indices.astype(np.int64)),
                    ] = True
                    items, ok = tools.pad_positives(rel)  # ranked as the Evaluator ranks (same tie rule)
                    for g, b in enumerate(GRID):
                        ranks = tools.rank_items_top(s + float(b) * p, items, ok, K).ranks
                        total[g] += float(tools.ndcg_at_k(ranks, K).nansum())
            finally:
                beta[c] = learned
        return total, len(users)


def pick(curve: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The value of `grid` where `curve` (summed NDCG at each value), averaged with its neighbours, is highest."""
    padded = np.concatenate([curve[:1], curve, curve[-1:]])
    smooth = (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0
    return float(grid[int(np.argmax(smooth))])


__all__ = ["NewUserPrior", "pick", "GRID"]
