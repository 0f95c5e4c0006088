"""prepare.pseudonymise: keyed hashes instead of raw user ids in the Bundle, artifact and store."""

from __future__ import annotations

import polars as pl
import pytest

from crossrec.data.bundle import Bundle
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.pseudonym import KEY_ENV, PseudonymKeyError, pseudonym
from crossrec.data.synthetic import generate, tiny_config

KEY = "a-secret-key-of-32-characters-ok"


def _raw():
    inter, items = generate(tiny_config())
    # distinctive raw ids, so finding one in any written file is no accident
    return inter.with_columns(("person-" + pl.col("user").cast(pl.Utf8) + "-rawid").alias("user")), items


def _files_contain(root, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_missing_or_short_key_is_a_clear_error(monkeypatch, tmp_path):
    inter, items = _raw()
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        prepare(inter, items, PrepareConfig(pseudonymise=True), tmp_path / "b")
    assert not (tmp_path / "b").exists()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(PseudonymKeyError, match="at least 16"):
        prepare(inter, items, PrepareConfig(pseudonymise=True))


def test_bundle_artifact_and_store_carry_no_raw_ids(monkeypatch, tmp_path):
    from crossrec.serving.service import Service
    from crossrec.serving.store import SQLiteStore
    from tests.unit.serving.test_service import trained

    inter, items = _raw()
    monkeypatch.setenv(KEY_ENV, KEY)
    bundle = prepare(inter, items, PrepareConfig(pseudonymise=True), tmp_path / "b")
    raw = "person-u00007-rawid"
    assert raw in inter["user"].to_list()
    assert bundle.users["raw_user"].str.len_chars().unique().to_list() == [32]
    assert pseudonym(raw, KEY.encode()) in bundle.users["raw_user"].to_list()
    assert "key_check" in bundle.manifest["pseudonymised"] and KEY not in str(bundle.manifest)
    art = trained(bundle, tmp_path / "art", "mf", {"dim": 8})
    store = SQLiteStore(tmp_path / "store.sqlite")
    svc = Service(art, Bundle.load(tmp_path / "b"), store=store)
    got = svc.recommend(raw, bundle.categories[0], k=3)
    assert got["user"] == raw and got["source"] == "model" and len(got["items"]) == 3
    svc.feedback(raw, str(bundle.raw_item_ids()[0]), "click", 1.0)
    assert store.all_feedback()[0][0] == pseudonym(raw, KEY.encode())
    store.close()
    for root in (tmp_path / "b", tmp_path / "art", tmp_path):
        assert _files_contain(root, b"-rawid") == [] and _files_contain(root, KEY.encode()) == []
    # the same key gives the same pseudonyms; the Bundle refuses another key or none
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.user_id(raw) == bundle.user_id(raw)
    assert loaded.user_id(pseudonym(raw, KEY.encode())) == bundle.user_id(raw)  # a pseudonym given as such
    monkeypatch.setenv(KEY_ENV, "another-key-of-enough-length")
    with pytest.raises(PseudonymKeyError, match="not the key"):
        Bundle.load(tmp_path / "b").user_id(raw)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        Service(art, Bundle.load(tmp_path / "b"))
