"""The evaluator on a hand-built Bundle: exact per-category numbers, masking, slices, batching,
the sampled protocol and ratings."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import (
    EvalConfig,
    Evaluator,
    comparison_markdown,
    evaluate_many,
    sample_unseen,
)

L3 = 1 / math.log2(3)  # discount of rank 1
L4 = 1 / math.log2(4)  # discount of rank 2

# Category 0 "books": global items 0..4; category 1 "music": global items 5..8 (local 0..3).
# (user, item, split, new_to_category, cold_item, rating); split 0 train, 1 valid, 2 test.
# Items 3 and 4 never occur in train, so they are cold.
ROWS = [
    (0, 0, 0, False, False, 4.0), (0, 1, 2, False, False, 5.0),
    (1, 2, 0, False, False, 3.0), (1, 3, 1, False, True, 2.0), (1, 4, 2, False, True, 1.0),
    (2, 0, 2, True, False, None),
    (3, 1, 0, False, False, 2.0), (3, 2, 2, False, False, 4.0), (3, 3, 2, False, True, 3.0),
    (4, 0, 0, False, False, 5.0),
    (0, 5, 0, False, False, 1.0), (0, 6, 2, False, False, 2.0),
    (2, 7, 0, False, False, 3.0), (2, 8, 0, False, False, 3.0), (2, 5, 2, False, False, 5.0),
    (3, 8, 2, True, False, 4.0),
    (4, 6, 0, False, False, 2.0), (4, 7, 2, False, False, 3.0),
]  # fmt: skip

# [user, global item]; train items get high scores so masking matters.
SCORES = torch.tensor([
    [0.9, 0.5, 0.5, 0.1, 0.3, 0.3, 0.2, 0.9, 0.1],
    [0.2, 0.8, 0.9, 0.4, 0.4, 0.0, 0.0, 0.0, 0.0],
    [0.1, 0.3, 0.3, 0.7, 0.2, 0.5, 0.5, 0.8, 0.9],
    [0.6, 0.9, 0.6, 0.6, 0.0, 0.1, 0.2, 0.3, 0.4],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.9, 0.4, 0.4],
])  # fmt: skip


def make_bundle(ratings: bool = False) -> Bundle:
    cols = list(zip(*ROWS))
    n_items = 9
    category = [0] * 5 + [1] * 4
    inter = pl.DataFrame({
        "user": pl.Series(cols[0], dtype=pl.Int32),
        "item": pl.Series(cols[1], dtype=pl.Int32),
        "category": pl.Series([category[i] for i in cols[1]], dtype=pl.Int16),
        "order": pl.Series(range(len(ROWS)), dtype=pl.Int64),
        "split": pl.Series(cols[2], dtype=pl.Int8),
        "new_to_category": pl.Series(cols[3], dtype=pl.Boolean),
        "cold_item": pl.Series(cols[4], dtype=pl.Boolean),
    })  # fmt: skip
    if ratings:
        inter = inter.with_columns(pl.Series("rating", cols[5], dtype=pl.Float32))
    items = pl.DataFrame({
        "item": pl.Series(range(n_items), dtype=pl.Int32),
        "raw_item": [f"i{i}" for i in range(n_items)],
        "category": pl.Series(category, dtype=pl.Int16),
    })  # fmt: skip
    users = pl.DataFrame({"user": pl.Series(range(5), dtype=pl.Int32), "raw_user": [f"u{u}" for u in range(5)]})
    return Bundle(inter, items, users, {"schema_version": 1, "categories": ["books", "music"]})


class Fixed(nn.Module):
    """score(users, c) = a fixed [n_users, n_items] matrix, restricted to category c's items."""

    def __init__(self, scores: Tensor, bundle: Bundle, rating: float | None = None) -> None:
        super().__init__()
        self.register_buffer("s", scores)
        self.index = [torch.from_numpy(bundle.item_index(c)) for c in range(bundle.n_categories)]
        self.rating = rating
        self.calls: list[int] = []

    def score(self, users: Tensor, category: int) -> Tensor:
        self.calls.append(len(users))
        return self.s[users][:, self.index[category]]


class Rated(Fixed):
    predicts_ratings = True

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        return torch.full((len(users),), 3.0) + 0.5 * (items % 2)  # odd items 3.5, even items 3.0


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return make_bundle()


def full(bundle: Bundle, **kw) -> Evaluator:
    return Evaluator(bundle, EvalConfig(**({"ks": (2, 3)} | kw)))


