"""Text shrinkage of trained items' ID parts (models/crossrec/shrink.py): the posterior-mean formula
over same-category text neighbours, kappa picked on the Evaluator's validation NDCG@10, the no-op
cases, and artifacts written before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.crossrec.prior import pick
from crossrec.models.crossrec.shrink import KAPPAS, MIN_USERS
from crossrec.training.picks import pick_tools
from tests.unit.models.test_crossrec import make

pytestmark = pytest.mark.usefixtures("one_thread")


def text_model(bundle, vectors, **params):
    bundle.text_vectors = vectors
    model = make(bundle, item_tower="text+id", **params)
    with torch.no_grad():  # spread the ID parts, as training would
        model.items.emb.weight[: bundle.n_items].normal_(std=0.3)
        model.items.bias.normal_()
    model.eval()
    return model


def by_hand(model, counts, item, kappa):
    """Item `item`'s shrunk ID embedding and bias, from the formula written out."""
    text = F.normalize(model.items.text_.float(), dim=1)
    cat = model.item_category_[: model.sizes.n_items]
    pool = [j for j in range(model.sizes.n_items) if counts[j] > 0 and cat[j] == cat[item] and j != item]
    cos = text[pool] @ text[item]
    k = min(model.config.text.borrow, len(pool))
    top, order = torch.topk(cos, k)
    nbr = torch.tensor(pool)[order]
    w = torch.softmax(top / model.config.text.borrow_temperature, 0)
    ebar = (w.unsqueeze(1) * model.items.emb.weight[nbr]).sum(0)
    bbar = (w * model.items.bias[nbr]).sum()
    n = float(counts[item])
    return (n * model.items.emb.weight[item] + kappa * ebar) / (n + kappa), (
        n * model.items.bias[item] + kappa * bbar
    ) / (n + kappa)


