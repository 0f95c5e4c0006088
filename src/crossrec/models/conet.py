"""CoNet: one MLP tower per category over [user; item], with cross connections between the towers.

CoNet runs two feed-forward networks, one per domain, over the concatenated user and item
embeddings (the user embedding shared by both), and adds *cross connections*: each hidden layer
of one network also receives the other network's hidden layer through a matrix H_l shared by the
two directions,

    a^c_{l+1} = ReLU(W^c_l a^c_l + b^c_l + H_l a^k_l),      logit^c = h_c . a^c_L + b_c.

For N categories every category c has its own tower (W^c_l, b^c_l, h_c, b_c) and all N towers run on
the same (user, item) input; the cross input to c's layer l+1 is the mean of the *other*
categories' layer-l hidden states, through one H_l shared by every pair of categories:

    a^c_{l+1} = ReLU(W^c_l a^c_l + b^c_l + H_l mean_{k != c} a^k_l)

so what each category's tower extracts from the pair reaches every other tower. Cross connections
join consecutive hidden layers (the input [user; item] is the same for every tower, so a cross term
there would only duplicate W^c_0). The score of an item of category c is tower c's logit; the loss
is BCE over the positive and the sampled in-category negatives, as in the paper (or BPR / softmax).
`cross_l1 > 0` adds the L1 penalty on H of the sparse variant (SCoNet); `cross=False` gives
independent towers over the shared user embedding (the paper's MLP++ baseline).

Scoring a category evaluates every (user, item) pair through all N towers, so full ranking costs
O(N x pairs x width^2), far more than a dot product: the first layer is split into a user part and
an item part computed once, pairs are formed by broadcasting over chunks of items (`score_chunk`
pairs at a time) to bound memory, the cross terms of all towers share one product, and the last
hidden layer is computed for the target tower only. Being an MLP over [user; item], it learns the
user-item interaction slowly; several negatives per positive (`train.n_negatives`) help.

Reference: Hu, Zhang & Yang, "CoNet: Collaborative Cross Networks for Cross-Domain Recommendation",
CIKM 2018.

Example:
    >>> m = CoNet(CoNetConfig(dim=32, layers=(64, 32, 16)), sizes)  # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), category=3).shape             # [2, n_items(3)]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.typed import Checked, Size


@dataclass(frozen=True)
class CoNetConfig(Checked):
    dim: Size = 32  # (int) user and item embedding size; a tower's input is [user; item], 2 * dim wide
    layers: tuple[int, ...] = (64, 32, 16)  # (tuple[int]) hidden widths of every category's tower
    cross: bool = True  # (bool) cross connections between consecutive hidden layers (False: MLP++)
    cross_l1: float = 0.0  # (float) L1 on the cross matrices H_l (SCoNet); 0 = CoNet
    loss: Literal["bce", "bpr", "softmax"] = (
        "bce"  # (str) bce (as in the paper) | bpr | softmax over in-category sampled negatives
    )
    reg: float = 1e-5  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std of the user and item embeddings
    score_chunk: Size = 32_768  # (int) max user-item pairs per tower pass when scoring a category


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


@register("conet", CoNetConfig, paper="Hu, Zhang & Yang, CIKM 2018 (CoNet)")
class CoNet(nn.Module):
    """N cross-connected MLP towers over a shared user embedding and per-item embeddings.

    Not a two-tower model: the MLP scores each (user, item) pair.

    Example:
        >>> m = CoNet(CoNetConfig(dim=8, layers=(16, 8)), sizes)   # doctest: +SKIP
        >>> m.loss(batch)                                           # scalar  # doctest: +SKIP
    """

    def __init__(self, config: CoNetConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if len(c.layers) < 1 or any(w < 1 for w in c.layers):
            raise ConfigError(f"conet.layers={c.layers}; expected one or more widths >= 1")
        if c.score_chunk < 1:
            raise ConfigError("conet.score_chunk must be >= 1")
        self.config = c
        self.sizes = sizes
        n_cat, d = sizes.n_categories, c.dim
        self.user_emb = nn.Embedding(sizes.n_users, d, sparse=True)  # shared by every category's tower
        self.item_emb = nn.Embedding(sizes.n_items, d, sparse=True)
        nn.init.normal_(self.user_emb.weight, std=c.init_std)
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        # Towers, every category's weights stacked: input layer over [user; item] ...
        w0 = c.layers[0]
        self.in_w = _uniform((n_cat, 2 * d, w0), 2 * d)  # [N, 2d, w0]: rows :d read the user, d: the item
        # Biases start at zero (as Keras/TF dense layers, which the paper used): a random bias would
        # dwarf the small initial embeddings and give every (user, item) pair the same activations.
        self.in_b = nn.Parameter(torch.zeros(n_cat, w0))
        # ... hidden transitions l -> l+1, each with its cross matrix H_l (shared by all categories) ...
        self.hid_w = nn.ParameterList(_uniform((n_cat, a, b), a) for a, b in zip(c.layers[:-1], c.layers[1:]))
        self.hid_b = nn.ParameterList(nn.Parameter(torch.zeros(n_cat, b)) for b in c.layers[1:])
        self.use_cross = c.cross and n_cat > 1
        self.cross_w = nn.ParameterList(
            _uniform((a, b), a) for a, b in zip(c.layers[:-1], c.layers[1:]) if self.use_cross
        )
        # ... and the output logit h_c . a_L + b_c.
        self.out_w = _uniform((n_cat, c.layers[-1]), c.layers[-1])  # [N, w_L]
        self.out_b = nn.Parameter(torch.zeros(n_cat))
        self.index = CategoryIndex(sizes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared': user and item embeddings and the cross matrices; 'specific': none (CoNet has no
        per-category user part); 'heads': every category's tower and output layer."""
        shared = [self.user_emb.weight, self.item_emb.weight, *self.cross_w]
        heads = [self.in_w, self.in_b, *self.hid_w, *self.hid_b, self.out_w, self.out_b]
        return {"shared": shared, "specific": [], "heads": heads}

    # ------------------------------------------------------------------ the towers
    def _user_part(self, users: Tensor) -> Tensor:
        """First layer's user half for every tower: [B] -> [N, B, w0]."""
        return torch.einsum("bd,ndw->nbw", self.user_emb(users), self.in_w[:, : self.config.dim])

    def _item_part(self, items: Tensor) -> Tensor:
        """First layer's item half (+ bias) for every tower: [M] -> [N, M, w0]."""
        d = self.config.dim
        return torch.einsum("md,ndw->nmw", self.item_emb(items), self.in_w[:, d:]) + self.in_b.unsqueeze(1)

    def _logits(self, a: Tensor, target: int | None = None) -> Tensor:
        """Tower logits from first-layer pre-activations a [N, P, w0]: every tower's, [N, P], or only
        tower `target`'s, [P] (then the last hidden layer is computed for that tower alone)."""
        a = F.relu(a)
        n_cat, n_hidden = a.shape[0], len(self.hid_w)
        for l in range(n_hidden):
            w, b = self.hid_w[l], self.hid_b[l]
            shared: Tensor | float = 0.0
            if self.use_cross:
                # W_c a_c + H mean_{k != c} a_k = (W_c - H / (N-1)) a_c + (H / (N-1)) sum_k a_k: the cross
                # term costs one [P, w] product for all towers instead of one per tower.
                h = self.cross_w[l] / (n_cat - 1)
                shared = (a.sum(0) @ h).unsqueeze(0)  # [1, P, w_{l+1}]
                w = w - h
            if target is not None and l == n_hidden - 1:
                a = F.relu(a[target : target + 1] @ w[target] + b[target] + shared)  # [1, P, w_L]
            else:
                a = F.relu(torch.baddbmm(b.unsqueeze(1), a, w) + shared)  # [N, P, w_{l+1}]
        if target is None:
            return (a * self.out_w.unsqueeze(1)).sum(-1) + self.out_b.unsqueeze(1)  # [N, P]
        a = a[0] if n_hidden else a[target]  # [P, w_L]
        return a @ self.out_w[target] + self.out_b[target]  # [P]

    def _pair_logits(self, users: Tensor, items: Tensor, category: Tensor) -> Tensor:
        """Logits of aligned [P] (user, item, category) triples, each from its category's tower."""
        logits = self._logits(self._user_part(users) + self._item_part(items))  # [N, P]
        return logits[category, torch.arange(len(items), device=items.device)]

    # ------------------------------------------------------------------ the contract
    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self.index[category]
        n, b = len(idx), len(users)
        u = self._user_part(users).unsqueeze(2)  # [N, B, 1, w0]
        step = max(1, self.config.score_chunk // max(b, 1))  # items per chunk: B * step pairs at most
        out = []
        for lo in range(0, n, step):
            it = self._item_part(idx[lo : lo + step]).unsqueeze(1)  # [N, 1, C, w0]
            a = (u + it).flatten(1, 2)  # [N, B * C, w0]
            out.append(self._logits(a, category).view(b, -1))  # [B, C]
        return torch.cat(out, dim=1) if out else torch.zeros(b, 0, device=users.device)

    def loss(self, batch: Batch) -> Tensor:
        n_neg = batch.neg_items.shape[1]
        users = torch.cat([batch.users, batch.users.repeat_interleave(n_neg)])  # [B (1 + n_neg)]
        items = torch.cat([batch.pos_items, batch.neg_items.flatten()])
        cats = torch.cat([batch.category, batch.category.repeat_interleave(n_neg)])
        logits = self._pair_logits(users, items, cats)
        b = len(batch.users)
        pos, neg = logits[:b], logits[b:].view(b, n_neg)
        c = self.config
        reg = l2_penalty(self.user_emb(batch.users), self.item_emb(batch.pos_items), self.item_emb(batch.neg_items))
        total = pair_loss(c.loss, pos, neg) + c.reg * reg
        if c.cross_l1 > 0 and self.use_cross:
            total = total + c.cross_l1 * sum(h.abs().sum() for h in self.cross_w)
        return total