# Hand-computed ranks after masking (test split: train + valid masked):
# books  u0 [-inf,.5,.5,.1,.3] pos 1 -> 0 (the train item 0 scored .9 is masked)
#        u1 [.2,.8,-inf,-inf,.4] pos 4 -> 1
#        u2 nothing masked, pos 0 (.1) -> 4
#        u3 [.6,-inf,.6,.6,0] pos 2 -> 1 (tie with item 0), pos 3 -> 2 (ties with 0 and 2)
# music  u0 [-inf,.2,.9,.1] pos 1 -> 1; u2 [.5,.5,-inf,-inf] pos 0 -> 0 (wins the tie: lower index)
#        u3 [.1,.2,.3,.4] pos 3 -> 0;  u4 [.4,-inf,.4,.4] pos 2 -> 1 (train item 1 scored .9 is masked)
NDCG2 = {
    "books": [1, L3, 0, L3 / (1 + L3)],
    "music": [L3, 1, 1, L3],
}
RECALL2 = {"books": [1, 1, 0, 0.5], "music": [1, 1, 1, 1]}


def test_exact_values_per_category_and_all(bundle):
    res = full(bundle).evaluate(Fixed(SCORES, bundle))
    for cat in ("books", "music"):
        assert res.metric("ndcg@2", cat) == pytest.approx(np.mean(NDCG2[cat]))
        assert res.metric("recall@2", cat) == pytest.approx(np.mean(RECALL2[cat]))
    assert res.metric("ndcg@2") == pytest.approx(np.mean(NDCG2["books"] + NDCG2["music"]))
    assert res.metric("recall@2") == pytest.approx(np.mean(RECALL2["books"] + RECALL2["music"]))
    # u3 books: ndcg@3 = (1/log2(3) + 1/log2(4)) / (1 + 1/log2(3)); the others as at K=2
    assert res.metric("ndcg@3", "books") == pytest.approx((1 + L3 + 0 + (L3 + L4) / (1 + L3)) / 4)
    # mrr@2: books u0 1, u1 1/2, u2 0, u3 1/2
    assert res.metric("mrr@2", "books") == pytest.approx(2 / 4)
    # auc books: u0 (3 negatives, none above) 1; u1 1/2; u2 0; u3 (2 negatives, 1 above each) 1/2
    assert res.metric("auc", "books") == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    row = res.table.filter((pl.col("category") == "ALL") & (pl.col("slice") == "all"))
    assert row["n_users"][0] == 8
    assert res.table["protocol"].unique().to_list() == ["full ranking"]


def test_train_items_are_masked(bundle):
    model = Fixed(SCORES, bundle)
    masked = full(bundle).evaluate(model, categories=[1])
    unmasked = full(bundle, mask_seen=False).evaluate(model, categories=[1])
    # Unmasked, every train item scored above the positive pushes it down: u0 [.3,.2,.9,.1] pos 1
    # -> 2; u2 [.5,.5,.8,.9] pos 0 -> 2; u3 -> 0; u4 [.4,.9,.4,.4] pos 2 -> 2 (.9 above, tie at 0)
    assert masked.metric("recall@2", "music") == 1.0
    assert unmasked.metric("hr@2", "music") == pytest.approx((0 + 0 + 1 + 0) / 4)
    assert set(masked.table["category"]) == {"music", "ALL"}


def test_positive_seen_earlier_stays_a_candidate():
    # user 1 has item 3 in valid; make it a test positive as well: it must not be masked.
    b = make_bundle()
    extra = b.interactions.head(1).with_columns(
        pl.lit(1, pl.Int32).alias("user"),
        pl.lit(3, pl.Int32).alias("item"),
        pl.lit(0, pl.Int16).alias("category"),
        pl.lit(2, pl.Int8).alias("split"),
        pl.lit(True).alias("cold_item"),
    )
    b = Bundle(pl.concat([b.interactions, extra]), b.items, b.users, b.manifest)
    assert b.interactions.height == len(ROWS) + 1
    res = full(b).evaluate(Fixed(SCORES, b), categories=[0])
    # u1 books: [.2,.8,-inf,.4,.4] positives 3 -> 1, 4 -> 2 (tie, higher index): recall@2 = 1/2
    assert res.metric("recall@2", "books") == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_slices(bundle):
    res = full(bundle).evaluate(Fixed(SCORES, bundle))
    books = res.table.filter(pl.col("category") == "books")
    assert dict(zip(books["slice"], books["n_users"])) == {
        "all": 4,
        "warm": 3,
        "new_to_category": 1,
        "cold_item": 2,
        "new_items": 2,
    }
    assert res.metric("ndcg@2", "books", "warm") == pytest.approx((1 + L3 + L3 / (1 + L3)) / 3)
    assert res.metric("ndcg@2", "books", "new_to_category") == 0.0
    # cold slice: u1 positive 4 -> rank 1; u3 positive 3 only, item 2 masked: [.6,-inf,-inf,.6,0] -> 1
    assert res.metric("ndcg@2", "books", "cold_item") == pytest.approx(L3)
    assert res.metric("recall@2", "books", "cold_item") == 1.0
    # new_items: the same units ranked among the items without training rows (books 3, 4) only:
    # u1 [-inf,-inf,-inf,-inf(valid),.4] -> 0; u3 [-inf,-inf,-inf,.6,0] -> 0
    assert res.metric("ndcg@2", "books", "new_items") == 1.0
    music = res.table.filter(pl.col("category") == "music")
    assert music["slice"].to_list() == ["all", "warm", "new_to_category"]  # no cold item: no row
    assert res.metric("ndcg@2", "music", "new_to_category") == 1.0
    assert res.metric("ndcg@2", "ALL", "new_to_category") == pytest.approx(0.5)  # books u2 0, music u3 1
    with pytest.raises(KeyError):
        res.metric("ndcg@2", "music", "cold_item")
    plain = full(bundle, slices=False).evaluate(Fixed(SCORES, bundle))
    assert set(plain.table["slice"]) == {"all"}


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_batch_size_does_not_change_results(protocol):
    rng = np.random.default_rng(0)
    b = random_bundle(rng, n_users=40, n_items=(30, 12))
    model = Fixed(torch.from_numpy(rng.normal(size=(40, 42)).astype(np.float32)).round(decimals=1), b)
    tables = [
        Evaluator(b, EvalConfig(ks=(1, 5, 10), protocol=protocol, n_negatives=5, batch_size=bs)).evaluate(model).table
        for bs in (1, 7, 1024)
    ]
    assert max(model.calls) <= 1024
    for t in tables[1:]:
        assert t.select("category", "slice", "n_users").equals(tables[0].select("category", "slice", "n_users"))
        for col in t.columns[4:]:
            np.testing.assert_allclose(t[col].to_numpy(), tables[0][col].to_numpy(), atol=1e-12)


