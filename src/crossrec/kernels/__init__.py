"""Compiled CPU kernels (numba), for the loops that tensors express only as many passes over large
intermediate arrays. Each is compiled on first use and cached on disk by numba (the first run on a
machine pays a few seconds); each releases the GIL and spreads rows over `torch.get_num_threads()`
threads, each thread owning whole output rows (no locks, no atomics).

- `bpr.py`: `bpr_step`, BPR-MF's training step, gradient and row-wise Adagrad/SGD update in one
  pass per row (training/fused.py, `train.fused`); `bpr_adam_batches`, BPR-MF's default lazy-Adam
  step over many batches per call (training/fused.py, `adam_epoch`).
- `neighbourhood.py`: the flagship's neighbourhood term (models/crossrec/neighbourhood.py) without
  materialising its B x L x k entries, forward and backward.
- `attention.py`: the flagship's history attention pooling (models/crossrec/encoder.py) read
  straight from the history table, forward and backward.
- `softmax.py`: the flagship's in-batch softmax logits over a category's block, built in one pass.
- `optim.py`: `row_adam`, one lazy-Adam step of a sparse table (training/optim.py `RowAdam`).

Example:
    >>> out = kernels.get("neighbourhood_forward")(...)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from typing import Any

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


def deterministic(device: torch.device | str = "cpu") -> None:
    """`train.deterministic`: pin this process to one torch thread, and so one kernel thread
    (`threads()` follows torch), and turn on torch's deterministic algorithms. Parallel sums then
    always add in the same order (torch's reductions and BLAS split their work by thread count,
    and so do the kernels' per-chunk partial sums), and `train.fused`'s Hogwild step runs its rows
    in order (no races). On CUDA, ops without a deterministic form warn (cuBLAS is given the
    workspace setting it needs). The process keeps these settings, so the evaluation that follows
    the training is pinned too."""
    if torch.device(device).type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _keep_torch_threads(want: int) -> None:
    """numba's OpenMP pool (its default on Linux) shares torch's OpenMP runtime, and starting it
    resets the calling thread's OpenMP thread count: torch then ran 2 threads where it was told 1
    (runs were not reproducible, and on a busy machine its next parallel ops were far slower,
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


def _compile() -> dict[str, Any]:
    nb = _numba()
    from crossrec.kernels import attention, bpr, neighbourhood, optim, softmax

    out: dict[str, Any] = {}
    for module in (bpr, neighbourhood, attention, optim, softmax):
        out.update(module.build(nb))
    return out
