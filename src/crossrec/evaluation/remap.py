"""A model trained on one Bundle, scored on another Bundle of the same catalogue and users.

Two protocols that hold different rows out of training give two Bundles over the same raw users
and items, with their own internal ids. To compare their models on the same test rows (the
zero-shot category protocol against the warm split: benchmarks/zero_shot_share.py), one model is
evaluated on the other's Bundle: `Remapped` translates the Evaluator's user ids, categories and
item columns through the raw ids, so the Evaluator masks and grades exactly as it does for a model
trained on that Bundle.

Example:
    >>> warm = Bundle.load("runs/experiments/amazon-arts-office/bundle")          # doctest: +SKIP
    >>> zs = load_artifact("runs/zero-shot-arts/models/crossrec-text/seed-0")     # doctest: +SKIP
    >>> Evaluator(warm).evaluate(Remapped(zs.model, Bundle.load(zs_bundle), warm))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.bundle import Bundle
from crossrec.errors import ArtifactError


class Remapped(nn.Module):
    """`model` (trained on `source`) seen through `target`'s ids: `score(users, c)` takes target
    user ids and category c of `target`, and returns [B, n_items(c)] in `target`'s item order.

    Raises:
        ValueError: a category, user or item of `target` is missing from `source`, or an item is
            filed under another category there.
    """

    user_map: Tensor  # [target users] -> the model's user ids (a buffer)

    def __init__(self, model: Any, source: Bundle, target: Bundle) -> None:
        super().__init__()
        self.model = model
        missing = [c for c in target.categories if c not in source.categories]
        if missing:
            raise ArtifactError(f"categories {missing} of the target Bundle are not in the model's Bundle")
        self.cats = [source.category_id(c) for c in target.categories]
        src_user = {str(u): i for i, u in enumerate(source.raw_user_ids())}
        raw_users = [str(u) for u in target.raw_user_ids()]
        lost = [u for u in raw_users if u not in src_user]
        if lost:
            raise ArtifactError(
                f"{len(lost)} users of the target Bundle are not in the model's Bundle "
                f"(first: {lost[0]!r}); both must come from the same data and pseudonym key"
            )
        self.register_buffer("user_map", torch.tensor([src_user[u] for u in raw_users], dtype=torch.int64))
        src_item = {str(r): i for i, r in enumerate(source.raw_item_ids())}
        raw_items = np.array([str(r) for r in target.raw_item_ids()], dtype=object)
        self.cols: list[Tensor] = []
        for c, name in enumerate(target.categories):
            raw = raw_items[target.item_index(c)]
            lost = [r for r in raw if r not in src_item]
            if lost:
                raise ArtifactError(
                    f"{len(lost)} items of category {name!r} are not in the model's Bundle (first: {lost[0]!r})"
                )
            glob = np.array([src_item[r] for r in raw], dtype=np.int64)
            wrong = source.item_category[glob] != self.cats[c]
            if wrong.any():
                raise ArtifactError(
                    f"item {raw[np.flatnonzero(wrong)[0]]!r} is in category {name!r} here but not in the model's Bundle"
                )
            self.cols.append(torch.from_numpy(source.item_local[glob]))

    def score(self, users: Tensor, category: int) -> Tensor:
        """[B, n_items(category)] the model's scores in the target Bundle's ids."""
        s = self.model.score(self.user_map.to(users.device).index_select(0, users), self.cats[category])
        return s.index_select(1, self.cols[category].to(s.device))


__all__ = ["Remapped"]
