"""Interaction files read lazily, for `prepare.streaming` (`crossrec prepare`): a LazyFrame of the
table `readers.read_interactions` returns, after the same checks with the same errors (file, line,
column, the same words), in memory bounded by a piece of the file rather than the file.

- Parquet is scanned (`pl.scan_parquet`). Its column names and footer sizes are checked as the
  reader does; its cells, values and one-category rule by streaming aggregates that find the first
  bad row (its `_line`). That row is then read alone and handed to the reader's own check, so the
  error is the reader's word for word. A gzip-compressed Parquet file is first decompressed to a
  temporary file.
- CSV / TSV / JSON lines (gzip or not) go through one conversion pass: the bytes stream through
  the reader's byte scan (`raw_bytes.stream_bytes`), are cut at record ends into pieces of about
  `CHUNK_BYTES`, and each piece is checked and converted by the reader's functions
  (`validate.csv_row_lines`, `check_cells`, `convert`, ...), its lines moved to the file's, then
  written to a temporary Parquet file, a row group a piece, which the result scans.

The reader reports the first problem in an order of kinds: the byte scan over the whole file, then
an empty file, the record structure, the header, the parse, the cells, the values, the categories.
A problem found in a piece is held while the pass goes on, in case a later piece has one of an
earlier kind; the earliest kind, at its first line, is raised at the end.

Temporary files go to `$TMPDIR` and are deleted when the `with` block ends. A CSV record is held
whole, so a quote that is never closed makes the rest of the file one piece.

Example:
    >>> with scan_interactions("big.csv.gz", ColumnMap(rating="stars")) as lf:  # doctest: +SKIP
    ...     bundle = prepare(lf, None, PrepareConfig(streaming=True))
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from crossrec.data import validate as v
from crossrec.data.raw_bytes import check_parquet_sizes, detect_format, first_keys_of, stream_bytes
from crossrec.data.readers import (
    _check_columns,
    _check_header_names,
    _check_parquet_names,
    _delimiter,
    _interaction_fields,
)
from crossrec.data.schema import ColumnMap, DataError, Limits

CHUNK_BYTES = 4 << 20  # text converted at once, about 120k rows (~70 MB at work); the tests lower it
Fields = Mapping[str, tuple[str, str]]

# Kinds of problem, in the order the reader looks for them: a smaller kind wins wherever it is.
QUOTES, STRUCTURE, HEADER, COLUMNS, PARSE, NO_ROWS, CELLS, VALUES = range(8)


@contextlib.contextmanager
def scan_interactions(
    path: str | Path,
    columns: ColumnMap = ColumnMap(),
    fmt: str | None = None,
    sep: str | None = None,
    limits: Limits | None = None,
) -> Iterator[pl.LazyFrame]:
    """`readers.read_interactions`, lazily: the same arguments, table and errors (raised on entry,
    after one pass over the file). The LazyFrame reads temporary files that last as long as the
    `with` block."""
    fields = _interaction_fields(columns)
    file, fmt, limits = str(path), detect_format(path, fmt), limits or Limits()
    sep = _delimiter(fmt, sep)
    with tempfile.TemporaryDirectory(prefix="crossrec-scan-") as tmp:
        if fmt == "parquet":
            lf = _scan_parquet(path, file, fields, limits, Path(tmp))
        else:
            lf = _Text(file, fmt, sep, fields, limits, Path(tmp)).run(stream_bytes(path, fmt, sep, limits))
        if columns.category_value is None:
            _check_one_category(lf, file, columns.category)
        yield lf.drop(v.LINE)


def _needed(fields: Fields) -> dict[str, str]:
    """Source column -> output name, as the reader's `_read_fields` has it."""
    return {src: out for out, (src, kind) in fields.items() if kind != "const"}


def _empty(file: str) -> DataError:
    return DataError(file, None, None, "at least one data row", "an empty file")


def _unreadable(file: str, e: Exception) -> DataError:
    return DataError(file, None, None, "a readable Parquet file", v.show(str(e), 200))


