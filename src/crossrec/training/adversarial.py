"""APR-style adversarial training: the model's own loss under a worst-case embedding perturbation.

APR (He et al., "Adversarial Personalized Ranking for Recommendation", SIGIR 2018) adds to the
loss L(theta) the loss at the adversarially perturbed embeddings, L(theta + Delta_adv), with

    Delta_adv = eps * g / ||g||,   g = dL / dDelta   (the fast-gradient direction, held constant)

so the model learns to rank robustly inside an eps-ball around its embeddings. This module does it
for any model, without touching the model's code: forward hooks on every `nn.Embedding` record the
looked-up vectors during the ordinary `model.loss(batch)` (`capture_lookups`); `adversarial_loss`
takes the gradient of that loss with respect to them, normalises it per looked-up row (L2 over the
last dimension), and runs `model.loss(batch)` a second time under hooks that add `eps * g / ||g||`
to each lookup's output. Calls are matched by their index per module: the second pass must look up
the same modules the same number of times, in the same order, as the first (an error says so
otherwise). The trainer optimises `loss + train.adv_reg * adv_loss` from epoch `train.adv_start`.

Limits:
- Only lookups through `nn.Embedding.forward` (including subclasses), and the outputs of modules
  marked `apr_point = True` (the flagship's fused text + ID item vectors), are perturbed. A model that
  indexes `.weight` directly (`emb.weight[idx]`, a graph propagation over the whole table as in
  LightGCN) is not perturbed there; a model with no hooked lookup in its loss is an error.
- Lookups that need no gradient (a frozen table, a no_grad block) and rows at an embedding's
  `padding_idx` are not perturbed. When no lookup needs a gradient (every table frozen), Delta = 0
  and the adversarial loss is the clean loss itself (no second pass).
- Whatever the loss computes from the perturbed vectors is perturbed with them, including the
  model's own L2 on the batch's embeddings (APR's reference code keeps the regulariser clean).
- Stochastic layers (dropout) draw fresh masks in the second pass; control flow that changes the
  number of lookups between the passes is an error.

Example:
    >>> with capture_lookups(model) as lookups:                        # doctest: +SKIP
    ...     loss = model.loss(batch)
    >>> adv = adversarial_loss(model, batch, loss, eps=0.5, lookups=lookups)   # doctest: +SKIP
    >>> (loss + 1.0 * adv).backward()                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.models.base import PerturbedByAPR, Trainable


@dataclass
class Lookups:
    """Outputs of every `nn.Embedding` call during one forward, per module in call order.

    `outputs[m][i]` is the output of the i-th call of module m; `pad[m][i]` marks the rows whose
    index was the module's padding_idx (None when the module has none).
    """

    outputs: dict[nn.Module, list[Tensor]] = field(default_factory=dict)
    pad: dict[nn.Module, list[Tensor | None]] = field(default_factory=dict)

    def counts(self) -> dict[nn.Module, int]:
        return {m: len(v) for m, v in self.outputs.items()}


def _embeddings(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The perturbed points: every nn.Embedding, and every module marked `apr_point = True` (e.g.
    the flagship's fused item vectors, where text, ID and image meet)."""
    return [(name, m) for name, m in model.named_modules() if _perturbed(m)]


def _perturbed(m: nn.Module) -> bool:
    return isinstance(m, nn.Embedding) or (isinstance(m, PerturbedByAPR) and m.apr_point)


@contextmanager
def capture_lookups(model: nn.Module) -> Iterator[Lookups]:
    """Record every nn.Embedding output of `model` while the block runs; hooks removed on exit."""
    lookups = Lookups()

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        lookups.outputs.setdefault(module, []).append(output)
        pad_idx = getattr(module, "padding_idx", None)
        lookups.pad.setdefault(module, []).append(None if pad_idx is None else inputs[0] == pad_idx)

    handles = [m.register_forward_hook(hook) for _, m in _embeddings(model)]
    try:
        yield lookups
    finally:
        for h in handles:
            h.remove()


