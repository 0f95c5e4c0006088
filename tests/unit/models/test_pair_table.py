"""CMF's per-category user offsets on the compact pair table (models/pair_table.py): memory grows
with the (user, category) pairs that occur, an unseen pair reads zero, a later setup keeps every
row it had, and an artifact written with the dense table loads with the same scores."""

from __future__ import annotations

import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.io import CorruptFileError
from crossrec.models.pair_table import PairTable
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from tests.unit.models.test_crossrec_pairs import state_bytes, two_of

pytestmark = pytest.mark.usefixtures("one_thread")


def cmf(bundle, **params):
    torch.manual_seed(0)
    model = build("cmf", "pooled", {"dim": 16, "category_offset": True, **params}, Sizes.from_bundle(bundle))
    model.setup(bundle)
    return model


def test_offsets_follow_the_pairs_that_occur_not_users_times_categories(tmp_path):
    fifty, two = cmf(two_of(50, tmp_path)), cmf(two_of(2, tmp_path))
    assert len(fifty.user_offset.weight) <= 2 * fifty.sizes.n_users  # at most two pairs per user
    assert state_bytes(fifty) <= 1.5 * state_bytes(two)


def test_an_unseen_pair_reads_zero_and_gets_no_gradient():
    table = PairTable(n_categories=3, dim=4)
    table.set_keys(torch.tensor([1, 5]))  # (user 0, category 1), (user 1, category 2)
    with torch.no_grad():
        table.weight.fill_(1.0)
    out = table(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]))
    assert out.tolist() == [[1.0] * 4, [0.0] * 4, [1.0] * 4]
    out.sum().backward()
    assert table.weight.grad is not None
    grad = table.weight.grad.to_dense()
    assert grad.tolist() == [[1.0] * 4, [1.0] * 4]  # one read of each pair's own row, none of row 0 for the miss


def test_a_later_setup_keeps_every_row_and_adds_new_pairs_at_zero():
    table = PairTable(n_categories=2, dim=2)
    table.set_keys(torch.tensor([0, 3]))
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    param = table.weight
    table.add_keys(torch.tensor([2]))  # another stage's categories: nothing is dropped
    assert table.keys_.tolist() == [0, 2, 3]
    assert table.weight.tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]
    assert table.weight is param  # the same Parameter: optimiser groups and freezing flags hold


def test_trained_cmf_round_trips_and_a_dense_artifact_loads_with_the_same_scores(tiny_bundle):
    model = cmf(tiny_bundle)
    Trainer(TrainConfig(epochs=1, progress=False, checkpoint=False)).fit(model, tiny_bundle)
    users = torch.arange(tiny_bundle.n_users)
    state = model.state_dict()
    again = cmf(tiny_bundle)
    again.load_state_dict(state)
    n_cat = tiny_bundle.n_categories
    dense = torch.zeros(tiny_bundle.n_users * n_cat, 16)  # the table as it was written before the index
    dense[model.user_offset.keys_] = model.user_offset.weight.detach()
    old = {k: v for k, v in state.items() if not k.startswith("user_offset.")} | {"user_offset.weight": dense}
    migrated = build("cmf", "pooled", {"dim": 16, "category_offset": True}, Sizes.from_bundle(tiny_bundle))
    migrated.load_state_dict(old)
    with torch.no_grad():
        for c in range(n_cat):
            want = model.score(users, c)
            assert torch.equal(again.score(users, c), want)
            assert torch.equal(migrated.score(users, c), want)


def test_a_table_that_does_not_match_its_keys_is_refused(tiny_bundle):
    state = cmf(tiny_bundle).state_dict()
    state["user_offset.emb.weight"] = torch.zeros(3, 16)
    with pytest.raises(CorruptFileError, match="user_offset.emb.weight"):
        cmf(tiny_bundle).load_state_dict(state)
