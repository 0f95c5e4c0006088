"""Text trust: how far each trained item's score leans on its text (`text.trust`), a part
`CrossRec` owns (`model.trust`).

A `text+id` tower fuses an item's ID part with its text part. Where item text is rich, the text
part helps the items with few interactions; where it is weak (short titles, names), it adds noise
to items whose interactions already say where they belong, and warm users pay for it. Which case a
catalogue is in cannot be known in advance, so after training the text part (vector and text
bias) of each trained item is weighted at scoring time by

    w_i = kappa_c / (kappa_c + n_i)

where n_i is the item's training interactions: the weight of a prior worth kappa_c interactions
against the item's own evidence, as in text shrinkage (shrink.py). kappa_c is picked per category
on the validation split's NDCG@10 (the trained items' ranking, as shrinkage's pick) from `KAPPAS`,
which runs from 0 (trained items scored from their ID part alone: `text.text_dropout` trains the
ID part to score alone) to infinity (the tower as trained); a category with fewer than `MIN_USERS`
validation users takes the value picked on all categories together. Items without training
interactions keep their full text, whatever is picked: text is all a cold item has. The cold
offset (calibration.py) is fitted after this step, on the final scores.

The weights live in the tower's `text_weight_` buffer (towers.py) and the picks in the model's
`text_kappa_`, so an artifact carries both. The model's `calibrate` runs it after shrinkage and
before the new-user prior's pick.

Example:
    >>> model.trust.calibrate(bundle, None, tools)   # the model's `calibrate` runs it  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from crossrec.models.crossrec.shrink import pick_on_valid

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools
    from crossrec.models.crossrec.host import Flagship

log = logging.getLogger(__name__)
KAPPAS = np.array([0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, np.inf])  # the values of kappa tried
RESIDUAL_KAPPAS = np.array([0.0, np.inf])  # text.residual: the ID flagship or the text stage's model


def text_weights(count: Tensor, category: Tensor, kappa: Tensor, residual: bool = False) -> Tensor:
    """[n_items] kappa_c / (kappa_c + n_i) per item (1 where kappa is infinite or n_i is 0; with
    `residual`, 0 where kappa is 0, untrained items too): count [n_items] training interactions,
    category [n_items], kappa [n_categories]."""
    k = kappa.to(count.device).index_select(0, category)
    w = k / (k + count).clamp_min(1e-12)
    w = torch.where(torch.isinf(k) | (count == 0), torch.ones_like(w), w)
    return w.masked_fill(k == 0, 0.0) if residual else w


class TextTrust:
    """The pick, a part `CrossRec` owns (`model.trust`, models/crossrec/model.py) and one of its
    post-training steps (`calibrate`). It writes the tower's `text_weight_` and the model's
    `text_kappa_`."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def active(self) -> bool:
        """The step runs: a text+id tower with text, `text.trust` on, a ranking loss."""
        m = self.model
        tower = m.items
        return bool(
            m.config.text.trust and tower.use_text and tower.use_id and tower.has_text and m.config.loss != "mse"
        )

    def apply(self, kappa: Tensor) -> None:
        """Set every item's text weight from kappa [n_categories] (read at the item's category)."""
        m = self.model
        n = m.sizes.n_items
        count = torch.expm1(m.log_count_).round()
        m.items.text_weight_ = text_weights(count, m.item_category_[:n], kappa, m.items.residual).to(
            m.items.bias.device
        )

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """Pick kappa per category on validation NDCG@10 (the Evaluator from `tools`) and set the
        items' text weights (module docstring); a no-op unless `active` and validation has users."""
        m = self.model
        if not self.active() or bundle.split("valid").height == 0:
            return
        # residual: kappa 0 is the ID flagship (untrained items too) and infinity the text stage's
        # model, the only coherent points (between them, items scored on two scales are ranked
        # together), so the pick is between the two over the whole ranking
        res = m.items.residual
        grid = RESIDUAL_KAPPAS if res else KAPPAS
        chosen, users = pick_on_valid(m, bundle, categories, tools, grid, self.apply, trained_only=not res)
        cats = list(range(m.sizes.n_categories)) if categories is None else list(categories)
        kappa = torch.full((m.sizes.n_categories,), float("inf"))
        kappa[cats] = chosen[cats]
        self.apply(kappa)
        m.text_kappa_ = kappa.to(m.text_kappa_.device)
        log.info(
            "text trust picked on validation: %s",
            ", ".join(f"{bundle.categories[c]}: kappa {kappa[c].item():g} ({int(users[c])} users)" for c in cats),
        )


__all__ = ["TextTrust", "KAPPAS", "RESIDUAL_KAPPAS", "text_weights"]
