"""Nearest-neighbour item indexes for serving: one FAISS index per category.

`ItemIndex` holds one category's item vectors under maximum inner product. `exact` (FAISS
`IndexFlatIP`, the default) returns the same top-k as a full `score` of a two-tower model, ties
broken toward the lower row as the evaluator does; `hnsw` (FAISS `IndexHNSWFlat` on inner
product) is approximate and is used when `kind="auto"` and the category has more than
`hnsw_above` items. Its recall@10 against exact search is measured by `recall_against_exact` (the
serving benchmark reports it).

A model's item bias joins the vectors as one more dimension, the query gets a constant 1 there,
so the index ranks by `<u, v_i> + b_i`. Terms that depend on the user and the item together (the
flagship's neighbourhood and content terms) cannot live in an index: the service re-ranks a
candidate pool with them (serving/service.py).

Rows are item ids (global), so items added while serving (`add`) get their own ids.

An exact index answers a batch of `TORCH_BATCH` or more queries (the service's micro-batches) with
one torch matrix product and `topk` over the same vectors, which profiled faster than FAISS's
flat search for batches (docs/DESIGN.md, `serving`; FAISS keeps a heap
per query); single queries stay on FAISS. Both are exact; ties go to the lower row either way.

Example:
    >>> index = ItemIndex(vectors, ids)                    # doctest: +SKIP
    >>> scores, items = index.search(user_vectors, k=10)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from crossrec.extras import require

Kind = Literal["exact", "hnsw", "auto"]
TORCH_BATCH = 4  # an exact index searches batches of at least this many queries with torch


def _faiss():  # imported lazily: the library (and its OpenMP pool) only where serving needs it
    require("serve", "the serving index", "faiss")
    import faiss

    return faiss


class ItemIndex:
    """Inner-product search over one category's items.

    Args:
        vectors: [n, d] float32 item vectors (bias folded in by the caller, if any).
        ids: [n] int64 global item ids of the rows.
        kind: "exact" (default), "hnsw", or "auto" (hnsw above `hnsw_above` items).
        hnsw_above: the size above which "auto" builds HNSW.
        hnsw_m, ef_search, ef_construction: HNSW graph degree and beam widths.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        ids: np.ndarray,
        kind: Kind = "exact",
        hnsw_above: int = 200_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
    ) -> None:
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"item vectors {vectors.shape} do not match {len(ids)} ids")
        self.dim = vectors.shape[1]
        self.kind = ("hnsw" if len(ids) > hnsw_above else "exact") if kind == "auto" else kind
        if self.kind == "exact":
            self._index = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            self._index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = ef_construction
            self._index.hnsw.efSearch = ef_search
        else:
            raise ValueError(f"index kind={kind!r}; expected exact, hnsw or auto")
        self.ids = np.asarray(ids, dtype=np.int64).copy()
        self._matrix = torch.from_numpy(vectors.copy()) if self.kind == "exact" else None  # batched exact search
        if len(vectors):
            self._index.add(vectors)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append items (new rows; their ids must not be in the index yet)."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"new item vectors have {vectors.shape[1]} dimensions; the index has {self.dim}")
        self._index.add(vectors)
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        if self._matrix is not None:
            self._matrix = torch.cat([self._matrix, torch.from_numpy(vectors.copy())])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: ([B, k] scores, [B, k] global ids), best first; -1 ids pad short rows."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(int(k), len(self.ids)))
        if not len(self.ids):
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self._matrix is not None and len(queries) >= TORCH_BATCH:
            with torch.no_grad():
                top = torch.topk(torch.from_numpy(queries) @ self._matrix.T, k, dim=1)
            scores, rows = top.values.numpy(), top.indices.numpy()
        else:
            scores, rows = self._index.search(queries, k)
        if self.kind == "exact":  # FAISS's order among equal scores is not fixed: lower row first, like the evaluator
            order = np.lexsort((rows, -scores), axis=1)
            scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        ids = np.where(rows >= 0, self.ids[np.clip(rows, 0, None)], -1)
        return scores, ids


def recall_against_exact(approx: ItemIndex, exact: ItemIndex, queries: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-k that the approximate index also returns."""
    _, a = approx.search(queries, k)
    _, e = exact.search(queries, k)
    hits = [len(np.intersect1d(x[x >= 0], y[y >= 0])) / max(1, int((y >= 0).sum())) for x, y in zip(a, e)]
    return float(np.mean(hits))


__all__ = ["ItemIndex", "Kind", "recall_against_exact"]
