"""`bpr_step`: BPR-MF's training step, gradient and row-wise Adagrad/SGD update in one pass per
row (training/fused.py, `train.fused`). Rows are spread over threads without locks (Hogwild)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)
    # A module global, not a closure cell: numba keys its on-disk cache by the pickled closure, and
    # a dispatcher pickles with a per-process id, so a captured helper recompiled every process.
    global _move_row

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

    return {"bpr_step": bpr_step}
