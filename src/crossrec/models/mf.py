"""Matrix factorisation: BPR-MF (pairwise), BCE, sampled softmax, or MSE on explicit ratings.

score(u, i) = <p_u, q_i> (+ b_i + b_u + mu for the MSE/rating variant).

Reference: Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009;
Koren, Bell & Volinsky, "Matrix Factorization Techniques for Recommender Systems", 2009 (ratings).

Example:
    >>> mf = MF(MFConfig(dim=64), sizes)                  # doctest: +SKIP
    >>> mf.score(torch.tensor([0, 1]), category=0).shape  # [2, n_items(0)]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.losses import l2_penalty, mse_loss, pair_loss, warm_start_bias
from crossrec.models.scoring import dot_scores
from crossrec.typed import Checked, Size


@dataclass(frozen=True)
class MFConfig(Checked):
    dim: Size = 64  # (int) latent factors
    loss: Literal["bpr", "bce", "softmax", "mse"] = "bpr"  # (str) bpr | bce | softmax | mse (explicit ratings)
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std; small keeps rarely-seen items from ranking on noise


@register("mf", MFConfig, paper="Rendle et al., UAI 2009 (BPR-MF)")
class MF(nn.Module):
    """User and item factors; a two-tower model (user_vectors / item_vectors)."""

    bias_ready: Tensor  # a buffer (nn.Module's attribute lookup cannot type it)

    def __init__(self, config: MFConfig, sizes: Sizes) -> None:
        super().__init__()
        self.config = config
        self.sizes = sizes
        self.user_emb = nn.Embedding(sizes.n_users, config.dim, sparse=True)
        self.item_emb = nn.Embedding(sizes.n_items, config.dim, sparse=True)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        self.item_bias = nn.Parameter(torch.zeros(sizes.n_items))
        self.user_bias = nn.Parameter(torch.zeros(sizes.n_users))
        self.global_bias = nn.Parameter(torch.zeros(()))
        # MSE: the global bias starts at the mean rating of the first training batch, so the
        # per-user/per-item biases and factors model deviations instead of absorbing the offset.
        self.register_buffer("bias_ready", torch.zeros((), dtype=torch.bool))
        self.index = CategoryIndex(sizes)

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self.user_emb(users)  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        return self.item_emb(self.index[category])  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self.index[category]
        s = dot_scores(self.user_emb(users), self.item_emb.weight[idx])  # [B, n_items(c)]
        if self.config.loss == "mse":
            s = s.add_(self.item_bias[idx]).add_(self.user_bias[users].unsqueeze(1) + self.global_bias)
        return s

    @property
    def predicts_ratings(self) -> bool:
        """True when trained on explicit ratings (loss='mse'): only then is predict_rating a rating."""
        return self.config.loss == "mse"

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings (meaningful with loss='mse')."""
        p = (self.user_emb(users) * self.item_emb(items)).sum(-1)
        return p + self.item_bias[items] + self.user_bias[users] + self.global_bias

    def shardable_tables(self) -> list[str]:
        """The tables `train.sharding` may move onto TorchRec (training/sharding.py): both, where
        training reads them only by lookup (MF's own loss; a subclass with its own loss: none)."""
        return ["user_emb", "item_emb"] if type(self).loss is MF.loss else []

    def fused_tables(self) -> tuple[Tensor, Tensor, float] | None:
        """(user table, item table, reg) for `train.fused` (training/fused.py), or None when the
        loss is not BPR or a subclass has its own loss."""
        if self.config.loss != "bpr" or type(self).loss is not MF.loss:
            return None
        return self.user_emb.weight, self.item_emb.weight, self.config.reg

    @torch.no_grad()
    def manual_backward(self, batch: Batch) -> Tensor | None:
        """BPR's gradients by hand, no autograd graph: sets the sparse `.grad` of both tables to
        what `loss(batch).backward()` would (a test checks it step by step) and returns the detached
        loss. None for the other losses (the trainer then uses autograd). A step is then one gather
        per table, two dot products, a sigmoid and a few fused multiply-adds: no graph, no
        intermediate [B, d] tensors beyond the gradients themselves (benchmarks/results/profile.md)."""
        if self.config.loss != "bpr" or type(self).loss is not MF.loss:  # a subclass with its own loss
            return None
        users, neg = batch.users, batch.neg_items  # [B], [B, K]
        n_b, n_k = neg.shape
        items = torch.cat([batch.pos_items, neg.reshape(-1)])  # positives, then the negatives row-major
        u = self.user_emb.weight.index_select(0, users)  # [B, d]
        e = self.item_emb.weight.index_select(0, items)  # [B (1 + K), d]
        p, n = e[:n_b], e[n_b:].view(n_b, n_k, -1)
        x = torch.linalg.vecdot(u, p).unsqueeze(1) - torch.linalg.vecdot(u.unsqueeze(1), n)  # [B, K]
        reg, r = self.config.reg, 2 * self.config.reg / n_b
        loss = (
            torch.nn.functional.softplus(-x).mean()
            + reg * (torch.linalg.vector_norm(u).square() + torch.linalg.vector_norm(e).square()) / n_b
        )
        g = torch.sigmoid(-x).mul_(-1.0 / (n_b * n_k))  # d loss / d x
        gsum = g.sum(1, keepdim=True)  # [B, 1]
        if self.user_emb.weight.requires_grad:  # a frozen table (transfer freezing) gets no gradient
            grad_u = torch.mul(u, r).addcmul_(p, gsum)
            if n_k == 1:
                grad_u.addcmul_(n.squeeze(1), g, value=-1)
            else:
                grad_u.sub_((g.unsqueeze(2) * n).sum(1))
            self.user_emb.weight.grad = _row_grad(users, grad_u, self.user_emb.weight)
        if self.item_emb.weight.requires_grad:
            grad_e = torch.mul(e, r)
            grad_e[:n_b].addcmul_(u, gsum)
            grad_e[n_b:].view(n_b, n_k, -1).addcmul_(u.unsqueeze(1), g.unsqueeze(2), value=-1)
            self.item_emb.weight.grad = _row_grad(items, grad_e, self.item_emb.weight)
        return loss

    def loss(self, batch: Batch) -> Tensor:
        u = self.user_emb(batch.users)  # [B, d]
        if self.config.loss == "mse":
            p = self.item_emb(batch.pos_items)  # [B, d]
        else:  # one lookup of the item table per step: a sharded table's optimiser steps once per lookup
            n_b = len(batch.pos_items)
            e = self.item_emb(torch.cat([batch.pos_items, batch.neg_items.reshape(-1)]))
            p, n = e[:n_b], e[n_b:].view(*batch.neg_items.shape, -1)  # [B, d], [B, n_neg, d]
        reg = self.config.reg * l2_penalty(u, p)
        if self.config.loss == "mse":
            if batch.ratings is None:
                raise ConfigError("mf.loss='mse' needs explicit ratings in the data")
            warm_start_bias(self.global_bias, self.bias_ready, batch.ratings)
            bias_reg = self.config.reg * l2_penalty(self.user_bias[batch.users], self.item_bias[batch.pos_items])
            return mse_loss(self.predict_rating(batch.users, batch.pos_items), batch.ratings) + reg + bias_reg
        pos = (u * p).sum(-1)
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        return pair_loss(self.config.loss, pos, neg) + reg + self.config.reg * l2_penalty(n)


def _row_grad(rows: Tensor, values: Tensor, weight: Tensor) -> Tensor:
    """The uncoalesced sparse row gradient an nn.Embedding(sparse=True) lookup would produce."""
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape, is_coalesced=False, check_invariants=False)
