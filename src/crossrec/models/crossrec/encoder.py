"""The flagship's history encoder: a user's recent items in *all* categories -> one vector per
target category.

`attention` (default): weights from (item . query_c) + affinity[c, item's category] +
recency[c, slot]; a learned (target x history category) affinity lets each category decide how much
every other category tells it. `transformer`: self-attention blocks over item + category +
position embeddings first. `mean`: the plain mean of the history items. Every [B, L, d] pass is a
lookup or a batched matmul, which keeps a batch cheap.

Example:
    >>> enc = HistoryEncoder(HistoryConfig(), dim=64, n_categories=3, n_items=100)  # doctest: +SKIP
    >>> enc(hist, hist_category, target_category, items).shape      # [B, d]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from crossrec import kernels
from crossrec.errors import ConfigError

if TYPE_CHECKING:
    from crossrec.models.crossrec.config import HistoryConfig


class HistoryEncoder(nn.Module):
    """Attention pooling of a history [B, L] (pad = n_items) for target categories [B] -> [B, d].

    History items are embedded by their own table (`history.items=separate`, FISM/SVD++-style) or
    by the item tower (`shared`, passed in at call time).
    """

    def __init__(self, config: HistoryConfig, dim: int, n_categories: int, n_items: int) -> None:
        super().__init__()
        c, d, n_cat = config, dim, n_categories
        self.kind, self.dim, self.pad = c.encoder, d, n_items
        self.hist_emb: nn.Embedding | None = None
        if c.items == "separate":
            self.hist_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items, sparse=True)
            nn.init.normal_(self.hist_emb.weight, std=c.init_std)
            with torch.no_grad():
                self.hist_emb.weight[n_items].zero_()
        self.query = nn.Parameter(torch.randn(n_cat, d) * 0.1)  # attention query per target category
        self.cat_affinity = nn.Parameter(torch.zeros(n_cat, n_cat + 1))  # [target c, history category]
        self.recency = nn.Parameter(torch.zeros(n_cat, c.length))  # [target c, slot]; last = most recent
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        nn.init.eye_(self.value.weight)
        self.blocks: nn.TransformerEncoder | None = None
        self.compiled = (
            True  # on CPU, attention pooling by the compiled kernels (the tensor path is the reference, and CUDA's)
        )
        if c.encoder == "transformer":
            if d % c.n_heads:
                raise ConfigError(f"crossrec.dim={d} must be divisible by history.n_heads={c.n_heads}")
            self.cat_emb = nn.Embedding(n_cat + 1, d, padding_idx=n_cat)  # history items' category
            self.pos_emb = nn.Embedding(c.length, d)  # slot length-1 = most recent
            nn.init.normal_(self.cat_emb.weight, std=0.01)
            nn.init.normal_(self.pos_emb.weight, std=0.01)
            layer = nn.TransformerEncoderLayer(
                d, c.n_heads, dim_feedforward=2 * d, dropout=c.dropout, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)

    def _bias(self, hist_category: Tensor, category: Tensor) -> Tensor:
        """[B, L] affinity[c, history item's category] + recency[c, slot]. Lookups by index_select,
        whose backward is an index_add_: advanced indexing's backward (index_put_ with accumulate)
        was the step's costliest op, tens of thousands of entries landing on a few cells."""
        b, length = hist_category.shape
        at = (category.unsqueeze(1) * self.cat_affinity.shape[1] + hist_category).view(-1)
        affinity = self.cat_affinity.view(-1).index_select(0, at).view(b, length)
        return affinity + self.recency.index_select(0, category)[:, -length:]

    def _compiled_path(self, hist: Tensor, extra: Tensor | None) -> bool:
        """Attention pooling by the compiled kernels (kernels/attention.py): on CPU, over the separate
        history table (plus the item tower's text part, `extra`), when nothing hooks its lookups
        (adversarial training perturbs them)."""
        return (
            self.compiled
            and self.kind == "attention"
            and self.hist_emb is not None
            and hist.device.type == "cpu"
            and not self.hist_emb._forward_hooks
            and (extra is None or extra.dtype == torch.float32)
        )

    def forward(
        self,
        hist: Tensor,
        hist_category: Tensor,
        category: Tensor,
        items: Callable[[Tensor], Tensor],
        content: Callable[[Tensor], Tensor | None] | None = None,
    ) -> Tensor:
        """hist [B, L] item ids, hist_category [B, L] their categories, category [B] targets;
        `items` embeds ids with the item tower (used when history.items=shared); `content` gives
        the tower's text/image part of an item, added to the separate table's rows (so history
        items speak through what they are about, not only their IDs)."""
        extra = content(hist) if content is not None and self.hist_emb is not None else None
        if self._compiled_path(hist, extra):
            assert self.hist_emb is not None
            q = self.key(self.query.index_select(0, category))  # [B, d]
            return self.value(
                _AttentionPool.apply(
                    self.hist_emb.weight,
                    hist,
                    q,
                    self._bias(hist_category, category),
                    extra,
                    self.pad,
                    1.0 / math.sqrt(self.dim),
                )
            )
        valid = hist != self.pad  # [B, L]
        if self.hist_emb is None:
            x = items(hist)  # [B, L, d]
        else:
            x = self.hist_emb(hist)
            if extra is not None:
                x = x + extra
        if self.kind == "mean":
            w = valid.float()
            return (x * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)
        if self.blocks is not None:
            x = x + self.cat_emb(hist_category) + self.pos_emb.weight[-hist.shape[1] :].unsqueeze(0)
            mask = ~valid
            mask[:, -1] = False  # keep one key per row, so empty histories stay finite
            x = self.blocks(x, src_key_padding_mask=mask)
        q = self.key(self.query.index_select(0, category))  # [B, d]
        # Batched matrix-vector products as multiply + sum: bmm of [L, d] x [d, 1] blocks is several
        # times slower on CPU (benchmarks/results/profile.md).
        logits = (x * q.unsqueeze(1)).sum(-1) / math.sqrt(self.dim)  # [B, L]
        logits = logits + self._bias(hist_category, category)
        logits = logits.masked_fill(~valid, float("-inf"))
        # A zero "nothing seen" slot: empty histories pool to 0 and attention can decline to attend.
        logits = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
        att = torch.softmax(logits, dim=1)[:, :-1]  # [B, L]
        return self.value((att.unsqueeze(-1) * x).sum(1))


class _AttentionPool(torch.autograd.Function):
    """sum_l softmax(x_l . q * scale + bias_l, 0)_l x_l with x_l = E[h_l] (+ extra_l) by the compiled
    kernels; the table's gradient is row-sparse, as `nn.Embedding(sparse=True)` gives it (pad
    entries carry none); `extra`'s is dense [B, L, d]."""

    @staticmethod
    def forward(
        ctx: Any,
        weight: Tensor,
        hist: Tensor,
        q: Tensor,
        bias: Tensor,
        extra: Tensor | None,
        pad: int,
        scale: float,
    ) -> Tensor:
        kernels.threads()
        w, h = weight.detach().numpy(), hist.contiguous().numpy()
        qn, bn = q.detach().contiguous().float().numpy(), bias.detach().contiguous().float().numpy()
        x = extra.detach().contiguous().numpy() if extra is not None else np.zeros((0, 0, 0), dtype=np.float32)
        out, att = kernels.get("attention_forward")(w, h, qn, bn, x, pad, scale)
        ctx.arrays, ctx.pad, ctx.scale, ctx.shape = (w, h, qn, x, att, out), pad, scale, weight.shape
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        w, h, qn, x, att, out = ctx.arrays
        counts = (torch.from_numpy(h) != ctx.pad).sum(1)
        offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
        offsets[1:] = counts.cumsum(0)
        rows, d_e, d_x, d_q, d_bias = kernels.get("attention_backward")(
            grad.contiguous().float().numpy(), w, h, qn, x, att, out, offsets.numpy(), ctx.pad, ctx.scale
        )
        need = ctx.needs_input_grad
        d_w = None
        if need[0]:
            d_w = torch.sparse_coo_tensor(
                torch.from_numpy(rows).unsqueeze(0), torch.from_numpy(d_e), ctx.shape, check_invariants=False
            )
        d_extra = torch.from_numpy(d_x) if need[4] else None
        return d_w, None, torch.from_numpy(d_q), torch.from_numpy(d_bias), d_extra, None, None
