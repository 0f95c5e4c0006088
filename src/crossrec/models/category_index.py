"""Which items belong to which category, as buffers every model shares the shape of.

`CategoryIndex(sizes)[c]` is the [n_items(c)] tensor of category c's global item ids in the
category's local order (the column order of `score(users, c)`); `local` maps a global id to its
position within its category and `category` to its category. The buffers are derived from `Sizes`
and not saved (persistent=False), so artifacts stay safetensors and the same size as before, and
`model.to(device)` moves them with the model.

Example:
    >>> index = CategoryIndex(sizes)           # doctest: +SKIP
    >>> scores = users_vec @ item_emb.weight[index[2]].T   # [B, n_items(2)]  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes


class CategoryIndex(nn.Module):
    """Per-category global item ids (`index[c]`), plus `local` and `category` per item."""

    local: Tensor

    def __init__(self, sizes: Sizes) -> None:
        super().__init__()
        self.n_categories = sizes.n_categories
        local = torch.zeros(sizes.n_items, dtype=torch.int64)
        for c in range(sizes.n_categories):
            idx = torch.from_numpy(sizes.item_index(c)).long()
            self.register_buffer(f"items_{c}", idx, persistent=False)
            local[idx] = torch.arange(len(idx))
        self.register_buffer("local", local, persistent=False)  # [n_items] position within the category
        self.register_buffer(
            "category", torch.tensor(sizes.item_category, dtype=torch.int64).reshape(-1), persistent=False
        )  # [n_items]

    def __getitem__(self, category: int) -> Tensor:
        if not 0 <= int(category) < self.n_categories:
            raise IndexError(f"category {category} out of range 0..{self.n_categories - 1}")
        return getattr(self, f"items_{int(category)}")

    def __len__(self) -> int:
        return self.n_categories
