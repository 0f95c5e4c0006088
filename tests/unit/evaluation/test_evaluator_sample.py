"""`eval.max_users` / `train.valid_users`: evaluation on a fixed, seeded sample of users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.errors import ConfigError
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.evaluator import Evaluator
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer


def test_a_sample_is_fixed_and_scores_exactly_its_users(tiny_bundle):
    torch.manual_seed(0)
    model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    Trainer(TrainConfig(epochs=2, progress=False, checkpoint=False, patience=0)).fit(model, tiny_bundle)
    full = Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond=False), split="test")
    part = Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond=False, max_users=60), split="test")
    assert part.sample is not None and len(part.sample) == 60
    assert np.array_equal(part.sample, Evaluator(tiny_bundle, part.cfg, split="test").sample)  # seeded

    def units(table):
        return int(table.filter((table["category"] == "ALL") & (table["slice"] == "all"))["n_users"][0])

    # the (user, category) units of the sampled users, no other
    want = sum(
        int(np.isin(np.flatnonzero(np.diff(tiny_bundle.csr("test", c).indptr)), part.sample).sum())
        for c in range(tiny_bundle.n_categories)
    )
    assert units(part.evaluate(model).table) == want < units(full.evaluate(model).table)
    assert Evaluator(tiny_bundle, EvalConfig(max_users=10**9), split="test").sample is None  # more than there are
    with pytest.raises(ConfigError, match="max_users"):
        EvalConfig(max_users=-1)


def test_validation_on_a_sample_trains_and_stops(tiny_bundle):
    torch.manual_seed(0)
    model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    result = Trainer(TrainConfig(epochs=3, progress=False, checkpoint=False, valid_users=50)).fit(model, tiny_bundle)
    assert result.epochs_run == 3 and result.best_epoch >= 0 and 0 < result.best_metric <= 1


def test_beyond_accuracy_reads_a_fixed_user_sample_past_beyond_users(tiny_bundle, monkeypatch):
    from crossrec.evaluation import beyond

    torch.manual_seed(0)
    model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    read: list[np.ndarray] = []
    real = beyond.CrossLists.build.__func__

    def spy(cls, *args, **kwargs):
        lists = real(cls, *args, **kwargs)
        read.append(lists.users)
        return lists

    monkeypatch.setattr(beyond.CrossLists, "build", classmethod(spy))
    all_users = np.flatnonzero(np.diff(tiny_bundle.csr("test").indptr))
    table = Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond_users=40), split="test").evaluate(model).table
    Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond_users=40), split="test").evaluate(model)
    Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond_users=0), split="test").evaluate(model)
    assert len(read[0]) == 40 and np.isin(read[0], all_users).all() and np.array_equal(read[0], read[1])  # seeded
    assert np.array_equal(read[2], all_users)  # 0: every user
    assert table["coverage@10"].drop_nulls().len() > 0  # the columns are there, estimated on the sample
    # drawn from the max_users sample when there is one
    ev = Evaluator(tiny_bundle, EvalConfig(ks=(10,), max_users=60, beyond_users=30), split="test")
    ev.evaluate(model)
    assert ev.sample is not None and len(read[3]) == 30 and np.isin(read[3], ev.sample).all()
    with pytest.raises(ConfigError, match="beyond_users"):
        EvalConfig(beyond_users=-1)
