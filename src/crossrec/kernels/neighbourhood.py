"""`neighbourhood_forward` / `neighbourhood_backward`: the flagship's neighbourhood term
(models/crossrec/neighbourhood.py) without materialising its B x L x k entries: each row walks its
history items' neighbours, keeps those that are candidates of its category and adds
w[c, cat(h), slot] * cos(h, j) to its own output row (neighbour lists are grouped by category, so
a row walks only its own category's part). With gradients on, the forward also records
its hits (the neighbours that were candidates: a small share of the entries), so
the backward sums grad * cos per weight over the hits alone (one small partial table per thread)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)
    # A module global, not a closure cell: numba keys its on-disk cache by the pickled closure, and
    # a dispatcher pickles with a per-process id, so a captured helper recompiled every process.
    global _similarity

    @nb.njit(fastmath=True, nogil=True, cache=True, inline="always")
    def _similarity(h, kk, j, keys, key, lo, end, nbr_co, item_users, shrink):
        """Shrunk cosine of (h, j); when (user, j) is a training pair (`key` = user * n_items + j
        is in the sorted keys[lo:end], the row user's range: empty without leave-out), the pair
        leaves the count. A binary search per hit: hits are a few percent of the entries, so this
        costs less than marking each row user's training items."""
        co = nbr_co[h, kk]
        n_j = item_users[j]
        hi = end
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < end and keys[lo] == key:
            co -= 1.0
            n_j -= 1.0
        return co / (math.sqrt(item_users[h] * n_j) + shrink + 1e-8)

    @jit
    def neighbourhood_forward(
        table,
        hist,
        category,
        users,
        col_of,
        nbr,
        nbr_co,
        nbr_off,
        item_users,
        item_cat,
        keys,
        user_starts,
        shrink,
        hlen,
        n_cat,
        n_i,
        starts,
        out,
        n_chunks,
    ):
        """Adds the scores into out [B, m]; with `starts` (each row's first slot in the hit lists,
        [B + 1]: k per real history item) returns the hits (column, weight index, cosine) and their
        count per row, which are all the backward needs. `nbr` / `nbr_co` hold each item's
        neighbours grouped by category, `nbr_off[h, c]:nbr_off[h, c + 1]` those in category c: a row
        walks only its own category's."""
        n_b, length = hist.shape
        record = len(starts) > 0
        cap = starts[n_b] if record else 0
        hit_col = np.empty(cap, dtype=np.int32)
        hit_w = np.empty(cap, dtype=np.int32)
        hit_sim = np.empty(cap, dtype=np.float32)
        n_hits = np.zeros(n_b, dtype=np.int64)
        # One bit per item that is a candidate, in cache where col_of (4 bytes per item) is not;
        # col_of is read for the hits alone. A row walks only its own category's neighbours, so
        # one table over items serves every row.
        words = (col_of.shape[0] + 63) // 64
        bits = np.zeros(words, dtype=np.uint64)
        for j in range(col_of.shape[0]):
            if col_of[j] >= 0:
                bits[j >> 6] |= np.uint64(1) << np.uint64(j & 63)
        leave_out = len(keys) > 0
        step = (n_b + n_chunks - 1) // n_chunks
        for ch in nb.prange(n_chunks):
            for r in range(ch * step, min((ch + 1) * step, n_b)):
                c = category[r]
                at = starts[r] if record else 0
                base = users[r] * n_i
                lo, end = 0, 0  # the row user's training pairs in keys (leave-out)
                if leave_out:
                    lo, end = user_starts[users[r]], user_starts[users[r] + 1]
                for sl in range(length):
                    h = hist[r, sl]
                    if h == n_i:
                        continue
                    w_at = (c * (n_cat + 1) + item_cat[h]) * hlen + sl + hlen - length
                    w = table[w_at]
                    for kk in range(nbr_off[h, c], nbr_off[h, c + 1]):
                        j = nbr[h, kk]
                        if not (bits[j >> 6] >> np.uint64(j & 63)) & np.uint64(1):
                            continue
                        col = col_of[j]
                        sim = _similarity(h, kk, j, keys, base + j, lo, end, nbr_co, item_users, shrink)
                        out[r, col] += w * sim
                        if record:
                            hit_col[at] = col
                            hit_w[at] = w_at
                            hit_sim[at] = sim
                            at += 1
                if record:
                    n_hits[r] = at - starts[r]
        return hit_col, hit_w, hit_sim, n_hits

    @jit
    def neighbourhood_backward(grad_out, w_lo, n_part, starts, n_hits, hit_col, hit_w, hit_sim, n_chunks):
        """d table[w_lo : w_lo + n_part] (the weights the rows' categories can touch): sum over the
        forward's hits of grad_out[row, column] * cosine, per weight."""
        n_b = grad_out.shape[0]
        part = np.zeros((n_chunks, n_part), dtype=np.float64)
        step = (n_b + n_chunks - 1) // n_chunks
        for ch in nb.prange(n_chunks):
            for r in range(ch * step, min((ch + 1) * step, n_b)):
                for i in range(starts[r], starts[r] + n_hits[r]):
                    part[ch, hit_w[i] - w_lo] += grad_out[r, hit_col[i]] * hit_sim[i]
        return part.sum(0).astype(np.float32)

    return {"neighbourhood_forward": neighbourhood_forward, "neighbourhood_backward": neighbourhood_backward}
