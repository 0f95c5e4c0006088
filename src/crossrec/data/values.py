"""Value checks and conversion, shared by the eager readers (data/validate.py, data/readers.py) and
the lazy ones (data/scan.py): each canonical column parsed from its source column with polars
expressions, and the first bad row raised as a `DataError` naming its file, physical line and column.

Tables travel with a `_line` column (the physical line of each row; for binary formats such as
Parquet, the 1-based row number) and, when several files were concatenated, a `_file` column
(an index into the list of file names) so that any row can be traced back to its source.

Example:
    >>> import polars as pl
    >>> df = pl.DataFrame({"uid": ["u1", ""], "_line": [2, 3]})
    >>> convert(df, {"user": ("uid", "id")}, ["x.csv"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    crossrec.data.schema.DataError: x.csv:3: column 'uid': expected a non-blank user id, got ''
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from crossrec.data.schema import ALL_CATEGORIES, CATEGORY_RULE, MAX_CATEGORY_CHARS, SPLITS, DataError

LINE = "_line"  # physical line (or row number) of each row, carried until the checks are done
FILE = "_file"  # index into the list of source files, when tables were concatenated
KINDS = ("id", "rating", "timestamp", "timestamp_ms", "order", "split", "text", "const")
CONTROL_CHARS = r"[\x00-\x1f\x7f]"  # refused inside ids
TIME_MIN, TIME_MAX = 0, 4_133_980_800  # plausible unix seconds: 1970-01-01 up to (not incl.) 2101-01-01
_ISO_FORMATS = (  # tried in turn after "T" replaced the date/time space; %.f makes fractions optional
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M%#z",
)


def show(value: object, width: int = 60) -> str:
    """A found value, quoted and shortened for an error message."""
    if value is None:
        return "an empty cell"
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "...'"


def error_at(
    df: pl.DataFrame, row: int, files: Sequence[str], column: str | None, expected: str, got: str | None
) -> DataError:
    """A DataError for row `row` of a table carrying `_line` (and maybe `_file`)."""
    line = int(df[LINE][row]) if LINE in df.columns else row + 1
    file = files[int(df[FILE][row])] if FILE in df.columns else files[0]
    return DataError(file, line, column, expected, got)


def convert(df: pl.DataFrame, fields: Mapping[str, tuple[str, str]], files: Sequence[str]) -> pl.DataFrame:
    """Check and convert source columns to canonical ones.

    Args:
        df: source columns (any dtype; text formats give strings) plus `_line` (and `_file`).
        fields: output name -> (source column, kind). Kinds: "id" (non-blank string), "rating"
            (finite float; blank = null), "timestamp" (int seconds or ISO-8601 -> int64 seconds,
            the years 1970..2100, 2100-12-31 included), "timestamp_ms" (the same from int milliseconds),
            "order" (int64), "split" (train/valid/test), "text" (string, nulls allowed; lists
            joined with spaces), "const" (the source entry is the constant string value itself).
        files: the file names `_file` indexes (one name when there is no `_file`).

    Returns:
        The output columns in `fields` order, then `_line` / `_file` where present.

    Raises:
        DataError: at the first bad row over all checks (ties: the earlier field).
    """
    values, checks = convert_exprs(df.schema, fields, files[0])
    raise_first(df, checks, files)
    return df.select(*values, *[c for c in (LINE, FILE) if c in df.columns])


def convert_exprs(
    schema: Mapping[str, pl.DataType], fields: Mapping[str, tuple[str, str]], file: str
) -> tuple[list[pl.Expr], list[tuple[pl.Expr, str, str]]]:
    """`convert`'s expressions for a table of this schema (also lazy: data/scan.py): the output
    columns, and the (bad-row mask, source column, expected) checks; raises for a column type."""
    values, checks = [], []
    for out, (src, kind) in fields.items():
        if kind == "const":
            values.append(pl.lit(src, pl.String).alias(out))
            continue
        value, bad, expected = _parse(kind, out, src, schema[src], file)
        values.append(value.alias(out))
        if bad is not None:
            checks.append((bad, src, expected))
    return values, checks


def raise_first(df: pl.DataFrame, checks: Sequence[tuple[pl.Expr, str, str]], files: Sequence[str]) -> None:
    """Raise at the earliest row flagged by any (bad-row mask, source column, expected) check."""
    if not checks or df.height == 0:
        return
    firsts = df.select([bad.arg_true().first().alias(str(i)) for i, (bad, _, _) in enumerate(checks)]).row(0)
    hits = [(row, i) for i, row in enumerate(firsts) if row is not None]
    if hits:
        row, i = min(hits)
        _, src, expected = checks[i]
        raise error_at(df, row, files, src, expected, show(df[src][row]))


def check_one_category(df: pl.DataFrame, files: Sequence[str], column: str | None) -> None:
    """Raise at the first row that puts an item in a different category than an earlier row.

    Args:
        df: canonical `item` and `category` columns plus `_line` (and `_file`).
        files: the file names `_file` indexes.
        column: the source name of the category column, for the error (None if it has none).
    """
    row = df.select((pl.col("category") != pl.col("category").first().over("item")).arg_true().first()).item()
    if row is None:
        return
    item, category = df["item"][row], df["category"][row]
    first = int(df.select((pl.col("item") == item).arg_true().first()).item())
    where = error_at(df, first, files, None, "", None)
    raise error_at(
        df,
        row,
        files,
        column,
        f"item {item!r} in one category ({df['category'][first]!r}, as at {where.file}:{where.line})",
        repr(category),
    )


def _parse(kind: str, out: str, src: str, dtype: pl.DataType, file: str) -> tuple[pl.Expr, pl.Expr | None, str]:
    """(converted value, bad-row mask or None, what was expected) for one source column."""
    col = pl.col(src)
    text = dtype == pl.String
    if dtype == pl.Null:  # a JSON field that is null everywhere
        col, text = col.cast(pl.String), True
    if kind == "id":
        if not (text or dtype.is_integer() or dtype in (pl.Categorical, pl.Enum)):
            raise DataError(file, None, src, "string or integer ids", f"a {dtype} column")
        # Ids are stripped of leading/trailing whitespace (" u1" is "u1"); blank ids and ids with
        # control characters (NUL, tab, newline, ...) left inside are refused.
        value = col.cast(pl.String).str.strip_chars()
        bad = value.is_null() | (value == "") | value.str.contains(CONTROL_CHARS)
        if out == "category":  # names are data, never paths; ALL names the all-categories rows
            bad = bad | (value.str.len_chars() > MAX_CATEGORY_CHARS) | (value == ALL_CATEGORIES)
            return value, bad, CATEGORY_RULE
        return value, bad, f"a non-blank {out} id without control characters"
    if kind == "text":
        if isinstance(dtype, (pl.List, pl.Array)):
            return col.cast(pl.List(pl.String)).list.join(" "), None, ""
        return col.cast(pl.String), None, ""
    if kind == "split":
        value = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        return value, ~value.is_in(SPLITS).fill_null(False), f"one of {'/'.join(SPLITS)}"
    if kind == "rating":
        expected = "a finite number or a blank cell"
        if text:
            stripped = col.str.strip_chars()
            blank = stripped.is_null() | (stripped == "")
            number = stripped.cast(pl.Float64, strict=False)
            value = pl.when(blank).then(None).otherwise(number)
            return value, ~blank & (number.is_null() | ~number.is_finite()), expected
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            raise DataError(file, None, src, "a numeric rating column", f"a {dtype} column")
        number = col.cast(pl.Float64)
        return number, number.is_not_null() & ~number.is_finite(), expected
    if kind == "order":
        return _integer(col, text, dtype, src, file, "an integer")
    if kind in ("timestamp", "timestamp_ms"):
        unit = "milliseconds" if kind == "timestamp_ms" else "seconds"
        expected = f"integer unix {unit} or an ISO-8601 date/datetime"
        if text:
            stripped = col.str.strip_chars()
            ints = stripped.cast(pl.Int64, strict=False)
            value = pl.coalesce(ints // 1000 if kind == "timestamp_ms" else ints, _iso_seconds(stripped))
            bad = value.is_null()
        elif isinstance(dtype, pl.Datetime):
            value = col.dt.epoch("s")
            bad = value.is_null()
        elif dtype == pl.Date:
            value = col.cast(pl.Datetime("us")).dt.epoch("s")
            bad = value.is_null()
        else:
            value, bad, _ = _integer(col, text, dtype, src, file, expected)
            value = value // 1000 if kind == "timestamp_ms" else value
        # The years 1970 to 2100 (2100-12-31 included): anything else is almost certainly a unit
        # mistake (milliseconds as seconds).
        implausible = ((value < TIME_MIN) | (value >= TIME_MAX)).fill_null(False)
        return value, bad | implausible, f"{expected} between 1970 and 2100 (in {unit})"
    raise ValueError(f"unknown field kind {kind!r}; expected one of {KINDS}")


def _integer(
    col: pl.Expr, text: bool, dtype: pl.DataType, src: str, file: str, expected: str
) -> tuple[pl.Expr, pl.Expr, str]:
    """Int64 from strings, integers, or floats that hold whole numbers."""
    if text:
        value = col.str.strip_chars().cast(pl.Int64, strict=False)
        return value, value.is_null(), expected
    if dtype.is_integer():
        value = col.cast(pl.Int64, strict=False)  # a UInt64 beyond Int64 becomes null: reported
        return value, value.is_null(), expected
    if dtype.is_float():
        value = col.cast(pl.Int64, strict=False)
        return value, (value.is_null() | (value.cast(pl.Float64) != col)).fill_null(True), expected
    raise DataError(file, None, src, expected, f"a {dtype} column")


def _iso_seconds(s: pl.Expr) -> pl.Expr:
    """Unix seconds from ISO-8601 dates or datetimes (naive ones are taken as UTC); null otherwise."""
    t = s.str.replace(r"^(\d{4}-\d{2}-\d{2}) (\d)", "${1}T${2}")
    date = t.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.epoch("s")
    times = [t.str.to_datetime(f, strict=False, time_unit="us").dt.epoch("s") for f in _ISO_FORMATS]
    return pl.coalesce(date, *times)
