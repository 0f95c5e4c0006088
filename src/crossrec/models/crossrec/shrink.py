"""Text shrinkage of trained items' ID parts (`text.shrink`), a part `CrossRec` owns (`model.shrink`).

An item with few training interactions has a noisy ID embedding and bias: a handful of positives
moved them, in whatever direction the batches happened to push. Its text says what it resembles,
and the ID parts of the trained items it resembles say where such items sit. After training, a
`text+id` tower replaces every trained item's ID embedding and bias with

    e_j <- (n_j e_j + kappa_c ebar_j) / (n_j + kappa_c)        (the same for the bias b_j)

where n_j is the item's training interactions and ebar_j the softmax-weighted mean of the ID parts
of its `text.borrow` nearest trained items of the same category by text cosine (itself excluded;
the kernel of text-neighbour borrowing, borrow.py). This is the posterior mean of the item's
vector under a prior centred on its text neighbours with the weight of kappa interactions: the
item offset of collaborative topic regression (Wang & Blei, KDD 2011), with a kernel over text in
place of the topic model. A popular item keeps its own vector; an item seen twice moves most of the
way to its neighbours'. kappa_c is picked per category after training on the validation split's
NDCG@10 (all its users, the Evaluator's own ranking of the trained items: shrinkage moves only
those, and untrained items' scores are not yet calibrated against them, calibration.py), the best
of `KAPPAS` with the curve smoothed over neighbouring values; a category with fewer than `MIN_USERS` validation users takes the value
picked on all categories together. kappa = 0 is in the grid, so a category where the text
neighbours do not help keeps its vectors. The model's `calibrate` runs it after borrowing (borrow.py) and then
borrows again, so an untrained item's parts are its lenders' as they end up, as they are for an
item added later by its text.

Measured before adoption: docs/DESIGN.md ("Text shrinkage").

Example:
    >>> model.shrink.calibrate(bundle, None, tools)   # the model's `calibrate` runs it after borrowing  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.models.crossrec.borrow import text_neighbours
from crossrec.models.crossrec.prior import MIN_USERS, pick

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools
    from crossrec.models.crossrec.host import Flagship

log = logging.getLogger(__name__)
KAPPAS = np.array([0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0])  # the values of kappa tried


class _TrainedOnly(nn.Module):
    """A model's scores with its untrained items out of the ranking (-inf): what kappa is picked on.
    The cold offset that places untrained items among trained ones is fitted after shrinkage, so
    here their scores would rank against trained items uncalibrated, and on the cold-item protocol
    (a tenth of the items untrained, their positives in validation) the pick then chose kappa for
    the balance between the two kinds (docs/DESIGN.md)."""

    def __init__(self, model: Flagship, trained: Tensor) -> None:
        super().__init__()
        self.model, self.trained = model, trained

    def score(self, users: Tensor, category: int) -> Tensor:
        s = self.model.score(users, category)
        keep = self.trained.index_select(0, self.model.index[category])
        return s if bool(keep.all()) else s.masked_fill(~keep, float("-inf"))


def pick_on_valid(
    model: Flagship,
    bundle: Bundle,
    categories: Sequence[int] | None,
    tools: PickTools,
    grid: np.ndarray,
    apply: Callable[[Tensor], None],
    trained_only: bool = True,
) -> tuple[Tensor, np.ndarray]:
    """Per category, the value of `grid` with the best validation NDCG@10 (all its users, the
    trained items' ranking: `_TrainedOnly`), the curve smoothed over neighbouring values (`pick`);
    a category with fewer than `MIN_USERS` validation users takes the value picked on all of them
    together. `apply(values)` ([n_categories], one grid value each) sets the model to a grid point.
    Returns the picks [n_categories] (0 for categories not in `categories`) and the users per
    category; the model is left at the last grid point (the caller applies the picks).
    `trained_only=False`: the whole ranking, untrained items in it."""
    m = model
    n_cat = m.sizes.n_categories
    cats = list(range(n_cat)) if categories is None else list(categories)
    evaluator = tools.evaluator(bundle, 10, "valid")
    ranked = (
        _TrainedOnly(m, ~m.cold.untrained(torch.arange(m.sizes.n_items, device=m.log_count_.device)))
        if trained_only
        else m
    )
    curves, users = np.zeros((n_cat, len(grid))), np.zeros(n_cat)
    for g, value in enumerate(grid):
        apply(torch.full((n_cat,), float(value)))
        for row in evaluator.evaluate(ranked, cats).table.to_dicts():
            if row["category"] in bundle.categories and row.get("slice", "all") == "all" and row["n_users"]:
                c = bundle.categories.index(row["category"])
                curves[c, g] = float(row["ndcg@10"]) * row["n_users"]
                users[c] = row["n_users"]
    pooled = pick(curves[cats].sum(0), grid)
    chosen = torch.zeros(n_cat)
    for c in cats:
        chosen[c] = pick(curves[c], grid) if users[c] >= MIN_USERS else pooled
    return chosen, users


class TextShrinkage:
    """The shrinkage, a part `CrossRec` owns (`model.shrink`, models/crossrec/model.py) and one of
    its post-training steps (`calibrate`). It writes the model's ID tables and its `shrink_kappa_`
    buffer (registered on the model, under the name artifacts store)."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def targets(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
        """The trained items with text (global ids), their training counts, categories, and the
        weighted mean ID embedding and bias of their same-category text neighbours."""
        m = self.model
        tower = m.items
        n = m.sizes.n_items
        has_text = tower.text_.abs().sum(1) > 0
        count = torch.expm1(m.log_count_).round()
        trained = (count > 0) & has_text
        ids = torch.nonzero(trained).squeeze(1)
        if len(ids) == 0:
            return None
        cats = m.item_category_[:n].index_select(0, ids)
        k = m.config.text.borrow + 1  # + 1: the item itself is its own nearest neighbour
        ebar = torch.zeros(len(ids), tower.emb.weight.shape[1], device=ids.device)
        bbar = torch.zeros(len(ids), device=ids.device)
        emb, bias = tower.emb.weight.detach(), tower.bias.detach()
        for c in torch.unique(cats).tolist():
            sel = torch.nonzero(cats == c).squeeze(1)
            mine = ids.index_select(0, sel)
            nbr, w = text_neighbours(
                tower.text_,
                trained & (m.item_category_[:n] == c),
                tower.text_.index_select(0, mine),
                k,
                m.config.text.borrow_temperature,
            )
            w = w.masked_fill(nbr == mine.unsqueeze(1), 0.0)
            total = w.sum(1, keepdim=True)
            w = w / total.clamp_min(1e-12)
            ebar[sel] = (w.unsqueeze(-1) * emb[nbr]).sum(1)
            bbar[sel] = (w * bias[nbr]).sum(1)
            alone = total.squeeze(1) == 0  # alone in its category: the prior is the item itself (no change)
            ebar[sel[alone]] = emb[mine[alone]]
            bbar[sel[alone]] = bias[mine[alone]]
        return ids, count.index_select(0, ids), cats, ebar, bbar

    def apply(self, targets: tuple[Tensor, ...], kappa: Tensor, emb0: Tensor, bias0: Tensor) -> None:
        """Write the shrunk rows: kappa [n_categories], read at each item's category."""
        ids, count, cats, ebar, bbar = targets
        k = kappa.to(count.device).index_select(0, cats)
        tower = self.model.items
        with torch.no_grad():
            tower.emb.weight[ids] = (count.unsqueeze(1) * emb0 + k.unsqueeze(1) * ebar) / (count + k).unsqueeze(1)
            tower.bias[ids] = (count * bias0 + k * bbar) / (count + k)

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """Pick kappa per category on validation NDCG@10 (the Evaluator from `tools`) and shrink the
        trained items' ID parts toward their text neighbours' (module docstring); a no-op unless the
        tower reads text and IDs, `text.shrink` is on and validation has users."""
        m = self.model
        tower = m.items
        if not (m.config.text.shrink and tower.use_text and tower.use_id and tower.has_text) or m.config.loss == "mse":
            return
        if bundle.split("valid").height == 0:
            return
        targets = self.targets()
        if targets is None:
            return
        ids = targets[0]
        emb0, bias0 = tower.emb.weight.detach()[ids].clone(), tower.bias.detach()[ids].clone()
        # (the curve's borrowed items keep the unshrunk lenders' parts: re-borrowed at the end)
        chosen, users = pick_on_valid(
            m, bundle, categories, tools, KAPPAS, lambda kappa: self.apply(targets, kappa, emb0, bias0)
        )
        cats = list(range(m.sizes.n_categories)) if categories is None else list(categories)
        self.apply(targets, chosen, emb0, bias0)
        m.shrink_kappa_ = chosen.to(m.shrink_kappa_.device)
        m.borrow()  # again: the untrained items' borrowed parts are their lenders' as they are now
        log.info(
            "text shrinkage picked on validation: %s",
            ", ".join(f"{bundle.categories[c]}: kappa {chosen[c].item():g} ({int(users[c])} users)" for c in cats),
        )


__all__ = ["TextShrinkage", "KAPPAS", "MIN_USERS", "pick_on_valid"]
