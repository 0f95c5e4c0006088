"""Fuzz the readers: arbitrary bytes in CSV / TSV / JSONL cells and headers never crash with
anything but `DataError` (issue 9). What comes back when a file is accepted is well-formed: ids are
non-blank strings without control characters or surrounding whitespace."""

from __future__ import annotations

import gzip
import re

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.data.readers import read_interactions, read_items
from crossrec.data.schema import ColumnMap, DataError, ItemColumnMap

CELL = st.binary(max_size=12) | st.sampled_from(
    [
        b"",
        b" ",
        b'"',
        b'""',
        b",",
        b"\t",
        b"\n",
        b"\r\n",
        b"\x00",
        b"\xff\xfe",
        b"\xc3",
        b"1e309",
        b"nan",
        b"-1",
        b"99999999999999999999",
        b"2024-02-30",
        b"{",
        b"[1,2]",
        b"null",
        b"\xef\xbb\xbf",
        b"u1",
    ]
)
NAMES = [b"user_id", b"item_id", b"category", b"rating", b"ts"]
HEADER = st.lists(st.sampled_from(NAMES) | CELL, min_size=1, max_size=6)
COLS = ColumnMap(rating="rating", timestamp="ts")
SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def check_result(df: pl.DataFrame) -> None:
    for col in ("user", "item", "category"):
        values = df[col].to_list()
        assert all(isinstance(v, str) and v and v == v.strip() for v in values), values
        assert not any(re.search(r"[\x00-\x1f\x7f]", v) for v in values)
    if "ts" in df.columns or "timestamp" in df.columns:
        ts = df["timestamp"].drop_nulls()
        assert ts.len() == 0 or (ts.min() >= 0 and ts.max() < 4_102_444_800)


def read_or_data_error(fn, *args, **kwargs) -> None:
    try:
        df = fn(*args, **kwargs)
    except DataError:
        return
    if fn is read_interactions:
        check_result(df)


@SETTINGS
@given(
    header=HEADER,
    rows=st.lists(st.lists(CELL, min_size=0, max_size=7), min_size=0, max_size=5),
    sep=st.sampled_from([b",", b"\t", b";"]),
    gz=st.booleans(),
    crlf=st.booleans(),
)
def test_csv_bytes_raise_only_data_error(tmp_path, header, rows, sep, gz, crlf):
    nl = b"\r\n" if crlf else b"\n"
    data = nl.join(sep.join(r) for r in [header, *rows]) + nl
    path = tmp_path / ("f.csv.gz" if gz else "f.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    read_or_data_error(read_interactions, path, COLS, "csv", sep.decode())
    read_or_data_error(
        read_items, path, ItemColumnMap(item="user_id", category="category", title="item_id"), "csv", sep.decode()
    )


@SETTINGS
@given(
    header=HEADER,
    rows=st.lists(
        st.lists(st.sampled_from([b"u1", b"i1", b"b", b"4", b"1600000000"]) | CELL, min_size=3, max_size=5),
        min_size=1,
        max_size=4,
    ),
)
def test_csv_with_valid_header_and_hostile_cells(tmp_path, header, rows):
    data = b"\n".join(b",".join(r) for r in [[b"user_id", b"item_id", b"category", b"rating", b"ts"], *rows]) + b"\n"
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    read_or_data_error(read_interactions, path, COLS)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@SETTINGS
@given(
    records=st.lists(
        st.dictionaries(
            st.sampled_from(["user_id", "item_id", "category", "rating", "ts"]) | st.text(max_size=6),
            JSON_VALUE,
            max_size=6,
        ),
        min_size=1,
        max_size=5,
    ),
    junk=st.lists(CELL, max_size=2),
)
def test_jsonl_values_and_keys_raise_only_data_error(tmp_path, records, junk):
    import json

    lines = [json.dumps(r).encode() for r in records] + list(junk)
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    read_or_data_error(read_interactions, path, COLS)
    read_or_data_error(read_items, path, ItemColumnMap(title="ts"))


@SETTINGS
@given(data=st.binary(max_size=200))
def test_raw_bytes_raise_only_data_error(tmp_path, data):
    for name in ("f.csv", "f.jsonl", "f.tsv"):
        path = tmp_path / name
        path.write_bytes(data)
        read_or_data_error(read_interactions, path, COLS)


@pytest.mark.parametrize("content", [b"user_id,item_id,category\n", b"", b"\n\n", b"\xef\xbb\xbf"])
def test_degenerate_files(tmp_path, content):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(DataError):
        read_interactions(path)