def adversarial_loss(model: nn.Module, batch: Any, loss: Tensor, eps: float, lookups: Lookups) -> Tensor:
    """`model.loss(batch)` with every embedding lookup moved by eps along its normalised loss gradient.

    Args:
        model: the model whose `loss(batch)` produced `loss`.
        batch: the same batch.
        loss: the clean loss, computed under `capture_lookups(model)` (its graph is kept: the
            caller back-propagates `loss + adv_reg * adv_loss`).
        eps: perturbation size (L2 norm per looked-up row).
        lookups: what `capture_lookups` recorded during that forward.

    Returns:
        The perturbed loss (a scalar in the autograd graph of the model's parameters).
    """
    names = {m: n for n, m in _embeddings(model)}
    if not lookups.outputs:
        raise RuntimeError(
            f"adversarial training (train.adv_eps > 0): {type(model).__name__}.loss looked up no "
            "nn.Embedding; only lookups through nn.Embedding.forward can be perturbed"
        )
    keys = [(m, i) for m, outs in lookups.outputs.items() for i, o in enumerate(outs) if o.requires_grad]
    if not keys:
        return loss  # nothing trainable was looked up (frozen tables): Delta = 0
    deltas = _perturbations(loss, eps, lookups, keys)
    adv, calls = _perturbed_loss(model, batch, names, deltas)
    _check_same_lookups(names, calls, lookups)
    return adv


def _perturbations(
    loss: Tensor, eps: float, lookups: Lookups, keys: list[tuple[nn.Module, int]]
) -> dict[nn.Module, list[Tensor | None]]:
    """Per embedding module and call, the detached shift of each looked-up row: eps along the
    normalised gradient of `loss` (0 where the gradient is 0 or the row is padding); None for a
    lookup without a gradient. `keys`: the (module, call) lookups that require grad."""
    grads = torch.autograd.grad(loss, [lookups.outputs[m][i] for m, i in keys], retain_graph=True, allow_unused=True)
    deltas: dict[nn.Module, list[Tensor | None]] = {m: [None] * len(o) for m, o in lookups.outputs.items()}
    for (m, i), g in zip(keys, grads):
        if g is None:
            continue
        d = (eps * F.normalize(g, dim=-1)).detach()  # per row: eps * g / ||g|| (0 where g = 0)
        pad = lookups.pad[m][i]
        if pad is not None:
            d = d.masked_fill(pad.unsqueeze(-1), 0.0)
        deltas[m][i] = d
    return deltas


def _perturbed_loss(
    model: nn.Module, batch: Any, names: dict[nn.Module, str], deltas: dict[nn.Module, list[Tensor | None]]
) -> tuple[Tensor, dict[nn.Module, int]]:
    """`model.loss(batch)` with each embedding module's call j shifted by `deltas[module][j]`;
    returns it and how often each module was called (a call the clean pass did not make, or a
    shape it did not return, is a RuntimeError)."""
    calls: dict[nn.Module, int] = {m: 0 for m in names}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor | None:
        i = calls[module]
        calls[module] = i + 1
        mine = deltas.get(module, [])
        if i >= len(mine):
            raise RuntimeError(
                f"adversarial training: the perturbed pass looked up {names[module]!r} more often than the "
                f"clean pass ({len(mine)} times); model.loss must make the same lookups on the same batch"
            )
        d = mine[i]
        if d is None:
            return None
        if d.shape != output.shape:
            raise RuntimeError(
                f"adversarial training: call {i} of {names[module]!r} returned shape {tuple(output.shape)} in "
                f"the perturbed pass but {tuple(d.shape)} in the clean pass"
            )
        return output + d

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        adv = cast(Trainable, model).loss(batch)
    finally:
        for h in handles:
            h.remove()
    return adv, calls


def _check_same_lookups(names: dict[nn.Module, str], calls: dict[nn.Module, int], lookups: Lookups) -> None:
    """Refuse a perturbed pass that called an embedding module a different number of times than the clean one
    (`lookups`): the two passes must make the same lookups."""
    expected = lookups.counts()
    for m, n in calls.items():
        if n != expected.get(m, 0):
            raise RuntimeError(
                f"adversarial training: {names[m]!r} was looked up {expected.get(m, 0)} times in the clean pass "
                f"but {n} times in the perturbed pass; model.loss must make the same lookups on the same batch"
            )
