"""Readers: files in, canonical tables out (see `crossrec.data.schema`).

Formats are CSV, TSV, Parquet and JSON lines, each optionally gzip-compressed; the format comes
from the extension (`.csv`, `.tsv`, `.parquet`, `.jsonl`/`.json`, each maybe with `.gz`) unless
`fmt` is given. Ids are always read as strings ("007" stays "007"). Every problem in the data
raises `DataError` with the file, the 1-based physical line (the CSV header is line 1, the first
JSON record is line 1; for Parquet and `.npz` it is the 1-based row number), the column as the
user spelt it, what was expected and what was found. The checks are vectorised
(`crossrec.data.validate`).

CSV notes: quoted fields may span lines; the line reported is the one where the record starts.
A double quote toggles quoting wherever it appears, so a stray quote inside an unquoted field
(`5" ruler`) is reported as an unclosed quote. Blank lines are skipped.

Built-in datasets and the Amazon review dumps are read in `crossrec.data.datasets`, on top of these.

Example:
    >>> from crossrec.data.schema import ColumnMap
    >>> inter = read_interactions("ratings.csv.gz", ColumnMap(rating="stars"))  # doctest: +SKIP
    >>> inter.columns                                                          # doctest: +SKIP
    ['user', 'item', 'category', 'rating']
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from crossrec.data import validate as v
from crossrec.data.raw_bytes import check_parquet_sizes, detect_format, first_keys_of, read_bytes
from crossrec.data.schema import (
    CATEGORY,
    DESCRIPTION,
    IMAGE,
    ITEM,
    TITLE,
    ColumnMap,
    DataError,
    ItemColumnMap,
    Limits,
)
from crossrec.errors import ConfigError

_KINDS = {
    "user": "id",
    "item": "id",
    "category": "id",
    "rating": "rating",
    "timestamp": "timestamp",
    "order": "order",
    "split": "split",
    "text": "text",
}


def read_interactions(
    path: str | Path,
    columns: ColumnMap = ColumnMap(),
    fmt: str | None = None,
    sep: str | None = None,
    limits: Limits | None = None,
) -> pl.DataFrame:
    """Read an interaction file into the canonical interaction table.

    Args:
        path: the file (CSV, TSV, Parquet or JSONL, maybe gzip-compressed).
        columns: which source column holds each canonical field.
        fmt: "csv", "tsv", "parquet" or "jsonl"; None = from the extension.
        sep: the CSV delimiter; None = "," for CSV and tab for TSV.
        limits: bounds on line, header and cell sizes (`Limits`: 1 MiB, 64 KiB, 64 KiB by
            default; `data.max_line_bytes`, `data.max_header_bytes`, `data.max_cell_bytes`).

    Returns:
        `user`, `item`, `category` (Utf8), then where mapped `rating` (Float64, null = implicit),
        `timestamp` (Int64 unix seconds), `order` (Int64), `split` (train/valid/test) and `text`
        (Utf8, nulls kept: an interaction's review text).

    Raises:
        DataError: for an empty file, a missing column, a bad value, or an item in two categories;
            for binary data (NUL bytes, bytes that are not UTF-8, a compressed or Parquet file
            under a text name) or a line, header or cell over its bound, found while streaming
            the file, before it is parsed (see `Limits`).
    """
    df = _read_fields(path, _interaction_fields(columns), fmt, sep, limits=limits)
    if columns.category_value is None:
        v.check_one_category(df, [str(path)], columns.category)
    return df.drop(v.LINE)


def read_items(
    path: str | Path,
    columns: ItemColumnMap = ItemColumnMap(),
    fmt: str | None = None,
    sep: str | None = None,
    limits: Limits | None = None,
) -> pl.DataFrame:
    """Read an item table: one row per item (repeated rows keep the first).

    Args:
        path: the file (CSV, TSV, Parquet or JSONL, maybe gzip-compressed).
        columns: which source column holds each canonical item field; fields mapped to None are
            left out of the result.
        fmt: as in `read_interactions`.
        sep: as in `read_interactions`.
        limits: as in `read_interactions`.

    Returns:
        `item`, then `category`, `title`, `description` where mapped (all Utf8).

    Raises:
        DataError: as in `read_interactions`; also for an item listed under two categories.
    """
    df = _read_fields(path, _item_fields(columns), fmt, sep, limits=limits)
    if columns.category is not None:
        v.check_one_category(df, [str(path)], columns.category)
    return df.drop(v.LINE).unique(ITEM, keep="first", maintain_order=True)


def read_image_vectors(
    path: str | Path, id_column: str | None = None, limits: Limits | None = None
) -> tuple[list[str], np.ndarray]:
    """Read per-item vectors (e.g. image embeddings) keyed by item id.

    Args:
        path: a `.npz` (arrays `item_ids` [n] and `vectors` [n, dim], loaded without pickle), or a
            Parquet / CSV / TSV / JSONL table with an id column and either float columns (one per
            dimension) or one list column holding each vector.
        id_column: the id column of a table; None = `item_id`, else `item`, else the first column.
        limits: as in `read_interactions` (tables only).

    Returns:
        (item ids as strings, vectors as float32 [n_items, dim]).

    Raises:
        DataError: for an empty file, a non-numeric or non-finite value, vectors of unequal
            length, or a repeated item id.
    """
    file = str(path)
    if Path(path).suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                ids, vectors = np.asarray(npz["item_ids"]), np.asarray(npz["vectors"])
        except KeyError as e:
            raise DataError(file, None, None, "arrays 'item_ids' and 'vectors'", str(e)) from e
        except ValueError as e:  # object arrays need pickle, which is refused
            raise DataError(file, None, None, "plain (non-object) arrays", str(e)) from e
        if vectors.ndim != 2 or ids.ndim != 1 or len(ids) != len(vectors):
            expected = f"a [{len(ids)}, dim] array for {len(ids)} item_ids"
            raise DataError(file, None, "vectors", expected, f"shape {vectors.shape}")
        key, names = "item_ids", ["vectors"] * vectors.shape[1]
        table = pl.DataFrame({"item": ids.astype(str), v.LINE: np.arange(1, len(ids) + 1, dtype=np.int64)})
    else:
        raw, header_line = _load(path, None, None, None, limits=limits)
        cols = [c for c in raw.columns if c != v.LINE]
        key = id_column or next((c for c in ("item_id", "item") if c in cols), cols[0])
        if key not in cols:
            raise DataError(file, header_line, key, "an item id column", f"columns {_names(cols)}")
        table = v.convert(raw, {"item": (key, "id")}, [file])
        names, vectors = _vector_columns(raw, [c for c in cols if c != key], file)
    if len(vectors) == 0 or vectors.shape[1] == 0:
        raise DataError(file, None, None, "at least one vector of at least one value", f"shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.number):
        raise DataError(file, None, names[0], "numeric vectors", f"dtype {vectors.dtype}")
    rows, dims = np.nonzero(~np.isfinite(vectors))
    if len(rows):
        got = repr(float(vectors[rows[0], dims[0]]))
        raise v.error_at(table, int(rows[0]), [file], names[int(dims[0])], "a finite number", got)
    repeat = table.select((~pl.col("item").is_first_distinct()).arg_true().first()).item()
    if repeat is not None:
        raise v.error_at(table, repeat, [file], key, "unique item ids", repr(table["item"][repeat]))
    return table["item"].to_list(), vectors.astype(np.float32)


def _interaction_fields(columns: ColumnMap) -> dict[str, tuple[str, str]]:
    """Output name -> (source column or constant, kind) for an interaction file."""
    fields = {k: (src, _KINDS[k]) for k, src in columns.required().items()}
    if columns.category_value is not None:
        fields[CATEGORY] = (columns.category_value, "const")
    fields = {k: fields[k] for k in ("user", "item", "category")}
    return fields | {k: (src, _KINDS[k]) for k, src in columns.optional().items()}


def _item_fields(columns: ItemColumnMap) -> dict[str, tuple[str, str]]:
    pairs = {
        ITEM: (columns.item, "id"),
        CATEGORY: (columns.category, "id"),
        TITLE: (columns.title, "text"),
        DESCRIPTION: (columns.description, "text"),
        IMAGE: (columns.image, "text"),
    }
    return {k: (src, kind) for k, (src, kind) in pairs.items() if src is not None}


def _read_fields(
    path: str | Path,
    fields: Mapping[str, tuple[str, str]],
    fmt: str | None,
    sep: str | None,
    optional: frozenset[str] = frozenset(),
    limits: Limits | None = None,
) -> pl.DataFrame:
    """Load the source columns `fields` needs, check them, convert; keeps `_line`.

    `optional` names JSON fields that may be absent from every record (read as nulls).
    """
    needed = {src: out for out, (src, kind) in fields.items() if kind != "const"}
    raw, _ = _load(path, fmt, sep, needed, optional, limits)
    return v.convert(raw, fields, [str(path)])


def _load(
    path: str | Path,
    fmt: str | None,
    sep: str | None,
    needed: Mapping[str, str] | None,
    optional: frozenset[str] = frozenset(),
    limits: Limits | None = None,
) -> tuple[pl.DataFrame, int | None]:
    """Read a file's needed source columns (all, if None) plus `_line`.

    Text formats give String columns. Returns the frame and the header's line (1 for CSV/TSV,
    None otherwise), and raises for an empty file, bad encoding, bad structure or missing columns.
    Text is streamed through `validate.TextScan` (binary data, over-long lines) before polars
    parses it; string values over `limits.max_cell_bytes` are refused after.
    """
    file = str(path)
    fmt = detect_format(path, fmt)
    limits = limits or Limits()
    sep = _delimiter(fmt, sep)
    data = read_bytes(path, fmt, sep, limits)
    if not data.strip():
        raise DataError(file, None, None, "at least one data row", "an empty file")
    if fmt == "parquet":
        return _load_parquet(data, file, needed, limits), None
    if fmt == "jsonl":
        return _load_jsonl(data, file, needed, optional, limits), None
    assert sep is not None
    return _load_csv(data, file, sep, needed, limits), 1


def _delimiter(fmt: str, sep: str | None) -> str | None:
    """A CSV/TSV file's delimiter (`data.sep`, checked; None = "," or tab); `sep` for other formats."""
    if fmt not in ("csv", "tsv"):
        return sep
    sep = sep or ("\t" if fmt == "tsv" else ",")
    if len(sep) != 1 or sep in ('"', "\n", "\r"):
        raise ConfigError(f"data.sep={sep!r}; expected one delimiter character (not a quote or newline)")
    return sep


