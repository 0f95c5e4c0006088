"""Built-in datasets and dump formats: files in a known layout -> canonical tables.

`read_dataset(name, root)` reads a dataset under ../shared/data by name (`DATASETS`), with the
split its README documents; `read_amazon_reviews` reads the McAuley-lab Amazon review dumps. Both
go through the checked readers in `crossrec.data.readers`, so bad rows raise `DataError` with the
file and line.

Example:
    >>> raw = read_dataset("anime-mal", "../shared/data/anime-mal")  # doctest: +SKIP
    >>> raw.split_defaults
    {'split': 'random', 'test_ratio': 0.2, 'valid_ratio': 0.1, 'seed': 2024}
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from crossrec.data import validate as v
from crossrec.data.readers import _read_fields, read_interactions, read_items
from crossrec.data.schema import (
    CATEGORY,
    DESCRIPTION,
    ITEM,
    TITLE,
    ColumnMap,
    ItemColumnMap,
    Limits,
)
from crossrec.errors import ConfigError, MissingInputError, UnknownNameError


@dataclass(frozen=True)
class RawDataset:
    """A built-in dataset read into canonical tables, with the split its README documents.

    Example:
        >>> raw = read_dataset("anime-mal", "../shared/data/anime-mal")  # doctest: +SKIP
        >>> raw.split_defaults
        {'split': 'random', 'test_ratio': 0.2, 'valid_ratio': 0.1, 'seed': 2024}
    """

    interactions: pl.DataFrame
    items: pl.DataFrame | None
    sources: tuple[Path, ...]
    split_defaults: dict[str, Any]


def read_amazon_reviews(
    files: Mapping[str, tuple[str | Path, str | Path | None]],
    text: bool = False,
    shared_items: Literal["error", "first"] = "error",
    limits: Limits | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read Amazon review dumps (McAuley lab 2014 / 2018 or 2023 formats), one category per file.

    Reviews: `reviewerID` or `user_id`; `parent_asin` (2023, which the metadata is keyed by) or
    `asin`; `overall` or `rating`; `unixReviewTime` (seconds) or `timestamp` (milliseconds, 2023),
    converted to seconds; optionally `reviewText` / `text`. Metadata: `parent_asin` or `asin`,
    `title`, `description` (a string, or a list of strings joined with spaces). The 2014
    metadata files, which are Python literals rather than JSON, are not supported.

    Args:
        files: category name -> (reviews JSONL(.gz), metadata JSONL(.gz) or None).
        text: keep the review text as a `text` column.
        shared_items: an item found in two categories raises ("error"), or stays in the first
            category listed and loses its rows elsewhere ("first").
        limits: bounds on line and value sizes, as in `readers.read_interactions`.

    Returns:
        (interactions: user, item, category, rating, timestamp [, text];
         items: item, category, title, description).

    Raises:
        DataError: as in `read_interactions`, at the file and line of the bad row.
    """
    if shared_items not in ("error", "first"):
        raise ConfigError(f"shared_items={shared_items!r}; expected 'error' or 'first'")
    inters: list[pl.DataFrame] = []
    metas: list[pl.DataFrame] = []
    review_files: list[str] = []
    meta_files: list[str] = []
    for category, (reviews, meta) in files.items():
        inters.append(_amazon_reviews_file(reviews, category, text, len(review_files), limits))
        review_files.append(str(reviews))
        if meta is not None:
            metas.append(_amazon_meta_file(meta, category, len(meta_files), limits))
            meta_files.append(str(meta))
    inter = pl.concat(inters, how="diagonal_relaxed")
    no_items = pl.DataFrame(schema={ITEM: pl.String, CATEGORY: pl.String})
    items = pl.concat(metas, how="diagonal_relaxed") if metas else no_items
    if shared_items == "error":
        v.check_one_category(inter, review_files, None)
        v.check_one_category(items, meta_files, None)
    else:
        first = pl.col(CATEGORY) == pl.col(CATEGORY).first().over(ITEM)
        inter, items = inter.filter(first), items.filter(first)
    items = items.unique(ITEM, keep="first", maintain_order=True)
    return inter.drop(v.LINE, v.FILE), items.drop(v.LINE, v.FILE, strict=False)


def _amazon_reviews_file(
    reviews: str | Path, category: str, text: bool, file_index: int, limits: Limits | None
) -> pl.DataFrame:
    """One category's Amazon reviews as canonical interactions (2014 / 2018 or 2023 field names,
    told apart by the first record; 2023 timestamps are milliseconds), with `_line` and `_file` =
    `file_index` for error locations."""
    new = bool(_first_keys(reviews, limits) & {"user_id", "parent_asin"})  # the 2023 release
    names = (
        ("user_id", "parent_asin", "rating", "timestamp", "text")
        if new
        else ("reviewerID", "asin", "overall", "unixReviewTime", "reviewText")
    )
    fields = {
        "user": (names[0], "id"),
        "item": (names[1], "id"),
        "category": (category, "const"),
        "rating": (names[2], "rating"),
        "timestamp": (names[3], "timestamp_ms" if new else "timestamp"),
    }
    if text:
        fields["text"] = (names[4], "text")
    df = _read_fields(reviews, fields, "jsonl", None, frozenset({names[4]}), limits)  # 2023: milliseconds
    return df.with_columns(pl.lit(file_index, pl.UInt32).alias(v.FILE))


