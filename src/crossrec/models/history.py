"""Per-user interaction histories as padded tensors, for models that read a user's past items.

Models that need a user's history (the flagship's cross-category encoder, SASRec) build it once in
`setup(bundle, categories)` from the training split and keep it as a buffer, so a Batch only needs
user ids and the saved artifact carries the history it was trained with (safetensors, no pickle).

`history_matrix` keeps each user's `max_len` most recent training items (by the Bundle's `order`
column, which is comparable across a user's categories), oldest first, right-aligned: row u is
`[pad, pad, ..., i_1, i_2, ..., i_n]` with `pad = n_items` (one past the last item id, so an
embedding table of `n_items + 1` rows with `padding_idx=n_items` reads it as zeros).

Example:
    >>> hist = history_matrix(bundle, max_len=50)           # doctest: +SKIP
    >>> hist.shape, int(hist.max()) <= bundle.n_items        # doctest: +SKIP
    (torch.Size([3000, 50]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


def history_matrix(
    bundle: Bundle, max_len: int, categories: Sequence[int] | None = None, split: str | tuple[str, ...] = "train"
) -> Tensor:
    """[n_users, max_len] int64 global item ids, most recent last, left-padded with `n_items`.

    Args:
        bundle: the prepared data.
        max_len: items kept per user (the most recent ones).
        categories: only these categories' interactions (None = all categories).
        split: the split(s) the history is read from (training by default).
    """
    if max_len < 1:
        raise ValueError(f"history max_len={max_len}; expected >= 1")
    rows = bundle.rows(split, categories)
    # Chronological per user; ties keep the Bundle's row order (stable sort).
    rows = rows.select("user", "item", "order").with_row_index("_row").sort("user", "order", "_row")
    users = rows["user"].to_numpy().astype(np.int64)
    items = rows["item"].to_numpy().astype(np.int64)
    n_users, pad = int(bundle.n_users), int(bundle.n_items)
    out = np.full((n_users, max_len), pad, dtype=np.int64)
    if len(users) == 0:
        return torch.from_numpy(out)
    counts = np.bincount(users, minlength=n_users)
    ends = np.cumsum(counts)  # one past each user's last row
    # Position of each row counted from its user's end: 0 = most recent.
    from_end = ends[users] - 1 - np.arange(len(users))
    keep = from_end < max_len
    out[users[keep], max_len - 1 - from_end[keep]] = items[keep]
    return torch.from_numpy(out)


def history_index(bundle: Bundle, split: str | tuple[str, ...] = "train") -> dict[str, Tensor]:
    """Every user's whole chronological sequence, flat, for histories that end *before* a given row.

    Returns `items` [N] (all rows of `split`, sorted by user then order), `starts` [n_users + 1]
    (user u's rows are items[starts[u]:starts[u+1]]) and `keys` [N] / `positions` [N]: the sorted
    `user * n_items + item` keys with the position in `items` of each pair's first occurrence.
    """
    rows = bundle.split(split).select("user", "item", "order").with_row_index("_row").sort("user", "order", "_row")
    users = rows["user"].to_numpy().astype(np.int64)
    items = rows["item"].to_numpy().astype(np.int64)
    n_users, n_items = int(bundle.n_users), int(bundle.n_items)
    starts = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=starts[1:])
    keys = users * n_items + items
    order = np.argsort(keys, kind="stable")  # first occurrence of a repeated pair comes first
    return {
        "items": torch.from_numpy(items),
        "starts": torch.from_numpy(starts),
        "keys": torch.from_numpy(keys[order]),
        "positions": torch.from_numpy(order.astype(np.int64)),
    }


def causal_history(
    index: dict[str, Tensor], users: Tensor, items: Tensor, max_len: int, pad: int, n_items: int
) -> Tensor:
    """[B, max_len] the items each (user, item) row's user had *before* that row, most recent last.

    Rows whose pair is not in the index (not a training row) get the user's whole sequence.
    """
    keys = users * n_items + items
    at = torch.searchsorted(index["keys"], keys).clamp_max(len(index["keys"]) - 1)
    found = index["keys"][at] == keys
    start, end = index["starts"][users], index["starts"][users + 1]
    stop = torch.where(found, index["positions"][at], end)  # exclusive end of the history
    pos = stop.unsqueeze(1) - max_len + torch.arange(max_len, device=users.device).unsqueeze(0)  # [B, L]
    ok = pos >= start.unsqueeze(1)
    seq = index["items"]
    if len(seq) == 0:
        return torch.full((len(users), max_len), pad, dtype=torch.int64, device=users.device)
    return torch.where(ok, seq[pos.clamp(0, len(seq) - 1)], torch.full_like(pos, pad))
