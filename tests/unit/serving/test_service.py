"""The service on trained models of the tiny world: the index agrees with `score`, explanations
come from the model's own terms, new items are live from their text, errors name the field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.models.per_category import build
from crossrec.serving.config import ServeConfig
from crossrec.serving.flagship import serving_view
from crossrec.serving.index import ItemIndex, recall_against_exact
from crossrec.serving.service import Service, ServingError
from crossrec.serving.store import SQLiteStore
from crossrec.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def trained(bundle, root, name, params):
    torch.manual_seed(0)
    model = build(name, "pooled", params, Sizes.from_bundle(bundle))
    Trainer(TrainConfig(epochs=3, batch_size=512, lr=5e-3, progress=False, seed=0)).fit(model, bundle)
    save_artifact(root, model, name, "pooled", params, Sizes.from_bundle(bundle), bundle=bundle)
    return load_artifact(root)


@pytest.fixture(scope="module")
def mf(tiny_bundle, tmp_path_factory):
    return trained(tiny_bundle, tmp_path_factory.mktemp("mf") / "a", "mf", {"dim": 16})


@pytest.fixture(scope="module")
def flagship(text_flagship):
    return text_flagship


def raw_users(bundle, n):
    return [str(u) for u in bundle.raw_user_ids()[:n]]


def score_top(art, bundle, user, c, k):
    with torch.no_grad():
        s = art.model.score(torch.tensor([bundle.user_id(user)]), c)[0].numpy()
    order = np.lexsort((np.arange(len(s)), -s))[:k]  # best first, ties to the lower index
    raw, ids = bundle.raw_item_ids(), bundle.item_index(c)
    return [str(raw[ids[j]]) for j in order]


def test_the_exact_index_returns_scores_top10_for_1000_random_users(medium_bundle, tmp_path):
    art = trained(medium_bundle, tmp_path / "mf", "mf", {"dim": 16})
    svc = Service(art, medium_bundle)
    rng = np.random.default_rng(0)
    users = rng.choice(medium_bundle.n_users, 1000, replace=False)
    for n, u in enumerate(users):
        user, c = str(medium_bundle.raw_user_ids()[u]), n % medium_bundle.n_categories
        got = [x["item"] for x in svc.recommend(user, medium_bundle.categories[c], 10, exclude_seen=False)["items"]]
        assert got == score_top(art, medium_bundle, user, c, 10), (user, c)


def test_the_flagship_index_and_sparse_re_rank_agree_with_full_scoring(flagship, tiny_bundle):
    svc = Service(flagship, tiny_bundle, ServeConfig(rerank_pool=10))  # exact without a big pool
    for user in raw_users(tiny_bundle, 50):
        for c, name in enumerate(tiny_bundle.categories):
            got = [x["item"] for x in svc.recommend(user, name, 10, exclude_seen=False)["items"]]
            assert got == score_top(flagship, tiny_bundle, user, c, 10), (user, name)


def test_seen_items_are_left_out(mf, tiny_bundle):
    svc = Service(mf, tiny_bundle)
    user = raw_users(tiny_bundle, 1)[0]
    seen = set(
        tiny_bundle.raw_item_ids()[tiny_bundle.csr(("train", "valid", "test"))[tiny_bundle.user_id(user)].indices]
    )
    for name in tiny_bundle.categories:
        assert not seen & {x["item"] for x in svc.recommend(user, name, 20)["items"]}


def test_explanations_name_history_items_from_the_models_terms(flagship, tiny_bundle):
    svc = Service(flagship, tiny_bundle)
    user = raw_users(tiny_bundle, 3)[2]
    out = svc.recommend(user, tiny_bundle.categories[1], 5)
    history = set(
        tiny_bundle.raw_item_ids()[
            flagship.model.history_[tiny_bundle.user_id(user)].numpy().clip(max=tiny_bundle.n_items - 1)
        ]
    )
    because = [b for x in out["items"] for b in x["because"]]
    assert because and all(b["item"] in history and b["weight"] > 0 for b in because)
    assert because[0]["text"].startswith("because you liked ") and f" in {because[0]['category']}" in because[0]["text"]


def test_flagship_contributions_add_up_to_its_side_terms(flagship, tiny_bundle):
    """Without the encoder's (first-order) share, the per-history-item contributions add up to the
    neighbourhood + content terms exactly: the explanation is the model's own arithmetic."""
    m = copy.deepcopy(flagship.model)
    m.encoder = None
    u, c = 4, 1
    items = m.index[c][:6]
    with torch.no_grad():
        hist, w = serving_view(m).contributions(u, c, items)
        side = m.side(m.history_[u : u + 1], torch.tensor([c]), torch.tensor([u]), items, leave_out=False)[0]
    assert w.shape == (int((m.history_[u] != m.pad).sum()), 6) and len(hist) == w.shape[0]
    assert torch.allclose(w.sum(0), side, atol=1e-5) and side.abs().sum() > 0


