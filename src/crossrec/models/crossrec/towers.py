"""The flagship's item tower: ID embedding + projected content vector + per-item bias.

The content slot is where non-ID item signals enter: image vectors from the Bundle today
(`content=image`), text vectors from the language-model encoder next. An item with no interactions
still gets a vector from its content alone (its ID embedding stays at its small init).

Example:
    >>> tower = ItemTower(n_items=100, dim=16, init_std=0.01)   # doctest: +SKIP
    >>> tower(torch.tensor([3, 100])).shape                     # 100 = the padding id  # doctest: +SKIP
    torch.Size([2, 16])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ItemTower(nn.Module):
    """Items -> vectors: `emb(i) + content_proj(content[i])` (where content is set), and `bias[i]`.

    Row `n_items` of the embedding is the padding id (zero, never trained); `bias` has no pad row.
    """

    def __init__(self, n_items: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.n_items, self.dim, self.pad = n_items, dim, n_items
        self.emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items, sparse=True)
        nn.init.normal_(self.emb.weight, std=init_std)
        with torch.no_grad():
            self.emb.weight[n_items].zero_()
        self.bias = nn.Parameter(torch.zeros(n_items))
        # Content slot: [n_items, k] vectors + presence, projected into the item space (set_content).
        self.register_buffer("content_", torch.zeros(0, 0))
        self.register_buffer("content_present_", torch.zeros(0, dtype=torch.bool))
        self.content_proj: nn.Linear | None = None

    def forward(self, items: Tensor) -> Tensor:
        """[...] global ids (pad allowed) -> [..., d]."""
        v = self.emb(items)
        if self.content_proj is not None and self.content_.numel() > 0:
            safe = items.clamp_max(self.n_items - 1)
            content = self.content_proj(self.content_[safe]) * self.content_present_[safe].unsqueeze(-1)
            v = v + content * (items < self.pad).unsqueeze(-1)
        return v

    def set_content(self, vectors: Tensor, present: Tensor | None = None) -> None:
        """Attach per-item content vectors [n_items, k] (rows in item-id order); absent rows are zero.

        The projection starts at zero, so attaching content does not move a trained model's scores
        until it is trained further.
        """
        if vectors.shape[0] != self.n_items:
            raise ValueError(f"content vectors have {vectors.shape[0]} rows; expected n_items={self.n_items}")
        dev = self.bias.device
        vec = F.normalize(vectors.float(), dim=1).to(dev)
        self.content_ = vec
        self.content_present_ = (present if present is not None else vec.abs().sum(1) > 0).bool().to(dev)
        if self.content_proj is None or self.content_proj.in_features != vec.shape[1]:
            self.content_proj = nn.Linear(vec.shape[1], self.dim).to(dev)
            nn.init.zeros_(self.content_proj.weight)
            nn.init.zeros_(self.content_proj.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Content buffers have data-dependent shapes: adopt the stored ones (and build the projection).
        key = prefix + "content_"
        if key in state_dict and state_dict[key].numel() > 0:
            vec, dev = state_dict[key], self.bias.device
            self._buffers["content_"] = torch.empty_like(vec, device=dev)
            self._buffers["content_present_"] = torch.empty(vec.shape[0], dtype=torch.bool, device=dev)
            if self.content_proj is None or self.content_proj.in_features != vec.shape[1]:
                self.content_proj = nn.Linear(vec.shape[1], self.dim).to(dev)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
