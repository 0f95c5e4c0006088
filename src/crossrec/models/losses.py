"""Training objectives on score tensors: scalar means over the batch (or per-row losses).

Example:
    >>> bpr_loss(torch.tensor([2.0]), torch.tensor([[0.5, 1.0]]))  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking: -log sigmoid(s_pos - s_neg), averaged.

    Args:
        pos: [B] positive scores.
        neg: [B, n_neg] negative scores.

    Reference: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.
    """
    return -F.logsigmoid(pos.unsqueeze(1) - neg).mean()


def bce_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """Binary cross-entropy: positives labelled 1, sampled negatives 0 (each averaged, then summed)."""
    return F.softplus(-pos).mean() + F.softplus(neg).mean()


def sampled_softmax_loss(pos: Tensor, neg: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy of the positive against itself + sampled negatives: [B] and [B, n_neg]."""
    logits = torch.cat([pos.unsqueeze(1), neg], dim=1) / temperature
    return -F.log_softmax(logits, dim=1)[:, 0].mean()


def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over rows with a finite target (NaN = unrated rows are skipped)."""
    ok = torch.isfinite(target)
    if not bool(ok.any()):
        return pred.sum() * 0.0
    return F.mse_loss(pred[ok], target[ok])


def warm_start_bias(bias: Tensor, ready: Tensor, ratings: Tensor) -> None:
    """Rating models: on the first batch with ratings, start the global bias at their mean.

    Args:
        bias: the scalar global-bias parameter (set in place, outside autograd).
        ready: a scalar bool buffer, set once the bias has started (saved with the model).
        ratings: the batch's ratings ([B], NaN = unrated).
    """
    if bool(ready):
        return
    rated = ratings[torch.isfinite(ratings)]
    if len(rated):
        with torch.no_grad():
            bias.fill_(float(rated.mean()))
            ready.fill_(True)


def l2_penalty(*tensors: Tensor) -> Tensor:
    """Sum of squared entries divided by the batch size (first dim of the first tensor)."""
    n = max(1, tensors[0].shape[0])
    return torch.stack([t.pow(2).sum() for t in tensors]).sum() / n


def pair_loss(name: str, pos: Tensor, neg: Tensor, reduction: str = "mean") -> Tensor:
    """A ranking loss by name (bpr | bce | softmax) of positives [B] against negatives [B, n_neg].

    `reduction="mean"` gives the batch mean (a scalar); `"none"` the [B] per-row losses, for
    objectives that weight rows (CMF's relation weights, the flagship's w_c).
    """
    if reduction == "none":
        if name == "bpr":
            return -F.logsigmoid(pos.unsqueeze(1) - neg).mean(1)
        if name == "bce":
            return F.softplus(-pos) + F.softplus(neg).mean(1)
        if name == "softmax":
            return -F.log_softmax(torch.cat([pos.unsqueeze(1), neg], dim=1), dim=1)[:, 0]
    elif reduction != "mean":
        raise ValueError(f"reduction={reduction!r}; expected mean or none")
    elif name == "bpr":
        return bpr_loss(pos, neg)
    elif name == "bce":
        return bce_loss(pos, neg)
    elif name == "softmax":
        return sampled_softmax_loss(pos, neg)
    raise ValueError(f"unknown ranking loss {name!r}; expected bpr, bce or softmax")
