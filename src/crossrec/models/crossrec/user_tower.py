"""The flagship's user tower (models/crossrec/model.py): the part `model.user_tower`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.models.crossrec.host import Flagship


class UserTower:
    """u_c = g_c * (p_u + s_{u,c} + Enc(history_u, c)) (models/crossrec/model.py): a part `CrossRec`
    owns (`model.user_tower`). Its tables (`user_emb`, `user_cat_emb`, `cat_gate`) and the history
    encoder stay registered on the model, under the names artifacts store."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def __call__(
        self, users: Tensor, category: Tensor, hist: Tensor | None, hide_specific: Tensor | None = None
    ) -> Tensor:
        """[B] users, [B] target categories, [B, L] histories (None: no encoder read) -> [B, d];
        `hide_specific` [B]: rows whose category-specific embedding is hidden (category dropout)."""
        m = self.model
        u = torch.zeros(len(users), m.config.dim, device=users.device)
        if m.user_emb is not None:
            u = u + m.user_emb(users)
        if m.user_cat_emb is not None:  # one row per trained (user, category) pair (pairs.py)
            rows, keep = m.pairs.rows(users, category)
            if hide_specific is not None:
                keep = keep & ~hide_specific
            u = u + m.user_cat_emb(rows) * keep.unsqueeze(1)
        if m.encoder is not None and hist is not None:
            u = u + m._encode(hist, category)
        return u * m.cat_gate.index_select(0, category)  # index_select: its backward is an index_add_


__all__ = ["UserTower"]