def test_a_new_item_is_recommended_to_a_user_whose_history_matches_its_text(flagship, tiny_bundle, tmp_path):
    store = SQLiteStore(tmp_path / "store.sqlite")
    svc = Service(flagship, tiny_bundle, store=store)
    c = 1
    name = tiny_bundle.categories[c]
    user = raw_users(tiny_bundle, 1)[0]
    # The item's text: that of the user's best-scored item in the category, so the text matches.
    best = svc.recommend(user, name, 1)["items"][0]
    row = tiny_bundle.items.filter(tiny_bundle.items["raw_item"] == best["item"])
    svc.add_item("brand-new", name, best["title"], row["description"][0])
    top = [x["item"] for x in svc.recommend(user, name, 10)["items"]]
    assert "brand-new" in top
    assert svc.similar("brand-new", 5)["items"]
    # It survives a restart: a new service on the same store knows it.
    again = Service(flagship, tiny_bundle, store=SQLiteStore(tmp_path / "store.sqlite"))
    assert "brand-new" in [x["item"] for x in again.recommend(user, name, 10)["items"]]


def test_unknown_users_are_served_from_feedback_else_popularity(flagship, tiny_bundle, tmp_path):
    svc = Service(flagship, tiny_bundle, store=SQLiteStore(tmp_path / "s.sqlite"))
    name = tiny_bundle.categories[0]
    cold = svc.recommend("nobody", name, 5)
    assert cold["source"] == "popularity" and len(cold["items"]) == 5
    liked = str(tiny_bundle.raw_item_ids()[int(flagship.model.index[1][0])])
    svc.feedback("nobody", liked, "purchase", 1.0)
    warm = svc.recommend("nobody", name, 5)
    assert warm["source"] == "feedback history" and len(warm["items"]) == 5
    assert svc.explain("nobody", warm["items"][0]["item"])["item"]["item"] == warm["items"][0]["item"]


def test_errors_name_the_field(mf, tiny_bundle):
    svc = Service(mf, tiny_bundle)
    user = raw_users(tiny_bundle, 1)[0]
    cases = [
        (lambda: svc.recommend(user, "no-such-category", 5), "category", 404),
        (lambda: svc.recommend(user, tiny_bundle.categories[0], 0), "k", 422),
        (lambda: svc.similar("no-such-item", 5), "item", 404),
        (lambda: svc.explain("nobody", str(tiny_bundle.raw_item_ids()[0])), "user", 404),
        (lambda: svc.feedback(user, str(tiny_bundle.raw_item_ids()[0]), "Not An Event", 1.0), "event", 422),
        (lambda: svc.add_item("x", tiny_bundle.categories[0], "a title"), "title", 409),  # MF cannot read text
    ]
    for call, field, status in cases:
        with pytest.raises(ServingError) as e:
            call()
        assert (e.value.field, e.value.status) == (field, status)


def test_hnsw_recall_against_exact_is_measured():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5000, 16)).astype(np.float32)
    ids = np.arange(5000)
    q = rng.normal(size=(200, 16)).astype(np.float32)
    exact, approx = ItemIndex(v, ids), ItemIndex(v, ids, kind="hnsw")
    assert recall_against_exact(exact, exact, q) == 1.0
    assert 0.9 < recall_against_exact(approx, exact, q) <= 1.0
    assert ItemIndex(v, ids, kind="auto", hnsw_above=100).kind == "hnsw"
