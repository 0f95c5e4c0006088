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

# Canonical interaction columns (raw, before id mapping).
USER = "user"
ITEM = "item"
CATEGORY = "category"
RATING = "rating"  # optional, float; null = implicit feedback
TIMESTAMP = "timestamp"  # optional, int64 seconds since the epoch
ORDER = "order"  # optional, int64 position in the user's sequence; stands in for time
SPLIT = "split"  # optional, a dataset's own split: "train" | "valid" | "test"

# Canonical item-table columns.
TITLE = "title"
DESCRIPTION = "description"
IMAGE = "image"

SPLITS = ("train", "valid", "test")

SCHEMA_VERSION = 1


class DataError(ValueError):
    """Bad input data, located precisely.

    Args:
        file: the file the problem is in.
        line: 1-based physical line in that file (the header is line 1), or None when the
            problem is not tied to one line (an empty file, a missing column).
        column: the column (source name, as the user spelt it), or None.
        expected: what was expected there, in words.
        got: what was found (already quoted/shortened by the caller), or None.
    """

    def __init__(
        self,
        file: str | Path,
        line: int | None,
        column: str | None,
        expected: str,
        got: str | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.column = column
        self.expected = expected
        self.got = got
        where = self.file if line is None else f"{self.file}:{line}"
        what = f"expected {expected}" if got is None else f"expected {expected}, got {got}"
        col = "" if column is None else f" column {column!r}:"
        super().__init__(f"{where}:{col} {what}")


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
    category_value: str | None = None  # (str|None) constant category when the file has no column

    def required(self) -> dict[str, str]:
        """Canonical name -> source name for the fields that must be present."""
        out = {USER: self.user, ITEM: self.item}
        if self.category_value is None:
            if self.category is None:
                raise ValueError("ColumnMap needs either `category` or `category_value`")
            out[CATEGORY] = self.category
        return out

    def optional(self) -> dict[str, str]:
        """Canonical name -> source name for the optional fields that are mapped."""
        pairs = {
            RATING: self.rating,
            TIMESTAMP: self.timestamp,
            ORDER: self.order,
            SPLIT: self.split,
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