def random_bundle(rng: np.random.Generator, n_users: int, n_items: tuple[int, ...]) -> Bundle:
    category = np.repeat(np.arange(len(n_items)), n_items)
    rows = []
    for u in range(n_users):
        for c, n in enumerate(n_items):
            ids = np.flatnonzero(category == c)
            k = rng.integers(0, 6)
            chosen = rng.choice(ids, size=min(k, n - 1), replace=False)
            rows += [(u, int(i), int(rng.integers(0, 3))) for i in chosen]
    u, i, s = map(np.array, zip(*rows))
    train = set(i[s == 0].tolist())
    has_train = {(a, category[x]) for a, x, t in rows if t == 0}
    inter = pl.DataFrame({
        "user": pl.Series(u, dtype=pl.Int32), "item": pl.Series(i, dtype=pl.Int32),
        "category": pl.Series(category[i], dtype=pl.Int16), "order": pl.Series(np.arange(len(u)), dtype=pl.Int64),
        "split": pl.Series(s, dtype=pl.Int8),
        "new_to_category": pl.Series([t > 0 and (a, category[x]) not in has_train for a, x, t in rows]),
        "cold_item": pl.Series([t > 0 and x not in train for _, x, t in rows]),
    })  # fmt: skip
    items = pl.DataFrame({
        "item": pl.Series(np.arange(len(category)), dtype=pl.Int32),
        "raw_item": [str(x) for x in range(len(category))], "category": pl.Series(category, dtype=pl.Int16),
    })  # fmt: skip
    users = pl.DataFrame(
        {"user": pl.Series(np.arange(n_users), dtype=pl.Int32), "raw_user": np.arange(n_users).astype(str)}
    )
    return Bundle(inter, items, users, {"schema_version": 1, "categories": [f"c{c}" for c in range(len(n_items))]})


def test_sampled_protocol_is_seeded_and_named(bundle):
    model = Fixed(SCORES, bundle)
    cfg = EvalConfig(ks=(1, 2), protocol="sampled", n_negatives=3, seed=7)
    a, b_ = Evaluator(bundle, cfg).evaluate(model), Evaluator(bundle, cfg).evaluate(model)
    assert a.table.equals(b_.table)
    assert a.protocol == "sampled"
    assert a.table["protocol"].unique().to_list() == ["sampled: 1 positive + 3 negatives"]
    assert a.to_markdown().splitlines()[0] == "Evaluation (protocol: sampled: 1 positive + 3 negatives, split: test)"
    assert a.to_json()["protocol"] == "sampled"
    # 1 positive + 3 candidates: N = 4, so recall@K is a hit rate over (unit, positive) pairs
    assert 0.0 <= a.metric("recall@1") <= a.metric("recall@2") <= 1.0
    # books u2 has no books history: negatives come from items 1..4, all scored above its positive
    assert a.metric("hr@2", "books", "new_to_category") == 0.0


