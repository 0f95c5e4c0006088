"""Vectorised checks that locate bad input at its physical line and source column.

The readers in `crossrec.data.readers` load a file, then hand it here. Nothing below loops in
Python over data rows: structure is found with numpy over the raw bytes (positions of newlines,
quotes and delimiters), and values are checked with polars expressions. Every problem raises
`DataError` naming the file, the 1-based physical line, the column as the user spelt it, what was
expected and what was found.

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

import codecs
import csv
import io
import json
from collections.abc import Sequence

import numpy as np
import polars as pl

from crossrec.data.schema import DataError
from crossrec.data.values import (  # noqa: F401  (callers read them as validate.X)
    CONTROL_CHARS,
    FILE,
    KINDS,
    LINE,
    TIME_MAX,
    TIME_MIN,
    check_one_category,
    convert,
    convert_exprs,
    error_at,
    raise_first,
    show,
)

_CHUNK = 1 << 22  # bytes per step of the byte scan, the incremental UTF-8 decoder and the CSV structure pass
_NL, _QUOTE = 0x0A, 0x22


def check_utf8(data: bytes, file: str, sep: str | None = None) -> None:
    """Raise at the first byte that is not UTF-8.

    Decodes with an incremental decoder over chunks, so the file is never held twice (decoded
    text is dropped chunk by chunk).

    Args:
        data: the raw (decompressed) file contents.
        file: name for the error.
        sep: the delimiter of a CSV/TSV file, to name the column of the bad byte from the header;
            None for formats without columns per line (JSONL).

    Raises:
        DataError: with the physical line and, for CSV/TSV, the header name of the field that
            holds the bad byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        pending = len(decoder.getstate()[0])  # bytes of a split character kept from the last chunk
        try:
            decoder.decode(view[start : start + _CHUNK], final=start + _CHUNK >= len(view))
        except UnicodeDecodeError as e:
            pos = start - pending + e.start
            break
    else:
        return
    line_start = data.rfind(b"\n", 0, pos) + 1
    line = data.count(b"\n", 0, pos) + 1
    column = None
    if sep is not None and line > 1:
        # Field index = delimiters before the bad byte on its line, outside double quotes.
        index = sum(part.count(sep.encode()) for part in data[line_start:pos].split(b'"')[::2])
        names = header_names(data, sep)
        column = names[index] if index < len(names) else None
    got = f"the byte 0x{data[pos]:02x}, which is not UTF-8 (re-save the file as UTF-8)"
    raise DataError(file, line, column, "UTF-8 text", got)


def header_names(data: bytes, sep: str) -> list[str]:
    """The column names of a CSV/TSV header line (undecodable bytes replaced), as best it parses."""
    end = data.find(b"\n")
    text = data[: end if end >= 0 else len(data)].decode("utf-8-sig", "replace").rstrip("\r")
    try:
        return next(csv.reader([text], delimiter=sep), [])
    except csv.Error:  # e.g. a bare carriage return inside the header
        return text.split(sep)


_MAGIC = (  # binary formats found under a text file's name: (signature, what it is)
    (b"\x1f\x8b", "gzip-compressed data (a gzip file must be named .gz)"),
    (b"PAR1", "a Parquet file (name it .parquet or set data.format=parquet)"),
    (b"PK\x03\x04", "a zip archive (unzip it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\xff\xfe", "UTF-16 text (re-save the file as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (re-save the file as UTF-8)"),
)


