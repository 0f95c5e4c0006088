"""Explanations: the user's history items, from any category, behind a recommendation.

Each recommended item names up to `serve.explain_top` history items with the largest positive
contribution to its score: the flagship's own terms (`contributions`: neighbourhood, content and a
first-order reading of its history encoder), or for other two-tower models the cosine of item
vectors. Rendered as "because you liked <title> in <category>".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from crossrec.serving.errors import ServingError


class Explanations:
    """Mixed into `Service` (serving/service.py), whose lookups and vectors it reads."""

    def explain(self: Any, user: str, item: str) -> dict[str, Any]:
        """The user's history items behind the user's score for `item`."""
        i = self._item(item)
        u = self._users.get(str(user))
        if u is None and str(user) not in self._feedback:
            raise ServingError(f"unknown user {user!r} (no training data and no feedback)", "user", 404)
        with torch.no_grad():
            because = self._because(u, str(user), [i])[0]
        return {"user": str(user), "item": self._describe(i), "because": because}

    def _because(self: Any, u: int | None, user: str, items: list[int]) -> list[list[dict[str, Any]]]:
        """For each item, up to `explain_top` history items with the largest positive contribution
        to (user, item): the flagship's own terms, else the cosine of item vectors. Ties go to the
        lower item id; an item never explains itself."""
        shares: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # item -> (history ids [H], weights [H])
        if u is not None and hasattr(self.model, "contributions"):
            by_cat: dict[int, list[int]] = defaultdict(list)
            for i in (i for i in items if i < self._pad):  # items added while serving have no stored terms
                by_cat[self._item_cat[i]].append(i)
            for c, ids in by_cat.items():
                hist, w = self.model.contributions(u, c, torch.tensor(ids), self._centers[c])
                shares.update({i: (hist, w[:, col]) for col, i in enumerate(ids)})
        rest = [i for i in items if i not in shares]
        if rest and self._vectors is not None:  # one [H, d] x [d, n] product for the items left
            hist_ids = [h for h in (self._seen_ids(u).tolist() if u is not None else []) +
                        self._feedback.get(user, []) if h < self._pad]
            if hist_ids:
                hist = torch.tensor(hist_ids)
                cos = self._vectors[hist] @ torch.stack([self._vector(i) for i in rest]).T
                shares.update({i: (hist, cos[:, col]) for col, i in enumerate(rest)})
        out: list[list[dict[str, Any]]] = []
        for i in items:
            top: list[tuple[int, float]] = []
            if i in shares:
                hist, w = shares[i]
                uniq, inv = torch.unique(hist, return_inverse=True)  # a history item's best share (ascending ids)
                best = torch.full((len(uniq),), -torch.inf).scatter_reduce(0, inv, w.float(), "amax")
                best[(uniq == i) | ~(best > 0)] = -torch.inf
                order = torch.sort(best, descending=True, stable=True).indices[: self.cfg.explain_top]
                top = [(h, v) for h, v in zip(uniq[order].tolist(), best[order].tolist()) if v > 0]
            out.append([self._describe(h) | {"weight": round(v, 6), "text": f"because you liked "
                        f"{self._titles[h] or self._raw_items[h]} in {self.categories[self._item_cat[h]]}"} for h, v in top])
        return out


__all__ = ["Explanations"]