def _amazon_meta_file(meta: str | Path, category: str, file_index: int, limits: Limits | None) -> pl.DataFrame:
    """One category's Amazon metadata as canonical items (keyed by `parent_asin` where the first
    record has it, else `asin`; a description given as a JSON list of strings is joined with
    spaces), with `_line` and `_file` = `file_index` for error locations."""
    keys = _first_keys(meta, limits)
    item_fields = {
        ITEM: ("parent_asin" if "parent_asin" in keys else "asin", "id"),
        CATEGORY: (category, "const"),
        TITLE: (TITLE, "text"),
        DESCRIPTION: (DESCRIPTION, "text"),
    }
    df = _read_fields(meta, item_fields, "jsonl", None, frozenset({TITLE, DESCRIPTION}), limits=limits)
    try:
        df = df.with_columns(_join_json_lists(pl.col(DESCRIPTION)))
    except pl.exceptions.PolarsError:  # text that only looks like a JSON list: keep it
        pass
    return df.with_columns(pl.lit(file_index, pl.UInt32).alias(v.FILE))


def read_amazon_arts_office(root: str | Path, limits: Limits | None = None) -> RawDataset:
    """Read `amazon-arts-office` (Amazon Arts_Crafts_and_Sewing + Office_Products, URLLM).

    It has no ratings and no timestamps; `order` is the source's `seq_pos` (each user's two
    targets share the last position, so ties are expected). The source's `split` is a user-level
    split, kept as `source_split` so it is not taken for a row split. Item descriptions are the
    source's `attributes`.
    """
    root = Path(root)
    inter_path, items_path = _need(root, "interactions.csv.gz"), _need(root, "items.csv.gz")
    inter = _read_fields(
        inter_path,
        {
            "user": ("user_id", "id"),
            "item": ("item_id", "id"),
            "category": ("category", "id"),
            "order": ("seq_pos", "order"),
            "source_split": ("split", "split"),
        },
        None,
        None,
        limits=limits,
    )
    v.check_one_category(inter, [str(inter_path)], "category")
    items = read_items(
        items_path, ItemColumnMap(item="item_id", title="title", description="attributes"), limits=limits
    )
    defaults = {"split": "leave_last_out", "order": "order"}
    return RawDataset(inter.drop(v.LINE), items, (inter_path, items_path), defaults)


def read_anime_mal(root: str | Path, limits: Limits | None = None) -> RawDataset:
    """Read `anime-mal` (MyAnimeList; categories = TV / Movie / OVA / Special / ONA / Music).

    Ratings are 1-10, blank = on the list but unrated (null, implicit). No timestamps and no
    order, so its documented split is random with a seed. Items keep `genres` as an extra column.
    """
    root = Path(root)
    inter_path, items_path = _need(root, "interactions.csv.gz"), _need(root, "items.csv.gz")
    inter = read_interactions(inter_path, ColumnMap(user="user_id", item="item_id", rating="rating"), limits=limits)
    items = _read_fields(
        items_path,
        {
            "item": ("item_id", "id"),
            "category": ("category", "id"),
            "title": ("title", "text"),
            "genres": ("genres", "text"),
        },
        None,
        None,
        limits=limits,
    )
    v.check_one_category(items, [str(items_path)], "category")
    items = items.drop(v.LINE).unique(ITEM, keep="first", maintain_order=True)
    defaults = {"split": "random", "test_ratio": 0.2, "valid_ratio": 0.1, "seed": 2024}
    return RawDataset(inter, items, (inter_path, items_path), defaults)


DATASETS: dict[str, Callable[..., RawDataset]] = {  # (root, limits=None) -> RawDataset
    "amazon-arts-office": read_amazon_arts_office,
    "anime-mal": read_anime_mal,
}


def read_dataset(name: str, root: str | Path, limits: Limits | None = None) -> RawDataset:
    """Read a built-in dataset by name from its folder (see `DATASETS`); `limits` as in
    `readers.read_interactions`."""
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root, limits=limits)


def _first_keys(path: str | Path, limits: Limits | None = None) -> set[str]:
    """Keys of a JSONL file's first record, reading only its start (at most one bounded line: a
    longer one, or anything unreadable, is reported with its line when the file is read)."""
    cap = (limits or Limits()).max_line_bytes + 1
    try:
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as f:
            for _ in range(1000):  # blank lines before the first record
                raw = f.readline(cap)
                if not raw or (len(raw) == cap and not raw.endswith(b"\n")):
                    return set()
                if raw.strip():
                    record = json.loads(raw)
                    return set(record) if isinstance(record, dict) else set()
    except (OSError, EOFError, ValueError, RecursionError):
        return set()
    return set()


def _is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _join_json_lists(col: pl.Expr) -> pl.Expr:
    """Descriptions that polars kept as JSON array text (`["a", "b"]`) joined into "a b"."""
    array = col.str.starts_with("[") & col.str.ends_with("]")
    joined = pl.when(array).then(col).str.json_decode(pl.List(pl.String)).list.join(" ")
    return pl.when(array).then(joined).otherwise(col).alias(DESCRIPTION)


def _need(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_file():
        raise MissingInputError(f"{str(path)!r} not found; expected the dataset folder with {name}")
    return path
