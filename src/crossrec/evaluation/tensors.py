"""Tensor helpers of the evaluator: CSR rows as padded tensors and keys, unseen-item sampling for
the sampled protocol, per-group means, and running a model in eval mode on its own device.

Example:
    >>> negs = sample_unseen(history, rows, 100, torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn


def sample_unseen(history: sp.csr_matrix, rows: np.ndarray, n: int, generator: torch.Generator) -> Tensor:
    """[len(rows), n] columns drawn uniformly, with replacement, from those absent in each row.

    No rejection loop: for a row whose present columns are s_0 < s_1 < ..., the k-th absent column
    is k + #{i : s_i - i <= k}, found with one searchsorted over all rows at once.
    """
    history = history.sorted_indices() if not history.has_sorted_indices else history
    n_cols = history.shape[1]
    indptr = torch.from_numpy(history.indptr.astype(np.int64))
    counts = indptr[1:] - indptr[:-1]
    rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
    free = (n_cols - counts)[rows_t]  # [R]
    if (free < 1).any():
        raise ValueError("a row has no absent column to sample")
    k = (torch.rand(len(rows_t), n, generator=generator, dtype=torch.float64) * free.unsqueeze(1)).long()
    k = torch.minimum(k, free.unsqueeze(1) - 1)  # guard the float edge rand * free == free
    entry_row = torch.repeat_interleave(torch.arange(len(counts)), counts)
    cols = torch.from_numpy(history.indices.astype(np.int64))
    gaps = cols - (torch.arange(len(cols)) - indptr[:-1][entry_row])  # absent columns before s_i
    keys = entry_row * (n_cols + 1) + gaps  # non-decreasing over the whole matrix
    query = rows_t.unsqueeze(1) * (n_cols + 1) + k
    j = torch.searchsorted(keys, query, right=True) - indptr[:-1][rows_t].unsqueeze(1)
    return k + j


def csr_coords(m: sp.csr_matrix, device: torch.device) -> tuple[Tensor, Tensor]:
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return torch.from_numpy(rows).to(device), torch.from_numpy(m.indices.astype(np.int64)).to(device)


def shares_storage(t: Tensor, model: Any) -> bool:
    if not isinstance(model, nn.Module):
        return False
    ptr = t.untyped_storage().data_ptr()
    return any(p.untyped_storage().data_ptr() == ptr for p in [*model.parameters(), *model.buffers()])


def padded_rows(m: sp.csr_matrix, device: torch.device) -> tuple[Tensor, Tensor]:
    """CSR rows as left-aligned column lists: items [B, P] and valid [B, P]."""
    counts = np.diff(m.indptr)
    p = max(int(counts.max()) if len(counts) else 0, 1)
    rows = np.repeat(np.arange(m.shape[0]), counts)
    within = np.arange(len(rows)) - np.repeat(m.indptr[:-1], counts)
    items = np.zeros((m.shape[0], p), dtype=np.int64)
    valid = np.zeros((m.shape[0], p), dtype=bool)
    items[rows, within] = m.indices
    valid[rows, within] = True
    return torch.from_numpy(items).to(device), torch.from_numpy(valid).to(device)


def row_keys(m: sp.csr_matrix, n: int) -> np.ndarray:
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return rows * n + m.indices.astype(np.int64)


def concat_chunks(chunks: list[dict[str, Tensor]]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {k: torch.cat([ch[k] for ch in chunks]).cpu().numpy() for k in chunks[0]}


def mean_by(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of `values` per group, skipping NaN; NaN for a group with no value."""
    ok = ~np.isnan(values)
    sums = np.bincount(group[ok], weights=values[ok], minlength=n_groups)
    counts = np.bincount(group[ok], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def device_of(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for b in model.buffers():
            return b.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Put an nn.Module in eval mode for the duration, then give every submodule back the mode it
    had (not the outer module's: a wrapper built for one evaluation, in training mode as a fresh
    module is, must not switch the model inside it to training)."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, was in modes:  # parents first: a train() call sets its subtree, the entries after it mend theirs
            if m.training != was:
                m.train(was)  # through train(), which models may override (LightGCN clears its cache)
