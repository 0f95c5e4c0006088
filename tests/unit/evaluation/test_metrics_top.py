"""rank_items_top: the top-k ranks of rank_items (same tie rule), without a full comparison pass."""

from __future__ import annotations

import math

import pytest
import torch

from crossrec.evaluation.metrics import (
    NOT_RANKED,
    PAD,
    rank_items,
    rank_items_top,
    ranking_metrics,
)


@pytest.mark.parametrize("seed", range(6))
def test_top_ranks_equal_the_exact_ranks_up_to_k(seed):
    g = torch.Generator().manual_seed(seed)
    b, n, p, k = 40, 60, 4, 10
    # integer scores: plenty of ties, inside and across the top k; some items masked
    scores = torch.randint(0, 25 if seed % 2 else 10_000, (b, n), generator=g).float()
    scores[torch.rand(b, n, generator=g) < 0.1] = float("-inf")
    scores[:3, 5:] = float("-inf")  # rows with fewer than k candidates
    items = torch.stack([torch.randperm(n, generator=g)[:p] for _ in range(b)])
    valid = torch.rand(b, p, generator=g) < 0.8
    exact = rank_items(scores, items, valid).ranks
    top = rank_items_top(scores, items, valid, k).ranks
    want = torch.where((exact >= 0) & (exact != NOT_RANKED), exact.clamp_max(k), exact)
    assert torch.equal(top, want)
    m_exact = ranking_metrics(rank_items(scores, items, valid), (5, 10))
    m_top = ranking_metrics(rank_items_top(scores, items, valid, k), (5, 10))
    for name in m_exact:
        if name == "auc":
            assert torch.isnan(m_top[name]).all()
        else:
            assert torch.allclose(m_exact[name], m_top[name], equal_nan=True), name


def test_top_ranks_refuse_nan_and_keep_padding():
    scores = torch.tensor([[0.3, float("nan"), 0.1]])
    with pytest.raises(ValueError, match="NaN"):
        rank_items_top(scores, torch.tensor([[0]]), torch.tensor([[True]]), 1)
    r = rank_items_top(torch.tensor([[0.3, 0.2, 0.1, 0.0]]), torch.tensor([[2, 0]]), torch.tensor([[True, False]]), 1)
    assert r.ranks.tolist() == [[1, PAD]] and not math.isnan(float(r.ranks[0, 0]))


def test_evaluator_without_auc_gives_the_same_ranking_metrics(tiny_bundle):
    from crossrec.data.batch import Sizes
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models.mf import MF, MFConfig

    torch.manual_seed(0)
    model = MF(MFConfig(dim=8, init_std=0.5), Sizes.from_bundle(tiny_bundle)).eval()
    full = Evaluator(tiny_bundle, EvalConfig(ks=(5, 10))).evaluate(model).table
    top = Evaluator(tiny_bundle, EvalConfig(ks=(5, 10), auc=False)).evaluate(model).table
    assert full.height == top.height
    for col in ("ndcg@10", "recall@5", "mrr@10", "precision@10"):
        assert full[col].to_list() == pytest.approx(top[col].to_list()), col
    assert top["auc"].null_count() == top.height


@pytest.mark.parametrize("n", [50, 130, 1000, 4099])
def test_top_k_rows_equals_torch_topk(n):
    from crossrec.evaluation.metrics import top_k_rows

    g = torch.Generator().manual_seed(n)
    scores = torch.randn(64, n, generator=g)
    scores[:8] = torch.randint(0, 5, (8, n), generator=g).float()  # ties everywhere
    scores[8:12, : n // 2] = float("-inf")
    for k in (1, 5, 11):
        v, i = top_k_rows(scores, k)
        want_v, _ = torch.topk(scores, k, dim=1)
        assert torch.equal(v, want_v)
        assert torch.equal(scores.gather(1, i), v)  # the columns hold those values
        assert (i.sort(1).values.diff(dim=1) > 0).all()  # distinct columns
    bad = scores.clone()
    bad[3, n - 1] = float("nan")
    v, _ = top_k_rows(bad, 3)
    assert torch.isnan(v[3]).any()
