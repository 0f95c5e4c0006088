"""NeuMF: generalised MF and an MLP over user/item embeddings, fused by a linear layer, BCE loss.

Reference: He et al., "Neural Collaborative Filtering", WWW 2017.

Example:
    >>> m = NeuMF(NeuMFConfig(dim=32, layers=(64, 32, 16)), sizes)  # doctest: +SKIP
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
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.typed import Checked, Share, Size


@dataclass(frozen=True)
class NeuMFConfig(Checked):
    dim: Size = 32  # (int) GMF embedding size (the MLP embeddings are layers[0] / 2 each)
    layers: tuple[int, ...] = (64, 32, 16)  # (tuple[int]) MLP widths; the first is the input width
    dropout: Share = 0.0  # (float) dropout between MLP layers
    reg: float = 1e-5  # (float) L2 on the batch's embeddings
    loss: Literal["bce", "bpr", "softmax"] = "bce"  # (str) bce (as in the paper) | bpr | softmax
    score_chunk: Size = 2_000_000  # (int) max user-item pairs per MLP pass when scoring a category


@register("neumf", NeuMFConfig, paper="He et al., WWW 2017 (Neural Collaborative Filtering)")
class NeuMF(nn.Module):
    """GMF + MLP with a fused prediction layer."""

    def __init__(self, config: NeuMFConfig, sizes: Sizes) -> None:
        super().__init__()
        if len(config.layers) < 1 or config.layers[0] % 2:
            raise ConfigError(f"neumf.layers={config.layers}; the first width must be even")
        self.config = config
        self.sizes = sizes
        half = config.layers[0] // 2
        self.gmf_user = nn.Embedding(sizes.n_users, config.dim, sparse=True)
        self.gmf_item = nn.Embedding(sizes.n_items, config.dim, sparse=True)
        self.mlp_user = nn.Embedding(sizes.n_users, half, sparse=True)
        self.mlp_item = nn.Embedding(sizes.n_items, half, sparse=True)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=0.01)
        blocks: list[nn.Module] = []
        for a, b in zip(config.layers[:-1], config.layers[1:]):
            blocks += [nn.Dropout(config.dropout), nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*blocks)
        self.head = nn.Linear(config.dim + config.layers[-1], 1)
        self.index = CategoryIndex(sizes)

    def _pair_scores(self, users: Tensor, items: Tensor) -> Tensor:
        """Scores of aligned (user, item) index tensors of any equal shape."""
        gmf = self.gmf_user(users) * self.gmf_item(items)
        mlp = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1))
        return self.head(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self.index[category]
        n = len(idx)
        rows = max(1, self.config.score_chunk // max(n, 1))
        out = []
        for i in range(0, len(users), rows):  # chunks bound the [B, n, width] activations
            u = users[i : i + rows]
            out.append(self._pair_scores(u.unsqueeze(1).expand(-1, n), idx.unsqueeze(0).expand(len(u), -1)))
        return torch.cat(out) if out else torch.zeros(0, n)

    def loss(self, batch: Batch) -> Tensor:
        pos = self._pair_scores(batch.users, batch.pos_items)  # [B]
        neg_users = batch.users.unsqueeze(1).expand_as(batch.neg_items)
        neg = self._pair_scores(neg_users, batch.neg_items)  # [B, n_neg]
        reg = l2_penalty(
            self.gmf_user(batch.users),
            self.gmf_item(batch.pos_items),
            self.mlp_user(batch.users),
            self.mlp_item(batch.pos_items),
        )
        return pair_loss(self.config.loss, pos, neg) + self.config.reg * reg
