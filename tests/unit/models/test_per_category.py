"""Direct tests of the single-category wrapper (models/per_category.py) and `build`."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.per_category import PerCategory, build
from crossrec.typed import ConfigError

SIZES = Sizes(3, 5, (0, 0, 1, 1, 1), (0, 1, 0, 1, 2), ("a", "b"))


class Constant(nn.Module):
    """Scores every item of any category with one number; predicts that number as a rating."""

    def __init__(self, value: float, predicts: bool = True) -> None:
        super().__init__()
        self.value, self.predicts_ratings = value, predicts

    def score(self, users: Tensor, category: int) -> Tensor:
        n = sum(1 for c in SIZES.item_category if c == category)
        return torch.full((len(users), n), self.value)

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        return torch.full((len(items),), self.value)


def test_each_category_is_answered_by_its_own_model():
    m = PerCategory([Constant(1.0), Constant(2.0)], SIZES.item_category)
    users = torch.tensor([0, 2])
    assert torch.equal(m.score(users, 0), torch.ones(2, 2))
    assert torch.equal(m.score(users, 1), torch.full((2, 3), 2.0))
    # Ratings of mixed items go to the item's category model.
    assert m.predict_rating(torch.tensor([0, 1, 2]), torch.tensor([0, 3, 1])).tolist() == [1.0, 2.0, 1.0]
    assert m.predicts_ratings
    assert not PerCategory([Constant(1.0), Constant(2.0, predicts=False)], SIZES.item_category).predicts_ratings


def test_build_gives_independent_models_per_category():
    torch.manual_seed(0)
    m = build("mf", "single", {"dim": 4}, SIZES)
    assert isinstance(m, PerCategory) and len(m.models) == 2
    a, b = m.models
    assert a is not b and not torch.equal(a.user_emb.weight, b.user_emb.weight)
    with torch.no_grad():
        a.user_emb.weight.zero_()
    assert b.user_emb.weight.abs().sum() > 0  # nothing shared between them
    assert not isinstance(build("mf", "pooled", {"dim": 4}, SIZES), PerCategory)


def test_build_checks_mode_and_options():
    with pytest.raises(ValueError, match="single or pooled"):
        build("mf", "both", {}, SIZES)
    with pytest.raises(ConfigError, match="model.dimm"):
        build("mf", "pooled", {"dimm": 4}, SIZES)
