"""Beyond-accuracy columns and the exposure re-ranker on the hand-built Bundle of test_evaluator."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.evaluation.beyond import CrossLists, exposure_curve, interaction_shares
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from tests.unit.evaluation.test_evaluator import Fixed, make_bundle

L3 = 1 / math.log2(3)

# Distinct scores (no ties). Books: items 0..4, music: 5..8. Test masks train + valid:
# u0 {0, 5}, u1 {2, 3}, u2 {7, 8}, u3 {1}, u4 {0, 6}.
SCORES = torch.tensor([
    [0.90, 0.80, 0.70, 0.10, 0.20, 0.95, 0.30, 0.60, 0.05],
    [0.10, 0.50, 0.90, 0.80, 0.40, 0.20, 0.30, 0.35, 0.25],
    [0.30, 0.65, 0.20, 0.10, 0.50, 0.40, 0.70, 0.90, 0.80],
    [0.30, 0.90, 0.60, 0.50, 0.40, 0.10, 0.20, 0.70, 0.80],
    [0.20, 0.60, 0.50, 0.10, 0.05, 0.60, 0.90, 0.70, 0.80],
])  # fmt: skip
# top-2 after masking: books u0 [1, 2], u1 [1, 4], u2 [1, 4], u3 [2, 3], u4 [1, 2]
#                      music u0 [7, 6], u1 [7, 6], u2 [6, 5], u3 [8, 7], u4 [8, 7]
BOOKS = [[1, 2], [1, 4], [1, 4], [2, 3], [1, 2]]
MUSIC = [[7, 6], [7, 6], [6, 5], [8, 7], [8, 7]]
# training users per item: 0 {0, 4}; 1 {3}; 2 {1}; 3, 4 none; 5 {0}; 6 {4}; 7 {2}; 8 {2}
POP = np.array([2, 1, 1, 0, 0, 1, 1, 1, 1])


def table(k: int, **kw) -> pl.DataFrame:
    b = make_bundle()
    res = Evaluator(b, EvalConfig(ks=(2,), beyond_k=k, **kw)).evaluate(Fixed(SCORES, b))
    return res.table.filter(pl.col("slice") == "all")


def row(t: pl.DataFrame, cat: str) -> dict:
    return t.filter(pl.col("category") == cat).to_dicts()[0]


def test_coverage_novelty_diversity_by_hand():
    t = table(2)
    info = -np.log2((POP + 1) / 6)  # 5 users
    books, music, all_ = row(t, "books"), row(t, "music"), row(t, "ALL")
    assert books["coverage@2"] == pytest.approx(4 / 5)  # item 0 never recommended
    assert music["coverage@2"] == pytest.approx(4 / 4)
    assert all_["coverage@2"] == pytest.approx(8 / 9)
    assert books["novelty@2"] == pytest.approx(info[np.array(BOOKS)].mean())
    assert music["novelty@2"] == pytest.approx(info[np.array(MUSIC)].mean())
    assert all_["novelty@2"] == pytest.approx(info[np.array(BOOKS + MUSIC)].mean())
    # co-occurrence cosine: every books pair is disjoint (or has an item without training users);
    # music [8, 7] share their only user (distance 0), the other pairs are disjoint
    assert books["ild@2"] == pytest.approx(1.0)
    assert music["ild@2"] == pytest.approx(3 / 5)
    assert all_["ild@2"] == pytest.approx((5 * 1.0 + 5 * 0.6) / 10)


def test_cross_category_exposure_and_ndcg_by_hand():
    # merged top-2: u0 [1, 2], u1 [1, 4], u2 [6, 1], u3 [8, 7], u4 [8, 7]; training shares 4/8 and 4/8
    t = table(2)
    books, music, all_ = row(t, "books"), row(t, "music"), row(t, "ALL")
    assert books["exposure@2"] == pytest.approx(0.5) and music["exposure@2"] == pytest.approx(0.5)
    assert books["reach@2"] == pytest.approx(3 / 5) and music["reach@2"] == pytest.approx(3 / 5)
    assert books["interaction_share"] == pytest.approx(0.5)
    assert all_["exposure_gap@2"] == pytest.approx(0.0)
    # test positives: u0 {1, 6}, u1 {4}, u2 {0, 5}, u3 {2, 3, 8}, u4 {7}
    assert all_["cross_ndcg@2"] == pytest.approx((1 / (1 + L3) + L3 + 0 + 1 / (1 + L3) + L3) / 5)
    # top-1: books for u0, u1; music for u2, u3, u4: exposure 0.4 / 0.6 against 0.5 / 0.5
    t1 = table(1)
    assert row(t1, "books")["exposure@1"] == pytest.approx(0.4)
    assert row(t1, "ALL")["exposure_gap@1"] == pytest.approx(0.1)


def test_reranker_moves_exposure_to_the_targets():
    b = make_bundle()
    lists = CrossLists.build(Fixed(SCORES, b), b, "test", k=1)
    curve = exposure_curve(b, "test", lists, [0.0, 1.0])
    assert curve["exposure_gap@1"].to_list()[0] == pytest.approx(0.1)
    # weight 1 ignores the scores: the first slot goes to the first category (books) for every user
    assert curve["exposure_books"].to_list()[1] == pytest.approx(1.0)
    lists2 = CrossLists.build(Fixed(SCORES, b), b, "test", k=2)
    picks = lists2.reranked(interaction_shares(b), 1.0)
    cats = lists2.cats.gather(1, picks)
    assert (cats.sort(1).values == torch.tensor([0, 1])).all()  # one item of each category per user
    t = table(2, rerank="category_exposure", rerank_weight=1.0)
    assert row(t, "books")["reach@2"] == pytest.approx(1.0) and row(t, "music")["reach@2"] == pytest.approx(1.0)
    assert row(t, "books")["ndcg@2"] == row(table(2), "books")["ndcg@2"]  # in-category accuracy unchanged


def test_bad_rerank_options_are_errors():
    with pytest.raises(ValueError, match="eval.rerank must be"):
        EvalConfig(rerank="fair")
    with pytest.raises(ValueError, match="rerank_weight"):
        EvalConfig(rerank_weight=2.0)
    with pytest.raises(ValueError, match="beyond_k"):
        EvalConfig(beyond_k=0)
