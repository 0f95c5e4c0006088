"""The flagship's content term: the neighbourhood term's counterpart over item text.

T_c(u, j) = s_c * < sum_h a[c, cat(h)] t_h / |h|, t_j >: the user's history items (all categories)
vote for a candidate by the cosine of their text vectors, weighted per (target, history) category
pair and scaled per target category, all learned with the rest. Unlike co-occurrence, text
similarity needs no interaction with the candidate: this is the term that lets a cold item, or one
in a category nobody has trained on, compete (text-kNN is its unweighted form).

Example:
    >>> term = ContentTerm(n_categories=2, n_items=100)                       # doctest: +SKIP
    >>> term.profile(hist, category, item_category, text).shape              # [B, k]  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContentTerm(nn.Module):
    """Learned per-category weights of a text profile; scores are `profile @ text[candidates].T`."""

    def __init__(self, n_categories: int, n_items: int) -> None:
        super().__init__()
        self.pad = n_items
        self.weight = nn.Parameter(torch.ones(n_categories, n_categories + 1))  # [target c, history category]
        self.scale = nn.Parameter(torch.ones(n_categories))  # s_c

    def profile(self, hist: Tensor, category: Tensor, hist_category: Tensor, text: Tensor) -> Tensor:
        """[B, k] the weighted mean text vector of each row's history (pad = n_items) for its target."""
        valid = (hist != self.pad).float()  # [B, L]
        t = text[hist.clamp_max(self.pad - 1)]  # [B, L, k]
        w = self.weight[category.unsqueeze(1), hist_category] * valid  # [B, L]
        prof = torch.bmm(w.unsqueeze(1), t).squeeze(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
        return prof * self.scale[category].unsqueeze(1)
