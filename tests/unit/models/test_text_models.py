"""Models that read item text on the synthetic world with the cold-start item protocol: they must
recommend items nobody has interacted with, where every ID model scores nothing."""

from __future__ import annotations

import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.synthetic import SyntheticConfig, generate
from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import attach_text
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
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
def results(cold_world):
    ev = Evaluator(cold_world, EvalConfig(ks=(10,)), split="test")
    out = {}
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
        out[label] = ev.evaluate(model)
    return out


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