class TextScan:
    """Streaming checks on a text file's (decompressed) bytes, fed block by block before parsing.

    Finds, in file order, the first of: a binary signature at the start (gzip, Parquet, zip, xz,
    zstd, bzip2, UTF-16), a NUL byte, a byte that is not UTF-8, a line longer than `max_line`
    bytes, or (CSV/TSV) a header line longer than `max_header` bytes, and raises `DataError` with
    `file:line:offset` (offset = 1-based byte position in the line) and, for a bad byte in a
    CSV/TSV data line, the header name of its field. Between blocks it keeps only the current
    line's bytes, which the line bound caps, so memory stays bounded whatever the input.

    Args:
        file: name for errors.
        kind: "CSV", "TSV" or "JSON lines", for messages.
        sep: the CSV/TSV delimiter (line 1 is then a header); None for JSONL.
        max_line: the longest line allowed, bytes.
        max_header: the longest CSV/TSV header line allowed, bytes.
    """

    def __init__(self, file: str, kind: str, sep: str | None, max_line: int, max_header: int) -> None:
        self.file, self.kind, self.sep = file, kind, sep
        self.max_line, self.max_header = max_line, max_header
        self.line = 1  # physical line at the start of the next block
        self.tail = b""  # the current (unfinished) line's bytes so far: at most max_line
        self.header: bytes | None = None  # the CSV/TSV header line, once complete
        self.total = 0  # bytes fed so far
        self._head = b""  # the first 16 bytes, for the binary signatures
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, block: bytes) -> None:
        """Check the next block of bytes; raise `DataError` at the first problem in it."""
        if not block:
            return
        if self.total < 16:
            self._head = (self._head + block)[:16]
            self._check_magic()
        hits = []  # (position in the block, kind of problem); negative = in the kept tail
        nul = block.find(b"\x00")
        if nul >= 0:
            hits.append((nul, "nul"))
        bad = self._utf8(block, final=False)
        if bad is not None:
            hits.append((bad, "utf8"))
        nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NL)
        starts = np.concatenate(([-len(self.tail)], nl + 1))  # line starts, block coordinates
        limits = np.full(len(starts), self.max_line, dtype=np.int64)
        if self.line == 1 and self.sep is not None:
            limits[0] = self.max_header
        over = np.flatnonzero(np.append(nl, len(block)) - starts > limits)
        if len(over):
            hits.append((int(starts[over[0]] + limits[over[0]]), "long"))
        if hits:
            self._raise(block, nl, starts, *min(hits))
        if len(nl):
            if self.line == 1:
                self.header = self.tail + block[: nl[0]]
            self.tail = block[nl[-1] + 1 :]
        else:
            self.tail += block
        self.line += len(nl)
        self.total += len(block)

    def finish(self) -> None:
        """Check the end of the file (a multi-byte character cut off; a short binary signature)."""
        self._check_magic()
        bad = self._utf8(b"", final=True)
        if bad is not None:
            self._raise(b"", np.zeros(0, dtype=np.int64), np.array([-len(self.tail)]), bad, "utf8")
        if self.line == 1:
            self.header = self.tail

    def _check_magic(self) -> None:
        head = self._head
        found = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
        if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
            found = "bzip2-compressed data (decompress it first)"
        if found is not None:
            raise DataError(self.file, 1, None, f"{self.kind} text", found, 1)

    def _utf8(self, block: bytes, final: bool) -> int | None:
        """Position in `block` of the first byte that is not UTF-8 (negative: in the kept tail)."""
        pending = len(self._decoder.getstate()[0])  # bytes of a split character from the last block
        if not pending and not final and block.isascii():
            return None
        try:
            self._decoder.decode(block, final=final)
        except UnicodeDecodeError as e:
            return e.start - pending
        return None

    def _raise(self, block: bytes, nl: np.ndarray, starts: np.ndarray, pos: int, what: str) -> None:
        k = int(np.searchsorted(nl, pos))  # newlines in the block before pos
        line, start = self.line + k, int(starts[k])
        offset = pos - start + 1
        if what == "long":
            if line == 1 and self.sep is not None:
                expected = f"a header line of at most {self.max_header} bytes (data.max_header_bytes)"
                raise DataError(self.file, 1, None, expected, "a longer one", offset)
            expected = f"lines of at most {self.max_line} bytes (data.max_line_bytes)"
            raise DataError(self.file, line, None, expected, "a longer line (binary data?)", offset)
        prefix = (self.tail + block[: max(pos, 0)])[: len(self.tail) + pos] if k == 0 else block[start:pos]
        column = None
        if self.sep is not None and line > 1:
            header = self.header if self.header is not None else self.tail + block[: int(nl[0])]
            # Field index = delimiters before the bad byte on its line, outside double quotes.
            index = sum(part.count(self.sep.encode()) for part in prefix.split(b'"')[::2])
            names = header_names(header, self.sep)
            column = names[index] if index < len(names) else None
        if what == "nul":
            expected = f"{self.kind} text without control characters such as NUL (is it a binary file?)"
            raise DataError(self.file, line, column, expected, "a NUL byte", offset)
        byte = block[pos] if pos >= 0 else self.tail[pos]
        got = f"the byte 0x{byte:02x}, which is not UTF-8 (re-save the file as UTF-8)"
        raise DataError(self.file, line, column, "UTF-8 text", got, offset)


def check_cells(df: pl.DataFrame, files: Sequence[str], max_bytes: int) -> None:
    """Raise at the first string value longer than `max_bytes` bytes (`data.max_cell_bytes`)."""
    cols = [c for c, t in df.schema.items() if t == pl.String and c not in (LINE, FILE)]
    if not cols or df.height == 0:
        return
    lengths = [pl.col(c).str.len_bytes() for c in cols]
    firsts = df.select([(n > max_bytes).arg_true().first().alias(str(i)) for i, n in enumerate(lengths)]).row(0)
    hits = [(row, i) for i, row in enumerate(firsts) if row is not None]
    if hits:
        row, i = min(hits)
        value = df[cols[i]][row]
        got = f"{len(value.encode())} bytes ({show(value, 30)})"
        raise error_at(df, row, files, cols[i], f"a value of at most {max_bytes} bytes (data.max_cell_bytes)", got)


