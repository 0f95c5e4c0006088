"""Models that read item text on the synthetic world with the cold-start item protocol: they must
recommend items nobody has interacted with, where every ID model scores nothing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import attach_text
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.crossrec.calibration import _unit_sums, fit_cold_offsets
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cold_world(tmp_path_factory, text_cache):
    inter, items = generate(SyntheticConfig(seed=0))
    bundle = prepare(inter, items, PrepareConfig(cold_item_fraction=0.1, cold_user_fraction=0.2),
                     tmp_path_factory.mktemp("cold") / "bundle")
    attach_text(bundle, EncoderConfig(), progress=False)
    return bundle


@pytest.fixture(scope="module")
def trained(cold_world):
    models = {}
    cfg = TrainConfig(epochs=10, batch_size=1024, lr=3e-3, patience=2, progress=False, seed=0)
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


def test_the_protocol_puts_half_of_the_cold_items_in_validation(cold_world):
    cold = cold_world.interactions.filter(cold_world.interactions["cold_item"] & (cold_world.interactions["split"] > 0))
    by_split = cold.group_by("split").agg(pl.col("item").n_unique())["item"].to_list()
    assert len(by_split) == 2 and min(by_split) > 0.3 * sum(by_split)


def test_the_cold_offset_maximises_the_validation_likelihood(cold_world, trained):
    model = trained["crossrec-text"]
    fitted = model.cold_offset_.clone()
    assert torch.isfinite(fitted).all() and bool((fitted != 0).any())
    model.cold_offset_.zero_()
    try:
        for c in range(cold_world.n_categories):
            pos_s, pos_h, lse_w, lse_c = _unit_sums(model, cold_world, c, 512)

            def loglik(d):
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
