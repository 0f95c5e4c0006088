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
