"""`train.fused: true`: BPR-MF's whole training step as one compiled CPU kernel (numba).

The batched step (`MF.manual_backward` + a row optimiser) makes about a dozen passes over [B, d]
blocks per batch: gathers, dot products, the sigmoid, gradient blocks, the optimiser's scatters.
Here one pass per row does it all in registers, the way implicit's Cython BPR does: read the
user's and the items' rows, compute x = <u, p - n_k>, and update the rows in place (row-wise
Adagrad or SGD), rows spread over the threads with no locks (Hogwild; Recht et al., NIPS 2011).
The kernel (`bpr_step`, crossrec/kernels/bpr.py) releases the GIL and is compiled once per machine
(numba's on-disk cache).

Semantics, next to the batched step on the same batch:
- the gradients are the batched loss's (mean over the batch's B x K pairs + `reg` L2 on the rows
  it touches), each row's applied as soon as it is computed, so a later row of the batch sees the
  updates of earlier ones (sequential SGD within a batch, as implicit does);
- Adagrad: each occurrence adds its row's mean squared gradient to the row's accumulator and then
  moves by lr * g / (sqrt(acc) + eps): `RowAdagrad`'s update applied occurrence by occurrence
  (the batched `RowAdagrad` sums a row's occurrences first; on distinct rows the two agree); its
  accumulators are `RowAdagrad`'s state, so checkpoints and resume work as usual;
- with more than one thread the order of updates varies between runs: results are reproducible
  with one thread only (`torch.set_num_threads(1)`, which sets the kernel's threads too).

Lazy Adam (the default sparse optimiser) keeps two moments per entry and a global step; it has no
per-occurrence form, so `fused` needs `train.sparse_optimizer: adagrad | sgd`.

`adam_epoch` is BPR-MF's default on CPU, with no option: the default step (lazy Adam, batches of
`train.batch_size`), but many batches per kernel call (`bpr_adam_batches`): each batch's gradients
from the weights before it, summed per distinct row in the batch's order, one `RowAdam` update per
row. So it computes what the batched step computes (a test compares them batch by batch) without
the dozen tensor ops and the Python between them per batch. The negatives are drawn for many
batches at once (`TrainSampler.epoch_chunks`), exactly as the batch loop's sampler draws them, so
the result is the batch loop's up to float order. No races: it does not depend on the thread count.
Measured in benchmarks/results/speed.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crossrec import kernels
from crossrec.errors import ConfigError, NumericError
from crossrec.models.base import FusedStep
from crossrec.training.optim import RowAdagrad, RowAdam


def check(model: Any, device: torch.device, world: int) -> None:
    """Raise a ValueError naming the option when `train.fused` cannot run this job (the options it
    needs of `train:` itself are checked by TrainConfig)."""
    why = None
    if not isinstance(model, FusedStep) or model.fused_tables() is None:
        why = f"{type(model).__name__} has no fused step (BPR-MF with loss 'bpr' has)"
    elif device.type != "cpu":
        why = f"it is a CPU kernel and train.device is {device.type}"
    elif world > 1:
        why = "multi-process training averages gradients, which a fused step never forms"
    if why:
        raise ConfigError(f"train.fused: true cannot be used: {why}")


def step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> Tensor:
    """One fused training step of `model` (BPR-MF) on `batch`; returns the batch's mean loss
    (the same value `model.loss(batch)` gives before the step). `opt` is the model's row
    optimiser (`RowAdagrad` or `RowSGD`): its learning rate and Adagrad state are used."""
    users_w, items_w, reg = model.fused_tables()
    group = opt.param_groups[0]
    adagrad = isinstance(opt, RowAdagrad)
    unused = np.zeros(1, dtype=np.float32)  # SGD keeps no accumulator
    state = [opt.accumulator(w).numpy() if isinstance(opt, RowAdagrad) else unused for w in (users_w, items_w)]
    n_threads = kernels.threads()
    neg = batch.neg_items
    n_b = len(batch.users)
    pairs, norms = kernels.get("bpr_step")(
        users_w.detach().numpy(),
        items_w.detach().numpy(),
        state[0],
        state[1],
        batch.users.numpy(),
        batch.pos_items.numpy(),
        neg.numpy(),
        float(group["lr"]),
        float(reg),
        float(group.get("eps", 1e-8)),
        adagrad,
        users_w.requires_grad,
        items_w.requires_grad,
        min(n_threads * 8, max(n_b // 64, 1)),
    )
    return torch.tensor(pairs / (n_b * neg.shape[1]) + reg * norms / n_b)


def adam_epoch(model: Any, opt: Any, device: torch.device, world: int) -> Callable[..., tuple[float, int]] | None:
    """The whole-epoch form of BPR-MF's default step where it applies (a BPR-MF whose sparse
    tables are trained by a compiled `RowAdam` on one CPU process), else None (the batch loop
    runs). The returned function takes (sampler, wrap) and returns (sum over rows of the batch
    losses, rows); `wrap(chunks, n_chunks)` may wrap the chunk iterator in a progress bar."""
    if device.type != "cpu" or world > 1 or not isinstance(opt, RowAdam) or not opt.compiled:
        return None
    if not isinstance(model, FusedStep):
        return None
    tables = model.fused_tables()
    if tables is None:
        return None
    users_w, items_w, reg = tables
    trained = [p for g in opt.param_groups for p in g["params"]]
    upd = (any(p is users_w for p in trained), any(p is items_w for p in trained))
    if len(opt.param_groups) != 1 or len(trained) != sum(upd) or not any(upd):
        return None  # another sparse table beside them (a subclass): the batch loop trains it
    if any(w.dtype != torch.float32 or not w.is_contiguous() for w in (users_w, items_w)):
        return None
    return functools.partial(_run_adam_epoch, users_w, items_w, reg, upd, opt)


def _moments(opt: RowAdam, w: Tensor, on: bool) -> tuple[list[np.ndarray], int]:
    """Table `w`'s lazy-Adam moments (created as RowAdam creates them) and step count."""
    if not on:
        return [_NONE, _NONE], 0
    state = opt.state[w]
    if not state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(w)
        state["exp_avg_sq"] = torch.zeros_like(w)
    return [state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()], int(state["step"])