def test_sampled_oracle_scores_rank_the_positive_first(bundle):
    test = bundle.split("test")
    oracle = torch.zeros(5, 9)
    oracle[test["user"].to_list(), test["item"].to_list()] = 1.0
    res = Evaluator(bundle, EvalConfig(ks=(1,), protocol="sampled", n_negatives=4)).evaluate(Fixed(oracle, bundle))
    # books u3 has two positives; both outrank every sampled negative
    assert res.metric("recall@1") == 1.0 and res.metric("auc") == 1.0


def test_sample_unseen_excludes_history_and_is_uniform():
    history = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=np.float32))
    rows = np.array([0, 1, 2, 0])
    draws = sample_unseen(history, rows, 3000, torch.Generator().manual_seed(0))
    again = sample_unseen(history, rows, 3000, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert set(draws[0].tolist()) == {1, 3, 4} and set(draws[1].tolist()) == set(range(6))
    assert set(draws[2].tolist()) == {5}
    counts = torch.bincount(draws[0], minlength=6)[[1, 3, 4]].double() / 3000
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.04)


def test_ratings():
    b = make_bundle(ratings=True)
    res = full(b).evaluate(Rated(SCORES, b))
    # test rows with a rating: books (u0,1,5) (u1,4,1) (u3,2,4) (u3,3,3); u2's row has none
    # predictions: odd items 3.5, even 3.0 -> errors books: -1.5, 2.0, -1.0, 0.5
    books = np.array([-1.5, 2.0, -1.0, 0.5])
    # music (u0,6,2) (u2,5,5) (u3,8,4) (u4,7,3): predictions 3.0, 3.5, 3.0, 3.5
    music = np.array([1.0, -1.5, -1.0, 0.5])
    assert res.metric("rmse", "books") == pytest.approx(np.sqrt(np.mean(books**2)))
    assert res.metric("mae", "books") == pytest.approx(np.mean(np.abs(books)))
    both = np.concatenate([books, music])
    assert res.metric("rmse") == pytest.approx(np.sqrt(np.mean(both**2)))
    assert res.metric("mae") == pytest.approx(np.mean(np.abs(both)))
    assert res.metric("rmse", "books", "cold_item") == pytest.approx(np.sqrt((4.0 + 0.25) / 2))
    assert "rmse" not in full(b).evaluate(Fixed(SCORES, b)).table.columns  # not a rating model


def test_reports(bundle):
    ev = full(bundle)
    good, flat = Fixed(SCORES, bundle), Fixed(torch.zeros(5, 9), bundle)
    res = ev.evaluate(good)
    md = res.to_markdown(title="Demo")
    assert md.splitlines()[0] == "Demo (protocol: full ranking, split: test)"
    assert "| books | all | 4 |" in md
    js = res.to_json()
    assert js["split"] == "test" and js["config"]["ks"] == (2, 3) and len(js["rows"]) == res.table.height
    both = evaluate_many({"fixed": good, "flat": flat}, ev)
    assert both.columns[0] == "model" and both.height == 2 * res.table.height
    cmp = comparison_markdown({"fixed": res.table, "flat": ev.evaluate(flat).table}, metric="ndcg@2")
    assert cmp.splitlines()[0] == "ndcg@2 by category and slice (protocol: full ranking)"
    assert cmp.splitlines()[2] == "| category | slice | n_users | fixed | flat |"
    assert f"| ALL | all | 8 | **{np.mean(NDCG2['books'] + NDCG2['music']):.4f}** |" in cmp
    assert comparison_markdown(both, metric="ndcg@2") == cmp


def test_bad_inputs(bundle):
    with pytest.raises(ValueError, match="protocol"):
        EvalConfig(protocol="loo")
    with pytest.raises(ValueError, match="split"):
        Evaluator(bundle, split="dev")

    class Wrong(Fixed):
        def score(self, users: Tensor, category: int) -> Tensor:
            return torch.zeros(len(users), 3)

    with pytest.raises(ValueError, match=r"expected \(4, 5\)"):
        full(bundle).evaluate(Wrong(SCORES, bundle), categories=["books"])


def test_scores_returned_as_views_are_not_written_to(bundle):
    class Shared(Fixed):
        def score(self, users: Tensor, category: int) -> Tensor:
            return self.s[0, self.index[category]].expand(len(users), -1)  # a view, like Pop's

    class Own(Fixed):
        def score(self, users: Tensor, category: int) -> Tensor:
            return self.s  # its own buffer: scores of books units 0..3, the only batch

    shared = Shared(SCORES.clone(), bundle)
    expected = full(bundle).evaluate(Fixed(SCORES[0].expand(5, -1).clone(), bundle))
    assert full(bundle).evaluate(shared).table.equals(expected.table)
    assert torch.equal(shared.s, SCORES)
    own = Own(SCORES[:4, :5].clone(), bundle)
    res = full(bundle).evaluate(own, categories=["books"])
    assert torch.equal(own.s, SCORES[:4, :5])
    assert res.metric("ndcg@2", "books") == pytest.approx(np.mean(NDCG2["books"]))
