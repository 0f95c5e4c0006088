"""BiTGCF: per-category graph propagation with a user feature-transfer step after every layer.

BiTGCF runs LightGCN-style propagation over each domain's own user-item graph and, after every
layer, lets each overlapping user's embeddings in the two domains exchange information (the
feature transfer layer), so what a user does in one domain shapes their representation in the
other, in both directions. For N categories:

- Nodes: user u has one node (u, c) per category c where u has training rows (layer-0 embedding
  E_{u,c}: one row per observed (user, category) pair, models/pair_table.py, so memory grows with
  the pairs, not with users x categories), items one node each. Category c's graph links (u, c) to
  the category-c items u has in the training split, normalised D^-1/2 A D^-1/2 per category. The N
  graphs are disjoint, so they are stored as one block-diagonal sparse matrix over the pair nodes
  and the items, propagated with one spmm per layer.
- Transfer, after each layer's propagation, for every pair node (u, c):
      h_{u,c} <- lambda_{u,c} * h_{u,c} + (1 - lambda_{u,c}) * mean_{c' != c, u active in c'} h_{u,c'}
  lambda is a per-pair vector: a constant (`transfer="constant"`, `lam`) or the paper's count-based
  variant (`transfer="count"`): lambda_{u,c} = n_{u,c} / sum_c' n_{u,c'}, with n_{u,c} the number
  of distinct training items of u in c; for two categories that is exactly the paper's
  n_A / (n_A + n_B). A user active in one category alone has lambda = 1 there.
- A user with no edges in c (no row for the pair) receives the other categories' representation:
  their layer-0 embedding there is zero and each later layer is the mean of the propagated h_{u,c'}
  over the categories they are active in (the transfer step with lambda = 0), so their final
  embedding in c is purely transferred; a user active nowhere gets zero. This is what the dense
  layout computed for such a node, now kept per user ([users with a pair, d]) and read on demand.
- Final embeddings: the mean of layers 0..L (LightGCN's layer combination); score(u, i) =
  <h_{u,c(i)}, h_i>, trained with BPR (or BCE / sampled softmax) on in-category negatives, L2 on
  the batch's layer-0 embeddings.

`setup(bundle, categories)` adds `categories` (None = all) to the categories the model covers (a
persistent [N] bool buffer) and rebuilds the pair index, the graph and lambda from the training
rows of every covered category: pairs it had keep their rows, new ones are drawn (`crossrec
update` adds its new pairs so). One-category training (single mode) therefore sees one graph and
no transfer (plain LightGCN), and staged transfer (source, then target) keeps the source graph
during the target stage. Everything derived is a buffer, so it travels in the safetensors
artifact; one written with the dense layout (`active_`, `lambda_` [n_users, N], user nodes
u * N + c) loads with the pairs its `active_` marks, its graph re-numbered onto them.

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
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError, InputDataError
from crossrec.io import CorruptFileError
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
from crossrec.models.pair_table import PairTable, lookup, migrate_masked, pair_keys
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


def pair_lambda(keys: np.ndarray, counts: np.ndarray, n_categories: int, config: BiTGCFConfig) -> np.ndarray:
    """[P] lambda of each pair (sorted `keys`, `counts` n_{u,c}): `lam` or n_{u,c} / n_u, and 1 where
    the user has no other pair (nothing to receive: keep one's own)."""
    user = np.unique(keys // n_categories, return_inverse=True)[1]
    if config.transfer == "count":
        lam = counts / np.bincount(user, weights=counts)[user]
    else:
        lam = np.full(len(keys), config.lam)
    return np.where(np.bincount(user)[user] == 1, 1.0, lam).astype(np.float32)


def migrate_dense(state_dict: dict[str, Any], prefix: str, n_users: int, n_categories: int) -> None:
    """An artifact written with the dense layout (user node u * N + c, `active_` and `lambda_`
    [n_users, N]): the pairs `active_` marks become the pair nodes, lambda and the graph follow."""
    lam = state_dict.get(prefix + "lambda_")
    keys = migrate_masked(state_dict, prefix, "active_", "user_emb", n_users, n_categories)
    if keys is None:
        return
    idx = state_dict.get(prefix + "graph_indices_")
    if lam is None or tuple(lam.shape) != (n_users, n_categories) or idx is None:
        raise CorruptFileError(
            f"model tensors {prefix + 'lambda_'!r} and {prefix + 'graph_indices_'!r} do not fit the dense "
            f"layout of {n_users} users x {n_categories} categories: train it again"
        )
    n_nodes = n_users * n_categories  # the graph only links active user nodes: an exact re-numbering
    state_dict[prefix + "lambda_"] = lam.flatten().index_select(0, keys)
    state_dict[prefix + "graph_indices_"] = torch.where(
        idx < n_nodes, torch.searchsorted(keys, idx), idx - n_nodes + len(keys)
    )


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
        # Dense gradients: propagation reads and writes every row (as in LightGCN).
        self.user_emb = PairTable(n_cat, c.dim, init_std=c.init_std, sparse=False)  # E_{u,c}: one row per pair
        self.item_emb = nn.Embedding(sizes.n_items, c.dim)
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        # The block-diagonal graph over (pair nodes + items): data-dependent nnz (setup, adopted on load).
        self.register_buffer("graph_indices_", torch.zeros(2, 0, dtype=torch.int64))  # [2, nnz]
        self.register_buffer("graph_values_", torch.zeros(0))  # [nnz]
        self.register_buffer("covered_", torch.zeros(n_cat, dtype=torch.bool))  # [N]
        self.register_buffer("lambda_", torch.ones(0))  # [pairs] effective lambda
        self.index = CategoryIndex(sizes)
        self._graph: TensorCache[Tensor] = TensorCache()  # the sparse adjacency (CSR) of the graph buffers
        self._final: TensorCache[tuple[Tensor, Tensor, Tensor]] = TensorCache()  # eval-time propagation
        self._owners: TensorCache[tuple[Tensor, Tensor, Tensor]] = TensorCache()  # users of the pairs

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Cover `categories` too (None = all); rebuild pairs, graph and lambda from their training rows."""
        n_cat, n_items = self.sizes.n_categories, self.sizes.n_items
        covered, rows = covered_training_rows(bundle, self.covered_, categories)
        users = rows["user"].to_numpy().astype(np.int64)
        items = rows["item"].to_numpy().astype(np.int64)
        cats = rows["category"].to_numpy().astype(np.int64)
        if len(users) == 0:
            raise InputDataError(f"bitgcf: no training interactions in categories {np.flatnonzero(covered).tolist()}")
        keys = pair_keys(users, cats, n_cat)
        nodes = np.searchsorted(keys.numpy(), users * n_cat + cats)  # the rows' pair nodes
        adj = normalized_adjacency(nodes, items, len(keys), n_items)
        # n_{u,c}: distinct training items (the pair node's degree).
        counts = np.bincount(np.unique(nodes * n_items + items) // n_items, minlength=len(keys))
        lam = pair_lambda(keys.numpy(), counts, n_cat, self.config)
        device = self.graph_values_.device
        self.user_emb.set_keys(keys)
        with torch.no_grad():
            self.graph_indices_ = torch.from_numpy(np.stack([adj.row, adj.col])).to(device)
            self.graph_values_ = torch.from_numpy(adj.data).to(device)
            self.covered_.copy_(torch.from_numpy(covered))
            self.lambda_ = torch.from_numpy(lam).to(device)
        for cache in (self._graph, self._final, self._owners):
            cache.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        migrate_dense(state_dict, prefix, self.sizes.n_users, self.sizes.n_categories)
        load_graph_buffers(self, state_dict, prefix, (self._graph, self._final, self._owners))
        lam = state_dict.get(prefix + "lambda_")
        if lam is not None and lam.shape != self.lambda_.shape:  # data-dependent: adopt the stored shape
            self.lambda_ = torch.empty_like(lam, device=self.lambda_.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared': item embeddings; 'specific': the per-category user embeddings; no heads."""
        # torch types an Embedding's weight as Tensor; it is an nn.Parameter
        return {
            "shared": [cast(nn.Parameter, self.item_emb.weight)],
            "specific": [self.user_emb.weight],
            "heads": [],
        }

    def active(self, users: Tensor) -> Tensor:
        """[B, N] whether each user has training rows (a pair node) in each category."""
        return self.user_emb.has(users.unsqueeze(1), torch.arange(self.sizes.n_categories, device=users.device))

    # ------------------------------------------------------------------ propagation
    def _adjacency(self) -> Tensor:
        """The sparse block-diagonal graph, rebuilt when the buffers change (setup, load, .to)."""
        idx, val = self.graph_indices_, self.graph_values_
        if val.numel() == 0:
            raise RuntimeError("BiTGCF has no graph: call setup(bundle, categories) before loss or score")
        n = len(self.user_emb.keys_) + self.sizes.n_items
        # CSR: several times faster spmm than COO on CPU
        return self._graph.get((idx, val), lambda: sparse_graph(idx, val, n, csr=True), extra=(val.device,))

    def owners(self) -> tuple[Tensor, Tensor, Tensor]:
        """(the sorted users with a pair [U], each pair's position among them [P], pairs per user [U])."""
        keys = self.user_emb.keys_

        def compute() -> tuple[Tensor, Tensor, Tensor]:
            users, owner, n = torch.unique_consecutive(
                keys // self.sizes.n_categories, return_inverse=True, return_counts=True
            )
            return users, owner, n

        return self._owners.get((keys,), compute)

    def transfer(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The transfer step on pair-node embeddings h [P, d]: (the transferred [P, d], each user's
        mean over their pairs [U, d], what a pair the user lacks receives)."""
        _, owner, n = self.owners()
        total = h.new_zeros(len(n), h.shape[1]).index_add(0, owner, h)  # [U, d]
        others = (total[owner] - h) / (n[owner] - 1).clamp(min=1).unsqueeze(1).to(h.dtype)  # other pairs' mean
        lam = self.lambda_.unsqueeze(1)  # [P, 1]
        return lam * h + (1.0 - lam) * others, total / n.unsqueeze(1).to(h.dtype)

    def _propagate(self) -> tuple[Tensor, Tensor, Tensor]:
        """Final embeddings, the mean of layers 0..L: (pairs [P, d], items [n_items, d], users'
        transferred embedding for a category they lack [U, d])."""
        adj = self._adjacency()
        n_pairs = len(self.user_emb.keys_)
        e = torch.cat([self.user_emb.weight, self.item_emb.weight])  # [P + I, d]
        total, missing = e, e.new_zeros(len(self.owners()[2]), e.shape[1])
        for _ in range(self.config.n_layers):
            e = SymmetricSpMM.apply(adj, e)
            h, mean = self.transfer(e[:n_pairs])
            e = torch.cat([h, e[n_pairs:]])
            total, missing = total + e, missing + mean
        scale = 1.0 / (self.config.n_layers + 1)
        return total[:n_pairs] * scale, total[n_pairs:] * scale, missing * scale

    def _final_embeddings(self) -> tuple[Tensor, Tensor, Tensor]:
        """Propagation for scoring: cached in eval mode (cleared by train()/eval() and on load)."""
        if self.training:
            return self._propagate()
        with torch.no_grad():
            tensors = (
                self.user_emb.weight,
                self.user_emb.keys_,
                self.item_emb.weight,
                self.lambda_,
                self.graph_indices_,
                self.graph_values_,
            )
            return self._final.get(tensors, self._propagate)

    def train(self, mode: bool = True) -> BiTGCF:
        self._final.clear()  # weights may change while training: re-propagate at the next eval
        return super().train(mode)

    def _user_rows(self, final: tuple[Tensor, Tensor, Tensor], users: Tensor, category: Tensor | int) -> Tensor:
        """[B, d] final user embeddings: the pair's own, or (no pair) the user's transferred one."""
        pairs, _, missing = final
        pos, found = lookup(self.user_emb.keys_, users * self.sizes.n_categories + category)
        upos, known = lookup(self.owners()[0], users)
        fallback = torch.where(known.unsqueeze(1), missing[upos], torch.zeros_like(missing[upos]))
        return torch.where(found.unsqueeze(1), pairs[pos], fallback)

    # ------------------------------------------------------------------ the contract

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self._user_rows(self._final_embeddings(), users, category)  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        return self._final_embeddings()[1][self.index[category]]  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        final = self._final_embeddings()
        return self._user_rows(final, users, category) @ final[1][self.index[category]].T  # [B, n_items(c)]

    def loss(self, batch: Batch) -> Tensor:
        final = self._propagate()  # once per batch
        u = self._user_rows(final, batch.users, batch.category)  # [B, d]
        p = final[1][batch.pos_items]  # [B, d]
        n = final[1][batch.neg_items]  # [B, n_neg, d]
        pos = (u * p).sum(-1)
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        u0 = self.user_emb(batch.users, batch.category)
        reg = l2_penalty(u0, self.item_emb(batch.pos_items), self.item_emb(batch.neg_items))
        return pair_loss(self.config.loss, pos, neg) + self.config.reg * reg
