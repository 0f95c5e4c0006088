"""The pieces both prepare paths share (data/prepare.py in memory, data/prepare_stream.py out of
core), so that neither imports the other: the canonical lazy columns, the checks of category names
and of one category per item, the users and items tables from the id lists, and the slices."""

from __future__ import annotations

import polars as pl

from crossrec.data.bundle import SPLIT_CODES
from crossrec.data.config import PrepareConfig
from crossrec.data.schema import CATEGORY_RULE, DataError, category_name_problem
from crossrec.data.validate import show


def _canonical(interactions: pl.DataFrame | pl.LazyFrame, cfg: PrepareConfig) -> pl.LazyFrame:
    """The canonical columns checked, lazily: user, item, category, the source row `_row`, [rating,
    timestamp], [split], [text], and an `order` sort key (timestamp, else the order column, else
    `_row`). `text` (the review text, stripped, cut, blank = null) is kept only for
    `cfg.item_reviews`, which reads it."""
    lf = interactions.lazy() if isinstance(interactions, pl.DataFrame) else interactions
    cols = lf.collect_schema().names()
    for need in ("user", "item", "category"):
        if need not in cols:
            raise DataError("<interactions>", None, need, "a canonical interaction table column")
    if cfg.split == "given" and "split" not in cols:
        raise DataError("<interactions>", None, "split", "a split column for prepare.split=given")
    if cfg.item_reviews > 0 and "text" not in cols:
        raise DataError("<interactions>", None, "text", "review text for prepare.item_reviews")

    # Sort key: timestamp, else the order column, else the source row position.
    lf = lf.with_row_index("_row")
    if "timestamp" in cols:
        order = pl.col("timestamp").cast(pl.Int64)
    elif "order" in cols:
        order = pl.col("order").cast(pl.Int64)
    else:
        order = pl.col("_row").cast(pl.Int64)
    keep = ["user", "item", "category", "_row"] + [c for c in ("rating", "timestamp") if c in cols]
    if cfg.split == "given":
        keep.append("split")
    # Review text stripped and cut to `item_review_chars` here, so the long texts are not carried
    # whole through k-core and the split; blank texts become null.
    text = []
    if cfg.item_reviews > 0:
        cut = pl.col("text").cast(pl.String).str.strip_chars().str.slice(0, cfg.item_review_chars)
        text = [pl.when(cut != "").then(cut.str.strip_chars_end()).alias("text")]
    return lf.select(*keep, *text, order.alias("order"))


def _check_category_names(df: pl.DataFrame, items: pl.DataFrame | None) -> None:
    """Refuse a category name that could not be one (schema.CATEGORY_RULE): the readers check
    it with file and line; this covers tables built in Python."""
    for table, what in ((df, "<interactions>"), (items, "<items>")):
        if table is None or "category" not in table.columns:
            continue
        for name in table["category"].unique().to_list():
            problem = category_name_problem(name)
            if problem is not None:
                raise DataError(what, None, "category", CATEGORY_RULE, f"{problem} ({show(name, 40)})")


def _check_item_categories(df: pl.DataFrame, items: pl.DataFrame | None) -> None:
    """An item must belong to exactly one category, in the interactions and the item table."""
    multi = df.group_by("item").agg(pl.col("category").n_unique().alias("n")).filter(pl.col("n") > 1)
    if multi.height:
        item = multi["item"][0]
        cats = df.filter(pl.col("item") == item)["category"].unique().sort().to_list()
        raise DataError("<interactions>", None, "category", "one category per item", f"item {item!r} in {cats}")
    if items is None:
        return
    clash = (
        df.select("item", "category")
        .unique()
        .join(items.select("item", pl.col("category").alias("_item_cat")), on="item", how="inner")
        .filter(pl.col("category") != pl.col("_item_cat"))
    )
    if clash.height:
        r = clash.row(0, named=True)
        raise DataError(
            "<items>",
            None,
            "category",
            f"item {r['item']!r} in category {r['category']!r} as in the interactions",
            repr(r["_item_cat"]),
        )


def _id_tables(
    user_values: pl.Series, item_keys: pl.DataFrame, items: pl.DataFrame | None, keep_unused: bool
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, list[str]]:
    """The id maps from the raw user ids and the distinct raw (item, category) pairs that remain:
    (users: user, raw_user; item_keys: item, category, _item, _cat; the items table; categories).
    Users are numbered in sorted raw-id order; items category by category, in sorted raw-id order
    within each."""
    categories = sorted(item_keys["category"].unique().to_list())
    if items is not None and keep_unused:
        categories = sorted(set(categories) | set(items["category"].unique().to_list()))
    cat_map = pl.DataFrame({"category": categories, "_cat": list(range(len(categories)))}).with_columns(
        pl.col("_cat").cast(pl.Int16)
    )
    users = (
        user_values.unique()
        .sort()
        .alias("raw_user")
        .to_frame()
        .with_row_index("user")
        .with_columns(pl.col("user").cast(pl.Int32))
    )
    if items is not None and keep_unused:
        item_keys = pl.concat([item_keys, items.select("item", "category")]).unique()
    item_keys = (
        item_keys.join(cat_map, on="category")
        .sort("_cat", "item")
        .with_row_index("_item")
        .with_columns(pl.col("_item").cast(pl.Int32))
    )
    items_out = item_keys.select(
        pl.col("_item").alias("item"), pl.col("item").alias("raw_item"), pl.col("_cat").alias("category")
    )
    if items is not None:
        extra = [c for c in items.columns if c not in ("item", "category")]
        items_out = items_out.join(
            items.select("item", *extra).unique("item", keep="first").rename({"item": "raw_item"}),
            on="raw_item",
            how="left",
        ).sort("item")
    return users, item_keys, items_out, categories


def _slices(df: pl.DataFrame) -> pl.DataFrame:
    """new_to_category: no train rows for (user, category); cold_item: item has no train rows."""
    is_train = pl.col("split") == SPLIT_CODES["train"]
    return df.with_columns(
        (~is_train.any().over(["user", "category"]) & ~is_train).alias("new_to_category"),
        (~is_train.any().over("item")).alias("cold_item"),
    )
