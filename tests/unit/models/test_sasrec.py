"""SASRec: the sequence buffer, order sensitivity, causality, the training loss and a quality floor."""

from __future__ import annotations

from contextlib import contextmanager

import polars as pl
import pytest
import torch

import crossrec.models.sasrec  # noqa: F401  (registers "sasrec" before models/__init__ lists it)
from crossrec.data.batch import Batch, Sizes
from crossrec.models.base import REGISTRY
from crossrec.models.sasrec import SASRec, SASRecConfig

# Two categories: items 0-3 in category 0, items 4-6 in category 1; pad = 7.
SIZES = Sizes(
    n_users=4, n_items=7, item_category=(0, 0, 0, 0, 1, 1, 1), item_local=(0, 1, 2, 3, 0, 1, 2), categories=("a", "b")
)


class TinyBundle:
    """The part of a Bundle that `history_matrix` reads: sizes and a train split with an order column."""

    def __init__(self, rows: list[tuple[int, int, int]]) -> None:  # (user, item, order)
        self.n_users, self.n_items = SIZES.n_users, SIZES.n_items
        self.frame = pl.DataFrame(
            {
                "user": [r[0] for r in rows],
                "item": [r[1] for r in rows],
                "category": [SIZES.item_category[r[1]] for r in rows],
                "order": [r[2] for r in rows],
            }
        )

    def split(self, split):
        assert split == "train"
        return self.frame

    def rows(self, split, categories=None):
        rows = self.split(split)
        return rows if categories is None else rows.filter(pl.col("category").is_in(list(categories)))


# User 0 and user 1 have the same items in opposite orders; user 2 has two categories; user 3 nothing.
ROWS = [(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 2, 1), (1, 1, 2), (1, 0, 3), (2, 4, 1), (2, 3, 2), (2, 5, 3)]


def tiny_model(**params) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(**{"dim": 16, "max_len": 4, **params}), SIZES)
    model.setup(TinyBundle(ROWS))
    return model.eval()


def test_registered_with_config_paper_and_validation():
    entry = REGISTRY["sasrec"]
    assert entry.cls is SASRec and entry.config_cls is SASRecConfig and "ICDM 2018" in entry.paper
    with pytest.raises(ValueError, match="'bce', 'bpr'"):
        SASRec(SASRecConfig(loss="softmax"), SIZES)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        SASRec(SASRecConfig(dim=15, n_heads=2), SIZES)


def test_setup_builds_the_sequence_buffer_pooled_and_single():
    model = tiny_model()
    pad = SIZES.n_items
    assert model.seq_.shape == (SIZES.n_users, 5)  # max_len + 1
    assert model.seq_.tolist() == [
        [pad, pad, 0, 1, 2],
        [pad, pad, 2, 1, 0],
        [pad, pad, 4, 3, 5],  # pooled: both categories interleaved in time
        [pad] * 5,
    ]
    model.setup(TinyBundle(ROWS), [1])  # single mode for category 1
    assert model.seq_[2].tolist() == [pad, pad, pad, 4, 5] and (model.seq_[[0, 1, 3]] == pad).all()
    # The buffer is saved with the model (it is the history the artifact serves from).
    assert "seq_" in model.state_dict()


def test_score_depends_on_the_order_of_the_history():
    model = tiny_model()
    with torch.no_grad():
        s = model.score(torch.arange(4), 0)
        assert s.shape == (4, 4) and s.dtype == torch.float32 and torch.isfinite(s).all()
        assert not torch.allclose(s[0], s[1], atol=1e-4), "same items, different order: different scores"
        # Swapping user 1's history into user 0's order gives user 0's scores back.
        model.seq_[1] = model.seq_[0]
        assert torch.allclose(model.score(torch.tensor([1]), 0), s[0:1], atol=1e-6)
        # Category 1 is scored over its own items only, from the same (pooled) sequence.
        assert model.score(torch.arange(4), 1).shape == (4, 3)


def test_empty_history_is_finite_and_position_free():
    model = tiny_model()
    pad = SIZES.n_items
    with torch.no_grad():
        empty = model.score(torch.tensor([3]), 0)  # user 3 has no training items
        assert torch.isfinite(empty).all()
        # An all-padding input gives the same state at every position and at every length.
        h = model.encode(torch.full((1, 4), pad))
        assert torch.isfinite(h).all()
        assert torch.allclose(h, h[:, :1].expand_as(h), atol=1e-6)
        assert torch.allclose(model.encode(torch.full((1, 1), pad))[:, -1], h[:, -1], atol=1e-6)
    # Finite in training mode too, gradients included (no all-masked attention rows anywhere).
    model.train()
    out = model.encode(torch.tensor([[pad, pad, pad, pad], [pad, pad, 0, 1]]))
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad.to_dense()).all() for p in model.parameters() if p.grad is not None)


