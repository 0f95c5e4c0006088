"""Models that read item text on the synthetic world with the cold-start item protocol: they must
recommend items nobody has interacted with, where every ID model scores nothing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.synthetic import generate
from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import attach_text
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.crossrec.calibration import _unit_sums, fit_cold_offsets
from crossrec.models.per_category import build
from crossrec.serving.flagship import serving_view
from crossrec.training.trainer import TrainConfig, Trainer
from tests.conftest import medium_config

pytestmark = pytest.mark.slow

# The medium world (tests/conftest.py): its item texts are encoded once (the zero-shot world is the
# same world, so the cache answers); the questions asked here are qualitative (text scores cold
# items, the borrowed parts are the lenders').
WORLD = medium_config()


@pytest.fixture(scope="module")
def cold_world(tmp_path_factory, text_cache):
    inter, items = generate(WORLD)
    bundle = prepare(
        inter,
        items,
        PrepareConfig(cold_item_fraction=0.1, cold_user_fraction=0.2),
        tmp_path_factory.mktemp("cold") / "bundle",
    )
    attach_text(bundle, EncoderConfig(), progress=False)
    return bundle


@pytest.fixture(scope="module")
def trained(cold_world):
    models = {}
    # Two epochs: the warm-started flagships clear every floor below by a wide margin by then, and
    # every question asked here is qualitative.
    cfg = TrainConfig(epochs=2, batch_size=1024, lr=3e-3, patience=2, progress=False, seed=0)
    for label, name, params in [
        ("pop", "pop", {}),
        ("textknn", "textknn", {}),
        ("ials", "ials", {"factors": 32, "regularization": 0.1}),
        ("crossrec-id", "crossrec", {"dim": 32}),
        ("crossrec-text", "crossrec", {"dim": 32, "item_tower": "text+id"}),
    ]:
        torch.manual_seed(0)
        model = build(name, "pooled", params, Sizes.from_bundle(cold_world))
        Trainer(cfg).fit(model, cold_world)
        models[label] = model
    return models


@pytest.fixture(scope="module")
def results(cold_world, trained):
    ev = Evaluator(cold_world, EvalConfig(ks=(10,)), split="test")
    return {label: ev.evaluate(model) for label, model in trained.items()}


def cell(res, slice_, metric="recall@10"):
    return res.metric(metric, "ALL", slice_)


def test_the_protocol_makes_a_measurable_cold_item_slice(cold_world):
    assert cold_world.interactions.filter(cold_world.interactions["cold_item"]).height > 500


def test_text_models_recommend_cold_items(results):
    pop, text = cell(results["pop"], "cold_item"), cell(results["crossrec-text"], "cold_item")
    assert cell(results["crossrec-id"], "cold_item") <= pop + 1e-9  # an ID model has nothing to go on
    assert text > 5 * max(pop, 1e-3)
    assert cell(results["textknn"], "cold_item") > 5 * max(pop, 1e-3)


def test_ials_and_the_text_flagship_beat_popularity_overall(results):
    pop = cell(results["pop"], "all", "ndcg@10")
    assert cell(results["ials"], "all", "ndcg@10") > 1.2 * pop
    assert cell(results["crossrec-text"], "all", "ndcg@10") > 1.2 * pop


def test_the_protocol_puts_cold_items_in_validation_and_test(cold_world):
    # (validation's share of them is its share of the held-out rows: tests/unit/data/test_prepare.py)
    cold = cold_world.interactions.filter(cold_world.interactions["cold_item"] & (cold_world.interactions["split"] > 0))
    by_split = cold.group_by("split").agg(pl.col("item").n_unique())["item"].to_list()
    assert len(by_split) == 2 and min(by_split) > 0.15 * sum(by_split)


def test_the_cold_offset_maximises_the_validation_likelihood(cold_world, trained):
    model = trained["crossrec-text"]
    fitted = model.cold_offset_.clone()
    assert torch.isfinite(fitted).all() and bool((fitted != 0).any())
    model.cold_offset_.zero_()
    try:
        for c in range(cold_world.n_categories):
            pos_s, pos_h, lse_w, lse_c = _unit_sums(model, cold_world, c, 512)

            def loglik(d, pos_s=pos_s, pos_h=pos_h, lse_w=lse_w, lse_c=lse_c):
                return float(np.mean(pos_s + d * pos_h - np.logaddexp(lse_w, lse_c + d)))

            best = float(fitted[c])
            assert loglik(best) >= max(loglik(best - 0.5), loglik(best + 0.5), loglik(0.0))
    finally:
        model.cold_offset_.copy_(fitted)


def test_the_offset_lifts_exactly_the_items_scored_from_text(cold_world, trained):
    model = trained["crossrec-text"]
    users = torch.arange(8)
    with torch.no_grad():
        with_offset = model.score(users, 0).clone()
        fitted = model.cold_offset_.clone()
        model.cold_offset_.zero_()
        without = model.score(users, 0)
        model.cold_offset_.copy_(fitted)
    untrained = torch.from_numpy(cold_world.csr("train", 0).getnnz(axis=0) == 0)
    assert torch.allclose(with_offset[:, untrained] - without[:, untrained], fitted[0].expand(8, int(untrained.sum())))
    assert torch.equal(with_offset[:, ~untrained], without[:, ~untrained])


def test_no_offset_without_untrained_items_in_validation():
    # each user's last two items rotate, so every validation item has training rows
    rows = [(f"u{u}", f"{c}{k}", c, (k + u) % 10) for u in range(60) for c in ("a", "b") for k in range(10)]
    u, i, c, t = zip(*rows)
    bundle = prepare(pl.DataFrame({"user": u, "item": i, "category": c, "timestamp": t}), None, PrepareConfig())
    assert bundle.split("valid").height > 0
    assert (fit_cold_offsets(None, bundle) == 0).all()  # nothing to fit on: no scoring pass at all


def _untrained_with_text(bundle, model):
    return torch.nonzero((model.log_count_ == 0) & (model.items.text_.abs().sum(1) > 0)).squeeze(1)


def test_untrained_items_borrow_their_nearest_trained_texts_id_parts(cold_world, trained):
    model = trained["crossrec-text"]
    cold = _untrained_with_text(cold_world, model)
    assert len(cold) > 0
    assert torch.equal(torch.nonzero(model.borrow_row_ >= 0).squeeze(1), cold)  # exactly the untrained items
    k = model.config.text.borrow
    assert model.borrow_nbr_.shape == (len(cold), k)
    assert bool((model.log_count_[model.borrow_nbr_] > 0).all())  # every lender trained
    assert torch.allclose(model.borrow_w_.sum(1), torch.ones(len(cold)))
    j, row = int(cold[0]), int(model.borrow_row_[cold[0]])
    text = torch.nn.functional.normalize(model.items.text_, dim=1)
    sims = text @ text[j]
    sims[model.log_count_ == 0] = -2.0
    assert set(model.borrow_nbr_[row].tolist()) == set(sims.topk(k).indices.tolist())  # the k nearest by cosine
    w = torch.softmax(sims[model.borrow_nbr_[row]] / model.config.text.borrow_temperature, 0)
    assert torch.allclose(model.borrow_w_[row], w, atol=1e-5)
    nbr = model.borrow_nbr_[row]
    assert torch.allclose(model.items.emb.weight[j], (w.unsqueeze(1) * model.items.emb.weight[nbr]).sum(0), atol=1e-5)
    assert torch.allclose(model.items.bias[j], (w * model.items.bias[nbr]).sum(), atol=1e-5)


def test_a_borrowed_items_neighbourhood_score_is_its_lenders(cold_world, trained):
    from crossrec.models.crossrec.borrow import borrowed_neighbourhood

    model = trained["crossrec-text"]
    users = torch.arange(16)
    hist = model.history_[users]
    row = model.borrow_row_[_untrained_with_text(cold_world, model)[:3]]
    nbr, w = model.borrow_nbr_[row], model.borrow_w_[row]
    with torch.no_grad():
        got = borrowed_neighbourhood(model.neighbours, hist, users, nbr, w)
        want = torch.zeros(16, 3)
        for j in range(3):
            for n, wn in zip(nbr[j].tolist(), w[j].tolist()):
                c = torch.full_like(users, int(model.item_category_[n]))
                want[:, j] += wn * model.neighbours.at(hist, c, users, torch.tensor([n]), leave_out=False)[:, 0]
    assert torch.allclose(got, want, atol=1e-5)


def test_every_scoring_path_agrees_on_borrowed_items(cold_world, trained, tmp_path):
    from crossrec.artifact import load_artifact, save_artifact

    model = trained["crossrec-text"]
    view = serving_view(model)
    users, c = torch.arange(12), 0
    idx = model.index[c]
    local = torch.nonzero(model.borrow.borrowed(idx)).squeeze(1)[:5]
    assert len(local) > 0
    with torch.no_grad():
        full = model.score(users, c).clone()
        # the service's re-rank: exact scores of candidate pools; the sparse candidates include them
        score_items = view.score_items(users, c, idx[local].expand(len(users), -1))
        assert torch.allclose(score_items, full[:, local], atol=1e-4)
        assert set(idx[local].tolist()) <= set(view.sparse_candidates(users, c).tolist())
        # an item added after training with the same text is scored as the bundle's untrained item
        by_text = view.score_text_items(users, c, model.items.text_[idx[local]])
        assert torch.allclose(by_text, full[:, local], atol=1e-4)
    save_artifact(
        tmp_path / "m", model, "crossrec", "pooled", {"dim": 32, "item_tower": "text+id"}, Sizes.from_bundle(cold_world)
    )
    loaded = load_artifact(tmp_path / "m").model
    with torch.no_grad():
        assert torch.allclose(loaded.score(users, c), full, atol=1e-5)


def test_explanations_name_a_borrowed_items_lenders_and_their_terms(cold_world, trained, tmp_path):
    from crossrec.artifact import load_artifact, save_artifact
    from crossrec.serving.service import Service

    model = trained["crossrec-text"]
    view = serving_view(model)
    idx = model.index[0]
    j = int(idx[torch.nonzero(model.borrow.borrowed(idx)).squeeze(1)[0]])
    lenders = view.lenders(j)
    row = int(model.borrow_row_[j])
    assert [n for n, _ in lenders] == model.borrow_nbr_[row][
        torch.argsort(model.borrow_w_[row], descending=True, stable=True)
    ].tolist()
    assert view.lenders(int(idx[model.log_count_[idx] > 0][0])) == []  # a trained item borrowed nothing
    # each history item's share of the borrowed neighbourhood term sums to the term itself
    user = 3
    with torch.no_grad():
        hist, shares = view.contributions(user, 0, torch.tensor([j]), torch.zeros(model.config.dim))
        enc = view.encoder_shares(model.history_[user], 0, torch.tensor([j]), torch.zeros(model.config.dim))
        side = model.side(
            model.history_[[user]], torch.tensor([0]), torch.tensor([user]), torch.tensor([j]), leave_out=False
        )
    assert torch.allclose(shares.sum(0) - enc[model.history_[user] != model.pad].sum(0), side[0], atol=1e-5)
    save_artifact(
        tmp_path / "m",
        model,
        "crossrec",
        "pooled",
        {"dim": 32, "item_tower": "text+id"},
        Sizes.from_bundle(cold_world),
        bundle=cold_world,
    )
    svc = Service(load_artifact(tmp_path / "m"), cold_world)
    out = svc.explain(str(cold_world.raw_user_ids()[user]), str(cold_world.raw_item_ids()[j]))
    raw = cold_world.raw_item_ids()
    assert [str(x["item"]) for x in out["like"]] == [str(raw[n]) for n, _ in lenders[: svc.cfg.explain_top]]
    assert out["like"][0]["text"].startswith("like ") and out["like"][0]["weight"] == round(lenders[0][1], 6)
    warm = int(idx[model.log_count_[idx] > 0][0])
    assert "like" not in svc.explain(str(cold_world.raw_user_ids()[user]), str(raw[warm]))


def test_borrowing_off_leaves_untrained_items_to_their_text(cold_world, trained):
    model = trained["crossrec-text"]
    saved = (model.borrow_row_.clone(), model.borrow_nbr_, model.borrow_w_, model.items.emb.weight.detach().clone())
    object.__setattr__(model.config.text, "borrow", 0)
    try:
        model.borrow_row_.fill_(-1)
        model.borrow_nbr_, model.borrow_w_ = model.borrow_nbr_[:0], model.borrow_w_[:0]
        model.borrow()
        assert not bool(model.borrow.borrowed(model.index[0]).any())
        seen = model.cold.seen(model.index[0])
        untrained = model.cold.untrained(model.index[0])
        assert torch.equal(seen.bool(), ~untrained)  # their ID part hidden again
    finally:
        object.__setattr__(model.config.text, "borrow", 20)
        model.borrow_row_, model.borrow_nbr_, model.borrow_w_ = saved[0], saved[1], saved[2]


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory, text_cache):
    inter, items = generate(WORLD)
    bundle = prepare(inter, items, PrepareConfig(zero_shot_category="garden"), tmp_path_factory.mktemp("zs") / "bundle")
    attach_text(bundle, EncoderConfig(), progress=False)
    torch.manual_seed(0)
    model = build("crossrec", "pooled", {"dim": 32, "item_tower": "text+id"}, Sizes.from_bundle(bundle))
    Trainer(TrainConfig(epochs=2, batch_size=1024, lr=3e-3, patience=2, progress=False, seed=0)).fit(model, bundle)
    return bundle, model


def test_a_zero_shot_categorys_items_score_as_their_lenders_in_their_own_categories(zero_shot):
    bundle, model = zero_shot
    c = bundle.category_id("garden")
    idx = model.index[c]
    assert bundle.split("train", c).height == 0 and bool(model.borrow.borrowed(idx).all())
    users = torch.arange(10)
    with torch.no_grad():
        got = model.score(users, c)
        rows = model.borrow_row_[idx[:4]]
        want = torch.zeros(10, 4)
        for j in range(4):
            for n, wn in zip(model.borrow_nbr_[rows[j]].tolist(), model.borrow_w_[rows[j]].tolist()):
                cn = int(model.item_category_[n])
                col = int(torch.nonzero(model.index[cn] == n))
                want[:, j] += wn * model.score(users, cn)[:, col]
        assert torch.allclose(got[:, :4], want + model.cold_offset_[c], atol=1e-4)
        # the other scoring paths agree: the re-rank's exact scores and an item added by its text
        view = serving_view(model)
        assert torch.allclose(view.score_items(users, c, idx[:6].expand(10, -1)), got[:, :6], atol=1e-4)
        assert torch.allclose(view.score_text_items(users, c, model.items.text_[idx[:6]]), got[:, :6], atol=1e-4)


def test_the_zero_shot_category_is_recommended_above_text_knn(zero_shot):
    bundle, model = zero_shot
    ev = Evaluator(bundle, EvalConfig(ks=(10,)), split="test")
    res = ev.evaluate(model)
    textknn = build("textknn", "pooled", {}, Sizes.from_bundle(bundle))
    Trainer(TrainConfig(epochs=1, progress=False)).fit(textknn, bundle)
    assert res.metric("ndcg@10", "garden", "all") > ev.evaluate(textknn).metric("ndcg@10", "garden", "all")
