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
  moves by lr * g / (sqrt(acc) + eps): `RowAdagrad`'s update, occurrence by occurrence; its
  accumulators are `RowAdagrad`'s state, so checkpoints and resume work as usual;
- with more than one thread the order of updates varies between runs: results are reproducible
  with one thread only (`torch.set_num_threads(1)`, which sets the kernel's threads too).

Lazy Adam (the default sparse optimiser) keeps two moments per entry and a global step; it has no
per-occurrence form, so `fused` needs `train.sparse_optimizer: adagrad | sgd`.
Measured in benchmarks/results/speed.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from crossrec import kernels
from crossrec.errors import ConfigError
from crossrec.models.base import FusedStep
from crossrec.training.optim import RowAdagrad


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
