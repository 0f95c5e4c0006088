"""Ranking and rating metrics: pure, vectorised torch functions with no config objects.

Everything starts from `rank_positives(scores, positives)`, which gives the 0-based rank of every
positive item in every row under one deterministic tie rule (a stable sort by (-score, column)):

    rank(i) = #{j : s_j > s_i} + #{j : s_j == s_i and j < i}

Masked items carry the score `-inf`. They rank after every unmasked item, and a positive that is
itself masked is never retrieved: it gets the rank `NOT_RANKED`, a sentinel larger than any list
(rather than N, so that it is still a miss when K > N). It still counts in |P|, so masking a
positive lowers recall and NDCG. `PAD` (-1) fills rows that have fewer positives than the widest.

The per-row functions take those ranks ([B, P]) and return one value per row ([B], float64), so
callers can average over any slice of rows. A row without positives gives NaN (the metric is
undefined there); `auc` also gives NaN for a row without unmasked negatives.

Example:
    >>> scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    >>> positives = torch.tensor([[False, False, True, True]])
    >>> r = rank_positives(scores, positives)
    >>> r.ranks                        # item 2 ties with item 1 and loses (higher column)
    tensor([[2, 3]])
    >>> recall_at_k(r.ranks, 3)
    tensor([0.5000], dtype=torch.float64)
    >>> auc(r.ranks, r.n_candidates)   # both positives sit below both negatives
    tensor([0.], dtype=torch.float64)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from crossrec.errors import NumericError

PAD = -1  # ranks[b, p] for p >= |P_b|
NOT_RANKED = 2**62  # rank of a masked positive: a miss at every cut-off

# Elements per chunk of the [rows, P, N] comparison: small enough to stay in cache on CPU
# (measured: 2**19 runs twice as fast as 2**22 on [1024, 50k]); a GPU wants big launches instead.
_CHUNK_ELEMENTS = 2**19
_CHUNK_ELEMENTS_GPU = 2**27
# Above this many positives in one row, one stable sort per row is cheaper than P comparisons.
_MAX_COMPARE_POSITIVES = 32


class Ranking(NamedTuple):
    """Output of `rank_positives`.

    Args:
        ranks: [B, P] int64 rank of each positive (`PAD` where the row has fewer positives,
            `NOT_RANKED` where the positive is masked).
        n_candidates: [B] int64 number of unmasked items in the row.
    """

    ranks: Tensor
    n_candidates: Tensor


def pad_positives(positives: Tensor) -> tuple[Tensor, Tensor]:
    """Column indices of each row's positives, left-aligned and padded.

    Args:
        positives: [B, N] bool.

    Returns:
        items: [B, P] int64 columns (0 where padded), P = the largest row count (at least 1).
        valid: [B, P] bool, False where padded.
    """
    rows, cols = positives.nonzero(as_tuple=True)  # row-major, so each row's columns ascend
    counts = positives.sum(-1)
    p = max(int(counts.max()) if counts.numel() else 0, 1)
    starts = torch.cumsum(counts, 0) - counts  # [B] offset of each row's first positive
    within = torch.arange(rows.numel(), device=positives.device) - starts[rows]
    items = torch.zeros(positives.shape[0], p, dtype=torch.long, device=positives.device)
    valid = torch.zeros(positives.shape[0], p, dtype=torch.bool, device=positives.device)
    items[rows, within] = cols
    valid[rows, within] = True
    return items, valid


def rank_items(scores: Tensor, items: Tensor, valid: Tensor) -> Ranking:
    """Rank the given columns of each row (the padded form of `rank_positives`).

    Args:
        scores: [B, N] float, masked items already `-inf`; NaN is an error.
        items: [B, P] int64 columns to rank.
        valid: [B, P] bool, False where `items` is padding.
    """
    if scores.dim() != 2 or items.shape[0] != scores.shape[0] or items.shape != valid.shape:
        raise ValueError(
            f"expected scores [B, N] and items/valid [B, P]; got {tuple(scores.shape)}, "
            f"{tuple(items.shape)}, {tuple(valid.shape)}"
        )
    b, n = scores.shape
    p = items.shape[1]
    ranks = torch.empty(b, p, dtype=torch.long, device=scores.device)
    n_candidates = torch.empty(b, dtype=torch.long, device=scores.device)
    by_sort = p > _MAX_COMPARE_POSITIVES
    # Rows per chunk; on CPU chunking keeps the [rows, P, N] intermediates in cache.
    budget = _CHUNK_ELEMENTS if scores.device.type == "cpu" else _CHUNK_ELEMENTS_GPU
    step = max(1, budget // (n * (1 if by_sort else p)) if n else b)
    for lo in range(0, b, step):
        s, it = scores[lo : lo + step], items[lo : lo + step]
        if torch.isnan(s.amax()):  # max propagates NaN: one cheap reduction instead of isnan().any()
            raise NumericError("scores contain NaN; a model must return finite scores (or -inf to mask)")
        ranks[lo : lo + step] = _ranks_by_sort(s, it) if by_sort else _ranks_by_comparison(s, it)
        n_candidates[lo : lo + step] = (s > float("-inf")).sum(-1, dtype=torch.int32)
    masked = scores.gather(1, items) == float("-inf")
    ranks = ranks.masked_fill(masked, NOT_RANKED).masked_fill(~valid, PAD)
    return Ranking(ranks, n_candidates)


def rank_items_top(scores: Tensor, items: Tensor, valid: Tensor, k: int) -> Ranking:
    """`rank_items` for the top `k` only: a positive ranked below `k` gets its exact rank (same
    tie rule), any other the rank `k` (a miss at every cut-off up to k), a masked one `NOT_RANKED`.
    One `torch.topk` per row instead of a comparison pass over every item; rows with a tie among
    their top k + 1 scores take the exact path. `n_candidates` is -1 (AUC is undefined here)."""
    b, n = scores.shape
    if b == 0 or n <= k:
        r = rank_items(scores, items, valid)
        return Ranking(
            r.ranks.clamp_max(max(k, 0))
            .masked_fill(r.ranks == NOT_RANKED, NOT_RANKED)
            .masked_fill(r.ranks == PAD, PAD),
            torch.full_like(r.n_candidates, -1),
        )
    top_v, top_i = top_k_rows(scores, k + 1)  # [B, k + 1], descending
    if torch.isnan(top_v).any():  # topk ranks NaN above every number: any NaN in a row shows here
        raise NumericError("scores contain NaN; a model must return finite scores (or -inf to mask)")
    hit = top_i[:, :k].unsqueeze(1) == items.unsqueeze(2)  # [B, P, k]
    ranks = torch.where(hit.any(2), hit.int().argmax(2), torch.full_like(items, k)).long()
    tied = (top_v[:, 1:] == top_v[:, :-1]).any(1).nonzero().squeeze(1)  # order among equals: exact path
    if len(tied):
        exact = rank_items(scores[tied], items[tied], valid[tied]).ranks  # chunked, as for all rows
        ranks[tied] = exact.clamp(0, k)
    masked = scores.gather(1, items) == float("-inf")
    ranks = ranks.masked_fill(masked, NOT_RANKED).masked_fill(~valid, PAD)
    return Ranking(ranks, torch.full((b,), -1, dtype=torch.long, device=scores.device))


_GROUP = 64  # columns per group of top_k_rows


def top_k_rows(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk(scores, k, dim=1)` (values descending, and their columns), in two cheap passes
    instead of one selection over every score: the maximum of each group of 64 columns, then a
    topk over the columns of the k groups with the highest maxima (plus the columns left over
    after the last full group). Exact: the k largest values all lie in those groups, since every
    other group's maximum is below the k-th group maximum; a row where that k-th group maximum
    ties with the next one takes the plain topk. NaN propagates through the group maxima, so a
    row with NaN has it among its values, as with torch.topk."""
    b, n = scores.shape
    g = n // _GROUP
    if g < k + 1 or b == 0:
        return torch.topk(scores, k, dim=1)
    full = scores[:, : g * _GROUP].unflatten(1, (g, _GROUP))  # a view: [B, g, 64]
    gmax = full.amax(2)  # [B, g]
    gv, gi = torch.topk(gmax, k + 1, dim=1)
    cols = (gi[:, :k].unsqueeze(2) * _GROUP + torch.arange(_GROUP, device=scores.device)).flatten(1)
    rest = torch.arange(g * _GROUP, n, device=scores.device).expand(b, n - g * _GROUP)
    cols = torch.cat([cols, rest], dim=1)  # [B, k * 64 + leftover]
    v, j = torch.topk(scores.gather(1, cols), k, dim=1)
    idx = cols.gather(1, j)
    tie = (gv[:, k - 1] == gv[:, k]) | torch.isnan(gv[:, k - 1])
    rows = tie.nonzero().squeeze(1)
    if len(rows):
        v[rows], idx[rows] = torch.topk(scores[rows], k, dim=1)
    return v, idx


