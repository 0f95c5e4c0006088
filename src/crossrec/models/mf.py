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
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.losses import l2_penalty, mse_loss, pair_loss, warm_start_bias
from crossrec.typed import Checked


@dataclass(frozen=True)
class MFConfig(Checked):
    dim: int = 64  # (int) latent factors
    loss: Literal["bpr", "bce", "softmax", "mse"] = "bpr"  # (str) bpr | bce | softmax | mse (explicit ratings)
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std; small keeps rarely-seen items from ranking on noise


@register("mf", MFConfig, paper="Rendle et al., UAI 2009 (BPR-MF)")
class MF(nn.Module):
    """User and item factors; a two-tower model (user_vectors / item_vectors)."""

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
        s = self.user_emb(users) @ self.item_emb.weight[idx].T  # [B, n_items(c)]
        if self.config.loss == "mse":
            s = s + self.item_bias[idx] + self.user_bias[users].unsqueeze(1) + self.global_bias
        return s

    @property
    def predicts_ratings(self) -> bool:
        """True when trained on explicit ratings (loss='mse'): only then is predict_rating a rating."""
        return self.config.loss == "mse"

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings (meaningful with loss='mse')."""
        p = (self.user_emb(users) * self.item_emb(items)).sum(-1)
        return p + self.item_bias[items] + self.user_bias[users] + self.global_bias

    def loss(self, batch: Batch) -> Tensor:
        u = self.user_emb(batch.users)  # [B, d]
        p = self.item_emb(batch.pos_items)  # [B, d]
        reg = self.config.reg * l2_penalty(u, p)
        if self.config.loss == "mse":
            if batch.ratings is None:
                raise ValueError("mf.loss='mse' needs explicit ratings in the data")
            warm_start_bias(self.global_bias, self.bias_ready, batch.ratings)
            bias_reg = self.config.reg * l2_penalty(self.user_bias[batch.users], self.item_bias[batch.pos_items])
            return mse_loss(self.predict_rating(batch.users, batch.pos_items), batch.ratings) + reg + bias_reg
        n = self.item_emb(batch.neg_items)  # [B, n_neg, d]
        pos = (u * p).sum(-1)
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        return pair_loss(self.config.loss, pos, neg) + reg + self.config.reg * l2_penalty(n)
