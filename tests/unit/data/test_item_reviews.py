"""prepare.item_reviews: a bounded, deterministic sample of each item's training-split review texts
as the item table's `reviews` column, never a validation or test row's (issue 37)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from crossrec.data.bundle import SPLIT_CODES, Bundle
from crossrec.data.datasets import read_amazon_reviews
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.readers import read_interactions
from crossrec.data.schema import ColumnMap, DataError, Limits
from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import item_texts
from crossrec.errors import ConfigError

# (user, item, timestamp, text, split): item x's training reviews by time are u7 (5, blank),
# u1 (10), u3 and u4 (20, a tie: u4 is the later row), u2 (30), u8 (45, null); u5 and u6 review x
# on a validation and a test row; z has only a test row (a cold item).
ROWS = [
    ("u1", "x", 10, "  oldest review  ", "train"),
    ("u2", "x", 30, "newest review, long enough to be cut", "train"),
    ("u3", "x", 20, "tie, earlier row", "train"),
    ("u4", "x", 20, "tie, later row", "train"),
    ("u5", "x", 40, "VALID LEAK", "valid"),
    ("u6", "x", 50, "TEST LEAK", "test"),
    ("u7", "x", 5, "   ", "train"),
    ("u8", "x", 45, None, "train"),
    ("u1", "y", 1, "only review of y", "train"),
    ("u2", "z", 2, "TEST LEAK z", "test"),
]


def reviews_frame(rows: list[tuple] = ROWS) -> pl.DataFrame:
    u, i, t, text, split = zip(*rows)
    return pl.DataFrame(
        {"user": u, "item": i, "category": ["c"] * len(u), "timestamp": t, "text": text, "split": split},
        schema_overrides={"timestamp": pl.Int64, "text": pl.String},
    )


def reviews_of(b: Bundle) -> dict[str, str | None]:
    """raw item id -> its `reviews`."""
    return dict(zip(b.items["raw_item"].to_list(), b.items["reviews"].to_list()))


def test_most_recent_training_reviews_cut_and_joined():
    cfg = PrepareConfig(split="given", item_reviews=3, item_review_chars=13)
    b = prepare(reviews_frame(), None, cfg)
    # newest first; the tie by source row, later first; blank and null texts skipped; each cut to
    # 13 characters, then stripped ("tie, earlier row" -> "tie, earlier ")
    assert reviews_of(b) == {"x": "newest review | tie, later ro | tie, earlier", "y": "only review o", "z": None}
    assert b.items.schema["reviews"] == pl.String
    assert b.manifest["item_reviews"] == {"items_with_reviews": 2, "per_item": 3}
    # all four non-blank training reviews fit; the oldest is stripped
    b = prepare(reviews_frame(), None, PrepareConfig(split="given", item_reviews=10))
    assert reviews_of(b)["x"] == (
        "newest review, long enough to be cut | tie, later row | tie, earlier row | oldest review"
    )


def test_interactions_unchanged_and_off_by_default():
    off = prepare(reviews_frame(), None, PrepareConfig(split="given"))
    on = prepare(reviews_frame(), None, PrepareConfig(split="given", item_reviews=2))
    assert "text" not in on.interactions.columns and on.interactions.equals(off.interactions)
    assert "reviews" not in off.items.columns and "item_reviews" not in off.manifest
    assert on.items.drop("reviews").equals(off.items)


def test_no_held_out_review_leaks():
    b = prepare(reviews_frame(), None, PrepareConfig(split="given", item_reviews=100, item_review_chars=1000))
    text = " ".join(r for r in reviews_of(b).values() if r)
    assert "LEAK" not in text and reviews_of(b)["z"] is None


def test_cold_items_get_no_reviews_and_the_sample_is_deterministic():
    rows = [
        (f"u{u}", f"{c}{k}", (k + u) % 10, f"u{u} on {c}{k}", "train")
        for u in range(60)
        for c in ("a", "b")
        for k in range(10)
    ]
    inter = reviews_frame(rows).drop("split")
    cfg = PrepareConfig(cold_item_fraction=0.2, seed=1, item_reviews=3)
    b = prepare(inter, None, cfg)
    d = b.interactions
    cold = set(d.filter(pl.col("cold_item"))["item"].unique().to_list())
    assert len(cold) == 4
    reviews = dict(zip(b.items["item"].to_list(), b.items["reviews"].to_list()))
    assert all(reviews[i] is None for i in cold)
    assert all(reviews[i] is not None and reviews[i].count(" | ") == 2 for i in set(reviews) - cold)
    # each kept review is one of the item's training rows, never a held-out one
    raw_users, raw_items = b.raw_user_ids(), b.raw_item_ids()
    held = d.filter(pl.col("split") != SPLIT_CODES["train"])
    for u, i in zip(held["user"].to_list(), held["item"].to_list()):
        assert f"{raw_users[u]} on {raw_items[i]}" not in (reviews[i] or "")
    again = prepare(inter, None, cfg)
    assert again.items.equals(b.items) and again.manifest["item_reviews"] == b.manifest["item_reviews"]


def test_missing_text_column_and_streaming_are_refused():
    with pytest.raises(DataError, match="review text for prepare.item_reviews"):
        prepare(reviews_frame().drop("text"), None, PrepareConfig(split="given", item_reviews=2))
    items = pl.DataFrame({"item": ["x"], "category": ["c"], "reviews": ["mine"]})
    with pytest.raises(DataError, match="column 'reviews': expected no such column"):
        prepare(reviews_frame(), items, PrepareConfig(split="given", item_reviews=2))
    with pytest.raises(ConfigError, match=r"prepare\.item_reviews.*prepare\.streaming"):
        PrepareConfig(item_reviews=2, streaming=True).validate()
    PrepareConfig(item_reviews=0, streaming=True).validate()
    with pytest.raises(ConfigError, match="item_reviews"):
        PrepareConfig(item_reviews=-1)
    with pytest.raises(ConfigError, match="item_review_chars"):
        PrepareConfig(item_review_chars=0)


def test_reviews_round_trip_through_a_saved_bundle(tmp_path):
    b = prepare(reviews_frame(), None, PrepareConfig(split="given", item_reviews=2), tmp_path / "b")
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.items.equals(b.items) and loaded.manifest["item_reviews"] == b.manifest["item_reviews"]
    assert loaded.fingerprint() == b.fingerprint()


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_readers_keep_the_mapped_text_column(tmp_path, suffix):
    path = tmp_path / f"r.{suffix}"
    if suffix == "csv":
        path.write_text('uid,iid,cat,reviewText\nu1,i1,c,"fine, and\nlong"\nu2,i1,c,\n')
    else:
        path.write_text(
            '{"uid": "u1", "iid": "i1", "cat": "c", "reviewText": "fine, and\\nlong"}\n'
            '{"uid": "u2", "iid": "i1", "cat": "c", "reviewText": null}\n'
        )
    columns = ColumnMap(user="uid", item="iid", category="cat", text="reviewText")
    df = read_interactions(path, columns)
    assert df.columns == ["user", "item", "category", "text"]
    assert df["text"].to_list() == ["fine, and\nlong", None]
    assert "text" not in read_interactions(path, ColumnMap(user="uid", item="iid", category="cat")).columns


@pytest.mark.parametrize("item_reviews", [0, 2])
def test_a_run_reads_the_text_column_only_for_item_reviews(tmp_path, item_reviews):
    from crossrec.config import load_config
    from crossrec.pipeline import load_raw

    path = tmp_path / "r.jsonl"
    path.write_text('{"uid": "u1", "iid": "i1", "cat": "c", "reviewText": "fine"}\n')
    columns = [f"--data.columns.{k}={v}" for k, v in {"user": "uid", "item": "iid", "category": "cat"}.items()]
    cfg = load_config(
        None,
        [
            f"--data.interactions={path}",
            *columns,
            "--data.columns.text=reviewText",
            f"--prepare.item_reviews={item_reviews}",
        ],
    )
    assert ("text" in load_raw(cfg).interactions.columns) == (item_reviews > 0)


def test_reader_errors_on_the_text_column_name_file_line_and_column(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("uid,iid,cat\nu1,i1,c\n")
    columns = ColumnMap(user="uid", item="iid", category="cat", text="reviewText")
    with pytest.raises(DataError, match=r"r\.csv:1: column 'reviewText': expected this column for `text`"):
        read_interactions(path, columns)
    path.write_text("uid,iid,cat,reviewText\nu1,i1,c,ok\nu2,i1,c," + "y" * 200 + "\n")
    with pytest.raises(DataError, match=r"r\.csv:3: column 'reviewText': expected a value of at most 100 bytes"):
        read_interactions(path, columns, limits=Limits(max_cell_bytes=100))


def test_template_reads_reviews():
    EncoderConfig(template="{title}. {reviews}").validate()
    b = prepare(
        reviews_frame(),
        pl.DataFrame({"item": ["x", "y", "z"], "category": ["c"] * 3, "title": ["X", "Y", "Z"]}),
        PrepareConfig(split="given", item_reviews=1),
    )
    assert item_texts(b.items, b.categories, "{title}. {reviews}") == [
        "X. newest review, long enough to be cut",
        "Y. only review of y",
        "Z",
    ]


def test_amazon_2014_reviews_become_item_text(tmp_path):
    records = [
        ("A1", "B1", 100, "first of B1"),
        ("A2", "B1", 200, "second of B1"),
        ("A3", "B1", 300, "third of B1"),
        ("A1", "B2", 150, "B2 early"),
        ("A2", "B2", 250, "B2 late"),
        ("A3", "B2", 350, "B2 last"),
    ]
    path = tmp_path / "Books.json"
    path.write_text(
        "".join(
            json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t, "reviewText": text}) + "\n"
            for u, i, t, text in records
        )
    )
    inter, _ = read_amazon_reviews({"Books": (path, None)}, text=True)
    assert "text" in inter.columns
    # no validation split: each user's last row (by time) goes to test
    b = prepare(inter, None, PrepareConfig(valid=False, item_reviews=2))
    test_rows = b.interactions.filter(pl.col("split") == SPLIT_CODES["test"])
    assert test_rows.height == 3  # A1's B2, A2's B2, A3's B2
    assert reviews_of(b) == {"B1": "third of B1 | second of B1", "B2": None}
