"""The flagship's softmax losses (`SoftmaxLosses`, a part `CrossRec` owns): the in-batch softmax
over one category's rows, each row's positive against the other rows' positives (the row's own
item masked where it repeats), with the logQ correction folded into a column bias and a row term
(`in_batch_loss`), optionally mixed with sampled negatives; and the full softmax over a category.

On CPU (without sampled negatives) the block's logits are built by one compiled kernel
(kernels/softmax.py) around torch's matmuls and exps; elsewhere (CUDA, mixed negatives, or
`compiled = False`: the reference in tests) by tensor ops.

Example:
    >>> loss = in_batch_loss(u, p, col_bias, row_log, side, items)   # [n] per-row losses  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from crossrec import kernels
from crossrec.data.batch import Batch

if TYPE_CHECKING:
    from crossrec.models.crossrec.host import Flagship


def in_batch_loss(
    u: Tensor,
    p: Tensor,
    col_bias: Tensor,
    row_log: Tensor,
    side: Tensor | None,
    items: Tensor,
    compiled: bool = True,
    extra: Tensor | None = None,
) -> Tensor:
    """[n] softmax loss of row r's positive p_r among the block's positives: u [n, d], p [n, d],
    col_bias [n] (added to column j), row_log [n] (subtracted from row r), side [n, n] or None (added),
    items [n] (a repeat of row r's item in another column is masked); `extra` [n, m]: more logits
    per row that join the softmax (sampled negatives, already corrected)."""
    if compiled and extra is None and u.device.type == "cpu" and u.dtype == torch.float32:
        return _InBatch.apply(u, p, col_bias, row_log, side, items)
    logits = u @ p.T + col_bias.unsqueeze(0) - row_log.unsqueeze(1)
    if side is not None:
        logits = logits + side
    dup = items.unsqueeze(1) == items.unsqueeze(0)  # the row's own positive, wherever it repeats
    eye = torch.eye(len(items), dtype=torch.bool, device=items.device)
    logits = logits.masked_fill(dup & ~eye, float("-inf"))
    full = logits if extra is None else torch.cat([logits, extra], dim=1)
    return torch.logsumexp(full, dim=1) - torch.diagonal(logits)


class SoftmaxLosses:
    """The flagship's softmax losses: a part `CrossRec` owns (`model.softmax`); it reads the
    model's towers and logQ buffers."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def mixed(
        self,
        u: Tensor,
        p: Tensor,
        pb: Tensor,
        batch: Batch,
        hist: Tensor | None = None,
        pk: Tensor | None = None,
        prior: Tensor | None = None,
    ) -> Tensor:
        """[B] softmax loss of each positive against the batch's other positives of the same category
        and the row's uniformly sampled negatives (mixed negative sampling, Yang et al., WWW 2020).

        Every logit is corrected by -log(expected draws of that item) (the logQ correction of
        sampled softmax, Yi et al., RecSys 2019): in-batch items are drawn by popularity within the
        category (B_c * n_j / N_c), sampled ones uniformly (n_neg / n_items(c)). `prior` [B]: the
        rows' weights of the new-user prior (prior.py) on the items' log counts, or None.

        The in-batch logits are computed per category, one [B_c, B_c] block each: a row never
        competes with another category's positives, so the rest of the [B, B] matrix would only be
        masked (with C categories this does about 1/C of the work).
        """
        m, items, cat = self.model, batch.pos_items, batch.category
        rows_per_cat = torch.bincount(cat, minlength=m.sizes.n_categories).clamp_min(1).float()
        row_log = rows_per_cat.log()[cat] - m.log_cat_rows_[cat]  # [B]: log(B_c / N_c)
        col_bias = pb - m.log_count_[items]  # [B]
        neg = self._sampled_logits(u, batch, hist, prior) if m.config.objective.mixed_negatives else None
        rows_all, losses = [], []
        for c in torch.unique(cat).tolist():
            rows = torch.nonzero(cat == c).squeeze(1)
            it = items.index_select(0, rows)
            side = None
            if hist is not None:
                keep = None if pk is None else pk.index_select(0, rows)
                side = m.side(
                    hist.index_select(0, rows), cat.index_select(0, rows), batch.users.index_select(0, rows), it, keep
                )  # [B_c, B_c], column j: item j
            if prior is not None:  # rank one: row r's weight times column j's log count
                pri = m.prior.scores(prior.index_select(0, rows), it)
                side = pri if side is None else side + pri
            losses.append(
                in_batch_loss(
                    u.index_select(0, rows),
                    p.index_select(0, rows),
                    col_bias.index_select(0, rows),
                    row_log.index_select(0, rows),
                    side,
                    it,
                    m.compiled,
                    None if neg is None else neg.index_select(0, rows),
                )
            )
            rows_all.append(rows)
        return torch.zeros(len(items), device=u.device).index_put((torch.cat(rows_all),), torch.cat(losses))

    def _sampled_logits(self, u: Tensor, batch: Batch, hist: Tensor | None, prior: Tensor | None) -> Tensor:
        """[B, n_neg] logQ-corrected logits of the rows' uniformly sampled negatives (a negative
        that is the row's own positive is masked)."""
        m, items, cat, neg_items = self.model, batch.pos_items, batch.category, batch.neg_items
        nv, nb, nk = m.objective.items(neg_items)
        neg = (u.unsqueeze(1) * nv).sum(-1) + nb  # [B, n_neg]
        if hist is not None:
            neg = neg + m.side(hist, cat, batch.users, neg_items, nk)
        if prior is not None:
            neg = neg + m.prior.scores(prior, neg_items)
        neg = neg - (math.log(neg_items.shape[1]) - m.log_cat_items_[cat]).unsqueeze(1)
        return neg.masked_fill(neg_items == items.unsqueeze(1), float("-inf"))

    def full(self, u: Tensor, batch: Batch, hist: Tensor | None = None, prior: Tensor | None = None) -> Tensor:
        """[B] exact softmax loss of each positive against every item of its category."""
        m, items, cat = self.model, batch.pos_items, batch.category
        out = torch.zeros(len(items), device=u.device)
        for k in torch.unique(cat).tolist():
            rows = torch.nonzero(cat == k).squeeze(1)
            idx = m.index[int(k)]
            iv, ib, ik = m.objective.items(idx)
            logits = u[rows] @ iv.T + ib  # [B_k, n_items(k)]
            if hist is not None:
                logits = logits + m.side(hist[rows], cat[rows], batch.users[rows], idx, ik)
            if prior is not None:
                logits = logits + m.prior.scores(prior[rows], idx)
            out = out.index_put((rows,), F.cross_entropy(logits, m.index.local[items[rows]], reduction="none"))
        return out


