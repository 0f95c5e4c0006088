"""Remapped: a model trained on one Bundle, scored through another Bundle's ids."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.synthetic import generate, tiny_config
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.evaluator import Evaluator
from crossrec.evaluation.remap import Remapped


class Coded(torch.nn.Module):
    """score(u, c)[b, j] = 1000 * u + local item j: the ids it was asked for, readable from the scores."""

    def __init__(self, bundle):
        super().__init__()
        self.sizes = [bundle.n_items_in(c) for c in range(bundle.n_categories)]

    def score(self, users, category):
        return users.float().unsqueeze(1) * 1000 + torch.arange(self.sizes[category]).float()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The full tiny world, and a Bundle of it without its first two users and with the categories
    listed in another order: every internal id differs."""
    inter, items = generate(tiny_config())
    full = prepare(inter, items, PrepareConfig(), tmp_path_factory.mktemp("remap") / "full")
    gone = inter["user"].unique().sort()[:2]
    part_rows = inter.filter(~pl.col("user").is_in(gone.implode())).sort("category", descending=True)
    part = prepare(part_rows, items, PrepareConfig(), tmp_path_factory.mktemp("remap") / "part")
    return full, part


def test_scores_come_back_in_the_target_ids(pair):
    full, part = pair
    model = Remapped(Coded(full), full, part)
    for c, name in enumerate(part.categories):
        users = torch.arange(part.n_users)
        s = model.score(users, c).numpy()
        assert s.shape == (part.n_users, part.n_items_in(c))
        src_user = np.array([full.user_id(r) for r in part.raw_user_ids()])
        raw_items = part.raw_item_ids()[part.item_index(c)]
        src_glob = np.array([list(full.raw_item_ids()).index(r) for r in raw_items])
        assert (full.item_category[src_glob] == full.category_id(name)).all()
        expect = src_user[:, None] * 1000.0 + full.item_local[src_glob][None, :]
        np.testing.assert_array_equal(s, expect)


def test_a_model_through_its_own_bundle_evaluates_the_same(tiny_bundle):
    from crossrec.data.batch import Sizes
    from crossrec.models.pop import Pop, PopConfig

    pop = Pop(PopConfig(), Sizes.from_bundle(tiny_bundle))
    pop.fit(tiny_bundle)
    ev = Evaluator(tiny_bundle, EvalConfig(ks=[10], beyond=False))
    direct, through = ev.evaluate(pop).table, ev.evaluate(Remapped(pop, tiny_bundle, tiny_bundle)).table
    assert direct.equals(through)


def test_users_the_model_never_saw_are_a_clear_error(pair):
    full, part = pair
    with pytest.raises(ValueError, match="users of the target Bundle are not in the model's Bundle"):
        Remapped(Coded(part), part, full)


def test_evaluating_a_wrapper_gives_each_module_back_its_mode():
    """A fresh wrapper is in training mode; evaluating it must not switch the model inside to
    training (dropout on for whatever runs next), nor a submodule kept in eval mode."""
    from crossrec.evaluation.tensors import eval_mode

    inner = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(2, 2))
    inner.eval()
    outer = torch.nn.Sequential(torch.nn.Dropout(0.5), inner)
    assert outer.training and not inner.training
    with eval_mode(outer):
        assert not any(m.training for m in outer.modules())
    assert outer.training and outer[0].training
    assert not any(m.training for m in inner.modules())
