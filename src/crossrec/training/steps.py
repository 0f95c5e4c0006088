"""Step strategies: how the training loop turns one batch into one optimiser step.

`Trainer.fit` picks one per epoch (`pick_step`) and calls it on every batch; each returns the
batch's clean loss (detached) and, for the adversarial step, the adversarial loss beside it.

- `AutogradStep`: `model.loss(batch)`, backward, average gradients across processes, step.
- `AdversarialStep`: APR (training/adversarial.py): `loss + adv_reg * adv_loss`, where
  `adv_loss` is the loss with every embedding lookup perturbed along its gradient.
- `ManualStep`: the model's own gradients, no autograd: the fused kernel (`train.fused`) or the
  model's `manual_backward` (BPR-MF). A batch it cannot take (it answers None) goes through
  autograd; after a `manual_backward` refusal, so does the rest of the epoch.

Every step refuses a non-finite objective (`FloatingPointError`: lower `train.lr`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from crossrec import collectives
from crossrec.errors import NumericError
from crossrec.models.base import ManualBackward, Trainable
from crossrec.training import fused
from crossrec.training.adversarial import adversarial_loss, capture_lookups
from crossrec.training.config import TrainConfig


def _check_finite(value: Tensor, epoch: int) -> None:
    if not torch.isfinite(value):
        raise NumericError(f"loss became {value.item()} at epoch {epoch}; lower train.lr")


class AutogradStep:
    """loss -> backward -> (averaged) gradients -> optimiser step."""

    def __init__(self, model: nn.Module, opts: Any, epoch: int) -> None:
        self.model, self.opts, self.epoch = model, opts, epoch

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        loss = cast(Trainable, self.model).loss(batch)
        self._apply(loss)
        return loss.detach(), None

    def _apply(self, objective: Tensor) -> None:
        _check_finite(objective, self.epoch)
        self.opts.zero_grad()
        objective.backward()
        collectives.average_gradients(self.model)
        self.opts.step()


class AdversarialStep(AutogradStep):
    """APR's objective: the clean loss plus `adv_reg` times the loss under worst-case lookups."""

    def __init__(self, model: nn.Module, opts: Any, epoch: int, eps: float, reg: float) -> None:
        super().__init__(model, opts, epoch)
        self.eps, self.reg = eps, reg

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        with capture_lookups(self.model) as lookups:
            loss = cast(Trainable, self.model).loss(batch)
        adv = adversarial_loss(self.model, batch, loss, self.eps, lookups)
        self._apply(loss + self.reg * adv)
        return loss.detach(), adv.detach()


class ManualStep(AutogradStep):
    """Hand-written gradients (the fused kernel, or the model's `manual_backward`)."""

    def __init__(self, model: nn.Module, opts: Any, epoch: int, use_fused: bool) -> None:
        super().__init__(model, opts, epoch)
        self.fused = use_fused
        self.manual = model.manual_backward if isinstance(model, ManualBackward) else None

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if self.fused or self.manual is not None:
            self.opts.zero_grad()
            if self.fused:
                loss = fused.step(self.model, batch, self.opts.sparse)
            else:
                assert self.manual is not None
                loss = self.manual(batch)
            if loss is not None:
                _check_finite(loss, self.epoch)
                collectives.average_gradients(self.model)
                self.opts.step()
                return loss, None
            self.manual = None  # this batch (and, without the fused kernel, the epoch) goes through autograd
        return super().__call__(batch)


def pick_step(model: nn.Module, opts: Any, cfg: TrainConfig, epoch: int) -> AutogradStep:
    """The step for `epoch`: adversarial from `adv_start` on (with `adv_eps > 0`), else the
    model's own gradients where it has them (or `train.fused`), else autograd."""
    if cfg.adv_eps > 0 and epoch >= cfg.adv_start:
        return AdversarialStep(model, opts, epoch, cfg.adv_eps, cfg.adv_reg)
    if cfg.fused or isinstance(model, ManualBackward):
        return ManualStep(model, opts, epoch, cfg.fused)
    return AutogradStep(model, opts, epoch)
