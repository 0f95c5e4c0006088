"""EMCDR: per-category MF embeddings plus learned mappings between the categories' user spaces.

EMCDR (1) learns latent factors in each domain separately, (2) fits a mapping function from the
source domain's user factors to the target domain's on the users active in both, and (3) serves a
user who is cold in the target with the mapped source factors. For N categories every category is
both a source and a target:

- Per-category MF: user u has one vector u_c per category c where u has training rows (one row
  per observed (user, category) pair, models/pair_table.py: memory grows with the pairs, not with
  users x categories), items one vector v_i each (an item belongs to one category); score(u, i) =
  <u_c, v_i>, trained with BPR (or BCE / sampled softmax) on each row's own category only, so
  category c's vectors never see another category's data.
- Mappings: one MLP f_{s->t} per ordered pair (s, t), s != t (the paper's EMCDR-MLP: tanh hidden
  layers, a linear output; `map_hidden=()` gives the linear EMCDR-LM). All pairs' weights live in
  stacked tensors [N, N, in, out] (the N diagonal slots are unused), so every mapping is evaluated
  with one einsum per layer, no loop over pairs. They are fitted with the paper's loss
  ||f_{s->t}(u_s) - u_t||^2 on every ordered pair of categories in which a batch user is active,
  jointly with the ranking loss (weight `map_weight`) rather than in a second stage. Both sides are
  detached: as in the paper, where the mapping is fitted on fixed latent factors, the mapping
  never moves the MF embeddings (it only learns from them). So the mapping loss is the only
  gradient the mapping weights get, and under Adam `map_weight` barely matters (it rescales that
  gradient); it does under SGD or weight decay. Cost: O(U N^2 h d) per batch for U distinct users
  active in two or more categories, h the widest layer (every pair is evaluated, then masked).
- Serving category t: a user active in t (training rows in t) keeps their own u_t; a user with no
  training rows in t (no row for the pair) gets the mean of f_{s->t}(u_s) over the categories s
  where they are active; a user active nowhere gets the zero vector (nothing to map from; before
  the pair index they read an untrained random row).

Which users are active where is the pair index (`user_emb.keys_`, the sorted keys u * N + c; a
pair is active when it has a row), built by `setup(bundle, categories)` from the training split.
Setup adds `categories` (None = all) to the categories the model covers (a persistent [N] bool
buffer) and re-indexes the table to the pairs in the training rows of every covered category:
pairs it had keep their rows, new ones are drawn (`crossrec update` adds its new pairs so). So
one-category training (single mode) sees only that category, and staged transfer (source, then
target) keeps the source users' activity when the target stage runs: the target stage fits
f_{source->target} on the overlapping users, which is the paper's second step. With the transfer
trainer's `freeze="all_but_heads"` the target stage trains the mappings alone ("heads" in
`parameter_groups`). An artifact written before the index (a dense table and an `active_`
[n_users, N] mask) loads with the pairs its mask marks, and scores its active pairs as it did.

Reference: Man et al., "Cross-Domain Recommendation: An Embedding and Mapping Approach",
IJCAI 2017.

Example:
    >>> m = EMCDR(EMCDRConfig(dim=32), sizes)            # doctest: +SKIP
    >>> m.setup(bundle)                                   # who is active where  # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), category=2).shape   # [2, n_items(2)]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import covered_training_rows, register, user_item_tables
from crossrec.models.category_index import CategoryIndex
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.models.pair_table import PairTable, migrate_masked, pair_keys
from crossrec.typed import Checked, Size

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class EMCDRConfig(Checked):
    dim: Size = 64  # (int) latent factors of the per-category user vectors and the items
    loss: Literal["bpr", "bce", "softmax"] = "bpr"  # (str) bpr | bce | softmax over in-category sampled negatives
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std of the user and item factors
    map_hidden: tuple[int, ...] = (128,)  # (tuple[int]) hidden widths of each mapping MLP (tanh); () = linear
    map_weight: float = 1.0  # (float) weight of the mapping loss ||f_{s->t}(u_s) - u_t||^2 in the total loss


def pair_linear_stack(n: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    """n x n independent linear layers as ([n, n, fan_in, fan_out], [n, n, fan_out]), nn.Linear's init."""
    bound = 1.0 / math.sqrt(fan_in)
    w = nn.Parameter(torch.empty(n, n, fan_in, fan_out).uniform_(-bound, bound))
    b = nn.Parameter(torch.empty(n, n, fan_out).uniform_(-bound, bound))
    return w, b