def _ranks_by_comparison(scores: Tensor, items: Tensor) -> Tensor:
    # rank = #{j: s_j > s_i} + #{j: s_j == s_i, j < i}, counted for all P positives at once.
    # The index term is only computed for rows with a tie: with continuous scores that is rare,
    # and two plain counting passes are much cheaper than one compound expression.
    s = scores.unsqueeze(1)  # [b, 1, N]
    sp = scores.gather(1, items).unsqueeze(2)  # [b, P, 1]
    ranks = (s > sp).sum(-1, dtype=torch.int32).long()  # [b, P]
    tied = ((s == sp).sum(-1, dtype=torch.int32) > 1) & (sp.squeeze(2) > float("-inf"))  # beyond itself
    rows = tied.any(1).nonzero().squeeze(1)
    if rows.numel():
        col = torch.arange(scores.shape[1], device=scores.device)  # [N]
        st, spt, it = s[rows], sp[rows], items[rows].unsqueeze(2)
        ranks[rows] += ((st == spt) & (col < it)).sum(-1, dtype=torch.int32).long()
    return ranks


def _ranks_by_sort(scores: Tensor, items: Tensor) -> Tensor:
    # A stable descending sort keeps tied columns in index order: the same rule as above.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # [b, N]
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return position.gather(1, items)