def csv_row_lines(data: bytes, sep: str, file: str) -> tuple[np.ndarray, np.ndarray]:
    """Check the field count of every record; return each data row's physical line.

    Records end at newlines outside double quotes (a quote toggles the quoted state, as `""`
    escapes cancel out), so quoted fields that span lines are handled and the line given is the
    one where the record starts. Blank lines are skipped (polars reads them as all-null rows).

    Args:
        data: the UTF-8 file contents, header first.
        sep: the one-character delimiter.
        file: name for the error.

    Returns:
        (lines, keep): for every record after the header, in file order (the rows polars
        reads), its physical line [n_rows] and whether it is a real row rather than a blank line.

    Raises:
        DataError: at the first record whose number of fields differs from the header's, or at
            an unclosed quote.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines_all, record_ends, seps = _csv_scan(arr, ord(sep), file)
    starts = np.concatenate(([0], record_ends + 1))
    if len(arr) and arr[-1] != _NL:
        record_ends = np.append(record_ends, len(arr))  # last record without a trailing newline
    starts = starts[: len(record_ends)]
    n_fields = np.ones(len(record_ends), dtype=np.int64)  # [n_records]
    for first, counts in seps:
        n_fields[first : first + len(counts)] += counts
    length = record_ends - starts
    first_byte = arr[np.minimum(starts, max(len(arr) - 1, 0))]
    blank = (length == 0) | ((length == 1) & (first_byte == 0x0D))  # "" or a lone "\r"
    lines = np.searchsorted(newlines_all, starts) + 1  # newlines before the start, 1-based
    expected = n_fields[0]
    bad = np.flatnonzero(~blank & (n_fields != expected))
    if len(bad):
        k = int(bad[0])
        raise DataError(file, int(lines[k]), None, f"{expected} fields as in the header", f"{n_fields[k]} fields")
    return lines[1:], ~blank[1:]


def _csv_scan(arr: np.ndarray, sep_byte: int, file: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]]]:
    """One chunked pass over a CSV file's bytes for `csv_row_lines`.

    Returns:
        (newlines, record_ends, seps): the offset of every newline; of every newline outside
        double quotes (a record's end); and per chunk, (first record with a delimiter, delimiters
        outside quotes per record from there).

    Raises:
        DataError: at a quote that is never closed.
    """
    newlines, ends, seps = [], [], []  # per chunk: all newlines, record ends, (first record, fields)
    parity, last_quote, n_ends = 0, -1, 0  # quotes seen so far (mod 2): 1 = inside a quoted field
    for lo in range(0, len(arr), _CHUNK):  # chunked so temporaries stay small on big files
        part = arr[lo : lo + _CHUNK]
        nl = np.flatnonzero(part == _NL) + lo
        quotes = np.flatnonzero(part == _QUOTE) + lo
        sp = np.flatnonzero(part == sep_byte) + lo
        if len(quotes):
            nl_out = nl[(np.searchsorted(quotes, nl) + parity) % 2 == 0]
            sp = sp[(np.searchsorted(quotes, sp) + parity) % 2 == 0]
            parity, last_quote = (parity + len(quotes)) % 2, int(quotes[-1])
        else:
            nl_out, sp = (nl, sp) if parity == 0 else (nl[:0], sp[:0])
        record = n_ends + np.searchsorted(nl_out, sp)  # record of each delimiter  [n_sep]
        if len(record):
            seps.append((int(record[0]), np.bincount(record - record[0])))
        newlines.append(nl)
        ends.append(nl_out)
        n_ends += len(nl_out)
    newlines_all = np.concatenate(newlines) if newlines else np.zeros(0, dtype=np.int64)
    if parity:  # pairing quotes in order, the last one opened a field that never closes
        line = int(np.searchsorted(newlines_all, last_quote)) + 1
        raise DataError(file, line, None, "balanced double quotes", "a quote that is never closed")
    record_ends = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    return newlines_all, record_ends, seps


def jsonl_row_lines(data: bytes) -> np.ndarray:
    """Physical line of each JSON record: every line that is not blank (polars skips blank ones)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == _NL)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.append(newlines, len(arr))
    first = arr[np.minimum(starts, max(len(arr) - 1, 0))]
    # A record starts with "{"; only lines that are empty or start with whitespace can be blank,
    # and those few are checked one by one.
    maybe_blank = np.flatnonzero((ends == starts) | np.isin(first, (0x20, 0x09, 0x0D)))
    blank = np.zeros(len(starts), dtype=bool)
    blank[maybe_blank] = [not data[starts[i] : ends[i]].strip() for i in maybe_blank]
    return np.flatnonzero(~blank) + 1


def bad_json_line(data: bytes, file: str, cause: Exception) -> DataError:
    """The error for a JSONL file polars could not read, located at its first bad line.

    Only runs after polars has failed, so its line-by-line loop costs nothing on good files.
    """
    for number, raw in enumerate(io.BytesIO(data), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.rstrip(b"\r\n").decode("utf-8", "replace"))  # bytes could pass as UTF-16
        except json.JSONDecodeError as e:
            return DataError(file, number, None, "one JSON object per line", f"{e.msg} at character {e.colno}")
        except (ValueError, RecursionError) as e:
            return DataError(file, number, None, "one JSON object per line", show(str(e), 120))
        if not isinstance(record, dict):
            return DataError(file, number, None, "a JSON object", f"a JSON {type(record).__name__}")
    return DataError(file, None, None, "JSON lines polars can read", show(str(cause), 200))
