"""Compiled CPU kernels (numba), for the loops that tensors express only as many passes over large
intermediate arrays. Each is compiled on first use and cached on disk by numba (the first run on a
machine pays a few seconds); each releases the GIL and spreads rows over `torch.get_num_threads()`
threads, each thread owning whole output rows (no locks, no atomics).

- `bpr_step`: BPR-MF's training step, gradient and row-wise Adagrad/SGD update in one pass per
  row (training/fused.py, `train.fused`).
- `neighbourhood_forward` / `neighbourhood_backward`: the flagship's neighbourhood term
  (models/crossrec/neighbourhood.py) without materialising its B x L x k entries: each row walks
  its history items' neighbours, keeps those that are candidates of its category and adds
  w[c, cat(h), slot] * cos(h, j) to its own output row; the backward walks the same entries and
  sums the gradient per weight (one small partial table per thread).

Example:
    >>> out = kernels.get("neighbourhood_forward")(...)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch

_COMPILED: dict[str, Any] = {}


def threads() -> int:
    """Set the kernels' thread count to torch's (within numba's limit) and return it."""
    nb = _numba()
    want = torch.get_num_threads()
    n = max(1, min(want, nb.config.NUMBA_NUM_THREADS))
    nb.set_num_threads(n)  # starts numba's pool on first use
    _keep_torch_threads(want)
    return n


def _keep_torch_threads(want: int) -> None:
    """numba's OpenMP pool (its default on Linux) shares torch's OpenMP runtime, and starting it
    resets the calling thread's OpenMP thread count: torch then ran 2 threads where it was told 1
    (runs were not reproducible, and on a busy machine its next parallel ops were up to 25x slower,
    measured). Put torch's count back."""
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


def _numba() -> Any:
    try:
        import numba
    except ImportError as e:  # pragma: no cover - a pinned dependency, imported only where a kernel runs
        raise RuntimeError("crossrec's compiled kernels need numba (pip install numba)") from e
    return numba


def get(name: str) -> Any:
    """The compiled kernel `name` (compiled, or loaded from numba's cache, on first use)."""
    if name not in _COMPILED:
        _numba()
        _COMPILED.update({k: _serialised(f) for k, f in _compile().items()})
    return _COMPILED[name]


_LAUNCH = threading.Lock()


def _serialised(kernel: Any) -> Any:
    """The kernel, launched by one Python thread at a time (the service scores from a thread pool;
    numba's pools are not all safe for concurrent launches, and each launch already uses every
    kernel thread, so waiting costs nothing), with torch's thread count kept."""

    def launch(*args: Any) -> Any:
        want = torch.get_num_threads()
        with _LAUNCH:
            out = kernel(*args)
        _keep_torch_threads(want)
        return out

    launch.__name__ = getattr(kernel, "__name__", "kernel")
    return launch


def _compile() -> dict[str, Any]:  # pragma: no cover - the bodies run compiled (tests call them)
    nb = _numba()

    jit = nb.njit(parallel=True, fastmath=True, nogil=True, cache=True)

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
            acc = 0.0
            norms = 0.0
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

    @nb.njit(fastmath=True, nogil=True, cache=True, inline="always")
    def _similarity(h, kk, j, user, nbr_co, item_users, keys, leave_out, n_i, shrink):
        co = nbr_co[h, kk]
        n_j = item_users[j]
        if leave_out and len(keys) > 0:  # the row's own training pair (user, j) leaves the count
            key = user * n_i + j
            at = np.searchsorted(keys, key)
            if at < len(keys) and keys[at] == key:
                co -= 1.0
                n_j -= 1.0
        return co / (math.sqrt(item_users[h] * n_j) + shrink + 1e-8)

    @jit
    def neighbourhood_forward(table, hist, category, users, col_of, nbr, nbr_co, item_users, item_cat, keys,
                              leave_out, m, shrink, hlen, n_cat, n_i):
        n_b, length = hist.shape
        kk_n = nbr.shape[1]
        out = np.zeros((n_b, m), dtype=np.float32)
        for r in nb.prange(n_b):
            c = category[r]
            for sl in range(length):
                h = hist[r, sl]
                if h == n_i:
                    continue
                w_at = ((c * (n_cat + 1) + item_cat[h]) * hlen + sl + hlen - length)
                w = table[w_at]
                for kk in range(kk_n):
                    j = nbr[h, kk]
                    col = col_of[c, j]
                    if col < 0:
                        continue
                    out[r, col] += w * _similarity(h, kk, j, users[r], nbr_co, item_users, keys, leave_out, n_i, shrink)
        return out

    @jit
    def neighbourhood_backward(grad_out, n_table, hist, category, users, col_of, nbr, nbr_co, item_users, item_cat,
                               keys, leave_out, shrink, hlen, n_cat, n_i, n_chunks):
        n_b, length = hist.shape
        kk_n = nbr.shape[1]
        part = np.zeros((n_chunks, n_table), dtype=np.float64)
        step = (n_b + n_chunks - 1) // n_chunks
        for ch in nb.prange(n_chunks):
            for r in range(ch * step, min((ch + 1) * step, n_b)):
                c = category[r]
                for sl in range(length):
                    h = hist[r, sl]
                    if h == n_i:
                        continue
                    w_at = ((c * (n_cat + 1) + item_cat[h]) * hlen + sl + hlen - length)
                    acc = 0.0
                    for kk in range(kk_n):
                        j = nbr[h, kk]
                        col = col_of[c, j]
                        if col < 0:
                            continue
                        g = grad_out[r, col]
                        if g != 0.0:
                            acc += g * _similarity(h, kk, j, users[r], nbr_co, item_users, keys, leave_out, n_i, shrink)
                    part[ch, w_at] += acc
        return part.sum(0).astype(np.float32)

    return {"bpr_step": bpr_step, "neighbourhood_forward": neighbourhood_forward,
            "neighbourhood_backward": neighbourhood_backward}
