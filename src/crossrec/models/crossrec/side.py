"""The terms of the flagship's score read from the user's history besides the encoder: the
neighbourhood term N_c (neighbourhood.py) and the content term T_c (content.py), plus, at inference,
the neighbourhood term a borrowed item takes from its lenders (borrow.py).

A part `CrossRec` owns (`model.side`, models/crossrec/model.py); the modules it calls
(`model.neighbours`, `model.content_term`) stay registered on the model, under the names artifacts
store.

Example:
    >>> s = model.side(model.history_[users], cat, users, items, leave_out=False)  # [B, M]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from crossrec.models.crossrec.host import Flagship


class HistoryTerms:
    """`model.side(hist, category, users, items, ...)`: the history terms' scores (None of them: `reads` is False)."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    @property
    def reads(self) -> bool:
        """A term scored from the user's history besides the encoder."""
        return self.model.neighbours is not None or self.model.content_term is not None

    def __call__(
        self,
        hist: Tensor,
        category: Tensor,
        users: Tensor,
        items: Tensor,
        keep: Tensor | None = None,
        leave_out: bool | None = None,
        into: Tensor | None = None,
    ) -> Tensor:
        """The terms scored from the user's history: the neighbourhood term (co-occurrence; the
        row's own pair left out in training unless ablated; zero where `keep` drops the item's
        ID signals) plus the content term (text). items [M] -> [B, M]; items [B, n] -> [B, n].
        `into` (autograd off, no `keep`): added into that block in place, which is returned."""
        m = self.model
        out: Tensor | None = into
        if m.neighbours is not None:
            lo = m.config.neighbourhood.leave_out if leave_out is None else leave_out
            if into is not None and keep is None:
                m.neighbours.at(hist, category, users, items, leave_out=lo, out=into)
            else:
                n = m.neighbours.at(hist, category, users, items, leave_out=lo)
                n = n if keep is None else n * keep
                out = n if out is None else out.add_(n)
        if m.content_term is not None:
            prof = m.content_term.profile(hist, category, m.item_category_[hist], m.items.text_)
            t = m.items.text_[items]
            c = prof @ t.T if items.dim() == 1 else (prof.unsqueeze(1) * t).sum(-1)
            out = c if out is None else (out.add_(c) if out is into else out + c)
        assert out is not None
        return m.borrow.side(hist, users, items, out)


__all__ = ["HistoryTerms"]
