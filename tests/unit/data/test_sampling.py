"""Negative sampling: in-category, avoids training positives, seeded, vectorised shapes."""

from __future__ import annotations

import numpy as np
import torch

from crossrec.data.sampling import TrainSampler


def test_negatives_come_from_the_positive_category_and_are_unseen(tiny_bundle):
    s = TrainSampler(tiny_bundle, batch_size=512, n_negatives=5, seed=0)
    cat = torch.from_numpy(tiny_bundle.item_category)
    seen = tiny_bundle.csr("train")
    total = bad = 0
    for b in s:
        assert b.neg_items.shape == (len(b), 5)
        assert torch.equal(cat[b.pos_items], b.category)
        assert (cat[b.neg_items] == b.category.unsqueeze(1)).all()
        hits = np.asarray(seen[b.users.unsqueeze(1).expand_as(b.neg_items).numpy().ravel(), b.neg_items.numpy().ravel()]).ravel()
        bad += int(hits.sum())
        total += hits.size
    assert bad / total < 0.01


def test_every_training_row_once_per_epoch_and_seeded(tiny_bundle):
    a = list(TrainSampler(tiny_bundle, batch_size=300, seed=1))
    b = list(TrainSampler(tiny_bundle, batch_size=300, seed=1))
    assert all(torch.equal(x.neg_items, y.neg_items) for x, y in zip(a, b))
    n = sum(len(x) for x in a)
    assert n == tiny_bundle.split("train").height


def test_restricting_to_one_category(tiny_bundle):
    s = TrainSampler(tiny_bundle, batch_size=1000, categories=[1], seed=0)
    assert all((b.category == 1).all() for b in s)
    assert s.n_rows == tiny_bundle.split("train", 1).height
