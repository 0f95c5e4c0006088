"""Raw canonical tables -> a Bundle: dedupe, k-core, id maps, splits, cold-start slices.

Two paths give the same Bundle and fingerprint (benchmarks/bench_prepare.py measures both):
- in memory (the default): the interactions are collected with their raw ids, then filtered, mapped
  to integer ids and split; tens of millions of rows fit in a few GB.
- out of core (`prepare.streaming: true`, data/prepare_stream.py): for inputs larger than memory,
  best a LazyFrame from `pl.scan_parquet`. Two streaming passes over the input (the sorted distinct
  ids, then every row coded as integers into a temporary Parquet file); the rest runs on integer
  columns, bucket by bucket of users. Pseudonymisation works there too.

Split strategies (`PrepareConfig.split`):
- `leave_last_out`: per (user, category), ordered by timestamp, else by the `order` column, else by
  row position in the source: the last interaction -> test, the one before -> valid (with
  `valid=True`). A (user, category) needs 2 interactions to give a test row and 3 for a valid row;
  one with a single interaction stays in train.
- `temporal`: one global time cut: the latest `test_ratio` of interactions -> test, the
  `valid_ratio` before them -> valid.
- `random`: per (user, category), a seeded random `test_ratio` / `valid_ratio` of interactions
  (rounded, at least one kept in train).
- `given`: the dataset's own `split` column, kept as is.

The **cold-start item protocol** (`cold_item_fraction > 0`): a seeded fraction of the items lose
every interaction, so the `cold_item` slice is large enough to measure. With a validation split, a
share `cold_item_valid_share` (default half) of those items go to validation and the rest to test
(disjoint items, as DropoutNet and CLCRec split theirs): validation then holds items nobody
trained on, as test does, so models are tuned and calibrated for them on validation. The **zero-shot
category protocol** (`zero_shot_category: NAME`): every interaction of that category goes to test;
models train on the other categories and recommend there from item text and users' other
categories.

The **cold-start user protocol** (`cold_user_fraction > 0`, after EMCDR/PTUPCDR): a seeded fraction
of the users active in two or more categories have all of their interactions in one target category
moved to test, so they are served from their other categories only. With a validation split,
`cold_user_valid_fraction` draws a further share of those users (after the test draw, which it
leaves as it was) whose rows in one category go to validation instead: new-to-category users to tune
and calibrate on, as the cold items of `cold_item_valid_share` are.

**Reviews as item text** (`item_reviews > 0`): after the split and the protocols, each item keeps
up to `item_reviews` of its most recent training-split review texts (the interactions' `text`
column; by `order`, then source row, newest first), each cut to `item_review_chars` characters and
joined with " | ", as the item table's `reviews` column (null for an item with none), for an encoder
template's `{reviews}`. Validation and test rows are never read, so a cold item, a zero-shot
category's items and a held-out review leak nothing. The interactions keep no `text` column.

Example:
    >>> bundle = prepare(interactions, items, PrepareConfig(k_core=5), "runs/b")  # doctest: +SKIP
    >>> bundle.manifest["counts"]["books"]["test"]                                # doctest: +SKIP
    2950
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from crossrec import __version__
from crossrec.data import protocols
from crossrec.data.bundle import SPLIT_CODES, Bundle
from crossrec.data.config import SPLIT_STRATEGIES, PrepareConfig  # noqa: F401  (PrepareConfig: its home for users)
from crossrec.data.prepare_parts import _canonical, _check_category_names, _check_item_categories, _id_tables, _slices
from crossrec.data.pseudonym import key_from_env, manifest_entry, pseudonymise_users
from crossrec.data.schema import SCHEMA_VERSION, DataError
from crossrec.data.splits import check_split, split_rows
from crossrec.errors import InputDataError
from crossrec.integrity import file_sha256


def prepare(
    interactions: pl.DataFrame | pl.LazyFrame,
    items: pl.DataFrame | None,
    cfg: PrepareConfig,
    out_dir: str | Path | None = None,
    sources: Sequence[str | Path] = (),
    image_vectors: tuple[Sequence[str], np.ndarray] | None = None,
) -> Bundle:
    """Turn canonical raw tables (see `crossrec.data.schema`) into a Bundle.

    Args:
        interactions: canonical interactions: user, item, category, [rating, timestamp, order, split].
        items: canonical item table (item, category, title, description, ...) or None.
        cfg: filtering and split settings.
        out_dir: where to write the bundle (atomically); None keeps it in memory only.
        sources: source files, checksummed into the manifest.
        image_vectors: optional (raw item ids, [n, d] vectors), e.g. from `read_image_vectors`;
            aligned to the Bundle's item ids (items without a vector get zeros, `present` False).

    Returns:
        The Bundle (also written to `out_dir` when given).
    """
    cfg.validate()
    t0 = time.perf_counter()
    key = key_from_env() if cfg.pseudonymise else None  # before any work: a missing key fails fast
    if cfg.streaming:
        from crossrec.data.prepare_stream import prepare_rows  # loaded only when asked for

        df, users, items_out, categories = prepare_rows(interactions, items, cfg, key)
    else:
        df, users, items_out, categories = _prepare_rows(interactions, items, cfg, key)
    bundle = Bundle(
        interactions=df,
        items=items_out,
        users=users,
        manifest=_manifest(df, items_out, users, categories, cfg, sources),
    )
    if cfg.item_reviews > 0:
        with_reviews = int(items_out.get_column("reviews").is_not_null().sum())
        bundle.manifest["item_reviews"] = {"items_with_reviews": with_reviews, "per_item": cfg.item_reviews}
    if image_vectors is not None:
        _attach_image_vectors(bundle, items_out, image_vectors)
    if key is not None:
        bundle.manifest["pseudonymised"] = manifest_entry(key)
    bundle.manifest["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    if out_dir is not None:
        bundle.save(out_dir)
    return bundle


def _prepare_rows(
    interactions: pl.DataFrame | pl.LazyFrame, items: pl.DataFrame | None, cfg: PrepareConfig, key: bytes | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, list[str]]:
    """The in-memory path: (interactions with ids, splits and slices; users; items; categories)."""
    df = _read_interactions(interactions, cfg)
    if key is not None:
        df = pseudonymise_users(df, key)
    _check_category_names(df, items)
    _check_item_categories(df, items)

    if cfg.k_core > 0:
        df = _k_core(df, cfg.k_core, cfg.k_core_scope)
        if df.height == 0:
            raise InputDataError(f"k_core={cfg.k_core} removed every interaction; lower prepare.k_core")

    df, users, items_out, categories = _map_ids(df, items, cfg.keep_unused_items)
    df = _split_and_protocols(df, cfg, categories)
    if cfg.item_reviews > 0:
        df, items_out = _item_reviews(df, items_out, cfg)
    df = df.sort("user", "category", "order", "_row").drop("_row")
    return df, users, items_out, categories


def _read_interactions(interactions: pl.DataFrame | pl.LazyFrame, cfg: PrepareConfig) -> pl.DataFrame:
    """The interactions prepare works on (`_canonical`), deduplicated per `cfg.dedupe`, collected;
    an empty table is an error."""
    lf = _canonical(interactions, cfg)
    if cfg.dedupe != "none":
        lf = lf.sort("order", "_row").unique(["user", "item"], keep=cfg.dedupe, maintain_order=True)

    df = lf.collect()
    if df.height == 0:
        raise DataError("<interactions>", None, None, "at least one interaction")
    return df


def _split_and_protocols(df: pl.DataFrame, cfg: PrepareConfig, categories: list[str]) -> pl.DataFrame:
    """The train/valid/test split (checked), then the cold-start user, cold-start item and
    zero-shot category protocols where configured, then the evaluation slices."""
    df = split_rows(df, cfg)
    check_split(df, cfg)
    if cfg.cold_user_fraction > 0 or cfg.cold_user_valid_fraction > 0:
        df = protocols.cold_user_protocol(df, cfg, categories)
    if cfg.cold_item_fraction > 0:
        df = protocols.cold_item_protocol(df, cfg)
    if cfg.zero_shot_category is not None:
        df = protocols.zero_shot_protocol(df, cfg, categories)
    return _slices(df)


def _item_reviews(df: pl.DataFrame, items: pl.DataFrame, cfg: PrepareConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the interactions without `text`, the items with `reviews`): each item's `cfg.item_reviews`
    most recent training-split texts (`order`, then `_row`, descending; `_canonical` cut them),
    joined with " | ". Read after the split and the protocols, so no held-out row is among them."""
    if "reviews" in items.columns:
        raise DataError("<items>", None, "reviews", "no such column (prepare.item_reviews makes it)", "one")
    reviews = (
        df.lazy()
        .filter((pl.col("split") == SPLIT_CODES["train"]) & pl.col("text").is_not_null())
        .group_by("item")
        .agg(
            pl.col("text")
            .sort_by("order", "_row", descending=True)
            .head(cfg.item_reviews)
            .str.join(" | ")
            .alias("reviews")
        )
        .collect()
    )
    items = items.join(reviews, on="item", how="left", maintain_order="left")
    return df.drop("text"), items