@register("emcdr", EMCDRConfig, paper="Man et al., IJCAI 2017 (EMCDR)")
class EMCDR(nn.Module):
    """Per-category MF with source -> target mapping MLPs for users new to a category; two-tower.

    Call `setup(bundle, categories)` before scoring (the trainer does): without it no user counts
    as active anywhere (there are no user rows) and every user is served the zero vector.

    Example:
        >>> m = EMCDR(EMCDRConfig(dim=8, map_hidden=(16,)), sizes); m.setup(bundle)  # doctest: +SKIP
        >>> m.user_vectors(torch.tensor([3]), 1) @ m.item_vectors(1).T               # == score  # doctest: +SKIP
    """

    # buffers (nn.Module's attribute lookup cannot type them)
    covered_: Tensor
    cat_range: Tensor

    def __init__(self, config: EMCDRConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if any(w < 1 for w in c.map_hidden):
            raise ConfigError(f"emcdr.map_hidden={c.map_hidden}; widths must be >= 1")
        if c.map_weight < 0:
            raise ConfigError(f"emcdr.map_weight={c.map_weight}; expected >= 0")
        self.config = c
        self.sizes = sizes
        n_cat = sizes.n_categories
        # u_c: rows for the active (user, category) pairs only, drawn in setup.
        self.user_emb = PairTable(n_cat, c.dim, init_std=c.init_std)
        _, self.item_emb = user_item_tables(0, sizes.n_items, c.dim, c.init_std)
        # Mapping MLPs: layer l holds every ordered pair's weights, [N, N, in, out] and [N, N, out].
        widths = [c.dim, *c.map_hidden, c.dim]
        self.map_w = nn.ParameterList()
        self.map_b = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            w, b = pair_linear_stack(n_cat, fan_in, fan_out)
            self.map_w.append(w)
            self.map_b.append(b)
        # Data-derived (setup): which categories the model covers (who is active where: the pair index).
        self.register_buffer("covered_", torch.zeros(n_cat, dtype=torch.bool))  # [N]
        self.register_buffer("cat_range", torch.arange(n_cat), persistent=False)
        self.index = CategoryIndex(sizes)

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Cover `categories` too (None = all); re-index the user rows to the pairs of their training rows."""
        covered, rows = covered_training_rows(bundle, self.covered_, categories)
        self.user_emb.set_keys(pair_keys(rows["user"].to_numpy(), rows["category"].to_numpy(), self.sizes.n_categories))
        with torch.no_grad():
            self.covered_.copy_(torch.from_numpy(covered))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        migrate_masked(state_dict, prefix, "active_", "user_emb", self.sizes.n_users, self.sizes.n_categories)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def active(self, users: Tensor) -> Tensor:
        """[B, N] whether each user has training rows in each category (a row for the pair)."""
        return self.user_emb.has(users.unsqueeze(1), self.cat_range)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared': item factors; 'specific': the per-category user factors; 'heads': the mappings."""
        return {
            "shared": [cast(nn.Parameter, self.item_emb.weight)],  # torch types an Embedding's weight as Tensor
            "specific": [self.user_emb.weight],
            "heads": [*self.map_w, *self.map_b],
        }

    # ------------------------------------------------------------------ mappings
    def _map_to(self, x: Tensor, target: int) -> Tensor:
        """f_{s->target}(x[:, s]) for every source s: [B, N, d] -> [B, N, d]."""
        last = len(self.map_w) - 1
        for l, (w, b) in enumerate(zip(self.map_w, self.map_b)):
            x = torch.einsum("bsi,sio->bso", x, w[:, target]) + b[:, target]
            if l < last:
                x = torch.tanh(x)
        return x

    def _map_all(self, x: Tensor) -> Tensor:
        """f_{s->t}(x[:, s]) for every ordered pair: [B, N, d] -> [B, N (s), N (t), d]."""
        last = len(self.map_w) - 1
        for l, (w, b) in enumerate(zip(self.map_w, self.map_b)):
            if l == 0:
                x = torch.einsum("bsi,stio->bsto", x, w) + b
            else:
                x = torch.einsum("bsti,stio->bsto", x, w) + b
            if l < last:
                x = torch.tanh(x)
        return x

    def _per_category(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """([B, N, d] every category's user vector u_1..u_N, zero where inactive; [B, N] active)."""
        return self.user_emb.rows(users.unsqueeze(1), self.cat_range)

    def _mapped(self, x: Tensor, active: Tensor, category: int) -> tuple[Tensor, Tensor]:
        """(mean over active sources s != category of f_{s->category}(x_s) [B, d], has a source [B])."""
        m = self._map_to(x, category)  # [B, N, d]
        w = (active & (self.cat_range != category)).to(m.dtype)  # [B, N]
        n = w.sum(1)  # [B]
        mapped = (w.unsqueeze(2) * m).sum(1) / n.clamp(min=1.0).unsqueeze(1)
        return mapped, n > 0

    def mapped_vectors(self, users: Tensor, category: int) -> tuple[Tensor, Tensor]:
        """(mean over active sources s != category of f_{s->category}(u_s) [B, d], has a source [B])."""
        return self._mapped(*self._per_category(users), category)

    # ------------------------------------------------------------------ the contract

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        x, active = self._per_category(users)  # [B, N, d], [B, N]
        mapped, has_source = self._mapped(x, active, category)
        use_map = has_source & ~active[:, category]  # [B]
        return torch.where(use_map.unsqueeze(1), mapped, x[:, category])  # an inactive pair's own row is zero

    def item_vectors(self, category: int) -> Tensor:
        return self.item_emb(self.index[category])  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.user_vectors(users, category) @ self.item_emb.weight[self.index[category]].T

    def mapping_loss(self, users: Tensor) -> Tensor:
        """Mean ||f_{s->t}(u_s) - u_t||^2 over the users' (distinct) ordered pairs s != t, both active."""
        users = torch.unique(users)
        users = users[self.active(users).sum(1) >= 2]  # only users active in two categories have pairs
        with torch.no_grad():  # both sides detached: the mapping only learns from the MF vectors
            x, a = self._per_category(users)  # [U, N, d], [U, N]
        valid = a.unsqueeze(2) & a.unsqueeze(1) & (self.cat_range.unsqueeze(1) != self.cat_range)  # [U, s, t]
        sq = (self._map_all(x) - x.unsqueeze(1)).pow(2).sum(-1)  # [U, s, t]
        valid = valid.to(sq.dtype)
        return (sq * valid).sum() / valid.sum().clamp(min=1.0)

    def loss(self, batch: Batch) -> Tensor:
        u = self.user_emb(batch.users, batch.category)  # [B, d]; every training row's pair has a row
        p = self.item_emb(batch.pos_items)  # [B, d]
        n = self.item_emb(batch.neg_items)  # [B, n_neg, d]
        pos = (u * p).sum(-1)  # [B]
        neg = (u.unsqueeze(1) * n).sum(-1)  # [B, n_neg]
        rank = pair_loss(self.config.loss, pos, neg) + self.config.reg * l2_penalty(u, p, n)
        if self.config.map_weight == 0:
            return rank
        return rank + self.config.map_weight * self.mapping_loss(batch.users)
