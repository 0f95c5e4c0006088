"""Out-of-core prepare (`prepare.streaming`, data/prepare_stream.py) gives the in-memory path's
Bundle: interactions, users, items, manifest counts and fingerprint, for every split, k-core scope,
dedupe mode and protocol, and the same errors for bad input."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.data import prepare_stream
from crossrec.data.bundle import Bundle
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.scale_world import ScaleConfig, generate_scale
from crossrec.data.schema import DataError
from crossrec.errors import ConfigError, InputDataError

from .test_prepare import frame


@pytest.fixture(scope="module")
def world() -> tuple[pl.DataFrame, pl.DataFrame]:
    """~50k interactions over 6 categories, with repeats (for the dedupe) and a given split."""
    inter, items = generate_scale(ScaleConfig(interactions=50_000, categories=6, seed=3))
    inter = pl.concat([inter, inter.sample(5_000, seed=1).with_columns(pl.col("timestamp") + 7)])
    split = pl.Series(["train"] * 8 + ["valid", "test"]).sample(inter.height, with_replacement=True, seed=2)
    # catalogue items nobody interacted with, and an extra column
    unused = items.head(3).with_columns(pl.col("item") + "-unused")
    items = pl.concat([items, unused]).with_columns(pl.col("title").str.len_chars().alias("title_len"))
    return inter.with_columns(split.alias("split")), items


@pytest.fixture(autouse=True)
def small_buckets(monkeypatch):
    """Several buckets of users even on small data, so what spans buckets is exercised."""
    monkeypatch.setattr(prepare_stream, "ROWS_PER_BUCKET", 9_000)


def both(inter: pl.DataFrame | pl.LazyFrame, items: pl.DataFrame | None, **settings_: object) -> tuple[Bundle, Bundle]:
    cfg = PrepareConfig(**settings_)  # type: ignore[arg-type]
    return prepare(inter, items, cfg), prepare(inter, items, dataclasses.replace(cfg, streaming=True))


def assert_same(a: Bundle, b: Bundle) -> None:
    for name in ("interactions", "users", "items"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.schema == y.schema, name
        assert x.equals(y), name
    skip = {"created", "prepare_seconds"}
    assert {k: v for k, v in a.manifest.items() if k not in skip} == {
        k: v for k, v in b.manifest.items() if k not in skip
    }
    assert a.fingerprint() == b.fingerprint()


CASES = [
    {},
    {"valid": False},
    {"split": "temporal"},
    {"split": "temporal", "valid": False, "dedupe": "first"},
    {"split": "random", "seed": 5},
    {"split": "random", "dedupe": "none"},
    {"split": "given"},
    {"k_core": 3},
    {"k_core": 2, "k_core_scope": "category", "split": "random"},
    {"dedupe": "none", "k_core": 2},
    {"dedupe": "first"},
    {"cold_user_fraction": 0.2, "cold_user_valid_fraction": 0.1, "cold_item_fraction": 0.1},
    {"cold_user_fraction": 0.3, "cold_user_category": "c1", "split": "temporal"},
    {"cold_item_fraction": 0.2, "cold_item_valid_share": 0.0},
    {"cold_item_fraction": 0.2, "split": "random", "cold_user_fraction": 0.2, "cold_user_valid_fraction": 0.1},
    {"zero_shot_category": "c2", "split": "random"},
    {"keep_unused_items": True, "k_core": 2},
]


@pytest.mark.parametrize("settings_", CASES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_streaming_equals_in_memory(world, settings_):
    inter, items = world
    if settings_.get("split") != "given":
        inter = inter.drop("split")
    assert_same(*both(inter, items, **settings_))


@pytest.mark.parametrize("drop", [["rating"], ["timestamp"], ["rating", "timestamp"]])
def test_without_ratings_or_timestamps(world, drop):
    inter = world[0].drop("split", *drop)
    assert_same(*both(inter, None, k_core=2))
    assert_same(*both(inter, world[1], split="random", dedupe="none"))


def test_order_column_and_integer_ids(world):
    inter = (
        world[0]
        .drop("split", "timestamp")
        .with_columns(
            pl.col("user").str.slice(1).cast(pl.Int64),
            pl.Series("order", range(world[0].height, 0, -1)),
        )
    )
    assert_same(*both(inter, None, k_core=2))


def test_lazy_scan_input(world, tmp_path):
    path = tmp_path / "inter.parquet"
    world[0].drop("split").write_parquet(path)
    a = prepare(world[0].drop("split"), world[1], PrepareConfig(k_core=2))
    b = prepare(pl.scan_parquet(path), world[1], PrepareConfig(k_core=2, streaming=True))
    assert_same(a, b)


def test_pseudonymised(world, monkeypatch):
    monkeypatch.setenv("CROSSREC_PSEUDONYM_KEY", "0123456789abcdef-test")
    a, b = both(world[0].drop("split"), world[1], pseudonymise=True, split="random", cold_user_fraction=0.2)
    assert_same(a, b)
    assert b.manifest["pseudonymised"] == a.manifest["pseudonymised"]


def test_streaming_is_not_a_setting_of_the_bundle(world):
    a, b = both(world[0].drop("split"), None)
    assert "streaming" not in b.manifest["settings"]
    assert a.manifest["settings"] == b.manifest["settings"]


def test_written_bundle_round_trips(world, tmp_path):
    cfg = PrepareConfig(streaming=True, cold_item_fraction=0.1)
    b = prepare(world[0].drop("split"), world[1], cfg, tmp_path / "bundle")
    assert_same(b, Bundle.load(tmp_path / "bundle"))


ids = st.sampled_from(["a", "b", "c", "d", "e", "ab", "007", "7", None])
rows = st.lists(st.tuples(ids, ids, st.sampled_from(["x", "y"]), st.integers(0, 5)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=rows,
    split=st.sampled_from(["leave_last_out", "temporal", "random"]),
    k_core=st.integers(0, 2),
    scope=st.sampled_from(["global", "category"]),
    dedupe=st.sampled_from(["last", "first", "none"]),
    bucket=st.integers(1, 30),
)
def test_small_tables_agree(monkeypatch, rows, split, k_core, scope, dedupe, bucket):
    monkeypatch.setattr(prepare_stream, "ROWS_PER_BUCKET", bucket)  # many buckets, some empty
    # one category per item: the item's first listed one
    cat = {}
    rows = [(u, i, cat.setdefault(i, c), t) for u, i, c, t in rows]
    cfg = {"split": split, "k_core": k_core, "k_core_scope": scope, "dedupe": dedupe, "test_ratio": 0.3}
    try:
        a = prepare(frame(rows), None, PrepareConfig(**cfg))  # type: ignore[arg-type]
    except InputDataError as e:
        with pytest.raises(InputDataError, match=str(e).split(":")[0]):
            prepare(frame(rows), None, PrepareConfig(**cfg, streaming=True))  # type: ignore[arg-type]
        return
    assert_same(a, prepare(frame(rows), None, PrepareConfig(**cfg, streaming=True)))  # type: ignore[arg-type]


def test_null_ids_drop_out_as_in_memory():
    df = pl.DataFrame(
        {
            "user": ["a", None, "a", "b", "b"],
            "item": ["x", "x", None, "y", "x"],
            "category": ["c"] * 5,
            "timestamp": range(5),
        }
    )
    assert_same(*both(df, None, split="random", test_ratio=0.0, valid_ratio=0.0))


def errors(inter: pl.DataFrame, items: pl.DataFrame | None = None, **settings_: object) -> list[str]:
    """The error each path raises, as (type, message)."""
    out = []
    for streaming in (False, True):
        with pytest.raises((DataError, InputDataError, ConfigError)) as e:
            prepare(inter, items, PrepareConfig(**settings_, streaming=streaming))  # type: ignore[arg-type]
        out.append(f"{type(e.value).__name__}: {e.value}")
    assert out[0] == out[1]
    return out


def test_bad_input_raises_the_same_errors():
    good = frame([("u1", "i1", "c", 1), ("u1", "i2", "c", 2), ("u2", "i1", "c", 3)])
    assert "user" in errors(good.drop("user"))[0]
    assert "split" in errors(good, split="given")[0]
    assert "at least one interaction" in errors(good.head(0))[0]
    assert "one category per item" in errors(pl.concat([good, frame([("u3", "i1", "d", 4)])]))[0]
    assert "category" in errors(frame([("u1", "i1", " ", 1)]))[0]
    assert "removed every interaction" in errors(good, k_core=5)[0]
    clash = pl.DataFrame({"item": ["i1"], "category": ["d"], "title": ["t"]})
    assert "<items>" in errors(good, clash)[0]
    bad_split = good.with_columns(pl.Series("split", ["train", "oops", "nope"]))
    assert "'oops'" in errors(bad_split, split="given")[0]
    assert "'nope'" in errors(bad_split.with_columns(pl.col("timestamp").reverse()), split="given")[0]
    assert "zero_shot_category" in errors(good, zero_shot_category="nope", split="random", test_ratio=0.0)[0]
    assert "too little data to split" in errors(frame([("u1", "i1", "c", 1), ("u2", "i2", "c", 2)]))[0]
