"""Ranking and rating metrics against hand-computed values, called directly with no config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.evaluation import metrics as M
from crossrec.evaluation.metrics import (
    NOT_RANKED,
    PAD,
    auc,
    f1_at_k,
    hit_rate_at_k,
    mae,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    rank_positives,
    ranking_metrics,
    recall_at_k,
    rmse,
)

INF = float("-inf")


def log2(x: float) -> float:
    return math.log2(x)


# Row 0: ties and two positives.       scores [0.9, 0.5, 0.5, 0.1, 0.5, 0.3]  positives {2, 4}
#   rank(2) = #{> .5} (item 0) + #{== .5, j < 2} (item 1) = 2
#   rank(4) = 1 + #{== .5, j < 4} (items 1, 2) = 3
# Row 1: a masked item above a positive. scores [-inf, 0.2, 0.8, 0.2, 0.1, 0.0] positives {1, 5}
#   rank(1) = 1 (item 2); rank(5) = 4 (items 1, 2, 3, 4); item 0 is not a candidate (5 left)
# Row 2: a masked positive.             scores [0.4, -inf, 0.3, 0.2, 0.1, 0.0] positives {0, 1}
#   rank(0) = 0; rank(1) = NOT_RANKED (never retrieved, but still one of |P| = 2)
SCORES = torch.tensor([
    [0.9, 0.5, 0.5, 0.1, 0.5, 0.3],
    [INF, 0.2, 0.8, 0.2, 0.1, 0.0],
    [0.4, INF, 0.3, 0.2, 0.1, 0.0],
])  # fmt: skip
POSITIVES = torch.zeros(3, 6, dtype=torch.bool)
POSITIVES[0, [2, 4]] = True
POSITIVES[1, [1, 5]] = True
POSITIVES[2, [0, 1]] = True


@pytest.fixture
def ranking() -> M.Ranking:
    return rank_positives(SCORES, POSITIVES)


def test_ranks_follow_the_tie_rule(ranking):
    assert ranking.ranks.tolist() == [[2, 3], [1, 4], [0, NOT_RANKED]]
    assert ranking.n_candidates.tolist() == [6, 5, 5]


def test_sort_and_comparison_paths_agree():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (20, 50), generator=g).float()  # many ties
    scores[torch.rand(20, 50, generator=g) < 0.2] = INF
    items, valid = M.pad_positives(torch.rand(20, 50, generator=g) < 0.3)
    assert torch.equal(M._ranks_by_sort(scores, items), M._ranks_by_comparison(scores, items))


def test_recall_precision_f1(ranking):
    r = ranking.ranks
    # K=3: row 0 hits {2} of 2; row 1 hits {1} of 2; row 2 hits {0} of 2
    assert recall_at_k(r, 3).tolist() == [0.5, 0.5, 0.5]
    assert precision_at_k(r, 3).tolist() == pytest.approx([1 / 3] * 3)
    # F1 = 2PR/(P+R) = 2 * 1/3 * 1/2 / (5/6) = 0.4
    assert f1_at_k(r, 3).tolist() == pytest.approx([0.4] * 3)
    # K=5: row 0 both, row 1 both (rank 4 < 5), row 2 only the unmasked one
    assert recall_at_k(r, 5).tolist() == [1.0, 1.0, 0.5]
    assert precision_at_k(r, 5).tolist() == pytest.approx([2 / 5, 2 / 5, 1 / 5])
    # K=1: only row 2's rank 0 counts; rows 0, 1 have P = R = 0 -> F1 = 0
    assert f1_at_k(r, 1).tolist() == pytest.approx([0, 0, 2 * 1 * 0.5 / 1.5])


def test_ndcg(ranking):
    r = ranking.ranks
    # row 0 at K=4: (1/log2(2+2) + 1/log2(3+2)) / (1/log2(2) + 1/log2(3))
    # row 1 at K=4: 1/log2(1+2) / (1 + 1/log2(3))  (rank 4 is outside)
    # row 2 at K=4: 1/log2(2) / (1 + 1/log2(3))    (the masked positive still counts in IDCG)
    idcg = 1 / log2(2) + 1 / log2(3)
    expected = [(1 / log2(4) + 1 / log2(5)) / idcg, (1 / log2(3)) / idcg, 1 / idcg]
    assert ndcg_at_k(r, 4).tolist() == pytest.approx(expected)
    # K=1: IDCG over min(|P|, K) = 1 position -> 1; only row 2 has a hit
    assert ndcg_at_k(r, 1).tolist() == [0.0, 0.0, 1.0]


def test_hit_rate_and_mrr(ranking):
    r = ranking.ranks
    assert hit_rate_at_k(r, 2).tolist() == [0.0, 1.0, 1.0]
    assert hit_rate_at_k(r, 3).tolist() == [1.0, 1.0, 1.0]
    # best ranks 2, 1, 0 -> 1/3, 1/2, 1 when inside K
    assert mrr_at_k(r, 3).tolist() == pytest.approx([1 / 3, 1 / 2, 1.0])
    assert mrr_at_k(r, 2).tolist() == pytest.approx([0.0, 1 / 2, 1.0])


def test_auc(ranking):
    # row 0: 4 negatives {0, 1, 3, 5}; item 2 has 2 above (0, 1) -> 2/4 below; item 4 has 2 above
    #        (0, 1; item 2 is a positive) -> 2/4 below; AUC = 0.5
    # row 1: 5 candidates - 2 positives = 3 negatives {2, 3, 4}; item 1: 1 above -> 2/3;
    #        item 5: 3 above -> 0; AUC = (2/3 + 0) / 2 = 1/3
    # row 2: negatives {2, 3, 4, 5}; item 0 above all -> 1; masked item 1 -> 0; AUC = 1/2
    assert auc(ranking.ranks, ranking.n_candidates).tolist() == pytest.approx([0.5, 1 / 3, 0.5])


def test_k_larger_than_n_and_single_item():
    # K = 10 > N = 3: every unmasked positive is a hit, the masked one never is
    r = rank_positives(torch.tensor([[0.1, INF, 0.3]]), torch.tensor([[True, True, False]]))
    assert r.ranks.tolist() == [[1, NOT_RANKED]]
    assert recall_at_k(r.ranks, 10).item() == 0.5
    assert precision_at_k(r.ranks, 10).item() == pytest.approx(0.1)  # hits / K, not hits / N
    # ndcg = (1/log2(3)) / (1 + 1/log2(3))
    assert ndcg_at_k(r.ranks, 10).item() == pytest.approx((1 / log2(3)) / (1 + 1 / log2(3)))
    # single item, a positive: everything perfect, but AUC undefined (no negative)
    one = rank_positives(torch.tensor([[0.7]]), torch.tensor([[True]]))
    m = ranking_metrics(one, (1, 5))
    assert all(m[k].item() == 1.0 for k in ("recall@1", "ndcg@1", "hr@5", "mrr@5"))
    assert m["precision@5"].item() == pytest.approx(0.2)
    assert math.isnan(m["auc"].item())


def test_rows_without_positives_are_undefined():
    r = rank_positives(torch.tensor([[0.1, 0.2], [0.3, 0.4]]), torch.tensor([[False, False], [True, False]]))
    assert r.ranks.tolist() == [[PAD], [1]]
    m = ranking_metrics(r, (1,))
    assert all(math.isnan(v[0].item()) and not math.isnan(v[1].item()) for v in m.values())


def test_nan_scores_raise():
    with pytest.raises(ValueError, match="NaN"):
        rank_positives(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[True, False]]))


def test_rmse_mae():
    pred, target = torch.tensor([3.0, 4.0, 1.0]), torch.tensor([2.0, 4.0, 3.0])
    # errors 1, 0, -2: RMSE = sqrt((1 + 0 + 4) / 3), MAE = (1 + 0 + 2) / 3
    assert rmse(pred, target) == pytest.approx(math.sqrt(5 / 3))
    assert mae(pred, target) == pytest.approx(1.0)
    assert math.isnan(rmse(torch.zeros(0), torch.zeros(0)))


def brute_ranks(scores: np.ndarray, positives: np.ndarray) -> list[list[int]]:
    out = []
    for s, p in zip(scores, positives):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))  # stable by (-score, index)
        out.append([order.index(i) if s[i] > -np.inf else NOT_RANKED for i in np.flatnonzero(p)])
    return out


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 6),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
    levels=st.sampled_from([3, 1000]),
)
def test_properties_on_random_scores(b, n, seed, levels):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(b, n)).astype(np.float32)  # levels=3 forces ties
    scores[rng.random((b, n)) < 0.2] = -np.inf
    positives = rng.random((b, n)) < 0.3
    positives[np.arange(b), rng.integers(0, n, b)] = True  # at least one positive per row
    r = rank_positives(torch.from_numpy(scores), torch.from_numpy(positives))
    got = [[x for x in row if x != PAD] for row in r.ranks.tolist()]
    assert got == brute_ranks(scores, positives)
    ks = (1, 2, 5, 10, 50)
    m = ranking_metrics(r, ks)
    for name, v in m.items():
        v = v[~torch.isnan(v)] if name == "auc" else v
        assert not torch.isnan(v).any(), name
        assert ((v >= 0) & (v <= 1 + 1e-12)).all(), name
    recalls = torch.stack([m[f"recall@{k}"] for k in ks])
    assert (recalls[1:] >= recalls[:-1]).all()  # recall@K never decreases in K
    assert (m["ndcg@50"] <= m["hr@50"]).all() and (m["mrr@10"] <= m["hr@10"]).all()


def test_rows_with_many_positives_take_the_sort_path():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(3, 80)).astype(np.float32)
    scores[:, :7] = -np.inf
    positives = rng.random((3, 80)) < 0.6  # ~48 positives a row > _MAX_COMPARE_POSITIVES
    assert positives.sum(1).max() > M._MAX_COMPARE_POSITIVES
    r = rank_positives(torch.from_numpy(scores), torch.from_numpy(positives))
    assert [[x for x in row if x != PAD] for row in r.ranks.tolist()] == brute_ranks(scores, positives)
