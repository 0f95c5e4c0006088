"""BPR-MF's training in compiled kernels (training/fused.py):

- `bpr_step`: one batch, gradient and row-wise Adagrad/SGD update in one pass per row
  (`train.fused`). Rows are spread over threads without locks (Hogwild).
- `bpr_adam_batches`: many batches in one call, each the default step exactly: every gradient
  from the weights before the batch, summed per distinct row in the batch's order, then one
  lazy-Adam update per distinct row (`RowAdam`). No races: the same result on any thread count."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)
    # Module globals, not closure cells: numba keys its on-disk cache by the pickled closure, and
    # a dispatcher pickles with a per-process id, so a captured helper recompiled every process.
    global _move_row, _chain

    @nb.njit(nogil=True, cache=True, inline="always")
    def _chain(rows, offset, slot, uniq, head, tail, nxt, n_u):
        """Add occurrences offset .. offset + len(rows) (row rows[i] at offset + i) to the chains of
        distinct rows: `slot[row]` is the row's index in `uniq` (-1: not seen yet), `head`/`tail`
        its chain's ends, `nxt` each occurrence's successor (-1 at the end). Returns the count of
        distinct rows so far."""
        for i in range(len(rows)):
            r = rows[i]
            o = offset + i
            nxt[o] = -1
            q = slot[r]
            if q < 0:
                slot[r] = n_u
                uniq[n_u] = r
                head[n_u] = o
                tail[n_u] = o
                n_u += 1
            else:
                nxt[tail[q]] = o
                tail[q] = o
        return n_u

    @nb.njit(fastmath=True, nogil=True, cache=True, inline="always")
    def _move_row(W, acc, row, grad, lr, eps, adagrad):
        """W[row] -= lr * grad (SGD), or scaled by the row's Adagrad accumulator after adding
        the gradient's mean square to it."""
        d = W.shape[1]
        scale = np.float32(lr)
        if adagrad:
            g2 = np.float32(0.0)
            for j in range(d):
                g2 += grad[j] * grad[j]
            acc[row] += g2 / d
            scale = np.float32(lr / (math.sqrt(acc[row]) + eps))
        for j in range(d):
            W[row, j] -= scale * grad[j]

    @jit
    def bpr_step(U, V, su, sv, users, pos, neg, lr, reg, eps, adagrad, upd_u, upd_v, n_chunks):
        n_b, n_k = neg.shape
        d = U.shape[1]
        inv = np.float32(-1.0 / (n_b * n_k))  # d mean-loss / d x = sigmoid(-x) * inv
        r = np.float32(2.0 * reg / n_b)
        loss = np.zeros((n_chunks, 2), dtype=np.float64)  # per chunk: sum of softplus, of squared norms
        step = (n_b + n_chunks - 1) // n_chunks
        for c in nb.prange(n_chunks):
            gu = np.empty(d, dtype=np.float32)
            gp = np.empty(d, dtype=np.float32)
            gn = np.empty(d, dtype=np.float32)
            gk = np.empty(n_k, dtype=np.float32)
            acc: float | np.floating = 0.0  # (annotations of locals are not evaluated: numba sees float64)
            norms: float | np.floating = 0.0
            for b in range(c * step, min((c + 1) * step, n_b)):
                u, p = users[b], pos[b]
                gsum = np.float32(0.0)
                sq = np.float32(0.0)
                for j in range(d):
                    sq += U[u, j] * U[u, j] + V[p, j] * V[p, j]
                for k in range(n_k):
                    n = neg[b, k]
                    x = np.float32(0.0)
                    for j in range(d):
                        x += U[u, j] * (V[p, j] - V[n, j])
                    if x > 0:  # stable softplus(-x) and sigmoid(-x)
                        e = math.exp(-x)
                        acc += math.log1p(e)
                        g = np.float32(e / (1.0 + e)) * inv
                    else:
                        e = math.exp(x)
                        acc += math.log1p(e) - x
                        g = np.float32(1.0 / (1.0 + e)) * inv
                    gk[k] = g
                    gsum += g
                # gradients from the values before this row's updates
                for j in range(d):
                    gu[j] = r * U[u, j] + gsum * V[p, j]
                    gp[j] = r * V[p, j] + gsum * U[u, j]
                for k in range(n_k):
                    n = neg[b, k]
                    g = gk[k]
                    for j in range(d):
                        vn = V[n, j]
                        sq += vn * vn
                        gu[j] -= g * vn
                        gn[j] = r * vn - g * U[u, j]
                    if upd_v:
                        _move_row(V, sv, n, gn, lr, eps, adagrad)
                if upd_v:
                    _move_row(V, sv, p, gp, lr, eps, adagrad)
                if upd_u:
                    _move_row(U, su, u, gu, lr, eps, adagrad)
                norms += sq
            loss[c, 0] = acc
            loss[c, 1] = norms
        return loss[:, 0].sum(), loss[:, 1].sum()

    @jit
    def bpr_adam_batches(
        U, V, mu, vu, mv, vv, users, pos, neg, batch_size, lr, b1, b2, eps, reg, step_u, step_v, upd_u, upd_v, scratch
    ):
        """Consecutive batches of `batch_size` rows of (users, pos, neg [n, K]); the tables' lazy-Adam
        moments (m*, v*) and step counts before the first batch (step_*). `scratch`: int64
        [max(n_users, n_items)], all -1 on entry and on return. Returns (sum of softplus over the
        pairs, sum over batches of the squared norms of the rows looked up)."""
        n, n_k = neg.shape
        d = U.shape[1]
        n_occ = batch_size * (1 + n_k)
        gu_rows = np.empty((batch_size, d), dtype=np.float32)  # per occurrence, the batch's order
        gi_rows = np.empty((n_occ, d), dtype=np.float32)  # positives, then negatives row-major
        pair_sum = np.empty(batch_size, dtype=np.float64)
        norm_sum = np.empty(batch_size, dtype=np.float64)
        uniq = np.empty(n_occ, dtype=np.int64)  # distinct rows, in order of first occurrence
        head = np.empty(n_occ, dtype=np.int64)  # their first occurrence, a chain through `nxt`
        tail = np.empty(n_occ, dtype=np.int64)
        nxt = np.empty(n_occ, dtype=np.int64)
        fb1, fb2, feps = np.float32(b1), np.float32(b2), np.float32(eps)
        c1, c2 = np.float32(1.0 - b1), np.float32(1.0 - b2)
        total_pairs = 0.0
        total_norms = 0.0
        n_batches = (n + batch_size - 1) // batch_size
        for j in range(n_batches):
            s0 = j * batch_size
            n_b = min(batch_size, n - s0)
            inv = np.float32(-1.0 / (n_b * n_k))  # d mean-loss / d x = sigmoid(-x) * inv
            r = np.float32(2.0 * reg / n_b)
            for b in nb.prange(n_b):  # gradients from the weights before the batch
                u, p = users[s0 + b], pos[s0 + b]
                dp = np.float32(0.0)
                sq = np.float32(0.0)
                for t in range(d):
                    dp += U[u, t] * V[p, t]
                    sq += U[u, t] * U[u, t] + V[p, t] * V[p, t]
                    gu_rows[b, t] = r * U[u, t]
                    gi_rows[b, t] = r * V[p, t]
                acc: float | np.floating = 0.0  # (annotations of locals are not evaluated: numba sees float64)
                gsum = np.float32(0.0)
                for k in range(n_k):
                    ng = neg[s0 + b, k]
                    dn = np.float32(0.0)
                    for t in range(d):
                        dn += U[u, t] * V[ng, t]
                    x = dp - dn
                    if x > 0:  # stable softplus(-x) and sigmoid(-x)
                        e = math.exp(-x)
                        acc += math.log1p(e)
                        g = np.float32(e / (1.0 + e)) * inv
                    else:
                        e = math.exp(x)
                        acc += math.log1p(e) - x
                        g = np.float32(1.0 / (1.0 + e)) * inv
                    gsum += g
                    o = n_b + b * n_k + k
                    for t in range(d):
                        vn = V[ng, t]
                        sq += vn * vn
                        gu_rows[b, t] -= g * vn
                        gi_rows[o, t] = r * vn - g * U[u, t]
                for t in range(d):
                    gu_rows[b, t] += gsum * V[p, t]
                    gi_rows[b, t] += gsum * U[u, t]
                pair_sum[b] = acc
                norm_sum[b] = sq
            for b in range(n_b):  # in order: the same sums whatever the thread count
                total_pairs += pair_sum[b]
                total_norms += norm_sum[b]
            for which in range(2):  # the user table, then the item table
                if not (upd_u if which == 0 else upd_v):
                    continue
                W, m, v = (U, mu, vu) if which == 0 else (V, mv, vv)
                grads = gu_rows if which == 0 else gi_rows
                step = (step_u if which == 0 else step_v) + j + 1
                size = np.float32(lr * math.sqrt(1.0 - b2**step) / (1.0 - b1**step))
                if which == 0:
                    n_u = _chain(users[s0 : s0 + n_b], 0, scratch, uniq, head, tail, nxt, 0)
                else:
                    n_u = _chain(pos[s0 : s0 + n_b], 0, scratch, uniq, head, tail, nxt, 0)
                    n_u = _chain(neg[s0 : s0 + n_b].ravel(), n_b, scratch, uniq, head, tail, nxt, n_u)
                for q in nb.prange(n_u):  # each distinct row: its gradients summed in order, one Adam step
                    row = uniq[q]
                    h = head[q]
                    o = nxt[h]
                    while o >= 0:  # summed into the first occurrence's gradient row (scratch of this batch)
                        for t in range(d):
                            grads[h, t] += grads[o, t]
                        o = nxt[o]
                    for t in range(d):
                        gt = grads[h, t]
                        mt = m[row, t] * fb1 + c1 * gt
                        vt = v[row, t] * fb2 + c2 * gt * gt
                        m[row, t] = mt
                        v[row, t] = vt
                        W[row, t] -= size * (mt / (np.float32(math.sqrt(vt)) + feps))
                    scratch[row] = -1
        return total_pairs, total_norms

    return {"bpr_step": bpr_step, "bpr_adam_batches": bpr_adam_batches}
