"""A data file's bytes, in bounded memory, before any parser sees them (data/readers.py): the format
from the name (`detect_format`), the bytes gunzipped and streamed through `validate.TextScan`
(`read_bytes`: binary data, over-long lines and gzip bombs are refused while reading; `stream_bytes`:
the same, handed out block by block for data/scan.py), a Parquet footer's sizes checked against
`Limits` (`check_parquet_sizes`), and the first JSON record's keys for error messages
(`first_keys_of`)."""

from __future__ import annotations

import io
import json
import typing
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path

from crossrec.data import validate as v
from crossrec.data.schema import DataError, Limits
from crossrec.errors import ConfigError, MissingInputError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


def detect_format(path: str | Path, fmt: str | None) -> str:
    if fmt is not None:
        fmt = {"json": "jsonl", "ndjson": "jsonl"}.get(fmt, fmt)
        if fmt not in set(FORMATS.values()):
            raise ConfigError(f"data.format={fmt!r}; expected one of {sorted(set(FORMATS.values()))}")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if not suffixes or suffixes[-1] not in FORMATS:
        known = sorted(set(FORMATS.values()))
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its extension; set data.format (fmt= in Python) "
            f"to one of {known}"
        )
    return FORMATS[suffixes[-1]]


TEXT_KINDS = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON lines"}
_READ = 1 << 20  # compressed bytes read per step of the gzip stream


def read_bytes(path: str | Path, fmt: str, sep: str | None, limits: Limits) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic number (the name must
    then end in .gz). Text formats are streamed through `validate.TextScan` first (while
    decompressing, for gzip), so binary data and over-long lines are refused in bounded memory
    before the whole file is held."""
    file, name = Path(path), str(path)
    scan = _open_checks(file, name, fmt, sep, limits)
    try:
        with open(file, "rb") as f:
            if not _gzipped(f, name, fmt):
                if scan is not None:
                    for block in iter(lambda: f.read(v._CHUNK), b""):
                        scan.feed(block)
                    scan.finish()
                    f.seek(0)
                return f.read()
            return b"".join(_gunzip(f, name, scan))
    except PermissionError:
        raise DataError(name, None, None, "a readable file", "permission denied") from None
    except OSError as e:
        raise DataError(name, None, None, "a readable file", e.strerror or str(e)) from None


def stream_bytes(path: str | Path, fmt: str, sep: str | None, limits: Limits) -> Generator[bytes, None, None]:
    """`read_bytes` block by block (about `validate._CHUNK` bytes each): the same checks and
    errors, each block scanned before it is handed out, so memory stays bounded by a block."""
    file, name = Path(path), str(path)
    scan = _open_checks(file, name, fmt, sep, limits)
    try:
        with open(file, "rb") as f:
            if _gzipped(f, name, fmt):
                yield from _gunzip(f, name, scan)
                return
            for block in iter(lambda: f.read(v._CHUNK), b""):
                if scan is not None:
                    scan.feed(block)
                yield block
            if scan is not None:
                scan.finish()
    except PermissionError:
        raise DataError(name, None, None, "a readable file", "permission denied") from None
    except OSError as e:
        raise DataError(name, None, None, "a readable file", e.strerror or str(e)) from None


def _open_checks(file: Path, name: str, fmt: str, sep: str | None, limits: Limits) -> v.TextScan | None:
    """Refuse a directory or a missing file; the byte scan a text format goes through (else None)."""
    if file.is_dir():
        raise DataError(name, None, None, "a data file", "a directory")
    if not file.exists():
        raise MissingInputError(f"no such file: {name!r}")
    if fmt not in TEXT_KINDS:
        return None
    return v.TextScan(
        name, TEXT_KINDS[fmt], sep if fmt != "jsonl" else None, limits.max_line_bytes, limits.max_header_bytes
    )


def _gzipped(f: typing.BinaryIO, name: str, fmt: str) -> bool:
    """Whether the open file starts with the gzip magic number (refused unless named .gz); the
    file is left at its start."""
    gz = f.read(2) == b"\x1f\x8b"
    f.seek(0)
    if gz and not name.lower().endswith(".gz"):
        got = "gzip-compressed data (name the file .gz to have it decompressed)"
        raise DataError(name, 1, None, f"{TEXT_KINDS.get(fmt, 'Parquet')} data as the name says", got, 1)
    return gz


def _gunzip(f: typing.BinaryIO, name: str, scan: v.TextScan | None) -> Iterator[bytes]:
    """A gzip stream (maybe several members) decompressed block by block, each block scanned
    as it comes and then handed out, so a gzip bomb is refused at its first over-long line."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    buf, inside = f.read(_READ), False  # inside: a member has started and not ended
    try:
        while buf:
            inside = True
            part = d.decompress(buf, v._CHUNK)  # at most one block of output per step
            if part:
                if scan is not None:
                    scan.feed(part)
                yield part
            if d.eof:
                inside, buf = False, d.unused_data
                if buf.strip(b"\x00") == b"":  # padding after the last member, as gzip allows
                    buf = f.read(_READ)
                    if buf.strip(b"\x00") == b"":
                        break
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                buf = d.unconsumed_tail or f.read(_READ)
        if inside:  # the input ended inside a member: flush what zlib holds, then it is truncated
            part = d.flush()
            if part and scan is not None:
                scan.feed(part)
            raise DataError(name, None, None, "a complete gzip file", "a file that ends inside the compressed data")
    except zlib.error as e:
        raise DataError(name, None, None, "a complete gzip file", v.show(str(e), 100)) from None
    if scan is not None:
        scan.finish()


def check_parquet_sizes(data: bytes | Path, file: str, needed: typing.Any, limits: Limits) -> None:
    """Refuse, from the footer alone, a column chunk that decodes to more than its values may hold
    (`max_cell_bytes` each, plus 1 MiB): a few compressed kilobytes cannot expand into gigabytes
    before the cell check sees them. Memory stays bounded by rows x `max_cell_bytes`."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(io.BytesIO(data) if isinstance(data, bytes) else data).metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for j in range(group.num_columns):
            chunk = group.column(j)
            name = chunk.path_in_schema
            if needed is not None and name not in needed:
                continue
            bound = chunk.num_values * limits.max_cell_bytes + (1 << 20)
            if chunk.total_uncompressed_size > bound:
                raise DataError(
                    file,
                    None,
                    name,
                    f"values of at most {limits.max_cell_bytes} bytes (data.max_cell_bytes)",
                    f"{chunk.total_uncompressed_size} bytes for {chunk.num_values} values in row group {g}",
                )


def first_keys_of(data: bytes) -> list[str]:
    """The keys of the first JSON record (for error messages and format detection)."""
    for raw in io.BytesIO(data):
        if raw.strip():
            try:
                record = json.loads(raw)
            except (ValueError, RecursionError):  # the reader reports the line (nested too deeply, ...)
                return []
            return list(record) if isinstance(record, dict) else []
    return []


__all__ = [
    "FORMATS",
    "TEXT_KINDS",
    "check_parquet_sizes",
    "detect_format",
    "first_keys_of",
    "read_bytes",
    "stream_bytes",
]