def _scan_parquet(path: str | Path, file: str, fields: Fields, limits: Limits, tmp: Path) -> pl.LazyFrame:
    """The checked, converted rows of a Parquet file, lazily, with `_line` (the row number)."""
    src, needed = _parquet_file(path, file, limits, tmp), _needed(fields)
    try:
        _check_parquet_names(file, list(pl.read_parquet_schema(src)), needed, limits)
        check_parquet_sizes(src, file, needed, limits)
        n_rows = pl.scan_parquet(src).select(pl.len()).collect().item()
    except DataError:
        raise
    except Exception as e:  # polars raises several error types for a damaged file
        raise _unreadable(file, e) from e
    if n_rows == 0:
        raise DataError(file, None, None, "at least one data row", "a table with 0 rows")
    line = pl.col(v.LINE)
    raw = pl.scan_parquet(src).with_row_index(v.LINE, offset=1).select(*needed, line.cast(pl.Int64))
    schema = raw.collect_schema()
    strings = [c for c, t in schema.items() if t == pl.String and c != v.LINE]
    wrong_type = None
    try:
        values, checks = v.convert_exprs(schema, fields, file)
    except DataError as e:  # a column of the wrong type: after the cells, as the reader checks
        values, checks, wrong_type = [], [], e
    firsts = [line.filter(pl.col(c).str.len_bytes() > limits.max_cell_bytes) for c in strings]
    if checks:
        firsts.append(line.filter(pl.any_horizontal([bad for bad, _, _ in checks])))
    firsts = [first.min().alias(str(i)) for i, first in enumerate(firsts)]
    try:
        found = raw.select(firsts).collect(engine="streaming").row(0) if firsts else ()
    except Exception as e:
        raise _unreadable(file, e) from e
    cells = [row for row in found[: len(strings)] if row is not None]
    if cells:
        v.check_cells(_row(raw, min(cells)), [file], limits.max_cell_bytes)
    if wrong_type is not None:
        raise wrong_type
    if checks and found[-1] is not None:
        v.convert(_row(raw, found[-1]), fields, [file])
    return raw.select(*values, v.LINE)


def _row(lf: pl.LazyFrame, line: int) -> pl.DataFrame:
    """The one row of `lf` at this `_line`, for the reader's check to name it."""
    return lf.filter(pl.col(v.LINE) == line).collect(engine="streaming")


def _parquet_file(path: str | Path, file: str, limits: Limits, tmp: Path) -> Path:
    """The Parquet file to scan: `path`, or its gunzipped copy in `tmp`; the reader's checks on
    the bytes (a missing, unreadable or empty file; gzip data under another name)."""
    blocks = stream_bytes(path, "parquet", None, limits)
    head = next(blocks, b"")  # the file checks run here
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        blank = not head.strip() and not any(b.strip() for b in blocks)  # reads on while blank only
        blocks.close()
        if blank:
            raise _empty(file)
        return Path(path)
    copy, blank = tmp / "input.parquet", True
    with open(copy, "wb") as out:
        for block in itertools.chain([head], blocks):
            blank = blank and not block.strip()
            out.write(block)
    if blank:
        raise _empty(file)
    return copy