def _load_parquet(data: bytes, file: str, needed: Mapping[str, str] | None, limits: Limits) -> pl.DataFrame:
    """`_load` for Parquet: column names and sizes checked against `limits` before the columns are
    read; `_line` is the row number (from 1)."""
    try:
        _check_parquet_names(file, list(pl.read_parquet_schema(io.BytesIO(data))), needed, limits)
        check_parquet_sizes(data, file, needed, limits)
        df = pl.read_parquet(io.BytesIO(data), columns=list(needed) if needed is not None else None)
    except DataError:
        raise
    except Exception as e:  # polars raises several error types for a damaged file
        raise DataError(file, None, None, "a readable Parquet file", v.show(str(e), 200)) from e
    if df.height == 0:
        raise DataError(file, None, None, "at least one data row", "a table with 0 rows")
    df = df.with_columns(pl.int_range(1, df.height + 1, dtype=pl.Int64).alias(v.LINE))
    v.check_cells(df, [file], limits.max_cell_bytes)
    return df


def _check_parquet_names(file: str, names: list[str], needed: Mapping[str, str] | None, limits: Limits) -> None:
    """A Parquet file's column names: within `max_header_bytes` together, and the needed ones there."""
    if sum(len(n.encode()) + 1 for n in names) - 1 > limits.max_header_bytes:
        expected = f"column names of at most {limits.max_header_bytes} bytes together (data.max_header_bytes)"
        raise DataError(file, None, None, expected, f"{len(names)} columns ({_names(names)})")
    _check_columns(file, None, names, needed)


