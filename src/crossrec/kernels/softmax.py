"""`in_batch_logits`: the logits of the flagship's in-batch softmax over one category's block
(models/crossrec/softmax.py), built in place on the block S = U P^T in one pass:

    z_rj = S_rj + col_bias_j - row_log_r + side_rj,  z_rj = -inf where item_j == item_r and j != r

then shifted by each row's max (the diagonal is never masked, so the max is finite), which is what
an exp needs to be safe: torch then takes exp in place and sums once, and the backward reuses those
exponentials (the tensor path: five passes and a mask for the logits, logsumexp's max, shift, exp
and sum, and a second shift and exp in the backward). The exponentials stay in torch,
whose vectorised exp is several times faster than a scalar one here (numba has no SVML on this
machine's build).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=False, nogil=True, cache=True)

    @jit
    def in_batch_logits(z, col_bias, row_log, side, items, row_max):
        """z [n, n] = U P^T in, the logits minus each row's max out (in place): biases, side term,
        repeats masked; row_max [n] out. The second pass over a row runs while it is in cache."""
        n = z.shape[0]
        has_side = side.shape[0] > 0
        for r in nb.prange(n):
            top = -np.inf
            for j in range(n):
                if j != r and items[j] == items[r]:
                    z[r, j] = -np.inf
                    continue
                v = z[r, j] + col_bias[j] - row_log[r]
                if has_side:
                    v += side[r, j]
                z[r, j] = v
                if v > top:
                    top = v
            row_max[r] = top
            for j in range(n):
                z[r, j] -= top

    return {"in_batch_logits": in_batch_logits}