def rank_positives(scores: Tensor, positives: Tensor) -> Ranking:
    """0-based rank of every positive under rank(i) = #{s_j > s_i} + #{s_j == s_i, j < i}.

    Args:
        scores: [B, N] float, masked items already `-inf`.
        positives: [B, N] bool.

    Returns:
        A `Ranking`: ranks [B, P] (P = most positives in a row; `PAD` beyond a row's count,
        `NOT_RANKED` for masked positives) and n_candidates [B] (unmasked items per row).
    """
    if positives.shape != scores.shape:
        raise ValueError(f"positives {tuple(positives.shape)} must match scores {tuple(scores.shape)}")
    return rank_items(scores, *pad_positives(positives.bool()))


# ---------------------------------------------------------------------------- per-row metrics
def _n_pos(ranks: Tensor) -> Tensor:
    return (ranks != PAD).sum(-1)


def _hits(ranks: Tensor, k: int) -> Tensor:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (ranks != PAD) & (ranks < k)  # [B, P]; PAD < k, hence the first test


def _undefined_where_empty(values: Tensor, n_pos: Tensor) -> Tensor:
    return values.masked_fill(n_pos == 0, float("nan"))


def recall_at_k(ranks: Tensor, k: int) -> Tensor:
    """recall@K = |{p in P : rank(p) < K}| / |P|, per row [B]."""
    n = _n_pos(ranks)
    return _hits(ranks, k).sum(-1).double() / n.double()


def precision_at_k(ranks: Tensor, k: int) -> Tensor:
    """precision@K = |{p in P : rank(p) < K}| / K, per row [B] (K, not min(K, N), divides)."""
    return _undefined_where_empty(_hits(ranks, k).sum(-1).double() / k, _n_pos(ranks))


def f1_at_k(ranks: Tensor, k: int) -> Tensor:
    """F1@K = 2 * precision@K * recall@K / (precision@K + recall@K), 0 where both are 0, per row [B]."""
    p, r = precision_at_k(ranks, k), recall_at_k(ranks, k)
    f1 = torch.where(p + r > 0, 2 * p * r / (p + r).clamp_min(1e-300), torch.zeros_like(p))
    return _undefined_where_empty(f1, _n_pos(ranks))


def hit_rate_at_k(ranks: Tensor, k: int) -> Tensor:
    """HR@K = 1 if some positive has rank < K else 0, per row [B]."""
    return _undefined_where_empty(_hits(ranks, k).any(-1).double(), _n_pos(ranks))


