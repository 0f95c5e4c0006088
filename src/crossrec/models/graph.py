"""Graph pieces shared by the graph models (LightGCN, BiTGCF): the normalised bipartite
adjacency, a sparse product with a cheap backward, and a cache keyed on tensor versions.

Example:
    >>> adj = normalized_adjacency(users, items, n_users, n_items)      # scipy COO  # doctest: +SKIP
    >>> cache = TensorCache(); final = cache.get((w_user, w_item), propagate)      # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

T = TypeVar("T")


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.coo_matrix:
    """D^-1/2 A D^-1/2 of the bipartite graph: [n_users + n_items] square, items offset by n_users.

    Repeated (user, item) pairs count once; nodes without edges keep an empty row.
    """
    n = n_users + n_items
    r = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    r.sum_duplicates()
    r.data[:] = 1.0
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)  # [n, n] symmetric
    deg = np.asarray(adj.sum(axis=1), dtype=np.float64).ravel()
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    adj = adj.tocoo()
    # Row-major order with sorted columns: the coalesced order torch expects.
    order = np.lexsort((adj.col, adj.row))
    row, col = adj.row[order].astype(np.int64), adj.col[order].astype(np.int64)
    data = (inv_sqrt[row] * inv_sqrt[col]).astype(np.float32)
    return sp.coo_matrix((data, (row, col)), shape=(n, n))


class SymmetricSpMM(torch.autograd.Function):
    """adj @ x for a symmetric sparse adj: the backward is adj @ grad, with no transpose to build."""

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.adj @ grad


class TensorCache(Generic[T]):
    """One value derived from some tensors, recomputed when any of them changes.

    The key is each tensor's storage pointer and in-place version counter (plus `extra`), so an
    optimiser step, `.to(device)` or loading new weights all invalidate it; `clear()` forces it.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: T | None = None

    def clear(self) -> None:
        self._key, self._value = None, None

    def get(self, tensors: Sequence[Tensor], compute: Callable[[], T], extra: tuple[Any, ...] = ()) -> T:
        key = tuple((t.data_ptr(), t._version) for t in tensors) + tuple(extra)
        if self._value is None or self._key != key:
            self._key, self._value = key, compute()
        return self._value


def sparse_graph(indices: Tensor, values: Tensor, n: int, csr: bool = False) -> Tensor:
    """The [n, n] sparse matrix of coalesced (indices, values) buffers, checked once (they may come
    from a file, and bad indices would crash spmm); CSR where asked (faster spmm on CPU)."""
    adj = torch.sparse_coo_tensor(indices, values, (n, n), is_coalesced=True, check_invariants=True)
    if not csr:
        return adj
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return adj.to_sparse_csr()


def load_graph_buffers(
    module: Any, state_dict: dict[str, Tensor], prefix: str, caches: Sequence[TensorCache[Any]]
) -> None:
    """Before a graph model loads: take the stored shapes of its graph buffers (they depend on the
    data) and drop every cache built from the old ones."""
    for name in ("graph_indices_", "graph_values_"):
        key, buf = prefix + name, module._buffers[name]
        if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
            module._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
    for cache in caches:
        cache.clear()
