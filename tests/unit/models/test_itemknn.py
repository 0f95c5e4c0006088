"""ItemKNN's similarity: hand-computed shrunk cosines, and the blocked product equal to the whole."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from crossrec.models.itemknn import binary_matrix, cosine_top_k


def _whole(x: sp.csr_matrix, k: int, shrink: float, normalize_user: bool) -> sp.csr_matrix:
    """The reference: the whole co-occurrence at once, dense, top k by value (ties: lower column)."""
    xw = x.toarray().astype(np.float64)
    if normalize_user:
        xw = xw / np.sqrt(np.maximum(xw.sum(1, keepdims=True), 1.0))
    co = xw.T @ xw
    norms = np.sqrt((xw * xw).sum(0))
    np.fill_diagonal(co, 0.0)
    sim = co / (norms[:, None] * norms[None, :] + shrink + 1e-8)
    out = np.zeros_like(sim)
    for a in range(len(sim)):
        nz = np.flatnonzero(sim[a])
        keep = nz[np.argsort(-sim[a, nz], kind="stable")[:k]]
        out[a, keep] = sim[a, keep]
    return sp.csr_matrix(out)


def test_hand_computed_cosine() -> None:
    # users: 0 has items {0, 1}, 1 has {0, 1, 2}, 2 has {2}; item 3 has no users
    x = binary_matrix(np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 0, 1, 2, 2]), 3, 4)
    sim, norms = cosine_top_k(x, k=5, shrink=1.0)
    assert norms == pytest.approx([np.sqrt(2), np.sqrt(2), np.sqrt(2), 0.0])
    assert sim[0, 1] == pytest.approx(2 / (2 + 1 + 1e-8))  # 2 users in common, |a||b| = 2
    assert sim[0, 2] == pytest.approx(1 / 3)
    assert sim[0, 0] == 0 and sim[3].nnz == 0 and sim.shape == (4, 4)


@pytest.mark.parametrize("normalize_user", [False, True])
def test_blocks_do_not_change_the_result(normalize_user: bool) -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 120
    users = rng.integers(0, n_users, 4000)
    items = np.minimum(rng.zipf(1.3, 4000) - 1, n_items - 3)  # popular items, ties, two items with no users
    x = binary_matrix(users, items, n_users, n_items)
    whole, norms = cosine_top_k(x, 7, 5.0, normalize_user)
    for block in (1, 50, 5_000):  # one row per block, small blocks, a few blocks
        part, part_norms = cosine_top_k(x, 7, 5.0, normalize_user, block=block)
        assert (part.indptr == whole.indptr).all() and (part.indices == whole.indices).all()
        assert (part.data == whole.data).all() and (part_norms == norms).all()
    # each row keeps the reference's k largest similarities (a tie at the k-th value may keep
    # another column of the same similarity, so rows are compared as sorted values)
    ref = _whole(x, 7, 5.0, normalize_user)
    assert np.allclose(np.sort(whole.toarray(), 1), np.sort(ref.toarray(), 1), atol=1e-6)
