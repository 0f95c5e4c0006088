"""`row_adam`: one lazy-Adam step (training/optim.py `RowAdam`) for a table with a row-sparse,
uncoalesced gradient, in one kernel: the batch's distinct rows are found with a scratch slot per
table row (no sort), their gradients summed in the order given (as `index_add_`), and each
distinct row's moments and weights updated in place, rows spread over threads.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  w -= step_size * m / (sqrt(v) + eps)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)

    @jit
    def row_adam(w, exp_avg, exp_avg_sq, rows, grads, slot, step_size, b1, b2, eps):
        """`slot` [table rows] int64, all -1 on entry and on return (the caller keeps it)."""
        n, d = grads.shape
        uniq = np.empty(n, dtype=np.int64)
        n_u = 0
        for i in range(n):
            r = rows[i]
            if slot[r] < 0:
                slot[r] = n_u
                uniq[n_u] = r
                n_u += 1
        g = np.zeros((n_u, d), dtype=np.float32)
        for i in range(n):
            s = slot[rows[i]]
            for j in range(d):
                g[s, j] += grads[i, j]
        c1 = np.float32(1.0 - b1)
        c2 = np.float32(1.0 - b2)
        fb1, fb2, feps, fstep = np.float32(b1), np.float32(b2), np.float32(eps), np.float32(step_size)
        for s in nb.prange(n_u):
            r = uniq[s]
            for j in range(d):
                gj = g[s, j]
                m = exp_avg[r, j] * fb1 + c1 * gj
                v = exp_avg_sq[r, j] * fb2 + c2 * gj * gj
                exp_avg[r, j] = m
                exp_avg_sq[r, j] = v
                w[r, j] -= fstep * (m / (np.float32(math.sqrt(v)) + feps))
            slot[r] = -1
        return n_u

    return {"row_adam": row_adam}