def mrr_at_k(ranks: Tensor, k: int) -> Tensor:
    """MRR@K = 1 / (min_p rank(p) + 1) if that best rank is < K else 0, per row [B]."""
    hits = _hits(ranks, k)
    best = ranks.masked_fill(~hits, k).min(-1).values.double()  # k stands for "no hit"
    rr = torch.where(best < k, 1.0 / (best + 1.0), torch.zeros_like(best))
    return _undefined_where_empty(rr, _n_pos(ranks))


def ndcg_at_k(ranks: Tensor, k: int) -> Tensor:
    """NDCG@K with binary gains, per row [B].

    DCG = sum over positives with rank < K of 1 / log2(rank + 2);
    IDCG = sum_{i=0}^{min(|P|, K) - 1} 1 / log2(i + 2); NDCG = DCG / IDCG.
    """
    hits = _hits(ranks, k)
    gain = 1.0 / torch.log2(ranks.clamp(0, k).double() + 2.0)  # clamp keeps PAD/NOT_RANKED finite
    dcg = (gain * hits).sum(-1)
    ideal = torch.cumsum(1.0 / torch.log2(torch.arange(k, device=ranks.device).double() + 2.0), 0)
    n = _n_pos(ranks).clamp(max=k)
    idcg = torch.where(n > 0, ideal[(n - 1).clamp_min(0)], torch.zeros_like(dcg))
    return dcg / idcg  # 0 / 0 = NaN where the row has no positives


def auc(ranks: Tensor, n_candidates: Tensor) -> Tensor:
    """Per-row AUC [B]: mean over positives of the fraction of unmasked negatives ranked below it.

    With ties broken by the rank rule, an unmasked positive with rank r, and q unmasked positives
    ranked above it, has r - q negatives above it, so
        AUC_i = (n_neg - (r - q)) / n_neg,   n_neg = n_candidates - |unmasked positives|;
    a masked positive scores 0. Rows with no unmasked negative (or no positive) give NaN.
    """
    valid = ranks != PAD
    ranked = valid & (ranks != NOT_RANKED)
    # Sorting puts unmasked positives first in rank order, so q is the sorted position.
    r_sorted = ranks.masked_fill(~ranked, NOT_RANKED).sort(-1).values.double()  # [B, P]
    q = torch.arange(ranks.shape[1], device=ranks.device).double()
    n_ranked = ranked.sum(-1)
    n_neg = (n_candidates - n_ranked).double().unsqueeze(1)  # [B, 1]
    keep = torch.arange(ranks.shape[1], device=ranks.device) < n_ranked.unsqueeze(1)
    frac = torch.where(keep, (n_neg - (r_sorted - q)) / n_neg.clamp_min(1), torch.zeros_like(r_sorted))
    out = frac.sum(-1) / valid.sum(-1).double()
    return out.masked_fill(n_neg.squeeze(1) <= 0, float("nan"))


def ranking_metrics(ranking: Ranking, ks: tuple[int, ...]) -> dict[str, Tensor]:
    """All ranking metrics at every cut-off, per row: {"recall@10": [B], ..., "auc": [B]}
    (auc NaN for a `rank_items_top` ranking, whose n_candidates are -1)."""
    fns = {
        "recall": recall_at_k,
        "ndcg": ndcg_at_k,
        "hr": hit_rate_at_k,
        "mrr": mrr_at_k,
        "precision": precision_at_k,
        "f1": f1_at_k,
    }
    out = {f"{name}@{k}": fn(ranking.ranks, k) for name, fn in fns.items() for k in ks}
    if bool((ranking.n_candidates < 0).any()):
        out["auc"] = torch.full(
            (ranking.ranks.shape[0],), float("nan"), dtype=torch.float64, device=ranking.ranks.device
        )
    else:
        out["auc"] = auc(ranking.ranks, ranking.n_candidates)
    return out


# ---------------------------------------------------------------------------- ratings
def rmse(predictions: Tensor, targets: Tensor) -> float:
    """RMSE = sqrt(mean((prediction - target)^2)); NaN for no rows."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} != targets {tuple(targets.shape)}")
    if predictions.numel() == 0:
        return float("nan")
    return float(torch.sqrt(((predictions.double() - targets.double()) ** 2).mean()))


def mae(predictions: Tensor, targets: Tensor) -> float:
    """MAE = mean(|prediction - target|); NaN for no rows."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} != targets {tuple(targets.shape)}")
    if predictions.numel() == 0:
        return float("nan")
    return float((predictions.double() - targets.double()).abs().mean())
