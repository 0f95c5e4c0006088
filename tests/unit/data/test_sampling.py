"""Negative sampling: in-category, avoids training positives, seeded, vectorised shapes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from crossrec.data.sampling import Prefetch, TrainSampler, _bit_filter, _bit_test


def test_negatives_come_from_the_positive_category_and_are_unseen(tiny_bundle):
    s = TrainSampler(tiny_bundle, batch_size=512, n_negatives=5, seed=0)
    cat = torch.from_numpy(tiny_bundle.item_category)
    seen = tiny_bundle.csr("train")
    total = bad = 0
    for b in s:
        assert b.neg_items.shape == (len(b), 5)
        assert torch.equal(cat[b.pos_items], b.category)
        assert (cat[b.neg_items] == b.category.unsqueeze(1)).all()
        hits = np.asarray(
            seen[b.users.unsqueeze(1).expand_as(b.neg_items).numpy().ravel(), b.neg_items.numpy().ravel()]
        ).ravel()
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


def test_seen_check_is_exact_behind_the_bit_filter(tiny_bundle):
    s = TrainSampler(tiny_bundle, batch_size=64, seed=0)
    users = torch.randint(0, tiny_bundle.n_users, (20000,))
    items = torch.randint(0, tiny_bundle.n_items, (20000,))
    users = torch.cat([users, s.users])  # every training pair, plus random pairs
    items = torch.cat([items, s.items])
    keys = users * s.n_items + items
    assert torch.equal(s._is_seen(users, items), torch.isin(keys, s.seen.keys))


def test_bit_filter_has_no_false_negatives_and_few_false_positives():
    keys = torch.unique(torch.randint(0, 2**40, (50000,)))
    bits, words = _bit_filter(keys)
    assert _bit_test(words, bits, keys).all()
    others = torch.randint(2**41, 2**42, (50000,))
    assert _bit_test(words, bits, others).float().mean() < 0.1


def test_prefetch_yields_the_same_batches_and_stops_cleanly(tiny_bundle):
    plain = list(TrainSampler(tiny_bundle, batch_size=32, seed=3))
    pre = Prefetch(TrainSampler(tiny_bundle, batch_size=32, seed=3))
    assert len(pre) == len(plain)
    got = list(pre)
    assert len(got) == len(plain)
    assert all(torch.equal(a.neg_items, b.neg_items) and torch.equal(a.users, b.users) for a, b in zip(got, plain))
    it = iter(Prefetch(TrainSampler(tiny_bundle, batch_size=8, seed=3), depth=1))
    next(it)
    it.close()  # an early stop (an exception in the training loop) ends the worker thread
    assert not any(t.name == "crossrec-prefetch" for t in threading.enumerate())


def test_prefetch_raises_the_workers_error():
    def broken():
        yield 1
        raise ValueError("bad batch")

    class Batches:
        def __iter__(self):
            return broken()

    with pytest.raises(ValueError, match="bad batch"):
        list(Prefetch(Batches()))
