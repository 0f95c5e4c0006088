"""Canonical column names, dtypes and the one error type for bad input.

Every reader turns its source into the canonical interaction table below; everything downstream
(prepare, the Bundle, models, evaluation) only ever sees these names.

Example:
    >>> from crossrec.data.schema import DataError
    >>> str(DataError("x.csv", 3, "rating", "a number", "'abc'"))
    "x.csv:3: column 'rating': expected a number, got 'abc'"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crossrec.errors import ConfigError, InputDataError

# Canonical interaction columns (raw, before id mapping).
USER = "user"
ITEM = "item"
CATEGORY = "category"
RATING = "rating"  # optional, float; null = implicit feedback
TIMESTAMP = "timestamp"  # optional, int64 seconds since the epoch
ORDER = "order"  # optional, int64 position in the user's sequence; stands in for time
SPLIT = "split"  # optional, a dataset's own split: "train" | "valid" | "test"
TEXT = "text"  # optional, the review text of an interaction (prepare.item_reviews reads it)

# Canonical item-table columns.
TITLE = "title"
DESCRIPTION = "description"
IMAGE = "image"

SPLITS = ("train", "valid", "test")

# Category names are data, never paths (outputs use `io.name_slug`); a name is any non-blank
# string of at most MAX_CATEGORY_CHARS characters without control characters, except ALL_CATEGORIES,
# the name of the evaluator's all-categories rows.
ALL_CATEGORIES = "ALL"
MAX_CATEGORY_CHARS = 200
CATEGORY_RULE = (
    f"a non-blank category name of at most {MAX_CATEGORY_CHARS} characters, without control "
    f"characters, other than {ALL_CATEGORIES!r} (the all-categories rows' name)"
)


def category_name_problem(name: object) -> str | None:
    """Why `name` cannot be a category name (see CATEGORY_RULE), or None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "a blank name"
    if len(name) > MAX_CATEGORY_CHARS:
        return f"a name of {len(name)} characters"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        return "a name with a control character"
    if name == ALL_CATEGORIES:
        return f"{ALL_CATEGORIES!r}, the name of the all-categories rows"
    return None


SCHEMA_VERSION = 1


class DataError(InputDataError):
    """Bad input data, located precisely.

    Args:
        file: the file the problem is in.
        line: 1-based physical line in that file (the header is line 1), or None when the
            problem is not tied to one line (an empty file, a missing column).
        column: the column (source name, as the user spelt it), or None.
        expected: what was expected there, in words.
        got: what was found (already quoted/shortened by the caller), or None.
        offset: 1-based byte position in the line (`file:line:offset:`), where the reader knows
            it (problems the byte scan finds: NUL bytes, bad UTF-8, over-long lines), else None.

    The message is one line of at most `MAX_MESSAGE_CHARS` characters: a long file name keeps its
    end, the column name and what was found are shortened, control characters are escaped.
    """

    def __init__(
        self,
        file: str | Path,
        line: int | None,
        column: str | None,
        expected: str,
        got: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.column = column
        self.expected = expected
        self.got = got
        self.offset = offset
        name = _one_line(self.file)
        name = name if len(name) <= 80 else "..." + name[-77:]
        where = name if line is None else f"{name}:{line}" if offset is None else f"{name}:{line}:{offset}"
        col = ""
        if column is not None:
            shown = repr(column)
            col = f" column {shown if len(shown) <= 60 else shown[:56] + '...' + shown[-1]}:"
        head = f"{where}:{col} expected "
        expected, got = _one_line(expected), None if got is None else _one_line(got)
        room = MAX_MESSAGE_CHARS - len(head)
        if got is not None:  # shorten what was found first (to 40 characters at least), then the expectation
            got = _cut(got, max(40, room - len(expected) - len(", got ")))
            expected = _cut(expected, room - len(got) - len(", got "))
        else:
            expected = _cut(expected, room)
        super().__init__(head + expected + ("" if got is None else f", got {got}"))


MAX_MESSAGE_CHARS = 290  # a DataError's message; `error: ` and it fit the CLI's 300-character line


def _one_line(text: str) -> str:
    """`text` with control characters (newlines, NUL, ...) escaped, so a message stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _cut(text: str, width: int) -> str:
    width = max(width, 10)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class Limits:
    """Bounds on input that the readers check while streaming a file, before parsing it.

    Text files (CSV/TSV/JSONL, gzip-compressed or not) are scanned block by block, decompressing
    as they go, so a file that breaks a bound is refused after reading at most about one line past
    it, in bounded memory: binary data (NUL bytes, bytes that are not UTF-8, a gzip, Parquet, zip,
    bzip2, xz or zstd file under a text name), a line longer than `max_line_bytes`, or a CSV/TSV
    header longer than `max_header_bytes` (Parquet: its column names together). Cells (CSV fields,
    JSON string values, Parquet strings) longer than `max_cell_bytes` are refused with their line
    and column after parsing. Byte counts are of the (decompressed) UTF-8 text.
    """

    max_line_bytes: int = 1 << 20  # (int) longest physical line, bytes (1 MiB)
    max_header_bytes: int = 64 << 10  # (int) longest CSV/TSV header line, bytes (64 KiB)
    max_cell_bytes: int = 64 << 10  # (int) longest single value, bytes (64 KiB)

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_header_bytes", "max_cell_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name}={value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class ColumnMap:
    """Which source column holds each canonical field.

    Names not present in the source are left as None (optional fields) and the reader then does
    without them. `user`, `item` and `category` are required unless `category_value` gives one
    constant category for the whole file.
    """

    user: str = "user_id"  # (str) source column with the user id
    item: str = "item_id"  # (str) source column with the item id
    category: str | None = "category"  # (str|None) source column with the item's category
    rating: str | None = None  # (str|None) explicit rating column; blank cells = implicit
    timestamp: str | None = None  # (str|None) unix seconds, or ISO-8601 date/datetime strings
    order: str | None = None  # (str|None) integer position in the user's sequence
    split: str | None = None  # (str|None) the dataset's own split: train/valid/test
    text: str | None = (
        None  # (str|None) review text column of an interaction (read only when prepare.item_reviews > 0 uses it)
    )
    category_value: str | None = None  # (str|None) constant category when the file has no column

    def required(self) -> dict[str, str]:
        """Canonical name -> source name for the fields that must be present."""
        out = {USER: self.user, ITEM: self.item}
        if self.category_value is None:
            if self.category is None:
                raise ConfigError("ColumnMap needs either `category` or `category_value`")
            out[CATEGORY] = self.category
        return out

    def optional(self) -> dict[str, str]:
        """Canonical name -> source name for the optional fields that are mapped."""
        pairs = {
            RATING: self.rating,
            TIMESTAMP: self.timestamp,
            ORDER: self.order,
            SPLIT: self.split,
            TEXT: self.text,
        }
        return {k: v for k, v in pairs.items() if v is not None}


@dataclass(frozen=True)
class ItemColumnMap:
    """Which source column of an item table holds each canonical item field."""

    item: str = "item_id"  # (str) item id, matching the interaction file's item column
    category: str | None = "category"  # (str|None) the item's category
    title: str | None = "title"  # (str|None) item title
    description: str | None = None  # (str|None) longer text: description, attributes, reviews
    image: str | None = None  # (str|None) path of the item's image file (read by encoder.image_model)