def test_encoder_is_causal_and_ignores_left_padding():
    torch.manual_seed(1)
    model = SASRec(SASRecConfig(dim=16, max_len=8, n_layers=2), SIZES).eval()
    pad = SIZES.n_items
    a = torch.tensor([[pad, pad, 0, 1, 2, 3, 1, 0], [4, 5, 6, 4, 5, 6, 4, 5]])
    b = a.clone()
    b[:, 5:] = torch.tensor([[2, 2, 2], [6, 6, 6]])  # change every item after position 4
    with torch.no_grad():
        ha, hb = model.encode(a), model.encode(b)
        assert torch.allclose(ha[:, :5], hb[:, :5], atol=1e-6), "a position must not see later items"
        assert not torch.allclose(ha[:, 5:], hb[:, 5:], atol=1e-4)
        # Left padding changes nothing: the trimmed sequence has the same last state.
        assert torch.allclose(model.encode(a[:1, 2:])[:, -1], ha[:1, -1], atol=1e-5)


def test_loss_trains_on_sequences_with_in_category_negatives():
    model = tiny_model(n_neg=3).train()
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 6] * 50)
    torch.manual_seed(0)
    neg = model._negatives(targets)
    cat = torch.tensor(SIZES.item_category)
    assert neg.shape == (len(targets), 3) and (cat[neg] == cat[targets].unsqueeze(1)).all()
    # The batch's rows only say which users to train: duplicates are trained once.
    batch = Batch(
        users=torch.tensor([0, 0, 1, 2, 2, 2]),
        pos_items=torch.tensor([0, 1, 2, 4, 3, 5]),
        neg_items=torch.zeros(6, 1, dtype=torch.int64),
        category=torch.tensor([0, 0, 0, 1, 0, 1]),
    )
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.item_emb.weight.grad is not None
    # Users without any training item cannot be trained: say so instead of returning nonsense.
    lonely = Batch(torch.tensor([3]), torch.tensor([0]), torch.zeros(1, 1, dtype=torch.int64), torch.tensor([0]))
    with pytest.raises(RuntimeError, match="setup"):
        model.loss(lonely)


def test_parameter_groups_cover_every_parameter_once():
    model = tiny_model()
    groups = model.parameter_groups()
    assert set(groups) == {"shared", "specific", "heads"}
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


@contextmanager
def _threads(n: int):
    # The test machine's cores are shared: one intra-op thread is far faster than two contended ones.
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# The synthetic world has no sequential signal (a user's picks are i.i.d. draws from a fixed taste;
# their timestamps are uniform), so SASRec wins here as a history encoder, not through order.
PARAMS = {"dim": 32, "max_len": 20}
# 6 epochs of batch 1024 (lr scaled with the batch) clear every floor below by the margin 10 epochs
# of batch 512 did, in half the time.
TRAIN = dict(epochs=6, patience=2, batch_size=1024, lr=4e-3, progress=False, checkpoint=False, seed=0)


@pytest.mark.slow
def test_single_mode_sasrec_beats_popularity(medium_bundle):
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models.per_category import build
    from crossrec.training.trainer import TrainConfig, Trainer

    sizes = Sizes.from_bundle(medium_bundle)
    ev = Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test")
    with _threads(1):
        pop = build("pop", "pooled", {}, sizes)
        Trainer(TrainConfig(progress=False, checkpoint=False)).fit(pop, medium_bundle)
        torch.manual_seed(0)
        model = build("sasrec", "single", PARAMS, sizes)
        for c, sub in enumerate(model.models):
            Trainer(TrainConfig(**TRAIN), categories=[c]).fit(sub, medium_bundle)
        got, base = ev.evaluate(model), ev.evaluate(pop)
    assert got.metric("ndcg@10") > 1.1 * base.metric("ndcg@10")
    assert got.metric("ndcg@10", slice="warm") > 1.15 * base.metric("ndcg@10", slice="warm")
    # Users new to a category get the empty-history state, trained as every sequence's "before the
    # first item" prediction: a popularity-like prior (an untrained state would be near 0 here).
    assert got.metric("ndcg@10", slice="new_to_category") > 0.8 * base.metric("ndcg@10", slice="new_to_category")
