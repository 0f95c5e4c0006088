"""DTCDR, EMCDR and BiTGCF on the compact (user, category) pair index (models/pair_table.py):
memory grows with the pairs that occur, artifacts round-trip (and the dense layout loads), and an
update that adds a pair keeps every row the model had."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.io import CorruptFileError
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.update import feedback_rows
from tests.unit.models.test_crossrec_pairs import two_of

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "dtcdr": {"dim": 16, "combine": "concat"},
    "emcdr": {"dim": 16, "map_hidden": [16]},
    "bitgcf": {"dim": 16, "n_layers": 2, "transfer": "count"},
}
NAMES = sorted(SMALL)


def made(name, bundle, train: bool = False):
    torch.manual_seed(0)
    model = build(name, "pooled", SMALL[name], Sizes.from_bundle(bundle))
    model.setup(bundle)
    if train:
        Trainer(TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, checkpoint=False)).fit(model, bundle)
    return model.eval()


def user_bytes(model) -> int:
    """Bytes of the parameters and buffers, less the 'heads' (DTCDR's per-category towers,
    EMCDR's N x N mapping MLPs): those are the model's design, N or N^2 of them whatever the users."""
    heads = {id(p) for p in model.parameter_groups()["heads"]}
    tensors = [p for p in model.parameters() if id(p) not in heads] + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def scores(model, bundle) -> list[torch.Tensor]:
    users = torch.arange(bundle.n_users)
    with torch.no_grad():
        return [model.score(users, c) for c in range(bundle.n_categories)]


@pytest.mark.parametrize("name", NAMES)
def test_memory_follows_the_pairs_that_occur_not_users_times_categories(name, tmp_path):
    fifty_log, two_log = two_of(50, tmp_path), two_of(2, tmp_path)
    fifty, two = made(name, fifty_log), made(name, two_log)
    assert len(fifty.user_emb.weight) <= 2 * fifty.sizes.n_users  # at most two pairs per user
    assert user_bytes(fifty) <= 1.5 * user_bytes(two)


@pytest.mark.parametrize("name", NAMES)
def test_artifact_round_trip_gives_the_same_scores(name, tiny_bundle, tmp_path):
    model = made(name, tiny_bundle, train=True)
    save_artifact(tmp_path / name, model, name, "pooled", SMALL[name], Sizes.from_bundle(tiny_bundle))
    again = load_artifact(tmp_path / name).model
    assert torch.equal(again.user_emb.keys_, model.user_emb.keys_)
    for got, want in zip(scores(again, tiny_bundle), scores(model, tiny_bundle)):
        assert torch.equal(got, want)


def dense_state(model, noise: bool) -> dict[str, torch.Tensor]:
    """The model's state as the dense layout wrote it: a [n_users * N, d] table (random rows for the
    pairs without training rows where `noise`, as an untrained row was), an `active_` mask and, for
    BiTGCF, a dense lambda and the graph over user nodes u * N + c."""
    n_users, n_cat = model.sizes.n_users, model.sizes.n_categories
    keys, rows = model.user_emb.keys_, model.user_emb.weight.detach()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("user_emb.")}
    table = torch.randn(n_users * n_cat, rows.shape[1]) if noise else torch.zeros(n_users * n_cat, rows.shape[1])
    table[keys] = rows
    state["user_emb.weight"] = table
    if name_of(model) == "dtcdr":
        return state
    active = torch.zeros(n_users * n_cat, dtype=torch.bool)
    active[keys] = True
    state["active_"] = active.view(n_users, n_cat)
    if name_of(model) == "bitgcf":
        lam = torch.rand(n_users * n_cat)  # any value where inactive: it was never read
        lam[keys] = model.lambda_
        idx = model.graph_indices_
        state["lambda_"] = lam.view(n_users, n_cat)
        state["graph_indices_"] = torch.where(
            idx < len(keys), keys[idx.clamp_max(len(keys) - 1)], idx - len(keys) + n_users * n_cat
        )
    return state


def name_of(model) -> str:
    return type(model).__name__.lower()


@pytest.mark.parametrize("name", NAMES)
def test_an_artifact_written_with_the_dense_layout_loads_with_the_same_scores(name, tiny_bundle):
    model = made(name, tiny_bundle, train=True)
    # DTCDR has no activity mask: its table's non-zero rows are the pairs (an old artifact: all)
    fresh = build(name, "pooled", SMALL[name], Sizes.from_bundle(tiny_bundle))
    fresh.load_state_dict(dense_state(model, noise=name != "dtcdr"))
    fresh.eval()
    assert torch.equal(fresh.user_emb.keys_, model.user_emb.keys_)
    for got, want in zip(scores(fresh, tiny_bundle), scores(model, tiny_bundle)):
        assert torch.equal(got, want)
    if name == "dtcdr":  # a real old DTCDR artifact: every row drawn, so every pair keeps one
        every = build(name, "pooled", SMALL[name], Sizes.from_bundle(tiny_bundle))
        every.load_state_dict(dense_state(model, noise=True))
        assert len(every.user_emb.keys_) == tiny_bundle.n_users * tiny_bundle.n_categories
    else:  # a table that does not fit the users x categories: refused, naming the tensor
        state = dense_state(model, noise=True)
        state["user_emb.weight"] = state["user_emb.weight"][:-1]
        with pytest.raises(CorruptFileError, match="user_emb.weight.*train it again"):
            build(name, "pooled", SMALL[name], Sizes.from_bundle(tiny_bundle)).load_state_dict(state)


def with_a_new_pair(bundle) -> tuple[Bundle, int]:
    """The bundle plus one training row for a (user, category) pair it has no training row for
    (built as `crossrec update` builds it), and that pair's key."""
    n_cat, train = bundle.n_categories, bundle.split("train")
    seen = set((train["user"].to_numpy() * n_cat + train["category"].to_numpy()).tolist())
    key = next(k for k in range(bundle.n_users * n_cat) if k not in seen)
    user, cat = divmod(key, n_cat)
    have = set(bundle.interactions.filter(pl.col("user") == user)["item"].to_list())
    item = next(int(i) for i in np.flatnonzero(bundle.item_category == cat) if int(i) not in have)
    event = [(str(bundle.raw_user_ids()[user]), str(bundle.raw_item_ids()[item]), "click", 0.0)]
    rows, stats = feedback_rows(bundle, event)
    assert stats["added"] == 1
    return Bundle(pl.concat([bundle.interactions, rows]), bundle.items, bundle.users, bundle.manifest), key


@pytest.mark.parametrize("name", NAMES)
def test_an_update_adding_a_pair_keeps_every_row_and_trains(name, tiny_bundle):
    model = made(name, tiny_bundle, train=True).train()
    before = dict(zip(model.user_emb.keys_.tolist(), model.user_emb.weight.detach().clone()))
    param = model.user_emb.weight
    new, key = with_a_new_pair(tiny_bundle)
    model.setup(new)  # what the trainer of `crossrec update` does first
    after = dict(zip(model.user_emb.keys_.tolist(), model.user_emb.weight.detach()))
    assert set(after) == set(before) | {key} and key not in before
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.user_emb.weight is param  # resized in place: optimiser groups and freezing flags hold
    Trainer(TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, checkpoint=False)).fit(model, new)
    assert all(torch.isfinite(s).all() for s in scores(model.eval(), new))