def _load_jsonl(
    data: bytes, file: str, needed: Mapping[str, str] | None, optional: frozenset[str], limits: Limits
) -> pl.DataFrame:
    """`_load` for JSON lines: needed fields read as strings (a field absent from the first record
    and null everywhere is missing unless `optional`); `_line` is each record's line."""
    keys = set(first_keys_of(data))
    try:
        schema = {c: pl.String for c in needed} if needed is not None else None
        df = pl.read_ndjson(data, schema=schema, infer_schema_length=None)
    except Exception as e:  # polars' ComputeError carries no line; find it ourselves
        raise v.bad_json_line(data, file, e) from e
    if needed is not None:  # a field absent from the first record and null everywhere is missing
        gone = [c for c in needed if c not in keys | optional and df[c].null_count() == df.height]
        _check_columns(file, None, [c for c in needed if c not in gone] + sorted(keys - set(needed)), needed)
    lines = v.jsonl_row_lines(data)
    if len(lines) != df.height:  # cannot happen for files polars read; keep going, roughly
        lines = np.arange(1, df.height + 1)
    df = df.with_columns(pl.Series(v.LINE, lines, dtype=pl.Int64))
    v.check_cells(df, [file], limits.max_cell_bytes)
    return df


def _load_csv(data: bytes, file: str, sep: str, needed: Mapping[str, str] | None, limits: Limits) -> pl.DataFrame:
    """`_load` for CSV / TSV: header names checked, every column read as text; `_line` is each
    row's first line, and blank rows are dropped."""
    lines, keep = v.csv_row_lines(data, sep, file)
    _check_header_names(data, sep, file)
    try:
        header = pl.read_csv(data, separator=sep, n_rows=0, infer_schema=False).columns
        _check_columns(file, 1, header, needed)
        wanted = list(needed) if needed is not None else None
        df = pl.read_csv(data, separator=sep, infer_schema=False, columns=wanted)
    except pl.exceptions.PolarsError as e:
        raise DataError(file, None, None, "a well-formed CSV file", v.show(str(e), 200)) from e
    if df.height != len(lines):  # cannot happen for well-formed files; keep going, roughly
        lines, keep = np.arange(2, df.height + 2), np.ones(df.height, dtype=bool)
    df = df.with_columns(pl.Series(v.LINE, lines, dtype=pl.Int64)).filter(pl.Series(keep))
    if df.height == 0:
        raise DataError(file, 1, None, "at least one data row", "only a header")
    v.check_cells(df, [file], limits.max_cell_bytes)
    return df


