"""Out-of-core prepare (`prepare.streaming: true`): the Bundle of data/prepare.py, same ids, same
splits, same fingerprint, from interactions larger than memory.

The in-memory path collects the rows with their string ids; this path never holds a string column
of the rows:

1. Pass 1 (polars' streaming engine) collects what is small next to the rows: the row count and
   the sorted distinct users, items and categories (and split values, for `split: given`).
2. Pass 2 streams the rows again, joins each raw id to its code (its rank in that sorted
   vocabulary) and sinks integer columns only (`_row`, [rating f32, timestamp], [split code],
   `order`, user i32, item i32, category i16) to a Parquet file in a temporary directory
   (`$TMPDIR`), which is deleted once read.
3. The file is read back in buckets of users (contiguous ranges of user codes, about
   `ROWS_PER_BUCKET` rows each). A user's rows are all in one bucket, so the dedupe, the per-user
   k-core counts, leave-last-out, the random cut and `new_to_category` run bucket by bucket; what
   spans users is counted with numpy (items' k-core counts, items with a training row) or drawn on
   the small distinct sets the in-memory draws see (the temporal cut on `order`, the cold-user draw
   on the distinct (user, category) pairs, the cold-item draw on the distinct items).

Memory is the integer rows (about 30 bytes each, what the Bundle holds anyway) plus one bucket's
working copies and the vocabularies; the input is read twice and never collected.

Why the result is the same: polars sorts the raw ids here as `_map_ids` does, so a surviving code's
rank among the survivors is the id the in-memory path gives; `_id_tables` builds the users and items
tables from the surviving raw ids as that path does. What the in-memory path does in row order (the
dedupe's keep first/last, the random split's seeded key by row position, the first bad `split`
value it names) is done here in the same order: by (`order`, `_row`) after a dedupe, by `_row`
without one. The checks and their errors are the in-memory path's own functions, run on the
distinct (item, category) pairs. Pseudonymisation is supported: each distinct raw user id is
hashed once and codes are ranks of the pseudonyms.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from crossrec.data import protocols
from crossrec.data.bundle import SPLIT_CODES
from crossrec.data.config import PrepareConfig
from crossrec.data.prepare_parts import _canonical, _check_category_names, _check_item_categories, _id_tables, _slices
from crossrec.data.pseudonym import pseudonym
from crossrec.data.schema import DataError
from crossrec.data.splits import check_split, random_split, split_rows, temporal_cuts, temporal_split
from crossrec.errors import InputDataError

ROWS_PER_BUCKET = 2_000_000  # rows read back and worked on at once (the tests lower it)
_UNDRAWN = -1  # split value the cold-start draws see on rows they leave alone
Frames = list[pl.DataFrame]


def _each(buckets: Frames, step: Callable[[pl.DataFrame], pl.DataFrame]) -> Frames:
    """`step` on every bucket, replacing it in the list as it goes, so that one old bucket at a
    time is alive beside the new ones (the list is the only reference to them)."""
    for j, b in enumerate(buckets):
        buckets[j] = step(b)
        del b
    return buckets


@dataclasses.dataclass(frozen=True)
class _Vocab:
    """Pass 1: the sorted distinct values of each id column; a value's code is its position."""

    n_rows: int
    users: pl.Series  # user ids as the Bundle stores them (pseudonyms when pseudonymised)
    user_codes: pl.DataFrame  # `user` (the raw id pass 2 joins on) -> `_code`
    items: pl.Series
    categories: pl.Series
    splits: pl.Series | None  # split values (split: given), in no particular order


def prepare_rows(
    interactions: pl.DataFrame | pl.LazyFrame, items: pl.DataFrame | None, cfg: PrepareConfig, key: bytes | None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, list[str]]:
    """What `prepare._prepare_rows` returns (interactions with ids, splits and slices; users;
    items; categories), computed out of core; `key`: the pseudonymisation key or None."""
    lf = _canonical(interactions, cfg)
    with tempfile.TemporaryDirectory(prefix="crossrec-prepare-") as tmp:
        vocab = _vocabularies(lf, cfg, key)
        if vocab.n_rows == 0:
            raise DataError("<interactions>", None, None, "at least one interaction")
        path = Path(tmp) / "rows.parquet"
        _write_codes(lf, vocab, key is not None, path)
        vocab = dataclasses.replace(vocab, user_codes=vocab.user_codes.clear())  # (raw ids) no longer needed
        buckets = _read_buckets(path, vocab, cfg)
    pairs = _raw_pairs(buckets, vocab)
    _check_category_names(pairs, items)
    _check_item_categories(pairs, items)
    if cfg.k_core > 0:
        buckets = _k_core(buckets, cfg, len(vocab.items))
        if sum(b.height for b in buckets) == 0:
            raise InputDataError(f"k_core={cfg.k_core} removed every interaction; lower prepare.k_core")
    buckets, users, items_out, categories = _map_ids(buckets, vocab, items, cfg.keep_unused_items)
    buckets = _split(buckets, cfg, vocab)
    check_split(pl.concat(buckets, rechunk=False), cfg)
    buckets = _slices_of(_protocols(buckets, cfg, categories), items_out.height)
    if cfg.split != "leave_last_out":  # leave-last-out sorted them so, and no step since moved a row
        buckets = _each(buckets, lambda b: b.sort("user", "category", "order", "_row"))
    buckets = _each(buckets, lambda b: b.drop("_row"))
    return _concat(buckets), users, items_out, categories


