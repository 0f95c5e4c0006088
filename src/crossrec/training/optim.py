"""Optimisers for a model: dense parameters get the configured optimiser; embedding tables built
with `nn.Embedding(..., sparse=True)` get sparse gradients and a sparse optimiser (`train.sparse_optimizer`: by default `RowAdam` for adam/adamw
and plain SGD for sgd; `adagrad` is `RowAdagrad`, the row-wise Adagrad of embedding-table
trainers), so a step costs O(batch) instead of O(table size).

`RowAdam` is lazy Adam, the same update as `torch.optim.SparseAdam` (only the rows in the batch
move; their moments decay only when they are touched; bias correction by the global step), done
on dense row blocks: the batch's distinct rows (`torch.unique`), their summed gradient
(`index_add_`), and gathers/scatters of those rows of the moments and weights. SparseAdam builds
sparse tensors for every moment update (`coalesce`, `sparse_mask`): about half of a BPR-MF epoch
over 1M interactions. On CPU the whole step is one compiled kernel per table (kernels/optim.py:
distinct rows through a scratch slot per table row, no sort), which halves that epoch again; the
tensor ops above remain CUDA's path and the tests' reference (benchmarks/results/profile.md).

Sparse tables take no optimiser weight decay (PyTorch's sparse optimisers have none): regularise
them through the model's own L2 on the batch's embeddings (`reg`), as every model here does.

Example:
    >>> opts = Optimizers(model, cfg)     # doctest: +SKIP
    >>> opts.zero_grad(); loss.backward(); opts.step(); opts.epoch_end()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from crossrec import kernels
from crossrec.collectives import split_parameters  # noqa: F401  (named here too: the optimisers' split)
from crossrec.errors import ConfigError
from crossrec.integrity import optimizer_state_from_tensors, optimizer_state_to_tensors
from crossrec.models.base import TrainsEncoder
from crossrec.training.config import sparse_kind


class _RowOptimizer(torch.optim.Optimizer):
    """The loop the row-sparse optimisers share: every parameter with a gradient must have a sparse
    (row) gradient, whose uncoalesced row indices and rows go to `update`."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} takes sparse gradients (nn.Embedding(sparse=True)); "
                        "use a dense optimiser for dense ones"
                    )
                self.update(p, p.grad._indices()[0], p.grad._values(), group)

    def update(self, p: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError


class RowAdam(_RowOptimizer):
    """Lazy Adam for parameters with row-sparse gradients (sparse `nn.Embedding` weights): the
    update of `torch.optim.SparseAdam`, on dense blocks of the touched rows."""

    def __init__(
        self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or not eps > 0:
            raise ValueError(f"RowAdam: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.compiled = (
            True  # on CPU, the step by one compiled kernel (kernels/optim.py); the tensor path is the reference
        )
        self._slots: dict[int, np.ndarray] = {}  # the kernel's scratch, per table

    def _compiled(self, p: torch.Tensor, vals: torch.Tensor, state: dict[str, Any]) -> bool:
        return (
            self.compiled
            and p.device.type == "cpu"
            and p.dtype == vals.dtype == torch.float32
            and p.is_contiguous()
            and all(state[k].is_contiguous() for k in ("exp_avg", "exp_avg_sq"))
        )

    def update(self, p: torch.Tensor, idx: torch.Tensor, vals: torch.Tensor, group: dict[str, Any]) -> None:
        b1, b2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        if idx.numel() == 0:
            return
        step_size = group["lr"] * math.sqrt(1 - b2 ** state["step"]) / (1 - b1 ** state["step"])
        if self._compiled(p, vals, state):
            kernels.threads()
            slot = self._slots.get(id(p))
            if slot is None or len(slot) != p.shape[0]:
                slot = self._slots[id(p)] = np.full(p.shape[0], -1, dtype=np.int64)
            kernels.get("row_adam")(
                p.detach().view(p.shape[0], -1).numpy(),
                state["exp_avg"].view(p.shape[0], -1).numpy(),
                state["exp_avg_sq"].view(p.shape[0], -1).numpy(),
                idx.contiguous().numpy(),
                vals.contiguous().view(len(idx), -1).numpy(),
                slot,
                step_size,
                b1,
                b2,
                group["eps"],
            )
            return
        rows, inv = torch.unique(idx, return_inverse=True)
        g = torch.zeros((len(rows),) + tuple(p.shape[1:]), dtype=vals.dtype, device=vals.device)
        g.index_add_(0, inv, vals)
        m = state["exp_avg"].index_select(0, rows).mul_(b1).add_(g, alpha=1 - b1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(g, g, value=1 - b2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        # index_add_ with alpha= is slower than scaling first (torch 2.x on CPU)
        p.index_add_(0, rows, m.div_(v.sqrt_().add_(group["eps"])).mul_(-step_size))


class RowSGD(_RowOptimizer):
    """Plain SGD for sparse embedding tables: `w.index_add_(rows, -lr * g)` on the uncoalesced
    gradient (repeated rows sum, exactly as SGD on the coalesced gradient), without the sort that
    adding a sparse tensor to a dense one costs."""

    def __init__(self, params: Any, lr: float = 0.05) -> None:
        if not lr > 0:
            raise ValueError(f"RowSGD: lr={lr}")
        super().__init__(params, {"lr": lr})

    def update(self, p: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor, group: dict[str, Any]) -> None:
        p.index_add_(0, rows, grads * -group["lr"])


class RowAdagrad(_RowOptimizer):
    """Row-wise Adagrad for sparse embedding tables: one accumulator per row (not per entry), the
    mean squared gradient of the row, as FBGEMM / TorchRec's exact row-wise Adagrad computes it:
    a row's occurrences in the batch are summed first (the coalesced gradient), so a sharded fit
    (training/sharding.py, TorchRec's optimiser) and a replicated one take the same step. The state
    is one float per row instead of Adam's two tables of the embedding's size.

    update, per distinct row r of the batch with g[r] the sum of its occurrences' gradients:
        s[r] += mean_j g[r, j]^2;  w[r] -= lr * g[r] / (sqrt(s[r]) + eps)
    """

    def __init__(self, params: Any, lr: float = 0.05, eps: float = 1e-8, initial_accumulator: float = 0.0) -> None:
        if not lr > 0 or not eps > 0 or initial_accumulator < 0:
            raise ValueError(f"RowAdagrad: lr={lr}, eps={eps}, initial_accumulator={initial_accumulator}")
        super().__init__(params, {"lr": lr, "eps": eps, "initial_accumulator": initial_accumulator})

    def accumulator(self, p: torch.Tensor) -> torch.Tensor:
        """[rows] the accumulator of table `p` (created on first use; `train.fused` updates it in place)."""
        state = self.state[p]
        if "sum" not in state:
            init = float(self.param_groups[0]["initial_accumulator"])
            state["sum"] = torch.full((p.shape[0],), init, dtype=p.dtype, device=p.device)
        return state["sum"]

    def update(self, p: torch.Tensor, rows: torch.Tensor, grads: torch.Tensor, group: dict[str, Any]) -> None:
        acc = self.accumulator(p)
        if rows.numel() == 0:
            return
        flat = grads.reshape(len(rows), -1)
        distinct, inverse = torch.unique(rows, return_inverse=True)
        g = flat.new_zeros(len(distinct), flat.shape[1]).index_add_(0, inverse, flat)  # coalesced
        acc.index_add_(0, distinct, torch.linalg.vector_norm(g, dim=1).square_().div_(g.shape[1]))
        scale = acc.index_select(0, distinct).sqrt_().add_(group["eps"]).reciprocal_().mul_(-group["lr"])
        p.index_add_(0, distinct, (g * scale.unsqueeze(1)).view(len(distinct), *grads.shape[1:]))


class Optimizers:
    """The dense and the sparse optimiser of one model, each with its LR scheduler."""

    def __init__(self, model: nn.Module, cfg: Any) -> None:
        dense, sparse = split_parameters(model)
        # Parameters with a learning rate of their own (a fine-tuned language model): extra groups.
        own = [(ps, lr) for ps, lr in (model.own_lr() if isinstance(model, TrainsEncoder) else []) if ps]
        taken = {id(p) for ps, _ in own for p in ps}
        groups: list[dict[str, Any]] = [{"params": [p for p in dense if id(p) not in taken]}]
        groups += [{"params": ps, "lr": lr} for ps, lr in own]
        groups = [g for g in groups if g["params"]]
        self.opts: list[torch.optim.Optimizer] = []
        self.sparse: torch.optim.Optimizer | None = None  # the row optimiser of the sparse tables
        if groups:
            self.opts.append(self._dense(groups, cfg))
        if sparse:
            lr = getattr(cfg, "sparse_lr", 0.0) or cfg.lr
            rows = {"sgd": RowSGD, "adagrad": RowAdagrad}.get(sparse_kind(cfg), RowAdam)
            self.sparse = rows(sparse, lr=lr)
            self.opts.append(self.sparse)
        if not self.opts:
            raise ConfigError("the model has no trainable parameters (every one is frozen: check transfer.freeze)")
        self.scheds = [self._scheduler(o, cfg) for o in self.opts]
        self.dense = dense
        self.grad_clip = cfg.grad_clip

    @staticmethod
    def _dense(params: list[dict[str, Any]], c: Any) -> torch.optim.Optimizer:
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    @staticmethod
    def _scheduler(opt: torch.optim.Optimizer, c: Any) -> torch.optim.lr_scheduler.LRScheduler | None:
        if c.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        if c.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
        if c.scheduler == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=c.gamma)
        return None

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.grad_clip > 0 and self.dense:
            nn.utils.clip_grad_norm_(self.dense, self.grad_clip)  # dense parameters only
        for o in self.opts:
            o.step()

    def epoch_end(self) -> None:
        for s in self.scheds:
            if s is not None:
                s.step()

    @property
    def lr(self) -> float:
        return float(self.opts[0].param_groups[0]["lr"])

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (for safetensors) and JSON of every optimiser and scheduler."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"optimizers": [], "schedulers": []}
        for i, (o, s) in enumerate(zip(self.opts, self.scheds)):
            t, m = optimizer_state_to_tensors(o.state_dict())
            tensors.update({f"opt{i}.{k}": v for k, v in t.items()})
            meta["optimizers"].append(m)
            meta["schedulers"].append(None if s is None else s.state_dict())
        return tensors, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        for i, (o, s) in enumerate(zip(self.opts, self.scheds)):
            prefix = f"opt{i}."
            mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            o.load_state_dict(optimizer_state_from_tensors(mine, meta["optimizers"][i]))
            if s is not None and meta["schedulers"][i] is not None:
                s.load_state_dict(meta["schedulers"][i])