def test_shrinkage_is_the_posterior_mean_toward_same_category_text_neighbours(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    counts = np.bincount(tiny_bundle.split("train")["item"].to_numpy(), minlength=tiny_bundle.n_items)
    targets = model.shrink.targets()
    ids = targets[0]
    assert set(ids.tolist()) == {j for j in range(tiny_bundle.n_items) if counts[j] > 0}
    emb0, bias0 = model.items.emb.weight.detach()[ids].clone(), model.items.bias.detach()[ids].clone()
    untouched = torch.tensor([j for j in range(tiny_bundle.n_items) if counts[j] == 0])
    cold_before = model.items.emb.weight.detach()[untouched].clone()
    # distinct texts only: with a duplicate the item itself need not be its own nearest neighbour
    text = F.normalize(model.items.text_.float(), dim=1)
    dup = ((text @ text.T) > 1 - 1e-6).sum(1) > 1
    probe = [j for j in ids.tolist() if not dup[j]][:: max(1, len(ids) // 12)]
    kappa = torch.arange(1, tiny_bundle.n_categories + 1).float() * 2.0
    want = {j: by_hand(model, counts, j, float(kappa[model.item_category_[j]])) for j in probe}
    model.shrink.apply(targets, kappa, emb0, bias0)
    for j, (e, b) in want.items():
        assert torch.allclose(model.items.emb.weight[j], e, atol=1e-5)
        assert float(model.items.bias.detach()[j]) == pytest.approx(float(b.detach()), abs=1e-5)
    assert torch.equal(
        model.items.emb.weight.detach()[untouched], cold_before
    )  # items without training rows: borrowing's
    model.shrink.apply(targets, torch.zeros(tiny_bundle.n_categories), emb0, bias0)  # kappa 0: as trained
    assert torch.allclose(model.items.emb.weight.detach()[ids], emb0)
    assert torch.allclose(model.items.bias.detach()[ids], bias0)


class TrainedOnly(torch.nn.Module):
    """The model's scores with its untrained items at -inf, written out for the test."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def score(self, users, category):
        s = self.model.score(users, category).clone()
        s[:, self.model.log_count_[self.model.index[category]] == 0] = float("-inf")
        return s


def picks_by_hand(model, bundle, grid, set_point):
    """The Evaluator's validation NDCG@10 curves of the trained items' ranking over `grid`
    (`set_point(values [n_categories])` moves the model), and the picks written out: each
    category's own, or the pooled one under MIN_USERS validation users. Returns (curves, picks)."""
    n_cat = bundle.n_categories
    evaluator = Evaluator(bundle, EvalConfig(ks=(10,), slices=False, auc=False, beyond=False), split="valid")
    curves, users = np.zeros((n_cat, len(grid))), np.zeros(n_cat)
    for g, value in enumerate(grid):
        set_point(torch.full((n_cat,), float(value)))
        for row in evaluator.evaluate(TrainedOnly(model)).table.to_dicts():
            if row["category"] in bundle.categories and row["n_users"]:
                c = bundle.categories.index(row["category"])
                curves[c, g], users[c] = row["ndcg@10"] * row["n_users"], row["n_users"]
    pooled = pick(curves.sum(0), grid)
    want = torch.tensor([pick(curves[c], grid) if users[c] >= MIN_USERS else pooled for c in range(n_cat)])
    return curves, want.float()


def test_kappa_is_picked_per_category_on_the_evaluators_validation_ndcg_of_trained_items(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    with torch.no_grad():  # some untrained items, scored above every trained one: out of the pick's ranking
        for c in range(tiny_bundle.n_categories):
            model.log_count_[model.index[c][:12]] = 0.0
        model.cold_offset_.fill_(100.0)  # what lifts untrained items (calibration.py)
    targets = model.shrink.targets()
    ids = targets[0]
    emb0, bias0 = model.items.emb.weight.detach()[ids].clone(), model.items.bias.detach()[ids].clone()
    n_cat = tiny_bundle.n_categories
    curves, want = picks_by_hand(model, tiny_bundle, KAPPAS, lambda k: model.shrink.apply(targets, k, emb0, bias0))
    assert curves.sum(0).max() > curves.sum(0).min()  # the trained items' ranking moves with kappa
    model.shrink.apply(targets, torch.zeros(n_cat), emb0, bias0)
    model.shrink.calibrate(tiny_bundle, None, pick_tools())
    assert torch.equal(model.shrink_kappa_, want)
    final = model.items.emb.weight.detach()[ids].clone()
    model.shrink.apply(targets, want.float(), emb0, bias0)
    assert torch.allclose(model.items.emb.weight.detach()[ids], final)


@pytest.mark.parametrize("training", [False, True])
def test_picking_kappa_leaves_the_models_mode_as_it_was(tiny_bundle, tiny_text, training):
    # a mode flipped to training would leave dropout on in the picks that follow (prior, cold offset)
    model = text_model(tiny_bundle, tiny_text)
    model.train(training)
    model.shrink.calibrate(tiny_bundle, None, pick_tools())
    assert all(m.training == training for m in model.modules())


def test_shrinkage_is_a_no_op_without_text_or_when_off(tiny_bundle, tiny_text):
    for model in (make(tiny_bundle), text_model(tiny_bundle, tiny_text, text={"shrink": False})):
        model.eval()
        before = model.items.emb.weight.detach().clone(), model.items.bias.detach().clone()
        model.shrink.calibrate(tiny_bundle, None, pick_tools())
        assert torch.equal(model.items.emb.weight, before[0]) and torch.equal(model.items.bias, before[1])
        assert not model.shrink_kappa_.any()


def test_an_artifact_written_before_shrinkage_loads_with_kappa_zero(tiny_bundle, tiny_text):
    model = text_model(tiny_bundle, tiny_text)
    state = {k: v for k, v in model.state_dict().items() if k != "shrink_kappa_"}
    other = text_model(tiny_bundle, tiny_text)
    other.shrink_kappa_.fill_(3.0)
    other.load_state_dict(state)
    assert not other.shrink_kappa_.any()