def _vocabularies(lf: pl.LazyFrame, cfg: PrepareConfig, key: bytes | None) -> _Vocab:
    """Pass 1: row count and sorted distinct values, by the streaming engine."""
    user = pl.col("user").cast(pl.Utf8) if key is not None else pl.col("user")  # as pseudonymise_users
    queries = [lf.select(pl.len()), lf.select(user.unique())]
    queries += [lf.select(pl.col(c).unique()) for c in ("item", "category")]
    if cfg.split == "given":
        queries.append(lf.select(pl.col("split").unique()))
    # each query scans on its own: a shared scan (common subplan elimination) would cache every row
    no_cache = pl.QueryOptFlags(comm_subplan_elim=False)
    n, raw_users, items, categories, *splits = pl.collect_all(queries, engine="streaming", optimizations=no_cache)
    raw = raw_users.to_series()
    if key is None:
        users = raw.sort()
        user_codes = users.to_frame("user").with_row_index("_code")
    else:
        hashed = pl.Series("_value", [None if u is None else pseudonym(u, key) for u in raw.to_list()], pl.Utf8)
        users = hashed.unique().sort().alias("user")
        user_codes = (
            pl.DataFrame({"user": raw, "_value": hashed})
            .join(users.to_frame("_value").with_row_index("_code"), on="_value", nulls_equal=True)
            .select("user", "_code")
        )
    return _Vocab(
        n_rows=int(n.item()),
        users=users,
        user_codes=user_codes,
        items=items.to_series().sort(),
        categories=categories.to_series().sort(),
        splits=splits[0].to_series() if splits else None,
    )


def _codes(values: pl.Series, name: str) -> pl.DataFrame:
    return values.to_frame(name).with_row_index("_code")


def _write_codes(lf: pl.LazyFrame, v: _Vocab, hashed: bool, path: Path) -> None:
    """Pass 2: every row with its ids replaced by codes, sunk to `path` (integer columns, in the
    column order `prepare._map_ids` leaves)."""
    if hashed:
        lf = lf.with_columns(pl.col("user").cast(pl.Utf8))
    tables: dict[str, tuple[pl.DataFrame, type[pl.DataType]]] = {
        "user": (v.user_codes, pl.Int32),
        "item": (_codes(v.items, "item"), pl.Int32),
        "category": (_codes(v.categories, "category"), pl.Int16),
    }
    if v.splits is not None:
        tables["split"] = (_codes(v.splits, "split"), pl.UInt32)
    names = lf.collect_schema().names()
    for name, (table, dtype) in tables.items():
        lf = (
            lf.join(table.lazy(), on=name, nulls_equal=True, build_side="prefer_right")
            .with_columns(pl.col("_code").cast(dtype).alias(name))
            .drop("_code")
        )
    cols = [pl.col("_row")] + [pl.col("rating").cast(pl.Float32)] * ("rating" in names)
    cols += [pl.col(c) for c in ("timestamp", "split", "order", "user", "item", "category") if c in names]
    lf.select(cols).sink_parquet(path, compression="lz4")


