"""Explanations: the user's history items, from any category, behind a recommendation.

Each recommended item names up to `serve.explain_top` history items with the largest positive
contribution to its score: the flagship's own terms (`contributions`: neighbourhood, content and a
first-order reading of its history encoder), or for other two-tower models the cosine of item
vectors. Rendered as "because you liked <title> in <category>". An item without interactions of
its own that borrowed its ID parts from its nearest trained items by text (the flagship's
`text.borrow`) also names those lenders, heaviest first: "like <title> in <category>".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

import numpy as np
import torch

from crossrec.models.base import Borrows, Explains
from crossrec.serving.config import ServeConfig
from crossrec.serving.errors import ServingError


class ExplainHost(Protocol):
    """What the explanations read of the `Service` they are mixed into (serving/service.py)."""

    cfg: ServeConfig
    view: Any  # the model's serving view: its declared capabilities are checked with isinstance
    categories: list[str]
    _users: dict[str, int]
    _feedback: dict[str, list[int]]
    _raw_items: list[str]
    _titles: list[str]
    _item_cat: list[int]
    _pad: int
    _vectors: torch.Tensor | None
    _centers: list[torch.Tensor]

    def _key(self, raw: str) -> str: ...
    def _item(self, raw: str, field: str = "item") -> int: ...
    def _describe(self, i: int) -> dict[str, Any]: ...
    def _seen_ids(self, u: int) -> np.ndarray: ...
    def _vector(self, i: int) -> torch.Tensor: ...
    def _like(self, i: int) -> dict[str, Any]: ...
    def _because(self, u: int | None, user: str, items: list[int]) -> list[list[dict[str, Any]]]: ...


class Explanations:
    """Mixed into `Service` (serving/service.py), whose lookups and vectors it reads (`ExplainHost`)."""

    def explain(self: ExplainHost, user: str, item: str) -> dict[str, Any]:
        """The user's history items behind the user's score for `item`."""
        i = self._item(item)
        key = self._key(user)
        u = self._users.get(key)
        if u is None and key not in self._feedback:
            raise ServingError(f"unknown user {user!r} (no training data and no feedback)", "user", 404)
        with torch.no_grad():
            because = self._because(u, key, [i])[0]
        return {"user": str(user), "item": self._describe(i), "because": because} | self._like(i)

    def _like(self: ExplainHost, i: int) -> dict[str, Any]:
        """{"like": [...]}: up to `explain_top` trained items whose ID parts item i borrowed, with
        their weights; {} when it borrowed nothing."""
        pairs = (
            self.view.lenders(i)[: self.cfg.explain_top] if isinstance(self.view, Borrows) else []
        )  # [] past the trained catalogue
        if not pairs:
            return {}
        return {
            "like": [
                self._describe(n)
                | {
                    "weight": round(w, 6),
                    "text": f"like {self._titles[n] or self._raw_items[n]} in {self.categories[self._item_cat[n]]}",
                }
                for n, w in pairs
            ]
        }

    def _because(self: ExplainHost, u: int | None, user: str, items: list[int]) -> list[list[dict[str, Any]]]:
        """For each item, up to `explain_top` history items with the largest positive contribution
        to (user, item): the flagship's own terms, else the cosine of item vectors. Ties go to the
        lower item id; an item never explains itself."""
        groups: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []  # (items [n], history ids [H], weights [H, n])
        done: set[int] = set()
        if u is not None and isinstance(self.view, Explains):
            by_cat: dict[int, list[int]] = defaultdict(list)
            for i in (i for i in items if i < self._pad):  # items added while serving have no stored terms
                by_cat[self._item_cat[i]].append(i)
            for c, ids in by_cat.items():
                groups.append((ids, *self.view.contributions(u, c, torch.tensor(ids), self._centers[c])))
                done.update(ids)
        rest = [i for i in items if i not in done]
        if rest and self._vectors is not None:  # one [H, d] x [d, n] product for the items left
            hist_ids = [
                h
                for h in (self._seen_ids(u).tolist() if u is not None else []) + self._feedback.get(user, [])
                if h < self._pad
            ]
            if hist_ids:
                hist = torch.tensor(hist_ids)
                groups.append((rest, hist, self._vectors[hist] @ torch.stack([self._vector(i) for i in rest]).T))
        top: dict[int, list[tuple[int, float]]] = {}
        for ids, hist, w in groups:  # per group: each history item's best share, the largest first
            uniq, inv = torch.unique(hist, return_inverse=True)  # ascending ids: stable sorting puts lower ids first
            best = torch.full((len(uniq), len(ids)), -torch.inf).scatter_reduce(
                0, inv.unsqueeze(1).expand(-1, len(ids)), w.float(), "amax"
            )
            best[(uniq.unsqueeze(1) == torch.tensor(ids).unsqueeze(0)) | ~(best > 0)] = -torch.inf
            order = torch.sort(best, dim=0, descending=True, stable=True).indices[: self.cfg.explain_top]
            hs, vs = uniq[order].T.tolist(), best.gather(0, order).T.tolist()
            top.update({i: [(h, v) for h, v in zip(hs[col], vs[col]) if v > 0] for col, i in enumerate(ids)})
        return [
            [
                self._describe(h)
                | {
                    "weight": round(v, 6),
                    "text": f"because you liked {self._titles[h] or self._raw_items[h]} "
                    f"in {self.categories[self._item_cat[h]]}",
                }
                for h, v in top.get(i, [])
            ]
            for i in items
        ]


__all__ = ["Explanations"]
