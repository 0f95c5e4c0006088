"""The flagship's text item tower: ID dropout, the content term, and how items nobody trained on
are scored (text only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.unit.models.test_crossrec import first_batch, make

pytestmark = pytest.mark.usefixtures("one_thread")


def test_id_dropout_hides_the_ids_bias_and_neighbourhood_of_an_occurrence(tiny_bundle, tiny_text):
    """An ID-dropped occurrence is scored as a cold item would be: text only, no ID embedding, ID
    bias or co-occurrence (so changing those cannot change the loss)."""
    tiny_bundle.text_vectors = tiny_text
    model = make(
        tiny_bundle, item_tower="text+id", neighbourhood={"k": 10}, history={"dropout": 0.0, "category_dropout": 0.0}
    )
    batch = first_batch(tiny_bundle, size=128)
    model.train()
    model.items._id_keep = lambda items: torch.zeros(items.shape)  # every occurrence dropped
    torch.manual_seed(1)
    before = model.loss(batch)
    with torch.no_grad():
        model.neighbours.weight.mul_(3.0)
        model.items.bias.normal_()
        model.items.emb.weight.normal_()
    torch.manual_seed(1)
    assert torch.allclose(model.loss(batch), before, atol=1e-5)
    del model.items._id_keep  # kept occurrences do read them
    torch.manual_seed(1)
    assert not torch.allclose(model.loss(batch), before, atol=1e-5)


def test_text_dropout_hides_the_text_part_of_a_share_of_training_occurrences(tiny_bundle, tiny_text):
    """In training a share `text_dropout` of item occurrences lose their text part (the rest, and
    every occurrence at scoring time, read it); 0 changes nothing."""
    tiny_bundle.text_vectors = tiny_text
    items = torch.arange(20).repeat(100)  # 2,000 occurrences
    for rate in (0.0, 0.5):
        tower = make(tiny_bundle, item_tower="text+id", text={"text_dropout": rate}).items
        with torch.no_grad():
            tower.eval()
            full = tower(items)
            tower.train()
            torch.manual_seed(3)
            got = tower(items)
        same = torch.isclose(got, full, atol=1e-6).all(1).float().mean()
        assert float(same) == pytest.approx(1.0 - rate, abs=0.05)
        with torch.no_grad():  # a dropped occurrence is the tower's output with a zero text part
            tower.train()
            torch.manual_seed(3)
            tower._content_parts = lambda its, fresh=False, weigh=False, dim=tower.dim: [torch.zeros(*its.shape, dim)]
            no_text = tower(items)
            del tower._content_parts
        dropped = ~torch.isclose(got, full, atol=1e-6).all(1)
        assert torch.allclose(got[dropped], no_text[dropped], atol=1e-6)


def test_dropout_shares_out_of_range_are_config_errors():
    from crossrec.models.base import config_from_dict
    from crossrec.typed import ConfigError

    for bad in ({"text_dropout": 1.0}, {"text_dropout": -0.1}, {"id_dropout": 1.5}):
        with pytest.raises(ConfigError, match="model.text"):
            config_from_dict("crossrec", {"item_tower": "text+id", "text": bad})


def test_content_term_is_the_weighted_text_profile_cosine(tiny_bundle, tiny_text):
    tiny_bundle.text_vectors = tiny_text
    model = make(
        tiny_bundle, item_tower="text+id", neighbourhood={"k": 0}, history={"length": 1000}, text={"content_term": True}
    ).eval()
    term = model.content_term
    with torch.no_grad():
        term.weight.uniform_(0.5, 2.0)
        term.scale.uniform_(0.5, 2.0)
    u, c = 3, 1
    hist = model.history_[u]
    hist = hist[hist != tiny_bundle.n_items]
    text = torch.from_numpy(tiny_text)
    cats = torch.from_numpy(tiny_bundle.item_category)
    prof = (term.weight[c, cats[hist]].unsqueeze(1) * text[hist]).sum(0) / len(hist) * term.scale[c]
    idx = torch.from_numpy(tiny_bundle.item_index(c))
    want = prof @ text[idx].T
    with torch.no_grad():
        got = model.extra_scores(torch.tensor([u]), c)[0] - model.items.bias_of(idx, model.cold.seen(idx))
    assert torch.allclose(got, want, atol=1e-5)


def test_an_item_nobody_trained_on_is_scored_from_its_text_alone(tiny_bundle, tiny_text):
    """At inference an item without training interactions has its ID embedding and ID bias hidden
    (they only ever learned to be a negative); items with interactions keep theirs."""
    tiny_bundle.text_vectors = tiny_text
    model = make(tiny_bundle, item_tower="text+id").eval()
    c = 0
    idx = torch.from_numpy(tiny_bundle.item_index(c))
    counts = np.bincount(tiny_bundle.split("train")["item"].to_numpy(), minlength=tiny_bundle.n_items)
    cold = idx[0]
    with torch.no_grad():
        model.log_count_[cold] = 0.0  # as if the item had no training interactions
        warm = idx[torch.from_numpy(counts[idx.numpy()] > 0)][-1]
        users = torch.arange(5)
        before = model.score(users, c)
        model.items.emb.weight[cold].normal_()
        model.items.bias[cold] = 5.0
        model.items.emb.weight[warm].normal_()
        model.items.bias[warm] = 5.0
        after = model.score(users, c)
    pos = {int(j): m for m, j in enumerate(idx)}
    assert torch.allclose(after[:, pos[int(cold)]], before[:, pos[int(cold)]], atol=1e-5)
    assert not torch.allclose(after[:, pos[int(warm)]], before[:, pos[int(warm)]], atol=1e-5)
    assert model.cold.seen(idx).sum() < len(idx)


def test_an_id_tower_keeps_every_items_id(tiny_bundle):
    model = make(tiny_bundle)
    assert model.cold.seen(torch.arange(5)) is None
