"""BiTGCF: per-category graph propagation with a user feature-transfer step after every layer.

BiTGCF runs LightGCN-style propagation over each domain's own user-item graph and, after every
layer, lets each overlapping user's embeddings in the two domains exchange information (the
feature transfer layer), so what a user does in one domain shapes their representation in the
other, in both directions. For N categories:

- Nodes: user u has one node (u, c) per category c (layer-0 embedding E_{u,c}, row u * N + c of one
  table), items one node each. Category c's graph links (u, c) to the category-c items u has in
  the training split, normalised D^-1/2 A D^-1/2 per category. The N graphs are disjoint, so they
  are stored as one block-diagonal sparse matrix and propagated with one spmm per layer.
- Transfer, after each layer's propagation, for every user and category:
      h_{u,c} <- lambda_{u,c} * h_{u,c} + (1 - lambda_{u,c}) * mean_{c' != c, u active in c'} h_{u,c'}
  The mean runs over the other categories where u has edges (elsewhere the propagated h is zero
  and would only shrink the mix). lambda is a constant (`transfer="constant"`, `lam`) or the
  paper's count-based variant (`transfer="count"`): lambda_{u,c} = n_{u,c} / sum_c' n_{u,c'}, with
  n_{u,c} the number of distinct training items of u in c; for two categories that is exactly the
  paper's n_A / (n_A + n_B). In either variant a user with no edges in c has lambda = 0 there (they
  receive the other categories' representation) and a user active in c alone has lambda = 1.
- A user with no edges in c has no node in c's graph: their layer-0 embedding there is masked to
  zero, so their final embedding in c is purely transferred.
- Final embeddings: the mean of layers 0..L (LightGCN's layer combination); score(u, i) =
  <h_{u,c(i)}, h_i>, trained with BPR (or BCE / sampled softmax) on in-category negatives, L2 on
  the batch's layer-0 embeddings.

`setup(bundle, categories)` adds `categories` (None = all) to the categories the model covers (a
persistent [N] bool buffer) and rebuilds the graph, the activity and lambda from the training rows
of every covered category. One-category training (single mode) therefore sees one graph and no
transfer (plain LightGCN), and staged transfer (source, then target) keeps the source graph
during the target stage. Everything derived is a buffer, so it travels in the safetensors artifact.

Reference: Liu et al., "Cross-domain Recommendation via Bi-directional Transfer Graph
Collaborative Filtering Networks", CIKM 2020.

Example:
    >>> m = BiTGCF(BiTGCFConfig(dim=64, n_layers=3, transfer="count"), sizes)  # doctest: +SKIP
    >>> m.setup(bundle)                                                          # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), category=1).shape                          # [2, n_items(1)]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError, InputDataError
from crossrec.models.base import covered_training_rows, register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.graph import (
    SymmetricSpMM,
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
class BiTGCFConfig(Checked):
    dim: Size = 64  # (int) embedding size
    n_layers: int = 3  # (int) propagation layers L, each followed by the transfer step
    transfer: Literal["constant", "count"] = (
        "constant"  # (str) lambda of the transfer step: constant (= lam) | count (n_uc / n_u)
    )
    lam: float = 0.8  # (float) constant lambda: the share of a user's own category in the mix
    reg: float = 1e-4  # (float) L2 on the batch's layer-0 embeddings (lambda)
    loss: Literal["bpr", "bce", "softmax"] = "bpr"  # (str) bpr | bce | softmax
    init_std: float = 0.1  # (float) normal init std of the layer-0 embeddings


@register("bitgcf", BiTGCFConfig, paper="Liu et al., CIKM 2020 (BiTGCF)")
class BiTGCF(nn.Module):
    """Per-category LightGCN with a bidirectional user transfer step per layer; a two-tower model.

    Call `setup(bundle, categories)` before `loss` or `score` (the trainer does).

    Example:
        >>> m = BiTGCF(BiTGCFConfig(dim=8, n_layers=2), sizes); m.setup(bundle)  # doctest: +SKIP
        >>> m.loss(batch)                                                        # scalar  # doctest: +SKIP
    """

    # buffers (nn.Module's attribute lookup cannot type them)
    graph_indices_: Tensor
    graph_values_: Tensor
    covered_: Tensor
    active_: Tensor
    lambda_: Tensor

    def __init__(self, config: BiTGCFConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if not 0.0 <= c.lam <= 1.0:
            raise ConfigError(f"bitgcf.lam={c.lam}; expected a value in [0, 1]")
        if c.n_layers < 0:
            raise ConfigError(f"bitgcf.n_layers={c.n_layers}; expected >= 0")
        self.config = c
        self.sizes = sizes
        n_cat = sizes.n_categories
        # Dense: propagation reads and writes every row (as in LightGCN).
        self.user_emb = nn.Embedding(sizes.n_users * n_cat, c.dim)  # E_{u,c} at row u * N + c
        self.item_emb = nn.Embedding(sizes.n_items, c.dim)
        nn.init.normal_(self.user_emb.weight, std=c.init_std)
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        # The block-diagonal graph over (user nodes + items): data-dependent nnz (setup, adopted on load).
        self.register_buffer("graph_indices_", torch.zeros(2, 0, dtype=torch.int64))  # [2, nnz]
        self.register_buffer("graph_values_", torch.zeros(0))  # [nnz]
        self.register_buffer("covered_", torch.zeros(n_cat, dtype=torch.bool))  # [N]
        self.register_buffer("active_", torch.zeros(sizes.n_users, n_cat, dtype=torch.bool))  # [n_users, N]
        self.register_buffer("lambda_", torch.ones(sizes.n_users, n_cat))  # [n_users, N] effective lambda
        self.index = CategoryIndex(sizes)
        self._graph: TensorCache[Tensor] = TensorCache()  # the sparse adjacency (CSR) of the graph buffers
        self._final: TensorCache[tuple[Tensor, Tensor]] = TensorCache()  # eval-time propagation

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Cover `categories` too (None = all); rebuild graph, activity and lambda from their training rows."""
        n_cat, n_users = self.sizes.n_categories, self.sizes.n_users
        covered, rows = covered_training_rows(bundle, self.covered_, categories)
        users = rows["user"].to_numpy().astype(np.int64)
        items = rows["item"].to_numpy().astype(np.int64)
        cats = rows["category"].to_numpy().astype(np.int64)
        if len(users) == 0:
            raise InputDataError(f"bitgcf: no training interactions in categories {np.flatnonzero(covered).tolist()}")
        nodes = users * n_cat + cats
        adj = normalized_adjacency(nodes, items, n_users * n_cat, self.sizes.n_items)
        # n_{u,c}: distinct training items (the user node's degree).
        pairs = np.unique(nodes * self.sizes.n_items + items)
        counts = np.bincount(pairs // self.sizes.n_items, minlength=n_users * n_cat).reshape(n_users, n_cat)
        active = counts > 0
        others = active.sum(1, keepdims=True) - active  # [n_users, N] active other categories
        if self.config.transfer == "count":
            lam = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        else:
            lam = np.where(active, self.config.lam, 0.0)
        lam = np.where(others == 0, 1.0, lam)  # nothing to receive: keep one's own
        device = self.graph_values_.device
        with torch.no_grad():
            self.graph_indices_ = torch.from_numpy(np.stack([adj.row, adj.col])).to(device)
            self.graph_values_ = torch.from_numpy(adj.data).to(device)
            self.covered_.copy_(torch.from_numpy(covered))
            self.active_.copy_(torch.from_numpy(active))
            self.lambda_.copy_(torch.from_numpy(lam.astype(np.float32)))
        self._graph.clear()
        self._final.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        load_graph_buffers(self, state_dict, prefix, (self._graph, self._final))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared': item embeddings; 'specific': the per-category user embeddings; no heads."""
        # torch types an Embedding's weight as Tensor; it is an nn.Parameter
        return {
            "shared": [cast(nn.Parameter, self.item_emb.weight)],
            "specific": [cast(nn.Parameter, self.user_emb.weight)],
            "heads": [],
        }

    # ------------------------------------------------------------------ propagation
    def _adjacency(self) -> Tensor:
        """The sparse block-diagonal graph, rebuilt when the buffers change (setup, load, .to)."""
        idx, val = self.graph_indices_, self.graph_values_
        if val.numel() == 0:
            raise RuntimeError("BiTGCF has no graph: call setup(bundle, categories) before loss or score")
        n = self.sizes.n_users * self.sizes.n_categories + self.sizes.n_items
        # CSR: several times faster spmm than COO on CPU
        return self._graph.get((idx, val), lambda: sparse_graph(idx, val, n, csr=True), extra=(val.device,))

    def transfer(self, h: Tensor) -> Tensor:
        """The transfer step on user embeddings [n_users, N, d] (rows of other users are independent)."""
        a = self.active_.to(h.dtype).unsqueeze(2)  # [U, N, 1]
        lam = self.lambda_.unsqueeze(2)  # [U, N, 1]
        total = (a * h).sum(1, keepdim=True)  # [U, 1, d] over active categories
        n_others = (self.active_.sum(1, keepdim=True) - self.active_.long()).clamp(min=1).unsqueeze(2)
        others = (total - a * h) / n_others  # [U, N, d] mean over the other active categories
        return lam * h + (1.0 - lam) * others

    def _propagate(self) -> tuple[Tensor, Tensor]:
        """Final embeddings, the mean of layers 0..L: ([n_users, N, d], [n_items, d])."""
        adj = self._adjacency()
        n_users, n_cat, d = self.sizes.n_users, self.sizes.n_categories, self.config.dim
        n_nodes = n_users * n_cat
        # Layer 0: a user without edges in c has no node there.
        users0 = self.user_emb.weight * self.active_.reshape(n_nodes, 1).to(self.user_emb.weight.dtype)
        e = torch.cat([users0, self.item_emb.weight])  # [U*N + I, d]
        total = e
        for _ in range(self.config.n_layers):
            e = SymmetricSpMM.apply(adj, e)
            h = self.transfer(e[:n_nodes].view(n_users, n_cat, d))
            e = torch.cat([h.reshape(n_nodes, d), e[n_nodes:]])
            total = total + e
        final = total / (self.config.n_layers + 1)
        return final[:n_nodes].view(n_users, n_cat, d), final[n_nodes:]

    def _final_embeddings(self) -> tuple[Tensor, Tensor]:
        """Propagation for scoring: cached in eval mode (cleared by train()/eval() and on load)."""
        if self.training:
            return self._propagate()
        with torch.no_grad():
            tensors = (
                self.user_emb.weight,
                self.item_emb.weight,
                self.lambda_,
                self.active_,
                self.graph_indices_,
                self.graph_values_,
            )
            return self._final.get(tensors, self._propagate)

    def train(self, mode: bool = True) -> BiTGCF:
        self._final.clear()  # weights may change while training: re-propagate at the next eval
        return super().train(mode)

    # ------------------------------------------------------------------ the contract

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self._final_embeddings()[0][users, category]  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        return self._final_embeddings()[1][self.index[category]]  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        user_final, item_final = self._final_embeddings()
        return user_final[users, category] @ item_final[self.index[category]].T  # [B, n_items(c)]

    def loss(self, batch: Batch) -> Tensor:
        user_final, item_final = self._propagate()  # once per batch
        u = user_final[batch.users, batch.category]  # [B, d]
        p = item_final[batch.pos_items]  # [B, d]
        n = item_final[batch.neg_items]  # [B, n_neg, d]
        pos = (u * p).sum(-1)
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        u0 = self.user_emb(batch.users * self.sizes.n_categories + batch.category)
        reg = l2_penalty(u0, self.item_emb(batch.pos_items), self.item_emb(batch.neg_items))
        return pair_loss(self.config.loss, pos, neg) + self.config.reg * reg