def _check_header_names(data: bytes, sep: str, file: str) -> None:
    """Refuse a CSV header with a repeated or blank column name (one of them would be read)."""
    names = v.header_names(data, sep)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(file, 1, name, "unique column names in the header", f"{v.show(name)} twice")
        seen.add(name)


def _check_columns(file: str, line: int | None, available: list[str], needed: Mapping[str, str] | None) -> None:
    for src, out in (needed or {}).items():
        if src not in available:
            kind = "header" if line is not None else "records"
            raise DataError(file, line, src, f"this column for `{out}` in the {kind}", f"columns {_names(available)}")


def _names(columns: list[str], budget: int = 90) -> str:
    """A header's column names for an error message: as many as fit in `budget` characters
    (at least one), each shortened, then how many more there are."""
    shown: list[str] = []
    for c in columns:
        name = v.show(c, 24)
        if shown and sum(len(s) + 2 for s in shown) + len(name) > budget:
            break
        shown.append(name)
    more = f", ... ({len(columns) - len(shown)} more)" if len(columns) > len(shown) else ""
    return f"[{', '.join(shown)}{more}]"


def _vector_columns(raw: pl.DataFrame, cols: list[str], file: str) -> tuple[list[str], np.ndarray]:
    """(source column of each dimension, vectors [n, dim]) from float columns or one list column."""
    if not cols:
        raise DataError(file, None, None, "vector columns after the id column", "none")
    if len(cols) == 1 and isinstance(raw.schema[cols[0]], (pl.List, pl.Array)):
        c = cols[0]
        lengths = raw[c].cast(pl.List(pl.Float64)).list.len()
        dim = lengths[0]
        check = (pl.col("_n") != dim, c, f"{dim} values as in the first row")
        v.raise_first(raw.with_columns(lengths.alias("_n")), [check], [file])
        return [c] * (dim or 0), raw[c].cast(pl.Array(pl.Float64, dim or 0)).to_numpy()
    exprs, checks = [], []
    for c in cols:
        dtype = raw.schema[c]
        if dtype == pl.String:
            number = pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)
        elif dtype.is_numeric():
            number = pl.col(c).cast(pl.Float64)
        else:
            raise DataError(file, None, c, "a float column", f"a {dtype} column")
        exprs.append(number.alias(c))
        checks.append((number.is_null(), c, "a number"))
    v.raise_first(raw, checks, [file])
    return cols, raw.select(exprs).to_numpy()
