"""Image vectors of items added while serving: a `text+id+image` flagship reads them through its
image projection, exactly as it reads a Bundle item's; a vector of the wrong width is refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crossrec.serving.config import ServeConfig
from crossrec.serving.service import Service, ServingError
from crossrec.serving.store import SQLiteStore
from tests.unit.serving.test_service import raw_users, trained

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_flagship(tiny_bundle, tiny_text, tmp_path_factory):
    b = copy.copy(tiny_bundle)  # the session's bundle stays without images
    b.text_vectors = tiny_text
    rng = np.random.default_rng(0)
    b.image_vectors = (tiny_text @ rng.normal(size=(tiny_text.shape[1], 24))).astype(np.float32)
    b.image_present = np.ones(b.n_items, bool)
    art = trained(b, tmp_path_factory.mktemp("img") / "a", "crossrec", {"dim": 16, "item_tower": "text+id+image"})
    return art, b


def test_a_new_items_image_counts_like_a_bundle_items(image_flagship, tmp_path):
    art, b = image_flagship
    tower = art.model.items
    assert tower.image_dim == 24 and tower.content_proj.weight.abs().sum() > 0
    i = int(art.model.index[1][3])
    with torch.no_grad():  # text + image of item i, ID hidden == the tower on item i with its ID part dropped
        v, _ = tower.from_text(tower.text_[i : i + 1], torch.from_numpy(b.image_vectors[i : i + 1]))
        weights, tower.text_weight_ = tower.text_weight_, torch.zeros(0)  # a new item is untrained: full text
        want = tower(torch.tensor([i]), keep=torch.zeros(1))  # (text trust weighs trained item i's text)
        tower.text_weight_ = weights
        assert torch.allclose(v, want, atol=1e-5)
        no_image, _ = tower.from_text(tower.text_[i : i + 1])
        assert not torch.allclose(v, no_image, atol=1e-4)

    svc = Service(art, b, ServeConfig(max_k=1000), store=SQLiteStore(tmp_path / "s.sqlite"))
    name, user = b.categories[1], raw_users(b, 1)[0]
    title = str(b.items["title"][i])
    svc.add_item("with-image", name, title, image_vector=b.image_vectors[i].tolist())
    svc.add_item("without-image", name, title)
    scores = {x["item"]: x["score"] for x in svc.recommend(user, name, b.n_items, exclude_seen=False)["items"]}
    with torch.no_grad():
        u = torch.tensor([b.user_id(user)])
        text = svc._new_text[svc._items["with-image"]].unsqueeze(0)
        exact = svc.view.score_text_items(u, 1, text, torch.from_numpy(b.image_vectors[i : i + 1]))[0, 0].item()
    assert scores["with-image"] == pytest.approx(exact, rel=1e-5)
    assert scores["with-image"] != pytest.approx(scores["without-image"], rel=1e-4)
    again = Service(
        art, b, ServeConfig(max_k=1000), store=SQLiteStore(tmp_path / "s.sqlite")
    )  # the image survives a restart
    got = {x["item"]: x["score"] for x in again.recommend(user, name, b.n_items, exclude_seen=False)["items"]}
    assert got["with-image"] == pytest.approx(scores["with-image"], rel=1e-5)

    for bad in ([0.1] * 23, [float("nan")] * 24):
        with pytest.raises(ServingError) as e:
            svc.add_item("bad-image", name, title, image_vector=bad)
        assert e.value.field == "image_vector" and e.value.status == 422
