"""prepare(): dedupe, k-core, id maps, every split strategy, cold-start slices, manifest, atomicity."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from crossrec.data.bundle import SPLIT_CODES, Bundle
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.schema import DataError

TRAIN, VALID, TEST = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]


def frame(rows: list[tuple]) -> pl.DataFrame:
    """rows of (user, item, category, timestamp)."""
    u, i, c, t = zip(*rows)
    return pl.DataFrame({"user": u, "item": i, "category": c, "timestamp": t}, schema_overrides={"timestamp": pl.Int64})


def raw_split(b: Bundle) -> dict[tuple[str, str], int]:
    """(raw user, raw item) -> split code."""
    users, items = b.raw_user_ids(), b.raw_item_ids()
    d = b.interactions
    return {(users[u], items[i]): s for u, i, s in zip(d["user"].to_list(), d["item"].to_list(), d["split"].to_list())}


def test_leave_last_out_by_time_not_by_row_order():
    # u1 in books: b3 is the latest by time though it is listed first.
    df = frame(
        [
            ("u1", "b3", "books", 30),
            ("u1", "b1", "books", 10),
            ("u1", "b2", "books", 20),
            ("u1", "m1", "music", 5),
            ("u1", "m2", "music", 6),
            ("u2", "b1", "books", 1),
        ]
    )
    b = prepare(df, None, PrepareConfig())
    s = raw_split(b)
    assert s[("u1", "b3")] == TEST and s[("u1", "b2")] == VALID and s[("u1", "b1")] == TRAIN
    # two interactions: last -> test, no valid row
    assert s[("u1", "m2")] == TEST and s[("u1", "m1")] == TRAIN
    # a single interaction stays in train
    assert s[("u2", "b1")] == TRAIN


def test_leave_last_out_uses_order_column_without_timestamps():
    df = pl.DataFrame(
        {
            "user": ["a", "a", "a"],
            "item": ["x", "y", "z"],
            "category": ["c"] * 3,
            "order": [2, 0, 1],
        }
    )
    s = raw_split(prepare(df, None, PrepareConfig(valid=False)))
    assert s[("a", "x")] == TEST and s[("a", "y")] == TRAIN and s[("a", "z")] == TRAIN


def test_items_numbered_by_category_and_id_maps_round_trip():
    df = frame([("u1", "m1", "music", 1), ("u1", "b1", "books", 2), ("u2", "b2", "books", 3), ("u2", "m1", "music", 4)])
    b = prepare(df, None, PrepareConfig(split="random", test_ratio=0.0, valid_ratio=0.0))
    assert b.categories == ["books", "music"]
    assert [b.raw_item_ids()[i] for i in b.item_index("books")] == ["b1", "b2"]
    assert [b.raw_item_ids()[i] for i in b.item_index("music")] == ["m1"]
    assert b.item_local.tolist() == [0, 1, 0]
    assert b.csr("train", "books").shape == (2, 2)
    assert b.csr("train").shape == (2, 3)
    assert b.user_id("u2") == 1


def test_k_core_global_is_iterated_to_a_fixed_point():
    # u3 has 2 interactions -> removed; then item i3 drops to 1 -> removed; then u2 drops to 1 ...
    rows = [("u1", f"i{k}", "c", k) for k in (1, 2)] + [("u2", "i1", "c", 3), ("u2", "i2", "c", 4)]
    rows += [("u3", "i3", "c", 5), ("u3", "i1", "c", 6)]
    b = prepare(frame(rows), None, PrepareConfig(k_core=2, split="random", test_ratio=0.0, valid_ratio=0.0))
    assert set(b.raw_user_ids()) == {"u1", "u2"}
    assert set(b.raw_item_ids()) == {"i1", "i2"}
    counts = b.interactions.group_by("user").len()["len"].to_list()
    assert min(counts) >= 2


def test_k_core_per_category_drops_only_thin_user_category_pairs():
    rows = [(u, f"b{k}", "books", k) for u in ("u1", "u2") for k in range(3)] + [("u1", "m1", "music", 9)]
    b = prepare(
        frame(rows),
        None,
        PrepareConfig(k_core=2, k_core_scope="category", split="random", test_ratio=0.0, valid_ratio=0.0),
    )
    assert b.categories == ["books"]  # u1's single music row (and with it music) is gone
    assert b.n_users == 2


def test_dedupe_keeps_the_latest_repeat():
    df = frame([("u", "a", "c", 1), ("u", "b", "c", 2), ("u", "a", "c", 3)])
    b = prepare(df, None, PrepareConfig(valid=False))
    assert b.interactions.height == 2
    s = raw_split(b)
    assert s[("u", "a")] == TEST  # the repeat at t=3 is the last event


def test_random_split_is_seeded_and_keeps_one_train_row():
    rows = [(f"u{u}", f"i{k}", "c", k) for u in range(30) for k in range(10)]
    cfg = PrepareConfig(split="random", test_ratio=0.2, valid_ratio=0.1, seed=7)
    a, b = prepare(frame(rows), None, cfg), prepare(frame(rows), None, cfg)
    assert a.interactions.equals(b.interactions)
    c = prepare(frame(rows), None, PrepareConfig(split="random", seed=8))
    assert not a.interactions.equals(c.interactions)
    per_user = a.interactions.group_by("user", "split").len().sort("user", "split")
    assert set(per_user.filter(pl.col("split") == TEST)["len"].to_list()) == {2}
    assert set(per_user.filter(pl.col("split") == VALID)["len"].to_list()) == {1}
    # a (user, category) with 2 rows still keeps one in train
    two = prepare(
        frame([("x", "i1", "c", 1), ("x", "i2", "c", 2)]),
        None,
        PrepareConfig(split="random", test_ratio=0.5, valid_ratio=0.4),
    )
    assert (two.interactions["split"] == TRAIN).sum() >= 1


def test_temporal_split_cuts_on_global_time():
    rows = [(f"u{k % 3}", f"i{k}", "c", k) for k in range(100)]
    b = prepare(frame(rows), None, PrepareConfig(split="temporal", test_ratio=0.2, valid_ratio=0.1))
    d = b.interactions
    assert d.filter(pl.col("split") == TEST)["order"].min() > d.filter(pl.col("split") == VALID)["order"].max()
    assert d.filter(pl.col("split") == VALID)["order"].min() > d.filter(pl.col("split") == TRAIN)["order"].max()
    assert abs((d["split"] == TEST).sum() - 20) <= 1


def test_given_split_kept_and_bad_values_rejected():
    df = frame([("u", "a", "c", 1), ("u", "b", "c", 2), ("v", "a", "c", 3)]).with_columns(
        pl.Series("split", ["train", "test", "valid"])
    )
    s = raw_split(prepare(df, None, PrepareConfig(split="given")))
    assert s == {("u", "a"): TRAIN, ("u", "b"): TEST, ("v", "a"): VALID}
    with pytest.raises(DataError, match="train, valid or test"):
        prepare(df.with_columns(pl.Series("split", ["train", "tst", "valid"])), None, PrepareConfig(split="given"))


def test_slices_new_to_category_and_cold_items():
    df = frame(
        [
            ("u1", "b1", "books", 1),
            ("u1", "b2", "books", 2),
            ("u1", "b3", "books", 3),
            ("u2", "b1", "books", 1),
            ("u1", "m1", "music", 4),
            ("u2", "m1", "music", 5),
            ("u2", "m2", "music", 6),
        ]
    ).with_columns(pl.Series("split", ["train", "train", "test", "train", "train", "test", "valid"]))
    b = prepare(df, None, PrepareConfig(split="given"))
    users, items = b.raw_user_ids(), b.raw_item_ids()
    d = b.interactions
    flags = {
        (users[r["user"]], items[r["item"]]): (r["new_to_category"], r["cold_item"]) for r in d.iter_rows(named=True)
    }
    # u2 has no training row in music: both music rows are new-to-category; m2 is never trained on.
    assert flags[("u2", "m1")] == (True, False)
    assert flags[("u2", "m2")] == (True, True)
    # u1 has books training rows; b3 has no training interaction anywhere -> cold item.
    assert flags[("u1", "b3")] == (False, True)
    assert not d.filter(pl.col("split") == TRAIN)["new_to_category"].any()
    assert b.manifest["counts"]["music"]["test_new_to_category_rows"] == 1
    assert b.manifest["counts"]["music"]["valid_cold_item_rows"] == 1


def test_cold_user_protocol_fraction_and_seed():
    rows = [(f"u{u}", f"{c}{k}", c, k) for u in range(200) for c in ("a", "b") for k in range(4)]
    cfg = PrepareConfig(cold_user_fraction=0.5, seed=3)
    b = prepare(frame(rows), None, cfg)
    units = b.interactions.filter(pl.col("new_to_category")).select("user", "category").unique()
    assert units.height == 100  # half of the 200 two-category users, one category each
    assert units["user"].n_unique() == 100
    again = prepare(frame(rows), None, cfg)
    assert again.interactions.equals(b.interactions)


def test_cold_user_valid_fraction_leaves_the_test_draw_alone():
    """A further share of the multi-category users lose one category to validation instead; the test
    draw (who, which category) is the one without the option, and nobody is new in both splits."""
    rows = [(f"u{u}", f"{c}{k}", c, k) for u in range(200) for c in ("a", "b") for k in range(4)]
    base = prepare(frame(rows), None, PrepareConfig(cold_user_fraction=0.2, seed=3))
    b = prepare(frame(rows), None, PrepareConfig(cold_user_fraction=0.2, cold_user_valid_fraction=0.25, seed=3))
    new = b.interactions.filter(pl.col("new_to_category"))
    units = {
        s: new.filter(pl.col("split") == SPLIT_CODES[s]).select("user", "category").unique() for s in ("valid", "test")
    }
    base_test = base.interactions.filter(pl.col("new_to_category")).select("user", "category").unique()
    assert units["test"].sort("user", "category").equals(base_test.sort("user", "category"))
    assert units["valid"].height == 50 and units["valid"]["user"].n_unique() == 50  # a quarter of the 200
    assert not set(units["valid"]["user"].to_list()) & set(units["test"]["user"].to_list())
    # every row of a validation-cold unit is in validation: the user has no train row there
    moved = b.interactions.join(units["valid"], on=["user", "category"])
    assert moved.height == 50 * 4 and (moved["split"] == SPLIT_CODES["valid"]).all()
    # without a validation split the option does nothing; out of range is an error
    plain = prepare(
        frame(rows), None, PrepareConfig(cold_user_fraction=0.2, cold_user_valid_fraction=0.25, valid=False, seed=3)
    )
    assert plain.interactions.equals(
        prepare(frame(rows), None, PrepareConfig(cold_user_fraction=0.2, valid=False, seed=3)).interactions
    )
    with pytest.raises(ValueError, match="cold_user_valid_fraction"):
        prepare(frame(rows), None, PrepareConfig(cold_user_fraction=0.2, cold_user_valid_fraction=1.0))


def test_item_in_two_categories_is_an_error():
    df = frame([("u", "x", "books", 1), ("v", "x", "music", 2)])
    with pytest.raises(DataError, match="one category per item"):
        prepare(df, None, PrepareConfig())
    items = pl.DataFrame({"item": ["x"], "category": ["music"], "title": ["X"]})
    with pytest.raises(DataError) as e:
        prepare(frame([("u", "x", "books", 1)]), items, PrepareConfig())
    assert e.value.column == "category"


def test_bundle_written_atomically_with_manifest(tmp_path):
    src = tmp_path / "inter.csv"
    src.write_text("user,item,category\n")
    df = frame([("u1", "a", "c", 1), ("u1", "b", "c", 2), ("u2", "a", "c", 3)])
    items = pl.DataFrame({"item": ["a", "b"], "category": ["c", "c"], "title": ["Apple", "Banana"]})
    out = tmp_path / "bundle"
    b = prepare(df, items, PrepareConfig(valid=False), out, sources=[src])
    loaded = Bundle.load(out)
    assert loaded.interactions.equals(b.interactions)
    assert loaded.item_titles() == ["Apple", "Banana"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["counts"]["c"] == {
        "items": 2,
        "train": 2,
        "valid": 0,
        "test": 1,
        "valid_new_to_category_rows": 0,
        "valid_cold_item_rows": 0,
        "test_new_to_category_rows": 0,
        "test_cold_item_rows": 1,
    }
    assert len(m["sources"][0]["sha256"]) == 64
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no temp left


def test_failed_prepare_leaves_previous_bundle_intact(tmp_path):
    out = tmp_path / "bundle"
    prepare(frame([("u", "a", "c", 1), ("u", "b", "c", 2)]), None, PrepareConfig(), out)
    before = (out / "interactions.parquet").read_bytes()
    with pytest.raises(DataError):
        prepare(frame([("u", "x", "b", 1), ("v", "x", "m", 2)]), None, PrepareConfig(), out)
    assert (out / "interactions.parquet").read_bytes() == before


@pytest.mark.parametrize("bad", [{"split": "nope"}, {"test_ratio": 1.5}, {"k_core": -1}, {"dedupe": "x"}])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        prepare(frame([("u", "a", "c", 1)]), None, PrepareConfig(**bad))


def test_csr_matches_interactions():
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", f"i{i}", "c" if i < 20 else "d", int(t)) for t, (u, i) in enumerate(rng.integers(0, 30, (300, 2)))
    ]
    b = prepare(frame(rows), None, PrepareConfig())
    m = b.csr("train", "c")
    tr = b.split("train", "c")
    assert m.nnz == tr.select("user", "item").unique().height
    u, i = tr["user"][0], tr["item"][0]
    assert m[u, b.item_local[i]] == 1.0


def test_image_vectors_aligned_to_item_ids_and_round_trip(tmp_path):
    # issue 3: an optional image-vector file, aligned by item id
    df = frame([("u1", "m1", "music", 1), ("u1", "b1", "books", 2), ("u2", "b2", "books", 3), ("u2", "m1", "music", 4)])
    ids = ["m1", "zz", "b2"]  # "zz" is not in the data; b1 has no vector
    vecs = np.array([[1.0, 1.0], [9.0, 9.0], [2.0, 2.0]], dtype=np.float32)
    b = prepare(
        df, None, PrepareConfig(valid=False, split="random", test_ratio=0.0), tmp_path / "b", image_vectors=(ids, vecs)
    )
    raw = list(b.raw_item_ids())
    assert b.image_vectors[raw.index("m1")].tolist() == [1.0, 1.0]
    assert b.image_vectors[raw.index("b2")].tolist() == [2.0, 2.0]
    assert b.image_vectors[raw.index("b1")].tolist() == [0.0, 0.0]
    assert b.image_present.tolist() == [r != "b1" for r in raw]
    assert b.manifest["image_vectors"] == {"dim": 2, "items_with_vector": 2, "vectors_without_item": 1}
    loaded = Bundle.load(tmp_path / "b")
    assert np.array_equal(loaded.image_vectors, b.image_vectors)
    assert np.array_equal(loaded.image_present, b.image_present)


def test_cold_item_protocol_moves_every_row_of_a_seeded_item_share_to_test():
    # Each user's last two items rotate, so without the protocol every item has training rows.
    rows = [(f"u{u}", f"{c}{k}", c, (k + u) % 10) for u in range(60) for c in ("a", "b") for k in range(10)]
    assert not prepare(frame(rows), None, PrepareConfig()).interactions["cold_item"].any()
    cfg = PrepareConfig(cold_item_fraction=0.2, cold_item_valid_share=0.0, seed=1)
    b = prepare(frame(rows), None, cfg)
    d = b.interactions
    cold = d.filter(pl.col("cold_item"))["item"].unique()
    assert cold.len() == 4  # 20% of the 20 items
    assert (d.filter(pl.col("item").is_in(cold.implode()))["split"] == SPLIT_CODES["test"]).all()
    assert not d.filter(~pl.col("item").is_in(cold.implode()))["cold_item"].any()
    assert prepare(frame(rows), None, cfg).interactions.equals(d)  # seeded
    assert b.manifest["counts"]["a"]["test_cold_item_rows"] + b.manifest["counts"]["b"]["test_cold_item_rows"] == 4 * 60


def test_cold_items_are_shared_between_validation_and_test_by_item():
    rows = [(f"u{u}", f"{c}{k}", c, (k + u) % 10) for u in range(60) for c in ("a", "b") for k in range(10)]
    # leave-last-out holds out as many rows in validation as in test: the default share is half
    d = prepare(frame(rows), None, PrepareConfig(cold_item_fraction=0.4, seed=1)).interactions
    cold = d.filter(pl.col("cold_item"))
    assert cold["item"].n_unique() == 8  # the same 40% of the 20 items lose their training rows
    per_item = cold.group_by("item").agg(pl.col("split").unique())
    assert all(len(s) == 1 for s in per_item["split"])  # every row of a cold item in one split
    splits = per_item["split"].list.first()
    assert (splits == VALID).sum() == 4 and (splits == TEST).sum() == 4
    # without a validation split they all go to test
    no_valid = prepare(frame(rows), None, PrepareConfig(cold_item_fraction=0.4, seed=1, valid=False)).interactions
    assert (no_valid.filter(pl.col("cold_item"))["split"] == TEST).all()
    with pytest.raises(ValueError, match="cold_item_valid_share"):
        prepare(frame(rows), None, PrepareConfig(cold_item_fraction=0.4, cold_item_valid_share=1.5))


def test_by_default_validation_gets_its_share_of_the_held_out_rows_in_cold_items():
    # a random split holding out a third as much for validation as for test: cold items' positives
    # must weigh as much in validation as in test, so a third of the cold items go to validation
    rows = [(f"u{u}", f"{c}{k}", c, (k + u) % 10) for u in range(60) for c in ("a", "b") for k in range(10)]
    split = {"split": "random", "valid_ratio": 0.1, "test_ratio": 0.3, "seed": 1}
    held = prepare(frame(rows), None, PrepareConfig(**split)).interactions["split"]
    share = int((held == VALID).sum()) / int(((held == VALID) | (held == TEST)).sum())
    assert 0.2 < share < 0.3
    d = prepare(frame(rows), None, PrepareConfig(cold_item_fraction=0.6, **split)).interactions
    per_item = d.filter(pl.col("cold_item")).group_by("item").agg(pl.col("split").first())
    assert per_item.height == 12
    assert (per_item["split"] == VALID).sum() in (int(12 * share), int(12 * share) + 1)
    given = prepare(frame(rows), None, PrepareConfig(cold_item_fraction=0.6, cold_item_valid_share=0.5, **split))
    cold = given.interactions.filter(pl.col("cold_item")).group_by("item").agg(pl.col("split").first())
    assert (cold["split"] == VALID).sum() == 6  # a share given is used as it is


def test_zero_shot_category_has_no_training_rows():
    rows = [(f"u{u}", f"{c}{k}", c, u * 10 + k) for u in range(30) for c in ("a", "b") for k in range(4)]
    b = prepare(frame(rows), None, PrepareConfig(zero_shot_category="b"))
    d = b.interactions
    assert (d.filter(pl.col("category") == 1)["split"] == SPLIT_CODES["test"]).all()
    assert d.filter(pl.col("category") == 1)["new_to_category"].all()
    assert b.manifest["counts"]["b"]["train"] == 0 and b.manifest["counts"]["a"]["train"] > 0
    with pytest.raises(ValueError, match="zero_shot_category='c' not in"):
        prepare(frame(rows), None, PrepareConfig(zero_shot_category="c"))