def _run_adam_epoch(
    users_w: Tensor,
    items_w: Tensor,
    reg: float,
    upd: tuple[bool, bool],
    opt: RowAdam,
    sampler: Any,
    wrap: Callable[[Iterable[Any], int], Iterable[Any]],
) -> tuple[float, int]:
    group = opt.param_groups[0]
    (mu, su), (mv, sv) = _moments(opt, users_w, upd[0]), _moments(opt, items_w, upd[1])
    scratch = np.full(max(users_w.shape[0], items_w.shape[0]), -1, dtype=np.int64)
    kernel = kernels.get("bpr_adam_batches")
    kernels.threads()
    per_chunk = sampler.batch_size * sampler.CHUNK_BATCHES
    total, rows, done = 0.0, 0, 0
    for users, pos, neg in wrap(sampler.epoch_chunks(), (sampler.n_rows + per_chunk - 1) // per_chunk):
        pairs, norms = kernel(
            users_w.detach().numpy(),
            items_w.detach().numpy(),
            *mu,
            *mv,
            users.numpy(),
            pos.numpy(),
            neg.numpy(),
            sampler.batch_size,
            float(group["lr"]),
            *map(float, group["betas"]),
            float(group["eps"]),
            float(reg),
            su + done,
            sv + done,
            *upd,
            scratch,
        )
        chunk_loss = pairs / neg.shape[1] + reg * norms
        if not np.isfinite(chunk_loss):
            raise NumericError(f"loss became {chunk_loss} in this epoch; lower train.lr")
        total += chunk_loss
        rows += len(users)
        done += (len(users) + sampler.batch_size - 1) // sampler.batch_size
    for w, on in zip((users_w, items_w), upd):
        if on:
            opt.state[w]["step"] += done
    return total, rows


_NONE = np.zeros((1, 1), dtype=np.float32)  # a frozen table's moments (never read)