class _InBatch(torch.autograd.Function):
    """Forward: shifted logits by the kernel, exp in place, one sum; backward: dL/dz = g (softmax -
    onehot) from the saved exponentials, then the matmuls and sums of the inputs' gradients."""

    @staticmethod
    def forward(
        ctx: Any,
        u: Tensor,
        p: Tensor,
        col_bias: Tensor,
        row_log: Tensor,
        side: Tensor | None,
        items: Tensor,
    ) -> Tensor:
        kernels.threads()
        z = (u.detach() @ p.detach().T).contiguous()
        s = side.detach().contiguous().float() if side is not None else z.new_zeros(0, 0)
        top = z.new_empty(len(z))
        kernels.get("in_batch_logits")(
            z.numpy(),
            col_bias.detach().contiguous().float().numpy(),
            row_log.detach().contiguous().float().numpy(),
            s.numpy(),
            items.contiguous().numpy(),
            top.numpy(),
        )
        diag = torch.diagonal(z).clone()  # z_rr - max_r
        e = z.exp_()  # exp(z - max), in place
        total = e.sum(1)
        ctx.save_for_backward(u, p)
        ctx.e, ctx.total, ctx.has_side = e, total, side is not None
        return total.log() - diag  # logsumexp_r - z_rr

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        u, p = ctx.saved_tensors
        # dL/dz into a new block: the saved exponentials must survive a second backward pass through
        # a retained graph (APR takes the gradient of the clean loss first, then backpropagates it again)
        z = ctx.e * (grad / ctx.total).unsqueeze(1)
        z.diagonal().sub_(grad)
        need = ctx.needs_input_grad
        d_u = z @ p if need[0] else None
        d_p = z.T @ u if need[1] else None
        d_col = z.sum(0) if need[2] else None
        d_row = -z.sum(1) if need[3] else None
        d_side = z if ctx.has_side and need[4] else None
        return d_u, d_p, d_col, d_row, d_side, None
