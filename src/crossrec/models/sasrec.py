"""SASRec: a causal self-attention encoder over a user's item sequence predicts the next item.

The user's training items, oldest first, are embedded (item embedding x sqrt(d) + a learned
position embedding) and run through `n_layers` pre-norm Transformer blocks in which position t
attends only to positions <= t (causal mask) that hold an item (padding mask). The hidden state at
t, dotted with the item embeddings (shared with the input side), scores the item at t + 1.

Training is on sequences, not on (user, item) rows: `loss(batch)` takes the batch's distinct
users, feeds `seq[:, :-1]` and at every position whose target `seq[:, 1:]` is an item scores that
target against `n_neg` negatives drawn uniformly from the target's own category (BCE or BPR).
Scoring runs the encoder over the user's last `max_len` training items and dots the last hidden
state with the target category's items. The sequence comes from `setup(bundle, categories)`:
one category's items in "single" mode, every category's items interleaved in time when pooled
(the categories then inform each other through the sequence; scores stay per category).

A user with no training items gets the hidden state of an all-padding input. Padding positions
enter the blocks as zero vectors and attend only to themselves, so that state is finite and the
same at every position: it is trained as the "before the first item" state of every sequence (the
prediction of a user's first item), i.e. a learned popularity prior.

Reference: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.

Example:
    >>> m = SASRec(SASRecConfig(dim=64, max_len=50), sizes); m.setup(bundle, [0])  # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), category=0).shape     # [2, n_items(0)]      # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.history import history_matrix
from crossrec.models.losses import l2_penalty, pair_loss
from crossrec.typed import Checked, Share, Size

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class SASRecConfig(Checked):
    dim: Size = 64  # (int) embedding and hidden size
    n_layers: int = 2  # (int) self-attention blocks
    n_heads: Size = 2  # (int) attention heads per block (must divide dim)
    max_len: Size = 50  # (int) most recent training items the encoder reads (training uses max_len + 1)
    dropout: Share = 0.2  # (float) dropout on the input embeddings and inside the blocks
    loss: Literal["bce", "bpr"] = "bce"  # (str) bce | bpr, per sequence position against sampled negatives
    n_neg: Size = 1  # (int) negatives per position, uniform over the target item's category
    reg: float = 0.0  # (float) L2 on the batch's target and negative item embeddings (lambda)
    init_std: float = 0.02  # (float) normal init std of the item and position embeddings


@register("sasrec", SASRecConfig, paper="Kang & McAuley, ICDM 2018 (SASRec)")
class SASRec(nn.Module):
    """Causal Transformer over each user's training sequence; next-item scores by dot product.

    Call `setup(bundle, categories)` before `loss` (the trainer does): it stores every user's last
    `max_len + 1` training items as a buffer, so the safetensors artifact carries them. `score`
    works without it (every user then has the empty-history state).

    Example:
        >>> m = SASRec(SASRecConfig(dim=16), sizes); m.setup(bundle)   # doctest: +SKIP
        >>> m.loss(batch)                                              # scalar  # doctest: +SKIP
    """

    # buffers (nn.Module's attribute lookup cannot type them)
    seq_: Tensor
    item_category_: Tensor
    cat_items_: Tensor
    cat_start_: Tensor
    cat_size_: Tensor
    causal_: Tensor

    def __init__(self, config: SASRecConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if c.dim < 1 or c.n_heads < 1 or c.dim % c.n_heads:
            raise ConfigError(f"sasrec.dim={c.dim} must be a positive multiple of n_heads={c.n_heads}")
        if c.n_layers < 1 or c.max_len < 1 or c.n_neg < 1:
            raise ConfigError("sasrec.n_layers, sasrec.max_len and sasrec.n_neg must be >= 1")
        if not 0.0 <= c.dropout < 1.0:
            raise ConfigError(f"sasrec.dropout={c.dropout}; expected [0, 1)")
        self.config = c
        self.sizes = sizes
        self.pad = sizes.n_items
        self._neg_seed: int = 0  # set in setup (see there)
        self._neg_gen: torch.Generator | None = None
        d = c.dim
        # Sparse rows: a batch touches few items (SparseAdam); the padding row stays zero.
        self.item_emb = nn.Embedding(sizes.n_items + 1, d, padding_idx=self.pad, sparse=True)
        self.pos_emb = nn.Embedding(c.max_len, d)  # index max_len - 1 = most recent
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        nn.init.normal_(self.pos_emb.weight, std=c.init_std)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, c.n_heads, dim_feedforward=d, dropout=c.dropout, batch_first=True, norm_first=True
            )
            for _ in range(c.n_layers)
        )
        self.last_norm = nn.LayerNorm(d)  # pre-norm blocks leave the output un-normalised
        self.scale = math.sqrt(d)
        # Training sequences: [n_users, max_len + 1], most recent last, left-padded (set by setup).
        self.register_buffer("seq_", torch.full((sizes.n_users, c.max_len + 1), self.pad, dtype=torch.int64))
        # Derived from sizes (not saved): item -> category, and every category's items end to end.
        self.register_buffer("item_category_", torch.tensor(sizes.item_category, dtype=torch.int64), persistent=False)
        blocks = [torch.from_numpy(sizes.item_index(k)).long() for k in range(sizes.n_categories)]
        size = torch.tensor([len(b) for b in blocks], dtype=torch.int64)
        self.register_buffer("cat_items_", torch.cat(blocks), persistent=False)  # [n_items]
        self.register_buffer("cat_start_", torch.cumsum(size, 0) - size, persistent=False)  # [n_categories]
        self.register_buffer("cat_size_", size, persistent=False)  # [n_categories]
        causal = torch.triu(torch.ones(c.max_len, c.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_", causal, persistent=False)  # [L, L], True = may not attend
        self.index = CategoryIndex(sizes)

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Store each user's last `max_len + 1` training items of `categories` (None = all, pooled)."""
        self.seq_ = history_matrix(bundle, self.config.max_len + 1, categories).to(self.seq_.device)
        # Negatives come from the model's own generator, seeded from the run's seed (set once at the
        # entry point), so they do not depend on what else drew from the global RNG.
        self._neg_seed, self._neg_gen = torch.initial_seed(), None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared', 'specific' and 'heads' parameters.

        SASRec has no per-category parts: the item table, positions and blocks are all shared
        (one table holds every category's items), so 'specific' and 'heads' are empty.
        """
        return {"shared": list(self.parameters()), "specific": [], "heads": []}

    # ------------------------------------------------------------------ the encoder
    def encode(self, seq: Tensor) -> Tensor:
        """Hidden states [B, L, d] of item sequences [B, L] (L <= max_len, pad = n_items, right-aligned).

        Position t depends only on positions <= t. Padding positions are zero inputs that attend
        only to themselves, so every row is finite, even an all-padding one.
        """
        n = seq.shape[1]
        if n > self.config.max_len:
            raise ValueError(f"sequence length {n} > sasrec.max_len={self.config.max_len}")
        valid = seq != self.pad  # [B, L]
        x = self.item_emb(seq) * self.scale + self.pos_emb.weight[-n:]  # [B, L, d]
        x = self.drop(x) * valid.unsqueeze(-1)
        # Causal + key padding in one mask; the diagonal always stays open (no all-masked rows).
        blocked = self.causal_[-n:, -n:].unsqueeze(0) | ~valid.unsqueeze(1)  # [B, L, L]
        blocked = blocked & ~torch.eye(n, dtype=torch.bool, device=seq.device)
        mask = blocked.repeat_interleave(self.config.n_heads, dim=0)  # [B * n_heads, L, L]
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.last_norm(x)

    # ------------------------------------------------------------------ the contract

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        """[B, d] last hidden state over each user's last `max_len` training items."""
        seq = self.seq_[users, 1:]
        return self.encode(seq[:, _first_used(seq != self.pad, keep=1) :])[:, -1]

    def item_vectors(self, category: int) -> Tensor:
        return self.item_emb.weight[self.index[category]]  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.user_vectors(users, category) @ self.item_vectors(category).T  # [B, n_items(c)]

    def _negatives(self, targets: Tensor) -> Tensor:
        """[N, n_neg] items drawn uniformly from each target's category (the model's seeded
        generator), target excluded once."""
        cat = self.item_category_[targets]
        start, size = self.cat_start_[cat].unsqueeze(1), self.cat_size_[cat].unsqueeze(1)  # [N, 1]
        shape = (len(targets), self.config.n_neg)

        if self._neg_gen is None or self._neg_gen.device != targets.device:
            self._neg_gen = torch.Generator(device=targets.device).manual_seed(self._neg_seed)
        gen = self._neg_gen

        def draw() -> Tensor:
            r = torch.randint(0, 2**62, shape, device=targets.device, generator=gen)
            return self.cat_items_[start + r % size]

        neg = draw()
        hit = neg == targets.unsqueeze(1)  # redraw collisions with the target once
        return torch.where(hit, draw(), neg)

    def loss(self, batch: Batch) -> Tensor:
        users = torch.unique(batch.users)  # a user's whole sequence once per batch
        seq = self.seq_[users]  # [U, max_len + 1]
        if not bool((seq[:, -1] != self.pad).any()):
            raise RuntimeError("sasrec: the batch's users have no training sequence; call setup(bundle, categories)")
        seq = seq[:, _first_used(seq != self.pad, keep=2) :]  # [U, n + 1]
        targets = seq[:, 1:]
        valid = targets != self.pad  # [U, n]
        h = self.encode(seq[:, :-1])[valid]  # [N, d]
        tgt = targets[valid]  # [N]
        p = self.item_emb(tgt)  # [N, d]
        n = self.item_emb(self._negatives(tgt))  # [N, n_neg, d]
        pos = (h * p).sum(-1)  # [N]
        neg = (h.unsqueeze(1) * n).sum(-1)  # [N, n_neg]
        return pair_loss(self.config.loss, pos, neg) + self.config.reg * l2_penalty(p, n)


def _first_used(valid: Tensor, keep: int) -> int:
    """First column any row uses, keeping at least the last `keep` columns.

    Sequences are right-aligned and padding positions affect no other position, so columns that
    are padding in every row can be cut off without changing any result (only the work).
    """
    used = valid.any(0)
    first = int(used.to(torch.int8).argmax()) if bool(used.any()) else valid.shape[1]
    return min(first, valid.shape[1] - keep)
