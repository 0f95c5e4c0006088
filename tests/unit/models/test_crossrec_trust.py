"""Text trust (models/crossrec/trust.py): each trained item's text part weighted by
kappa / (kappa + n) at scoring time, kappa picked per category on the Evaluator's validation
NDCG@10; items without training rows keep their full text; the no-op cases; artifacts written
before it."""

from __future__ import annotations

import pytest
import torch

from crossrec.models.crossrec.trust import KAPPAS, text_weights
from crossrec.training.picks import pick_tools
from tests.unit.models.test_crossrec import make
from tests.unit.models.test_crossrec_shrink import picks_by_hand, text_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_weight_is_kappa_over_kappa_plus_the_items_interactions():
    count = torch.tensor([0.0, 1.0, 9.0, 3.0, 5.0, 0.0])
    cat = torch.tensor([0, 0, 0, 1, 2, 2])
    kappa = torch.tensor([1.0, 0.0, float("inf")])
    want = torch.tensor([1.0, 1 / 2, 1 / 10, 0.0, 1.0, 1.0])  # n = 0: full text, whatever kappa
    assert torch.allclose(text_weights(count, cat, kappa), want)


def by_hand(tower, item, w):
    """Item `item`'s vector and bias with its text part weighted by w, from the fusion written out."""
    e = tower.emb.weight[item]
    t = w * tower.adapter(tower.text_[item : item + 1])[0]
    stacked = torch.stack([e, t])
    gate = 2.0 * torch.sigmoid(tower.fuse(stacked.flatten())).view_as(stacked)
    return (gate * stacked).sum(0), tower.bias[item] + w * tower.text_bias(tower.text_[item]).squeeze()


def test_the_text_part_and_text_bias_are_weighted_at_scoring_time_only(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    tower = model.items
    with torch.no_grad():  # a fusion gate and text bias away from their zero start, as training leaves them
        tower.fuse.weight.normal_(std=0.1)
        tower.text_bias.weight.normal_(std=0.5)
    n = tiny_bundle.n_items
    weight = torch.rand(n)
    weight[:3] = torch.tensor([0.0, 1.0, 0.25])
    items = torch.arange(n)
    train_v = None
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        tower.text_dropout = 0.0  # training mode without dropout: the tower as trained, weights unread
        train_v, train_b = tower(items), tower.bias_of(items)
        tower.text_weight_ = weight
        torch.manual_seed(0)
        assert torch.equal(tower(items), train_v) and torch.equal(tower.bias_of(items), train_b)
        model.eval()
        v, b = tower(items), tower.bias_of(items)
        for j in (0, 1, 2, 7, n - 1):
            want_v, want_b = by_hand(tower, j, float(weight[j]))
            assert torch.allclose(v[j], want_v, atol=1e-5)
            assert float(b[j]) == pytest.approx(float(want_b), abs=1e-5)
        assert torch.allclose(v[1], train_v[1], atol=1e-6)  # weight 1: the tower as trained
        # the history encoder's view of an item's text (`content`) is not weighted: only candidates are
        assert torch.equal(tower.content(items), tower.adapter(tower.text_))


def test_kappa_is_picked_per_category_on_the_evaluators_validation_ndcg_of_trained_items(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    with torch.no_grad():
        model.items.fuse.weight.normal_(std=0.1)
        model.items.text_bias.weight.normal_(std=1.0)
        for c in range(tiny_bundle.n_categories):  # some untrained items: out of the pick's ranking
            model.log_count_[model.index[c][:12]] = 0.0
        model.cold_offset_.fill_(100.0)
    n = tiny_bundle.n_items
    count = torch.expm1(model.log_count_).round()
    cat = model.item_category_[:n]

    def set_point(kappa):
        model.items.text_weight_ = text_weights(count, cat, kappa)

    curves, want = picks_by_hand(model, tiny_bundle, KAPPAS, set_point)
    assert curves.sum(0).max() > curves.sum(0).min()  # the trained items' ranking moves with kappa
    model.items.text_weight_ = torch.zeros(0)
    model.trust.calibrate(tiny_bundle, None, pick_tools())
    assert torch.equal(model.text_kappa_, want)
    assert torch.equal(model.items.text_weight_, text_weights(count, cat, want))
    assert (model.items.text_weight_[count == 0] == 1).all()  # untrained items keep their full text


@pytest.mark.parametrize("training", [False, True])
def test_picking_kappa_leaves_the_models_mode_as_it_was(tiny_bundle, tiny_text, training):
    model = text_model(tiny_bundle, tiny_text)
    model.train(training)
    model.trust.calibrate(tiny_bundle, None, pick_tools())
    assert all(m.training == training for m in model.modules())


def test_trust_is_a_no_op_without_text_or_when_off(tiny_bundle, tiny_text):
    for model in (make(tiny_bundle), text_model(tiny_bundle, tiny_text, text={"trust": False})):
        model.eval()
        model.trust.calibrate(tiny_bundle, None, pick_tools())
        assert model.items.text_weight_.numel() == 0
        assert torch.isinf(model.text_kappa_).all()


def test_an_artifact_written_before_trust_scores_with_full_text_and_a_picked_one_round_trips(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    old = {k: v for k, v in model.state_dict().items() if k not in ("text_kappa_", "items.text_weight_")}
    other = text_model(tiny_bundle, tiny_text)
    other.text_kappa_.fill_(3.0)
    other.items.text_weight_ = torch.full((tiny_bundle.n_items,), 0.5)
    other.load_state_dict(old)
    assert torch.isinf(other.text_kappa_).all() and other.items.text_weight_.numel() == 0
    model.trust.calibrate(tiny_bundle, None, pick_tools())
    model.items.text_weight_ = torch.rand(tiny_bundle.n_items)  # any picked weights: stored and loaded as they are
    fresh = text_model(tiny_bundle, tiny_text)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.items.text_weight_, model.items.text_weight_)
    assert torch.equal(fresh.text_kappa_, model.text_kappa_)
