"""LightGCN: user and item embeddings smoothed over the user-item graph, no transforms or activations.

e^(k+1) = D^-1/2 A D^-1/2 e^(k) over the bipartite graph of (users + items); the final embedding of
a node is the mean of layers 0..L, and score(u, i) = <e_u, e_i>. The graph comes from the training
split (`setup(bundle, categories)`): restricted to one category (single mode) it only links that
category's items; over all categories (pooled) it links every category through the shared users, so
propagation carries a user's history in one category into the others.

Reference: He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020.

Example:
    >>> gcn = LightGCN(LightGCNConfig(dim=64, n_layers=3), sizes)  # doctest: +SKIP
    >>> gcn.setup(bundle)                                          # pooled graph  # doctest: +SKIP
    >>> gcn.score(torch.tensor([0, 1]), category=0).shape          # [2, n_items(0)]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError, InputDataError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.graph import (
    TensorCache,
    load_graph_buffers,
    normalized_adjacency,
    sparse_graph,
)
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.typed import Checked, Size

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class LightGCNConfig(Checked):
    dim: Size = 64  # (int) embedding size
    n_layers: int = 3  # (int) propagation layers L; the final embedding averages layers 0..L
    reg: float = 1e-4  # (float) L2 on the batch's layer-0 embeddings (lambda)
    loss: Literal["bpr", "bce", "softmax"] = "bpr"  # (str) bpr | bce | softmax
    init_std: float = 0.1  # (float) normal init std of the layer-0 embeddings


@register("lightgcn", LightGCNConfig, paper="He et al., SIGIR 2020 (LightGCN)")
class LightGCN(nn.Module):
    """Graph-propagated user/item embeddings; a two-tower model (user_vectors / item_vectors).

    Call `setup(bundle, categories)` before `loss` or `score` (the trainer does): it builds the
    normalised graph, kept as buffers so it travels in the safetensors artifact.

    Example:
        >>> gcn = LightGCN(LightGCNConfig(dim=8), sizes); gcn.setup(bundle)   # doctest: +SKIP
        >>> gcn.loss(batch)                                                   # scalar  # doctest: +SKIP
    """

    # buffers (nn.Module's attribute lookup cannot type them)
    graph_indices_: Tensor
    graph_values_: Tensor

    def __init__(self, config: LightGCNConfig, sizes: Sizes) -> None:
        super().__init__()
        if config.n_layers < 0:
            raise ConfigError(f"lightgcn.n_layers={config.n_layers}; expected >= 0")
        self.config = config
        self.sizes = sizes
        # Dense embeddings: propagation reads and writes gradients to every row, so sparse
        # gradients would save nothing (and the trainer gives dense tables Adam).
        self.user_emb = nn.Embedding(sizes.n_users, config.dim)
        self.item_emb = nn.Embedding(sizes.n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=config.init_std)
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        # The graph: COO of D^-1/2 A D^-1/2, data-dependent nnz (set by setup, adopted on load).
        self.register_buffer("graph_indices_", torch.zeros(2, 0, dtype=torch.int64))  # [2, nnz]
        self.register_buffer("graph_values_", torch.zeros(0))  # [nnz]
        self.index = CategoryIndex(sizes)
        self._graph: TensorCache[Tensor] = TensorCache()  # the sparse adjacency of the graph buffers
        self._final: TensorCache[tuple[Tensor, Tensor]] = TensorCache()  # eval-time propagation

    # ------------------------------------------------------------------ the graph
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Build the normalised graph from the training split of `categories` (None = all, pooled)."""
        rows = bundle.rows("train", categories)
        users = rows["user"].to_numpy().astype(np.int64)
        items = rows["item"].to_numpy().astype(np.int64)
        if len(users) == 0:
            raise InputDataError(f"lightgcn: no training interactions in categories {categories}")
        adj = normalized_adjacency(users, items, self.sizes.n_users, self.sizes.n_items)
        device = self.graph_values_.device
        self.graph_indices_ = torch.from_numpy(np.stack([adj.row, adj.col])).to(device)
        self.graph_values_ = torch.from_numpy(adj.data).to(device)
        self._graph.clear()
        self._final.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        load_graph_buffers(self, state_dict, prefix, (self._graph, self._final))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _adjacency(self) -> Tensor:
        """The sparse [n_users + n_items]^2 graph, rebuilt when the buffers change (setup, load, .to)."""
        idx, val = self.graph_indices_, self.graph_values_
        if val.numel() == 0:
            raise RuntimeError("LightGCN has no graph: call setup(bundle, categories) before loss or score")
        n = self.sizes.n_users + self.sizes.n_items
        return self._graph.get((idx, val), lambda: sparse_graph(idx, val, n), extra=(val.device,))

    def _propagate(self) -> tuple[Tensor, Tensor]:
        """Final embeddings, the mean of layers 0..L: ([n_users, d], [n_items, d])."""
        adj = self._adjacency()
        e = torch.cat([self.user_emb.weight, self.item_emb.weight])  # [n_users + n_items, d]
        total = e
        for _ in range(self.config.n_layers):
            e = torch.sparse.mm(adj, e)
            total = total + e
        final = total / (self.config.n_layers + 1)
        return final[: self.sizes.n_users], final[self.sizes.n_users :]

    def _final_embeddings(self) -> tuple[Tensor, Tensor]:
        """Propagation for scoring: cached in eval mode (cleared by train()/eval() and on load)."""
        if self.training:
            return self._propagate()
        with torch.no_grad():
            tensors = (self.user_emb.weight, self.item_emb.weight, self.graph_indices_, self.graph_values_)
            return self._final.get(tensors, self._propagate)

    def train(self, mode: bool = True) -> LightGCN:
        self._final.clear()  # weights may change while training: re-propagate at the next eval
        return super().train(mode)

    # ------------------------------------------------------------------ the contract

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self._final_embeddings()[0][users]  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        return self._final_embeddings()[1][self.index[category]]  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        user_final, item_final = self._final_embeddings()
        return user_final[users] @ item_final[self.index[category]].T  # [B, n_items(c)]

    def loss(self, batch: Batch) -> Tensor:
        user_final, item_final = self._propagate()  # once per batch, as in the paper
        u = user_final[batch.users]  # [B, d]
        p = item_final[batch.pos_items]  # [B, d]
        n = item_final[batch.neg_items]  # [B, n_neg, d]
        pos = (u * p).sum(-1)  # [B]
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        # The paper regularises the layer-0 embeddings only (the propagation has no weights).
        u0, p0 = self.user_emb(batch.users), self.item_emb(batch.pos_items)  # [B, d]
        reg = l2_penalty(u0, p0, self.item_emb(batch.neg_items))
        return pair_loss(self.config.loss, pos, neg) + self.config.reg * reg
