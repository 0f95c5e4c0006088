"""`text.residual` (models/crossrec/towers.py, loss.py, the trainer's stages): a text+id flagship
whose ID part trains exactly as the ID flagship does (its own stage, early-stopped on its own
validation), then its text part with everything else held; with every trained item's text
weight at 0 it scores as the ID flagship."""

from __future__ import annotations

import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.models.base import config_from_dict
from crossrec.models.crossrec.text_model import TextCrossRec
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError
from tests.unit.models.test_crossrec import first_batch, make

pytestmark = pytest.mark.usefixtures("one_thread")


def residual(bundle, vectors):
    """The residual text+id flagship on `bundle` (the registry builds `TextCrossRec` for text towers)."""
    bundle.text_vectors = vectors
    torch.manual_seed(0)
    params = {"dim": 16, "item_tower": "text+id", "text": {"residual": True}}
    model = TextCrossRec(config_from_dict("crossrec", params), Sizes.from_bundle(bundle))
    model.setup(bundle)
    return model


def pair(bundle, vectors):
    """A residual text+id flagship and an ID flagship holding the same ID-side weights."""
    text = residual(bundle, vectors)
    ids = make(bundle)
    with torch.no_grad():
        text.items.emb.weight[: bundle.n_items].normal_(std=0.3)
        text.items.bias.normal_()
        text.items.fuse.weight.normal_(std=0.1)
        text.items.text_bias.weight.normal_(std=0.5)
    mine, theirs = ids.state_dict(), text.state_dict()
    shared = {k: theirs[k] for k in mine if theirs[k].shape == mine[k].shape}
    assert set(mine) - set(shared) <= {"items.text_", "items.text_weight_"}  # the text slot stays empty
    ids.load_state_dict(shared, strict=False)
    assert not ids.items.has_text
    return text, ids


def grads(model, batch, seed=1):
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)
    model.loss(batch).backward()
    return {
        n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }


def text_names(model):
    return {n for n, p in model.named_parameters() if any(p is q for q in model.items.text_parameters())}


def test_the_id_stage_is_the_id_flagships_training_and_the_text_stage_trains_only_text(tiny_bundle, tiny_text):
    text, ids = pair(tiny_bundle, tiny_text)
    batch = first_batch(tiny_bundle)
    want, got = grads(ids, batch), grads(text, batch)
    assert set(got) == set(want)  # the ID stage: no text parameter learns
    for name, g in want.items():
        assert torch.allclose(got[name], g, atol=1e-6), name
    assert text.next_stage() and not text.next_stage()  # one text stage, then none
    got = grads(text, batch)
    assert set(got) == text_names(text)  # the text stage: nothing else learns
    for name in ("items.adapter.proj", "items.fuse.weight", "items.text_bias.weight"):
        assert got[name].abs().sum() > 0, name


def test_text_weight_zero_scores_trained_items_as_the_id_flagship(tiny_bundle, tiny_text):
    text, ids = pair(tiny_bundle, tiny_text)
    text.next_stage()
    text.eval()
    ids.eval()
    n = tiny_bundle.n_items
    count = torch.expm1(text.log_count_[:n]).round()
    text.items.text_weight_ = torch.where(count > 0, 0.0, 1.0)
    users = torch.arange(min(40, tiny_bundle.n_users))
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            trained = count[text.index[c]] > 0
            assert trained.any()
            assert torch.allclose(text.score(users, c)[:, trained], ids.score(users, c)[:, trained], atol=1e-5)
        text.items.text_weight_ = torch.ones(n)  # weight 1: the fused vectors the text stage trained
        assert not torch.allclose(text.items(torch.arange(n)), text.items.emb.weight[:n], atol=1e-3)


def test_a_residual_fit_runs_the_id_stage_then_the_text_stage(tiny_bundle, tiny_text):
    model = residual(tiny_bundle, tiny_text)
    adapter0 = model.items.adapter.proj.detach().clone()
    result = Trainer(TrainConfig(epochs=3, batch_size=256, patience=1, progress=False, checkpoint=False)).fit(
        model, tiny_bundle
    )
    assert bool(model.items.text_stage_)
    assert not torch.equal(model.items.adapter.proj, adapter0)  # the text stage trained it
    assert result.epochs_run == len(result.history) > 3  # both stages' epochs (3 at most each)


def test_a_residual_artifact_keeps_its_stage_and_scores(tiny_bundle, tiny_text, tmp_path):
    model = residual(tiny_bundle, tiny_text)
    model.next_stage()
    n = tiny_bundle.n_items
    with torch.no_grad():
        model.items.fuse.weight.normal_(std=0.1)
        model.items.text_weight_ = torch.rand(n).round()  # some items at 0 (the ID part alone), some at 1
    params = {"dim": 16, "item_tower": "text+id", "text": {"residual": True}}
    save_artifact(tmp_path / "m", model, "crossrec", "pooled", params, Sizes.from_bundle(tiny_bundle))
    art = load_artifact(tmp_path / "m").model
    assert bool(art.items.text_stage_) and torch.equal(art.items.text_weight_, model.items.text_weight_)
    users = torch.arange(20)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            assert torch.allclose(model.eval().score(users, c), art.score(users, c))


def test_residual_needs_a_text_and_id_tower():
    with pytest.raises(ConfigError, match="text.residual=true needs item_tower text\\+id"):
        config_from_dict("crossrec", {"item_tower": "text", "text": {"residual": True}})
