"""ItemKNN: item-item cosine similarity over training co-occurrence, top-k neighbours kept.

`score(u, c)[j] = sum_{i in history(u)} sim(i, j)` for the items j of category c. Fitted on one
category (single mode) it only sees that category's history; fitted on all categories (pooled) the
similarity spans the joint item space, so a user's history in other categories scores this
category's items: the cross-category reference point of the cold-start user protocol.

Reference: Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001;
Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004.

Example:
    >>> knn = ItemKNN(ItemKNNConfig(k=100), sizes); knn.fit(bundle)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.typed import Size

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class ItemKNNConfig:
    k: Size = 100  # (int) neighbours kept per item
    shrink: float = 10.0  # (float) cosine shrinkage: dot / (|a||b| + shrink), damps rare co-counts
    normalize_user: bool = False  # (bool) weight each user's row by 1/sqrt(history length)


def top_k_per_row(mat: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of every row (vectorised: one lexsort over all entries)."""
    mat = mat.tocsr()
    mat.eliminate_zeros()
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    order = np.lexsort((-mat.data, rows))
    rank = np.arange(len(order)) - mat.indptr[rows[order]]
    keep = order[rank < k]
    out = sp.csr_matrix((mat.data[keep], (rows[keep], mat.indices[keep])), shape=mat.shape)
    out.sort_indices()
    return out


def binary_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """[n_users, n_items] CSR with 1 where the user has the item (repeats count once)."""
    x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


BLOCK_ENTRIES = 1 << 23  # co-occurrence entries (an upper bound) formed at once by `cosine_top_k`


def cosine_top_k(
    x: sp.csr_matrix, k: int, shrink: float, normalize_user: bool = False, block: int = BLOCK_ENTRIES
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Item-item shrunk cosine of the columns of x, top k per item: (sim [n_items, n_items], norms [n_items]).

    sim(a, b) = <x_a, x_b> / (|x_a| |x_b| + shrink), diagonal excluded. With normalize_user each
    user's row is weighted by 1 / sqrt(history length) first. On a binary x (not normalised),
    norms**2 is the number of users per item and <x_a, x_b> the number of users they share.

    The co-occurrence is formed a block of items at a time (rows of X^T X, at most about `block`
    entries each: bounded by the sum of the item's users' history lengths), and only each block's
    top k is kept, so memory grows with n_items * k, not with the co-occurrence (items x items).
    Each row is computed as the whole product computes it (same entries, same order; ties keep it),
    so the result does not depend on `block`.
    """
    xw = x
    if normalize_user:
        length = np.asarray(x.sum(axis=1)).ravel()
        xw = sp.diags(1.0 / np.sqrt(np.maximum(length, 1.0))).dot(x).tocsr()
    xt = xw.T.tocsr()
    norms = np.sqrt(np.asarray(xt.multiply(xt).sum(axis=1)).ravel()).astype(np.float32)
    n_items = x.shape[1]
    # each row's entries are at most the history lengths of the item's users, summed
    x = x.tocsr()
    length = np.diff(x.indptr).astype(np.float64)
    bound = np.bincount(x.indices, weights=np.repeat(length, np.diff(x.indptr)), minlength=n_items)
    ends = _block_ends(bound, block)
    parts, start = [], 0
    for end in ends:
        co = (xt[start:end] @ xt.T).tocsr().astype(np.float32)  # rows start..end of X^T X
        r = np.repeat(np.arange(start, end), np.diff(co.indptr))
        co.data[co.indices == r] = 0.0  # the diagonal
        co.eliminate_zeros()
        r = np.repeat(np.arange(start, end), np.diff(co.indptr))
        co.data = co.data / (norms[r] * norms[co.indices] + shrink + 1e-8)
        parts.append(top_k_per_row(co, k))
        start = end
    if not parts:
        return sp.csr_matrix((0, n_items), dtype=np.float32), norms
    return sp.vstack(parts, format="csr"), norms


def _block_ends(bound: np.ndarray, block: int) -> list[int]:
    """Ends of consecutive row blocks whose bounds sum to at most `block` (a row over it alone)."""
    cum = np.cumsum(bound)
    ends: list[int] = []
    start = 0
    while start < len(bound):
        base = cum[start - 1] if start else 0.0
        start = max(int(np.searchsorted(cum, base + block, side="right")), start + 1)
        ends.append(start)
    return ends


@register("itemknn", ItemKNNConfig, paper="Sarwar et al., WWW 2001")
class ItemKNN(nn.Module):
    """Item-based k-nearest-neighbour recommender (cosine)."""

    def __init__(self, config: ItemKNNConfig, sizes: Sizes) -> None:
        super().__init__()
        if config.k < 1:
            raise ConfigError(f"itemknn.k={config.k}; expected >= 1")
        self.config = config
        self.sizes = sizes
        # Learned state: the similarity (items x items) and the training history (users x items),
        # both CSR, stored as buffers so they go into the safetensors artifact.
        for name in ("sim", "hist"):
            self.register_buffer(f"{name}_indptr_", torch.zeros(1, dtype=torch.int64))
            self.register_buffer(f"{name}_indices_", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"{name}_data_", torch.zeros(0))
        self.index = CategoryIndex(sizes)
        self._cache: dict[str, sp.csr_matrix] = {}

    def fit(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        rows = bundle.rows("train", categories)
        users = rows["user"].to_numpy().astype(np.int64)
        items = rows["item"].to_numpy().astype(np.int64)
        x = binary_matrix(users, items, self.sizes.n_users, self.sizes.n_items)
        sim, _ = cosine_top_k(x, self.config.k, self.config.shrink, self.config.normalize_user)
        self._store("sim", sim)
        self._store("hist", x)

    def _store(self, name: str, mat: sp.csr_matrix) -> None:
        setattr(self, f"{name}_indptr_", torch.from_numpy(mat.indptr.astype(np.int64)))
        setattr(self, f"{name}_indices_", torch.from_numpy(mat.indices.astype(np.int64)))
        setattr(self, f"{name}_data_", torch.from_numpy(mat.data.astype(np.float32)))
        self._cache.clear()

    def _csr(self, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
        if name not in self._cache:
            indptr = getattr(self, f"{name}_indptr_").numpy()
            if len(indptr) != shape[0] + 1:
                raise RuntimeError("ItemKNN is not fitted: call fit(bundle) first")
            self._cache[name] = sp.csr_matrix(
                (getattr(self, f"{name}_data_").numpy(), getattr(self, f"{name}_indices_").numpy(), indptr),
                shape=shape,
            )
        return self._cache[name]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Learned CSR buffers have data-dependent lengths: adopt the stored shapes.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key])
        self._cache.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def score(self, users: Tensor, category: int) -> Tensor:
        n_u, n_i = self.sizes.n_users, self.sizes.n_items
        hist = self._csr("hist", (n_u, n_i))
        sim_c = self._cache.get(f"sim{category}")
        if sim_c is None:
            sim_c = self._csr("sim", (n_i, n_i))[:, self.index[category].cpu().numpy()].tocsr()
            self._cache[f"sim{category}"] = sim_c
        out = (hist[users.cpu().numpy()] @ sim_c).toarray()  # [B, n_items(c)]
        return torch.from_numpy(out.astype(np.float32, copy=False))
