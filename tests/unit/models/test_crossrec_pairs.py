"""The flagship's (user, category) pair index (models/crossrec/pairs.py): memory grows with the
pairs that occur, unseen pairs read as a user new to the category, setup re-indexes keeping rows,
and artifacts written before the index load."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.io import CorruptFileError
from crossrec.models.per_category import build

pytestmark = pytest.mark.usefixtures("one_thread")


def two_of(n_categories: int, tmp_path, n_users: int = 600, per_user: int = 12):
    """A log where every user touches 2 categories; the same items and rows whatever
    `n_categories` (items are spread over the categories, 2400 in all)."""
    rng = np.random.default_rng(0)
    n_items = 2400
    item_cat = np.arange(n_items) % n_categories
    first = rng.integers(0, n_categories, n_users)
    second = (first + rng.integers(1, n_categories, n_users)) % n_categories
    users = np.repeat(np.arange(n_users), per_user)
    cats = np.where(np.arange(len(users)) % 2 == 0, first[users], second[users])
    per_cat = n_items // n_categories
    items = cats + n_categories * rng.integers(0, per_cat, len(users))
    frame = pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "item": [f"i{i}" for i in items],
            "category": [f"c{c:02d}" for c in item_cat[items]],
            "timestamp": np.arange(len(users)),
        }
    ).unique(subset=["user", "item"], keep="first")
    return prepare(frame, None, PrepareConfig(), tmp_path / f"b{n_categories}")


def flagship(bundle, **params):
    torch.manual_seed(0)
    model = build("crossrec", "pooled", {"dim": 16, **params}, Sizes.from_bundle(bundle))
    model.setup(bundle)
    return model


def state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_memory_follows_the_pairs_that_occur_not_users_times_categories(tmp_path):
    fifty, two = flagship(two_of(50, tmp_path)), flagship(two_of(2, tmp_path))
    assert fifty.sizes.n_categories == 50 and two.sizes.n_categories == 2
    assert len(fifty.user_cat_emb.weight) <= 2 * fifty.sizes.n_users  # at most two pairs per user
    assert state_bytes(fifty) <= 1.5 * state_bytes(two)


def test_trained_pairs_have_rows_and_unseen_pairs_read_zero(tiny_bundle):
    model = flagship(tiny_bundle, history={"encoder": "none"}, neighbourhood={"k": 0})
    train = tiny_bundle.split("train")
    seen = np.zeros((tiny_bundle.n_users, tiny_bundle.n_categories), dtype=bool)
    seen[train["user"].to_numpy(), train["category"].to_numpy()] = True
    keys = torch.from_numpy(np.flatnonzero(seen.ravel()))
    assert torch.equal(model.pair_keys_, keys) and len(model.user_cat_emb.weight) == len(keys)
    users = torch.arange(tiny_bundle.n_users)
    for c in range(tiny_bundle.n_categories):
        rows, found = model.pairs.rows(users, torch.full_like(users, c))
        assert torch.equal(found, torch.from_numpy(seen[:, c]))
        assert torch.equal(model.prior.new_to(users, c), ~found)
        assert torch.equal(model.pair_keys_[rows[found]], users[found] * tiny_bundle.n_categories + c)
        # an unseen pair's user vector is the shared part alone, as under category dropout
        with torch.no_grad():
            cat = torch.full_like(users, c)
            full = model.user_tower(users, cat, None)
            hidden = model.user_tower(users, cat, None, hide_specific=torch.ones_like(found))
        assert torch.equal(full[~found], hidden[~found]) and not torch.equal(full[found], hidden[found])


def test_setup_reindexes_keeping_the_rows_of_the_pairs_it_had(tiny_bundle):
    model = flagship(tiny_bundle)
    param = model.user_cat_emb.weight
    before = dict(zip(model.pair_keys_.tolist(), param.detach().clone()))
    train = tiny_bundle.split("train")

    class Rows:  # what the pair index reads of a Bundle: its training split
        def __init__(self, frame):
            self.frame = frame

        def split(self, name):
            return self.frame

    model.pairs.setup(Rows(train.head(train.height // 3)))  # a subset of the pairs
    kept = dict(zip(model.pair_keys_.tolist(), model.user_cat_emb.weight.detach()))
    assert set(kept) < set(before) and all(torch.equal(kept[k], before[k]) for k in kept)
    model.pairs.setup(tiny_bundle)  # all of them again: the kept rows stay, the others start anew
    again = dict(zip(model.pair_keys_.tolist(), model.user_cat_emb.weight.detach()))
    assert set(again) == set(before) and all(torch.equal(again[k], kept[k]) for k in kept)
    assert model.user_cat_emb.weight is param  # resized in place: a freezing flag on it holds


def test_an_artifact_written_before_the_index_loads_with_the_rows_of_its_trained_pairs(tiny_bundle):
    model = flagship(tiny_bundle)
    n_u, n_c, d = tiny_bundle.n_users, tiny_bundle.n_categories, model.config.dim
    state = dict(model.state_dict())
    keys = state.pop("pair_keys_")
    dense = torch.randn(n_u * n_c, d)
    mask = torch.zeros(n_u * n_c, dtype=torch.bool)
    mask[keys] = True
    state["user_cat_emb.weight"], state["user_cats_"] = dense, mask.view(n_u, n_c)
    fresh = build("crossrec", "pooled", {"dim": 16}, Sizes.from_bundle(tiny_bundle))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.pair_keys_, keys) and torch.equal(fresh.user_cat_emb.weight.detach(), dense[keys])
    # no mask (written before the prior too): every pair was trained
    state = {k: v for k, v in state.items() if k != "user_cats_"}
    state["user_cat_emb.weight"] = dense
    every = build("crossrec", "pooled", {"dim": 16}, Sizes.from_bundle(tiny_bundle))
    every.load_state_dict(state)
    assert len(every.pair_keys_) == n_u * n_c and torch.equal(every.user_cat_emb.weight.detach(), dense)
    # a table that is neither: refused, naming the tensor
    state["user_cat_emb.weight"] = dense[:-1]
    with pytest.raises(CorruptFileError, match="user_cat_emb.weight"):
        build("crossrec", "pooled", {"dim": 16}, Sizes.from_bundle(tiny_bundle)).load_state_dict(state)