def _attach_image_vectors(bundle: Bundle, items: pl.DataFrame, image_vectors: tuple[Sequence[str], np.ndarray]) -> None:
    """Align (raw item ids, vectors) to the Bundle's items (see `_align_vectors`) and note their
    dimension and coverage in the manifest."""
    bundle.image_vectors, bundle.image_present = _align_vectors(items, *image_vectors)
    bundle.manifest["image_vectors"] = {
        "dim": int(bundle.image_vectors.shape[1]),
        "items_with_vector": int(bundle.image_present.sum()),
        "vectors_without_item": int(len(image_vectors[0]) - bundle.image_present.sum()),
    }


def _align_vectors(items: pl.DataFrame, ids: Sequence[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `vectors` reordered to the Bundle's item ids: ([n_items, d], present [n_items])."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise InputDataError(f"image vectors: expected [{len(ids)}, d] for {len(ids)} ids, got {vectors.shape}")
    keyed = pl.DataFrame({"raw_item": [str(i) for i in ids], "_row": np.arange(len(ids), dtype=np.int64)})
    rows = items.select("item", "raw_item").join(keyed, on="raw_item", how="left").sort("item")["_row"]
    present = rows.is_not_null().to_numpy()
    out = np.zeros((items.height, vectors.shape[1]), dtype=np.float32)
    out[present] = vectors[rows.drop_nulls().to_numpy()]
    return out, present


def _k_core(df: pl.DataFrame, k: int, scope: str) -> pl.DataFrame:
    """Iteratively drop users and items with fewer than k interactions until stable."""
    user_key = ["user"] if scope == "global" else ["user", "category"]
    for _ in range(100):
        n_before = df.height
        df = df.filter((pl.len().over(user_key) >= k) & (pl.len().over("item") >= k))
        if df.height == n_before:
            return df
    return df


def _map_ids(
    df: pl.DataFrame, items: pl.DataFrame | None, keep_unused: bool
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, list[str]]:
    """Raw string ids -> int32 ids (see `_id_tables`); rows keep their order (the random split
    draws by row position)."""
    users, item_keys, items_out, categories = _id_tables(
        df.get_column("user"), df.select("item", "category").unique(), items, keep_unused
    )
    df = (
        df.join(users.rename({"raw_user": "user", "user": "_user"}), on="user", maintain_order="left")
        .join(item_keys.select("item", "_item", "_cat"), on="item", maintain_order="left")
        .drop("user", "item", "category")
        .rename({"_user": "user", "_item": "item", "_cat": "category"})
    )
    if "rating" in df.columns:
        df = df.with_columns(pl.col("rating").cast(pl.Float32))
    return df, users, items_out, categories


def _settings(cfg: PrepareConfig) -> dict:
    """The prepare settings the manifest records (and the fingerprint hashes): not `streaming` (how,
    not what: the same Bundle), nor the review options while `item_reviews` is off (so a Bundle
    prepared without reviews keeps the fingerprint it had before they existed)."""
    off = {"streaming"} | ({"item_reviews", "item_review_chars"} if cfg.item_reviews == 0 else set())
    return {k: v for k, v in asdict(cfg).items() if k not in off}


def _manifest(
    df: pl.DataFrame,
    items: pl.DataFrame,
    users: pl.DataFrame,
    categories: list[str],
    cfg: PrepareConfig,
    sources: Sequence[str | Path],
) -> dict:
    stats = (
        df.group_by("category", "split")
        .agg(
            pl.len().alias("n"),
            (pl.col("new_to_category")).sum().alias("new_rows"),
            (pl.col("cold_item")).sum().alias("cold_rows"),
        )
        .sort("category", "split")
    )
    item_counts = items.group_by("category").len().sort("category")
    n_items = dict(zip(item_counts["category"].to_list(), item_counts["len"].to_list()))
    names = {v: k for k, v in SPLIT_CODES.items()}
    counts: dict[str, dict] = {
        c: {"items": int(n_items.get(i, 0)), "train": 0, "valid": 0, "test": 0}
        | {f"{s}_{k}_rows": 0 for s in ("valid", "test") for k in ("new_to_category", "cold_item")}
        for i, c in enumerate(categories)
    }
    for r in stats.iter_rows(named=True):
        entry = counts[categories[r["category"]]]
        entry[names[r["split"]]] = int(r["n"])
        if r["split"] != SPLIT_CODES["train"]:
            entry[f"{names[r['split']]}_new_to_category_rows"] = int(r["new_rows"])
            entry[f"{names[r['split']]}_cold_item_rows"] = int(r["cold_rows"])
    return {
        "schema_version": SCHEMA_VERSION,
        "crossrec_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "categories": categories,
        "n_users": users.height,
        "n_items": items.height,
        "n_interactions": df.height,
        "has_ratings": "rating" in df.columns,
        "has_timestamps": "timestamp" in df.columns,
        "counts": counts,
        "settings": _settings(cfg),
        "sources": [{"path": str(p), "sha256": file_sha256(p)} for p in sources],
    }