class _Text:
    """The conversion pass over a CSV / TSV / JSON lines file (see the module docstring)."""

    def __init__(self, file: str, fmt: str, sep: str | None, fields: Fields, limits: Limits, tmp: Path) -> None:
        self.file, self.sep, self.fields, self.limits = file, sep, fields, limits
        self.jsonl = fmt == "jsonl"
        self.needed = _needed(fields)
        self.held: dict[int, DataError] = {}  # kind -> its first problem
        self.header = b""  # CSV/TSV: the header record, put before every later piece
        self.keys: set[str] | None = None  # JSONL: the first record's keys
        self.filled = dict.fromkeys(self.needed, False)  # JSONL: a value seen in the field
        self.pieces = self.rows = 0
        self.blank = True
        self.out = tmp / "rows.parquet"  # the converted rows, a row group per piece
        self.writer: pq.ParquetWriter | None = None

    def run(self, blocks: Iterable[bytes]) -> pl.LazyFrame:
        try:
            for piece, line in _pieces(self._watch(blocks), quoted=not self.jsonl):
                if self.jsonl:
                    self._jsonl(piece, line)
                else:
                    self._csv(piece, line)
                self.pieces += 1
        finally:
            if self.writer is not None:
                self.writer.close()
        return self._finish()

    def _watch(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self.blank = self.blank and not block.strip()
            yield block

    def _hold(self, kind: int, error: DataError) -> None:
        self.held.setdefault(kind, error)

    def _wants(self, kind: int) -> bool:
        """Whether a problem of this kind could still be the one reported."""
        return all(held > kind for held in self.held)

    def _csv(self, piece: bytes, line: int) -> None:
        first, sep = self.pieces == 0, self.sep
        assert sep is not None
        data = piece if first else self.header + piece
        shift = line - 1 - (0 if first else self.header.count(b"\n"))  # data's lines -> the file's
        if first:
            ends, _ = _record_ends(data, 0, 0, quoted=True)
            self.header = data[: int(ends[0]) + 1] if len(ends) else data
        try:
            lines, keep = v.csv_row_lines(data, sep, self.file)
        except DataError as e:
            self._hold(QUOTES if e.expected == "balanced double quotes" else STRUCTURE, _moved(e, shift))
            return
        if first:
            try:
                _check_header_names(data, sep, self.file)
            except DataError as e:
                self._hold(HEADER, e)
                return
            try:
                header = pl.read_csv(data, separator=sep, n_rows=0, infer_schema=False).columns
                _check_columns(self.file, 1, header, self.needed)
            except DataError as e:
                self._hold(COLUMNS, e)
            except pl.exceptions.PolarsError as e:
                self._hold(COLUMNS, DataError(self.file, None, None, "a well-formed CSV file", v.show(str(e), 200)))
        if not self._wants(PARSE):
            return
        try:
            df = pl.read_csv(data, separator=sep, infer_schema=False, columns=list(self.needed))
        except pl.exceptions.PolarsError as e:
            self._hold(PARSE, DataError(self.file, None, None, "a well-formed CSV file", v.show(str(e), 200)))
            return
        if df.height != len(lines):  # as the reader: cannot happen for well-formed files
            lines, keep = np.arange(2, df.height + 2), np.ones(df.height, dtype=bool)
        self._convert(df.with_columns(pl.Series(v.LINE, lines + shift, dtype=pl.Int64)).filter(pl.Series(keep)))

    def _jsonl(self, piece: bytes, line: int) -> None:
        if self.keys is None and piece.strip():
            self.keys = set(first_keys_of(piece))
        if not self._wants(STRUCTURE):
            return
        try:
            df = pl.read_ndjson(piece, schema={c: pl.String for c in self.needed}, infer_schema_length=None)
        except Exception as e:  # polars' ComputeError carries no line; the reader's function finds it
            self._hold(STRUCTURE, _moved(v.bad_json_line(piece, self.file, e), line - 1))
            return
        for c in self.needed:
            self.filled[c] = self.filled[c] or df[c].null_count() < df.height
        lines = v.jsonl_row_lines(piece)
        if len(lines) != df.height:  # as the reader: cannot happen for files polars read
            lines = np.arange(1, df.height + 1)
        self._convert(df.with_columns(pl.Series(v.LINE, lines + (line - 1), dtype=pl.Int64)))

    def _convert(self, df: pl.DataFrame) -> None:
        """A piece's rows (with the file's `_line`): cells checked, values converted, written."""
        self.rows += df.height
        if df.height == 0 or not self._wants(CELLS):
            return
        try:
            v.check_cells(df, [self.file], self.limits.max_cell_bytes)
        except DataError as e:
            self._hold(CELLS, e)
            return
        if not self._wants(VALUES):
            return
        try:
            out = v.convert(df, self.fields, [self.file])
        except DataError as e:
            self._hold(VALUES, e)
            return
        table = out.to_arrow()
        self.writer = self.writer or pq.ParquetWriter(self.out, table.schema, compression="lz4")
        self.writer.write_table(table)

    def _finish(self) -> pl.LazyFrame:
        if self.blank:
            raise _empty(self.file)
        if self.jsonl and self._wants(COLUMNS):  # a field absent from the first record and null everywhere
            keys = self.keys or set()
            there = [c for c in self.needed if c in keys or self.filled[c]]
            try:
                _check_columns(self.file, None, there + sorted(keys - set(self.needed)), self.needed)
            except DataError as e:
                self._hold(COLUMNS, e)
        if not self.jsonl and self.rows == 0 and self._wants(NO_ROWS):
            self._hold(NO_ROWS, DataError(self.file, 1, None, "at least one data row", "only a header"))
        if self.held:
            raise self.held[min(self.held)]
        if self.writer is None:  # no rows and yet no problem: cannot happen
            raise DataError(self.file, None, None, "at least one data row", "none")
        return pl.scan_parquet(self.out)


def _check_one_category(lf: pl.LazyFrame, file: str, column: str | None) -> None:
    """`validate.check_one_category` on a lazy table: the distinct (item, category) pairs with
    their first `_line`, by a streaming pass; the first row that puts an item in a second
    category is handed, with its item's first row, to the reader's check."""
    line = v.LINE
    pairs = lf.group_by("item", "category").agg(pl.col(line).min()).collect(engine="streaming")
    first = pairs.sort(line).unique("item", keep="first", maintain_order=True)
    clash = pairs.join(first, on="item", suffix="_1").filter(pl.col(line) != pl.col(f"{line}_1"))
    if clash.height == 0:
        return
    r = clash.sort(line).row(0, named=True)
    rows = {"item": [r["item"]] * 2, "category": [r["category_1"], r["category"]], line: [r[f"{line}_1"], r[line]]}
    v.check_one_category(pl.DataFrame(rows), [file], column)


def _moved(e: DataError, shift: int) -> DataError:
    """The error with its line moved from a piece's to the file's."""
    if e.line is None or shift == 0:
        return e
    return DataError(e.file, e.line + shift, e.column, e.expected, e.got, e.offset)


def _record_ends(buf: bytes | bytearray, start: int, parity: int, quoted: bool) -> tuple[np.ndarray, int]:
    """The record ends in buf[start:] (newlines; with `quoted`, those outside double quotes, a
    quote toggling quoting wherever it is, as `validate.csv_row_lines` reads), as positions in
    `buf`, and the quotes' parity after them; `parity`: the quotes' parity before `start`."""
    arr = np.frombuffer(buf, dtype=np.uint8)[start:]
    nl = np.flatnonzero(arr == 0x0A)
    if not quoted:
        return nl + start, 0
    quotes = np.flatnonzero(arr == 0x22)
    ends = nl[(np.searchsorted(quotes, nl) + parity) % 2 == 0]
    return ends + start, (parity + len(quotes)) % 2


def _pieces(blocks: Iterable[bytes], quoted: bool) -> Iterator[tuple[bytes, int]]:
    """The text in pieces that end at a record's end, each cut at the last record end once
    `CHUNK_BYTES` are in hand (so about that size), with the physical line it starts on."""
    buf = bytearray()
    scanned, parity, end, line = 0, 0, -1, 1  # bytes of buf looked at, their quotes' parity, last record end
    for block in blocks:
        buf += block
        if len(buf) < CHUNK_BYTES:
            continue
        ends, parity = _record_ends(buf, scanned, parity, quoted)
        scanned, end = len(buf), int(ends[-1]) if len(ends) else end
        if end < 0:  # one record so far: read on
            continue
        with memoryview(buf) as view:
            piece = bytes(view[: end + 1])  # one copy
        del buf[: end + 1]
        scanned, end = scanned - len(piece), -1
        yield piece, line
        line += piece.count(b"\n")
    if buf:
        yield bytes(buf), line


__all__ = ["CHUNK_BYTES", "scan_interactions"]