def _read_buckets(path: Path, v: _Vocab, cfg: PrepareConfig) -> Frames:
    """The coded rows, bucket by bucket of user codes, each deduplicated as `_read_interactions`
    does (a (user, item) pair lies in one bucket)."""
    n = max(1, -(-v.n_rows // ROWS_PER_BUCKET))
    edges = np.linspace(0, len(v.users), n + 1).round().astype(np.int64).tolist()
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = pl.scan_parquet(path)
        if n > 1:
            rows = rows.filter(pl.col("user").is_between(lo, hi, closed="left"))
        b = rows.collect(engine="streaming")
        if cfg.dedupe != "none":
            b = b.sort("order", "_row").unique(["user", "item"], keep=cfg.dedupe, maintain_order=True)
        out.append(b.rechunk())
    return out


def _raw_pairs(buckets: Frames, v: _Vocab) -> pl.DataFrame:
    """The distinct raw (item, category) pairs of the rows: what the in-memory checks look at."""
    pairs = pl.concat([b.select("item", "category").unique() for b in buckets]).unique()
    return pl.DataFrame(
        [v.items.gather(pairs["item"]).alias("item"), v.categories.gather(pairs["category"]).alias("category")]
    )


def _user_groups(b: pl.DataFrame, scope: str) -> tuple[np.ndarray, int]:
    """Each row's k-core user group within its bucket (user, or user and category): (index, count)."""
    key = b["user"].to_numpy().astype(np.int64)
    if scope != "global":
        key = key * 32768 + b["category"].to_numpy()  # category codes are int16
    uniq, index = np.unique(key, return_inverse=True)
    return index.reshape(-1).astype(np.int32), len(uniq)


def _k_core(buckets: Frames, cfg: PrepareConfig, n_items: int) -> Frames:
    """`prepare._k_core` on the buckets: the same rounds, each counting the rows it starts with."""
    groups = [_user_groups(b, cfg.k_core_scope) for b in buckets]
    items = [b["item"].to_numpy() for b in buckets]
    keep = [np.ones(b.height, dtype=bool) for b in buckets]
    for _ in range(100):
        item_n = np.zeros(n_items, dtype=np.int64)
        for i, m in zip(items, keep):
            item_n += np.bincount(i[m], minlength=n_items)
        changed = False
        for j, ((g, n_groups), i, m) in enumerate(zip(groups, items, keep)):
            new = m & (np.bincount(g[m], minlength=n_groups)[g] >= cfg.k_core) & (item_n[i] >= cfg.k_core)
            changed = changed or int(new.sum()) != int(m.sum())
            keep[j] = new
        if not changed:
            break
    del groups, items
    masks = iter(keep)

    def step(b: pl.DataFrame) -> pl.DataFrame:
        m = next(masks)
        return b if m.all() else b.filter(pl.Series(m))

    return _each(buckets, step)


def _map_ids(
    buckets: Frames, v: _Vocab, items: pl.DataFrame | None, keep_unused: bool
) -> tuple[Frames, pl.DataFrame, pl.DataFrame, list[str]]:
    """Codes -> the Bundle's ids, and its users and items tables (`prepare._id_tables` on the
    surviving raw ids). Rows with a null user or item drop out, as in the in-memory joins."""
    alive = np.zeros(len(v.users), dtype=bool)
    for b in buckets:
        alive[b["user"].to_numpy()] = True
    pairs = _raw_pairs(buckets, v)
    users, keyed, items_out, categories = _id_tables(v.users.filter(pl.Series(alive)), pairs, items, keep_unused)
    item_lut = np.full(len(v.items), -1, dtype=np.int32)
    code = _codes(v.items, "item").join(keyed.select("item", "_item"), on="item", nulls_equal=True)
    item_lut[code["_code"].to_numpy()] = code["_item"].to_numpy()
    user_lut = (np.cumsum(alive) - 1).astype(np.int32)
    index = {c: i for i, c in enumerate(categories)}
    cat_lut = np.array([index.get(c, -1) for c in v.categories.to_list()], dtype=np.int16)
    null = [pl.col(c) == 0 for c, vals in (("user", v.users), ("item", v.items)) if vals.null_count()]  # first

    def step(b: pl.DataFrame) -> pl.DataFrame:
        if null:
            b = b.filter(~pl.any_horizontal(null))
        return b.with_columns(
            pl.Series("user", user_lut[b["user"].to_numpy()]),
            pl.Series("item", item_lut[b["item"].to_numpy()]),
            pl.Series("category", cat_lut[b["category"].to_numpy()]),
        )

    return _each(buckets, step), users, items_out, categories


def _split(buckets: Frames, cfg: PrepareConfig, v: _Vocab) -> Frames:
    """`splits.split_rows` bucket by bucket, with what spans buckets computed over all of them."""
    if cfg.split == "given":
        return _given_split(buckets, cfg, v)
    if cfg.split == "leave_last_out":
        return _each(buckets, lambda b: split_rows(b, cfg))
    if cfg.split == "temporal":
        lo, hi = temporal_cuts(pl.concat([b["order"] for b in buckets]), cfg)
        return _each(buckets, lambda b: temporal_split(b, lo, hi))
    # random: the seeded key of a row is drawn by its position in the in-memory path's row order
    rows = pl.concat([b.select("order", "_row") for b in buckets]).sort(_row_order(cfg))
    key = rows.select("_row", pl.int_range(pl.len()).shuffle(seed=cfg.seed).alias("_key"))
    by_row = np.zeros(v.n_rows, dtype=np.int64)
    by_row[key["_row"].to_numpy()] = key["_key"].to_numpy()
    del rows, key
    return _each(buckets, lambda b: random_split(b.with_columns(pl.Series("_key", by_row[b["_row"].to_numpy()])), cfg))


def _row_order(cfg: PrepareConfig) -> list[str]:
    """The order of the in-memory path's rows: a dedupe sorts them by time, then source row."""
    return ["order", "_row"] if cfg.dedupe != "none" else ["_row"]


def _given_split(buckets: Frames, cfg: PrepareConfig, v: _Vocab) -> Frames:
    """The dataset's own split: codes -> int8; a value other than train/valid/test is an error
    naming the first one in row order, as `split_rows` does."""
    assert v.splits is not None
    values = v.splits.to_list()
    bad = [i for i, s in enumerate(values) if s is not None and s not in SPLIT_CODES]
    if bad:
        first = pl.concat([b.filter(pl.col("split").is_in(bad)) for b in buckets]).sort(_row_order(cfg))
        if first.height:
            raise DataError("<interactions>", None, "split", "train, valid or test", repr(values[first["split"][0]]))
    codes = [None if s is None else SPLIT_CODES.get(s) for s in values]
    split = pl.col("split").replace_strict(list(range(len(values))), codes, return_dtype=pl.Int8)
    return _each(buckets, lambda b: b.with_columns(split))


def _protocols(buckets: Frames, cfg: PrepareConfig, categories: list[str]) -> Frames:
    """The cold-start user and item protocols drawn, as in memory, on the distinct (user,
    category) pairs and items (each row left alone marked `_UNDRAWN`), then applied bucket by
    bucket; the zero-shot category row by row."""
    undrawn = pl.lit(_UNDRAWN, pl.Int8).alias("split")
    if cfg.cold_user_fraction > 0 or cfg.cold_user_valid_fraction > 0:
        pairs = pl.concat([b.select("user", "category").unique() for b in buckets]).with_columns(undrawn)
        drawn = protocols.cold_user_protocol(pairs, cfg, categories)
        marks = drawn.filter(pl.col("split") != _UNDRAWN).rename({"split": "_to"})
        buckets = _each(
            buckets,
            lambda b: (
                b.join(marks, on=["user", "category"], how="left", maintain_order="left")
                .with_columns(pl.coalesce("_to", "split").alias("split"))
                .drop("_to")
            ),
        )
    if cfg.cold_item_fraction > 0:
        distinct = pl.concat([b.select("item").unique() for b in buckets]).unique().with_columns(undrawn)
        held = protocols.held_out_share([b["split"] for b in buckets])
        drawn = protocols.cold_item_protocol(distinct, cfg, held)
        moved = [drawn.filter(pl.col("split") == SPLIT_CODES[s])["item"].implode() for s in ("test", "valid")]
        split = (
            pl.when(pl.col("item").is_in(moved[0]))
            .then(pl.lit(SPLIT_CODES["test"], pl.Int8))
            .when(pl.col("item").is_in(moved[1]))
            .then(pl.lit(SPLIT_CODES["valid"], pl.Int8))
            .otherwise(pl.col("split"))
        )
        buckets = _each(buckets, lambda b: b.with_columns(split.alias("split")))
    if cfg.zero_shot_category is not None:
        buckets = _each(buckets, lambda b: protocols.zero_shot_protocol(b, cfg, categories))
    return buckets


def _slices_of(buckets: Frames, n_items: int) -> Frames:
    """`prepare._slices` bucket by bucket, with `cold_item` from the items trained on anywhere."""
    trained = np.zeros(n_items, dtype=bool)
    for b in buckets:
        trained[b.filter(pl.col("split") == SPLIT_CODES["train"])["item"].to_numpy()] = True
    return _each(buckets, lambda b: _slices(b).with_columns(pl.Series("cold_item", ~trained[b["item"].to_numpy()])))


def _concat(frames: Frames) -> pl.DataFrame:
    """One frame from the buckets, a column at a time, dropping each from the buckets as it is
    copied (peak: the rows plus one column)."""
    columns = []
    for name in frames[0].columns:
        columns.append(pl.concat([f.get_column(name) for f in frames], rechunk=True))
        _each(frames, lambda f: f.drop(name))  # noqa: B023  (used at once, in this iteration)
    return pl.DataFrame(columns)


__all__ = ["ROWS_PER_BUCKET", "prepare_rows"]
