"""`attention_forward` / `attention_backward`: the flagship's history attention pooling
(models/crossrec/encoder.py) read straight from the history embedding table.

For each row r with history items h_l (pad skipped), their vectors x_l = E[h_l] (+ X_rl, the item
tower's text part, when given) and query q_r:
    s_l = (x_l . q_r) * scale + bias_rl,   a = softmax(s_1..s_L, 0)   (0: the "nothing seen" slot)
    out_r = sum_l a_l x_l
The backward, given g_r = dL/dout_r:
    da_l = g_r . x_l,   ds_l = a_l (da_l - g_r . out_r),
    dx_l = a_l g_r + ds_l scale q_r (to E[h_l] and X_rl),   dq_r = scale sum_l ds_l x_l,   dbias_rl = ds_l
and returns dE as rows (one per real history entry, in row-major order: the uncoalesced sparse
gradient that `nn.Embedding(sparse=True)` gives). The tensor path materialises the B x L x d gather
and several products of its size in both passes; here each row's L x d block is read from the
table and stays in cache.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def build(nb: Any) -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)

    @jit
    def attention_forward(E, hist, q, bias, X, pad, scale):
        """X [B, L, d] (or empty): a per-entry addition to the table's rows (the item tower's text
        part of each history item)."""
        n_b, length = hist.shape
        d = E.shape[1]
        has_x = X.shape[0] > 0
        out = np.zeros((n_b, d), dtype=np.float32)
        att = np.zeros((n_b, length), dtype=np.float32)
        for r in nb.prange(n_b):
            top = np.float32(0.0)  # the zero slot's logit
            for sl in range(length):
                h = hist[r, sl]
                if h == pad:
                    continue
                s = np.float32(0.0)
                if has_x:
                    for j in range(d):
                        s += (E[h, j] + X[r, sl, j]) * q[r, j]
                else:
                    for j in range(d):
                        s += E[h, j] * q[r, j]
                s = s * scale + bias[r, sl]
                att[r, sl] = s
                if s > top:
                    top = s
            z = math.exp(-top)
            for sl in range(length):
                if hist[r, sl] != pad:
                    e = math.exp(att[r, sl] - top)
                    att[r, sl] = e
                    z += e
            inv = np.float32(1.0 / z)
            for sl in range(length):
                h = hist[r, sl]
                if h == pad:
                    continue
                a = att[r, sl] * inv
                att[r, sl] = a
                if has_x:
                    for j in range(d):
                        out[r, j] += a * (E[h, j] + X[r, sl, j])
                else:
                    for j in range(d):
                        out[r, j] += a * E[h, j]
        return out, att

    @jit
    def attention_backward(g, E, hist, q, X, att, out, offsets, pad, scale):
        """Row-sparse dE (rows, values), dq, dbias, and dX [B, L, d] (zeros at pads; empty without X)."""
        n_b, length = hist.shape
        d = E.shape[1]
        has_x = X.shape[0] > 0
        rows = np.empty(offsets[n_b], dtype=np.int64)
        d_e = np.empty((offsets[n_b], d), dtype=np.float32)
        d_x = np.zeros((n_b if has_x else 0, length, d), dtype=np.float32)
        d_q = np.zeros((n_b, d), dtype=np.float32)
        d_bias = np.zeros((n_b, length), dtype=np.float32)
        for r in nb.prange(n_b):
            g_out = np.float32(0.0)
            for j in range(d):
                g_out += g[r, j] * out[r, j]
            at = offsets[r]
            for sl in range(length):
                h = hist[r, sl]
                if h == pad:
                    continue
                a = att[r, sl]
                da = np.float32(0.0)
                if has_x:
                    for j in range(d):
                        da += g[r, j] * (E[h, j] + X[r, sl, j])
                else:
                    for j in range(d):
                        da += g[r, j] * E[h, j]
                ds = a * (da - g_out)
                d_bias[r, sl] = ds
                dss = ds * scale
                for j in range(d):
                    v = a * g[r, j] + dss * q[r, j]
                    d_e[at, j] = v
                    if has_x:
                        d_x[r, sl, j] = v
                        d_q[r, j] += dss * (E[h, j] + X[r, sl, j])
                    else:
                        d_q[r, j] += dss * E[h, j]
                rows[at] = h
                at += 1
        return rows, d_e, d_x, d_q, d_bias

    return {"attention_forward": attention_forward, "attention_backward": attention_backward}
