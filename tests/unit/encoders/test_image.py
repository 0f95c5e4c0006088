"""Item images -> vectors with a local image model (a tiny CLIP built here and saved as a
sentence-transformers directory, loaded offline): the cache, missing files, and the flagship's
image slot filled from them."""

from __future__ import annotations

import copy
import json

import numpy as np
import polars as pl
import pytest
import torch

from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.image import (
    EncoderError,
    attach_images,
    encode_images,
)
from crossrec.models.base import reads_images
from tests.unit.encoders.test_text import no_network  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A randomly initialised 16-wide CLIP (8-d projection), saved like any local image model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import CLIPModel as STClip
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    raw, out = tmp_path_factory.mktemp("clip-raw"), tmp_path_factory.mktemp("clip")
    (raw / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (raw / "merges.txt").write_text("#version: 0.2\n")
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg = CLIPConfig(
        text_config=small | dict(vocab_size=4, max_position_embeddings=16),
        vision_config=small | dict(image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(raw)
    CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt")),
    ).save_pretrained(raw)
    SentenceTransformer(modules=[STClip(str(raw))]).save(str(out))
    return out


def png(path, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8")).save(path)
    return path


def test_images_encode_offline_cache_and_name_what_is_missing(clip_dir, tmp_path, no_network, caplog):  # noqa: F811
    cfg = EncoderConfig(image_model=str(clip_dir), cache=str(tmp_path / "cache" / "text"))
    paths = [png(tmp_path / f"{i}.png", i) for i in range(4)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = paths + [None, tmp_path / "nowhere.png", tmp_path / "broken.png", paths[1]]
    first = encode_images(rows, cfg, progress=False)
    assert first.vectors.shape == (8, 8) and first.present.tolist() == [True] * 4 + [False] * 3 + [True]
    assert np.allclose(np.linalg.norm(first.vectors[first.present], axis=1), 1, atol=1e-5)
    assert (first.vectors[~first.present] == 0).all() and np.allclose(first.vectors[7], first.vectors[1])
    assert (first.encoded, first.missing) == (4, 2) and "nowhere.png" in caplog.text
    again = encode_images(rows, cfg, progress=False)  # all from the cache
    assert again.encoded == 0 and np.array_equal(again.vectors, first.vectors)
    png(paths[2], 99)  # one image changes: only it is encoded again
    changed = encode_images(rows, cfg, progress=False)
    assert changed.encoded == 1 and not np.allclose(changed.vectors[2], first.vectors[2])
    assert np.array_equal(np.delete(changed.vectors, 2, 0), np.delete(first.vectors, 2, 0))
    with pytest.raises(EncoderError, match="encoder.image_model="):
        encode_images(rows, EncoderConfig(image_model=str(tmp_path / "no-model")), progress=False)


def test_the_flagships_image_slot_is_filled_from_item_images(clip_dir, tiny_bundle, tmp_path):
    from crossrec.data.batch import Sizes
    from crossrec.models.per_category import build

    b = copy.copy(tiny_bundle)
    names = [f"img/{i % 7}.png" if i % 5 else None for i in range(b.n_items)]  # every 5th item has no image
    (tmp_path / "img").mkdir()
    for i in range(7):
        png(tmp_path / "img" / f"{i}.png", i)
    b.items = b.items.with_columns(pl.Series("image", names))
    b.text_vectors = np.random.default_rng(0).normal(size=(b.n_items, 12)).astype(np.float32)
    iv = attach_images(
        b, EncoderConfig(image_model=str(clip_dir), cache=str(tmp_path / "cache")), tmp_path, progress=False
    )
    assert iv.encoded == 7 and b.image_present.tolist() == [n is not None for n in names]
    model = build("crossrec", "pooled", {"dim": 8, "item_tower": "text+id+image"}, Sizes.from_bundle(b))
    assert reads_images(model)
    model.setup(b)
    assert model.items.image_dim == 8
    assert torch.equal(model.items.content_present_, torch.from_numpy(b.image_present))
