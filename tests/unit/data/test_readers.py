"""Readers: every format, canonical output, and every malformed case located exactly."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.data import validate
from crossrec.data.datasets import RawDataset, read_amazon_reviews, read_dataset
from crossrec.data.readers import (
    read_image_vectors,
    read_interactions,
    read_items,
)
from crossrec.data.schema import ColumnMap, DataError, ItemColumnMap
from tests.conftest import SHARED_DATA as DATA

CSV = "uid,iid,cat,stars,ts\nu1,007,Books,4.5,1700000000\nu2,i2,Music,,1700000100\nu1,i3,Music,3,1700000200\n"
COLS = ColumnMap(user="uid", item="iid", category="cat", rating="stars", timestamp="ts")


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """Write `content` to tmp_path/name, gzip-compressed when the name ends with .gz."""
    data = content.encode() if isinstance(content, str) else content
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def error_of(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value


def expect_error(path: Path, line: int | None, column: str | None, columns: ColumnMap = COLS, **kwargs) -> DataError:
    err = error_of(read_interactions, path, columns, **kwargs)
    assert (err.file, err.line, err.column) == (str(path), line, column), str(err)
    return err


EXPECTED = pl.DataFrame(
    {
        "user": ["u1", "u2", "u1"],
        "item": ["007", "i2", "i3"],
        "category": ["Books", "Music", "Music"],
        "rating": [4.5, None, 3.0],
        "timestamp": [1700000000, 1700000100, 1700000200],
    },
    schema={"user": pl.String, "item": pl.String, "category": pl.String, "rating": pl.Float64, "timestamp": pl.Int64},
)


# ---- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.tsv", "a.tsv.gz", "a.jsonl", "a.jsonl.gz", "a.json"])
def test_text_formats_give_the_canonical_table(tmp_path, name):
    if ".tsv" in name:
        content = CSV.replace(",", "\t")
    elif ".json" in name:
        frame = pl.read_csv(CSV.encode(), infer_schema=False)
        content = "\n".join(
            json.dumps({k: v for k, v in r.items() if v is not None}) for r in frame.iter_rows(named=True)
        )
    else:
        content = CSV
    out = read_interactions(write(tmp_path, name, content), COLS)
    assert out.equals(EXPECTED), out


def test_json_numbers_and_ids_become_the_same_strings(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"uid": 7, "iid": "007", "cat": "B", "stars": 5, "ts": 1700000000}\n')
    out = read_interactions(path, COLS)
    assert out.row(0) == ("7", "007", "B", 5.0, 1700000000)


@pytest.mark.parametrize("gz", [False, True])
def test_parquet(tmp_path, gz):
    frame = pl.DataFrame({"uid": ["u1", "u2"], "iid": [7, 8], "cat": ["B", "M"], "stars": [4, None], "ts": [1, 2]})
    path = tmp_path / ("a.parquet.gz" if gz else "a.parquet")
    frame.write_parquet(tmp_path / "plain.parquet")
    raw = (tmp_path / "plain.parquet").read_bytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_interactions(path, COLS)
    assert out["item"].to_list() == ["7", "8"]
    assert out["rating"].to_list() == [4.0, None]
    assert out.schema["timestamp"] == pl.Int64


def test_parquet_datetime_timestamps(tmp_path):
    from datetime import date, datetime

    path = tmp_path / "a.parquet"
    pl.DataFrame({"uid": ["u"], "iid": ["i"], "cat": ["c"], "ts": [datetime(2020, 1, 2, 3, 4, 5)]}).write_parquet(path)
    cols = ColumnMap(user="uid", item="iid", category="cat", timestamp="ts")
    assert read_interactions(path, cols)["timestamp"][0] == 1577934245
    pl.DataFrame({"uid": ["u"], "iid": ["i"], "cat": ["c"], "ts": [date(2020, 1, 2)]}).write_parquet(path)
    assert read_interactions(path, cols)["timestamp"][0] == 1577923200


def test_fmt_and_sep_override_the_extension(tmp_path):
    path = write(tmp_path, "a.txt", CSV.replace(",", ";"))
    assert read_interactions(path, COLS, fmt="csv", sep=";").equals(EXPECTED)
    with pytest.raises(ValueError, match="extension"):
        read_interactions(path, COLS)


def test_ids_stay_strings_and_surrounding_whitespace_is_stripped(tmp_path):
    # The documented rule: leading/trailing whitespace of an id is not part of it.
    path = write(tmp_path, "a.csv", "user_id,item_id,category\n007,0001,00\n 7 ,1e3,x\n")
    out = read_interactions(path)
    assert out.rows() == [("007", "0001", "00"), ("7", "1e3", "x")]
    assert out.schema == {"user": pl.String, "item": pl.String, "category": pl.String}


def test_iso_timestamps(tmp_path):
    stamps = [
        "2020-01-02",
        "2020-01-02T03:04:05",
        "2020-01-02 03:04:05.250",
        "2020-01-02T03:04:05Z",
        "2020-01-02T05:04:05+02:00",
        "2020-01-02T03:04",
        "1577934245",
        " 1577934245 ",
    ]
    rows = "".join(f"u,i{k},c,{s}\n" for k, s in enumerate(stamps))
    path = write(tmp_path, "a.csv", "user_id,item_id,category,when\n" + rows)
    out = read_interactions(path, ColumnMap(timestamp="when"))
    assert out["timestamp"].to_list() == [1577923200] + [1577934245] * 4 + [1577934240] + [1577934245] * 2


def test_order_split_and_constant_category(tmp_path):
    path = write(tmp_path, "a.csv", "u,i,pos,part\na,x,0,train\na,y, 1 ,Valid\nb,x,2,test\n")
    cols = ColumnMap(user="u", item="i", category=None, category_value="Books", order="pos", split="part")
    out = read_interactions(path, cols)
    assert out.columns == ["user", "item", "category", "order", "split"]
    assert out["order"].to_list() == [0, 1, 2]
    assert out["split"].to_list() == ["train", "valid", "test"]
    assert out["category"].unique().to_list() == ["Books"]


def test_quoted_fields_crlf_and_blank_lines(tmp_path):
    content = 'u,i,c,r\r\na,"x, ""y""",B,1\r\n\r\nb,"multi\nline",M,2\r\n\nc,z,M,3\r\n'
    cols = ColumnMap(user="u", item="i", category="c", rating="r")
    # An id spanning lines holds a newline: refused, at the line where its record starts.
    with pytest.raises(DataError, match="control characters") as e:
        read_interactions(write(tmp_path, "a.csv", content), cols)
    assert (e.value.line, e.value.column) == (4, "i")
    out = read_interactions(write(tmp_path, "b.csv", content.replace("multi\nline", "multi, line")), cols)
    assert out["item"].to_list() == ['x, "y"', "multi, line", "z"]
    assert out["rating"].to_list() == [1.0, 2.0, 3.0]


def test_json_lists_and_nulls_in_text_fields(tmp_path):
    content = '{"item_id": "a", "category": "B", "title": null}\n{"item_id": "b", "category": "B"}\n'
    path = write(tmp_path, "items.jsonl", content)
    out = read_items(path)
    assert out.columns == ["item", "category", "title"]
    assert out["title"].to_list() == [None, None]


# ---- malformed input: each located by file, line and column ---------------------------------


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz"])
def test_missing_column_in_a_csv_header(tmp_path, name):
    path = write(tmp_path, name, CSV.replace("stars", "score"))
    err = expect_error(path, 1, "stars")
    assert "score" in err.got and "uid" in err.got


def test_missing_column_in_parquet_and_jsonl(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"uid": ["u"], "iid": ["i"], "cat": ["c"], "ts": [1]}).write_parquet(path)
    assert "ts" in expect_error(path, None, "stars").got
    path = write(tmp_path, "a.jsonl", '{"uid": "u", "iid": "i", "cat": "c", "ts": 1}\n')
    assert "cat" in expect_error(path, None, "stars").got


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz", "a.tsv.gz"])
@pytest.mark.parametrize("bad, column", [("abc", "stars"), ("inf", "stars"), ("nan", "stars"), ("yesterday", "ts")])
def test_bad_numbers_are_located(tmp_path, name, bad, column):
    rows = CSV.splitlines()
    fields = rows[3].split(",")
    fields[3 if column == "stars" else 4] = bad
    content = "\n".join(rows[:3] + [",".join(fields)]) + "\n"
    path = write(tmp_path, name, content.replace(",", "\t") if ".tsv" in name else content)
    err = expect_error(path, 4, column)
    assert err.got == repr(bad)


def test_non_integer_order(tmp_path):
    path = write(tmp_path, "a.csv", "u,i,c,pos\na,x,B,1\na,y,B,1.5\n")
    err = expect_error(path, 3, "pos", ColumnMap(user="u", item="i", category="c", order="pos"))
    assert err.expected == "an integer" and err.got == "'1.5'"


@pytest.mark.parametrize("row, column", [(",x,B", "u"), ("a,  ,B", "i"), ("a,x,", "c")])
def test_blank_ids(tmp_path, row, column):
    path = write(tmp_path, "a.csv", f"u,i,c\na,x,B\nb,y,B\n{row}\n")
    expect_error(path, 4, column, ColumnMap(user="u", item="i", category="c"))


def test_blank_id_in_jsonl_counts_blank_lines(tmp_path):
    path = write(tmp_path, "a.jsonl.gz", '{"u": "a", "i": "x"}\n\n   \n{"u": null, "i": "y"}\n')
    expect_error(path, 4, "u", ColumnMap(user="u", item="i", category=None, category_value="B"))


def test_bad_split_value(tmp_path):
    path = write(tmp_path, "a.csv", "u,i,c,s\na,x,B,train\na,y,B,training\n")
    err = expect_error(path, 3, "s", ColumnMap(user="u", item="i", category="c", split="s"))
    assert err.got == "'training'"


def test_bad_value_in_parquet_gives_the_row_number(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame(
        {
            "uid": ["u", "v", "w"],
            "iid": ["i", "j", "k"],
            "cat": ["c", "c", "c"],
            "stars": [1.0, 2.0, float("inf")],
            "ts": [1, 2, 3],
        }
    ).write_parquet(path)
    expect_error(path, 3, "stars")


def test_earliest_bad_row_wins_over_column_order(tmp_path):
    path = write(tmp_path, "a.csv", "uid,iid,cat,stars,ts\nu,i,c,1,x\nu,j,c,y,1\n")
    expect_error(path, 2, "ts")


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz"])
def test_item_in_two_categories(tmp_path, name):
    path = write(tmp_path, name, "uid,iid,cat\na,x,Books\na,y,Music\nb,y,Music\nb,x,Music\n")
    err = expect_error(path, 5, "cat", ColumnMap(user="uid", item="iid", category="cat"))
    assert "'Books'" in err.expected and f"{path}:2" in err.expected and err.got == "'Music'"


def test_item_in_two_categories_in_the_item_table(tmp_path):
    path = write(
        tmp_path, "items.csv", "item_id,category,title\nx,Books,t1\ny,Music,t2\nx,Books,t1 again\ny,Books,t3\n"
    )
    err = error_of(read_items, path)
    assert (err.file, err.line, err.column) == (str(path), 5, "category")


@pytest.mark.parametrize(
    "name, content, line, got",
    [
        ("a.csv", b"", None, "an empty file"),
        ("a.csv.gz", b"", None, "an empty file"),
        ("a.csv", b"\n\n", None, "an empty file"),
        ("a.csv", b"uid,iid,cat\n", 1, "only a header"),
        ("a.csv.gz", b"uid,iid,cat\n\n", 1, "only a header"),
        ("a.jsonl", b"", None, "an empty file"),
    ],
)
def test_empty_files(tmp_path, name, content, line, got):
    path = write(tmp_path, name, content)
    err = expect_error(path, line, None, ColumnMap(user="uid", item="iid", category="cat"))
    assert err.expected == "at least one data row" and err.got == got


def test_empty_parquet(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame(schema={"uid": pl.String, "iid": pl.String, "cat": pl.String}).write_parquet(path)
    expect_error(path, None, None, ColumnMap(user="uid", item="iid", category="cat"))


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz"])
def test_latin1_bytes_are_located(tmp_path, name):
    content = 'uid,iid,cat,title\nu1,i1,Books,ok\nu2,i2,Books,"quoted, comma"\nu3,i3,Mus\xe9e,caf\xe9\n'.encode(
        "latin-1"
    )
    path = write(tmp_path, name, content)
    err = expect_error(path, 4, "cat", ColumnMap(user="uid", item="iid", category="cat"))
    assert "0xe9" in err.got


def test_latin1_after_a_quoted_comma(tmp_path):
    content = 'uid,iid,cat,title\nu1,"i,1",Books,caf\xe9\n'.encode("latin-1")
    expect_error(write(tmp_path, "a.csv", content), 2, "title", ColumnMap(user="uid", item="iid", category="cat"))


def test_utf8_check_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "_CHUNK", 5)  # tiny chunks: multi-byte characters straddle them
    good = "uid,iid,cat\n" + "".join(f"\u00e9\u20ac{k},i{k},\U0001f600\n" for k in range(20))
    assert (
        read_interactions(write(tmp_path, "a.csv", good), ColumnMap(user="uid", item="iid", category="cat")).height
        == 20
    )
    bad = good.encode() + b"u,i\xe2\x82,c\n"  # a truncated euro sign
    expect_error(write(tmp_path, "b.csv", bad), 22, "iid", ColumnMap(user="uid", item="iid", category="cat"))


def test_latin1_in_jsonl(tmp_path):
    path = write(tmp_path, "a.jsonl", b'{"u": "a", "i": "x"}\n{"u": "b\xe9", "i": "y"}\n')
    expect_error(path, 2, None, ColumnMap(user="u", item="i", category=None, category_value="B"))


@pytest.mark.parametrize("name", ["a.csv", "a.csv.gz"])
@pytest.mark.parametrize("row", ["a,x", "a,x,B,extra", 'a,"x,y",B,extra'])
def test_wrong_number_of_fields(tmp_path, name, row):
    path = write(tmp_path, name, f'u,i,c\na,"multi\nline",B\n\n{row}\nb,y,B\n')
    err = expect_error(path, 5, None, ColumnMap(user="u", item="i", category="c"))
    assert err.expected == "3 fields as in the header"


def test_unclosed_quote(tmp_path):
    path = write(tmp_path, "a.csv", 'u,i,c\na,x,B\nb,5" ruler,B\nc,z,B\n')
    expect_error(path, 3, None, ColumnMap(user="u", item="i", category="c"))


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_bad_json_line(tmp_path, name):
    path = write(tmp_path, name, '{"u": "a", "i": "x"}\n\n{"u": "b", "i": \n{"u": "c", "i": "z"}\n')
    expect_error(path, 3, None, ColumnMap(user="u", item="i", category=None, category_value="B"))


def test_truncated_gzip(tmp_path):
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode())[:-12])
    expect_error(path, None, None)


def test_float_ids_are_refused(tmp_path):
    path = tmp_path / "a.parquet"
    pl.DataFrame({"uid": [1.0], "iid": ["i"], "cat": ["c"]}).write_parquet(path)
    err = expect_error(path, None, "uid", ColumnMap(user="uid", item="iid", category="cat"))
    assert "Float64" in err.got


def test_error_message_reads_well(tmp_path):
    path = write(tmp_path, "a.csv", "uid,iid,cat,stars,ts\nu,i,c,abc,1\n")
    err = expect_error(path, 2, "stars")
    assert str(err) == f"{path}:2: column 'stars': expected a finite number or a blank cell, got 'abc'"


# ---- property: ids survive a CSV round trip exactly ------------------------------------------

# Ids as the readers keep them: no control characters, no surrounding whitespace (stripped).
ID_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: s.strip() != "" and s.strip() == s
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(ID_TEXT, min_size=1, max_size=8), sep=st.sampled_from([",", "\t", ";"]))
def test_csv_round_trip_keeps_ids_exactly(tmp_path, users, sep):
    items = [f"{u}|{k}" for k, u in enumerate(users)]
    frame = pl.DataFrame({"user_id": users, "item_id": items, "category": ["c"] * len(users)})
    path = tmp_path / "round.csv.gz"
    path.write_bytes(gzip.compress(frame.write_csv(separator=sep, quote_style="non_numeric").encode()))
    out = read_interactions(path, fmt="csv", sep=sep)
    assert out["user"].to_list() == users
    assert out["item"].to_list() == frame["item_id"].to_list()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.sampled_from(["plain", "quoted", "multi", "blank"]), min_size=1, max_size=15),
    bad_at=st.integers(min_value=0, max_value=14),
    chunk=st.sampled_from([1, 2, 3, 5, 8, 1 << 24]),
)
def test_reported_line_is_the_physical_line(tmp_path, rows, bad_at, chunk):
    """Blank lines, quoted delimiters and multi-line fields, scanned in chunks of any size."""
    # An item table: titles may span lines (ids may not), the category after the title is checked.
    lines, line_of_row, last_of_row = ["i,t,c"], [], []
    for kind in rows:
        if kind == "blank":
            lines.append("")
            continue
        line_of_row.append(len(lines) + 1)  # the record's first physical line, 1-based
        title = {"plain": "x", "quoted": '"x,y"', "multi": '"x\ny"'}[kind]
        lines.extend(f"i{len(line_of_row)},{title},B".split("\n"))
        last_of_row.append(len(lines) - 1)  # index of its last physical line, where c is
    if not line_of_row:
        return
    bad = min(bad_at, len(line_of_row) - 1)
    lines[last_of_row[bad]] = lines[last_of_row[bad]][:-1] + " "
    path = write(tmp_path, "p.csv.gz", "\n".join(lines) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validate, "_CHUNK", chunk)
        with pytest.raises(DataError) as e:
            read_items(path, ItemColumnMap(item="i", title="t", category="c"))
        assert (e.value.file, e.value.line, e.value.column) == (str(path), line_of_row[bad], "c"), str(e.value)


# ---- items and vectors -----------------------------------------------------------------------


def test_read_items(tmp_path):
    path = write(
        tmp_path, "items.tsv.gz", "iid\tcat\tname\tabout\n007\tBooks\tA\tlong\n8\tMusic\tB\t\n007\tBooks\tA2\tx\n"
    )
    out = read_items(path, ItemColumnMap(item="iid", category="cat", title="name", description="about"))
    assert out.rows() == [("007", "Books", "A", "long"), ("8", "Music", "B", None)]
    out = read_items(path, ItemColumnMap(item="iid", category=None, title=None))
    assert out.columns == ["item"]


def test_image_vectors_npz(tmp_path):
    path = tmp_path / "v.npz"
    np.savez(path, item_ids=np.array(["007", "b"]), vectors=np.ones((2, 3)))
    ids, vectors = read_image_vectors(path)
    assert ids == ["007", "b"] and vectors.shape == (2, 3) and vectors.dtype == np.float32
    np.savez(path, item_ids=np.array(["a", "b"]), vectors=np.array([[1.0, 2.0], [np.nan, 0.0]]))
    err = error_of(read_image_vectors, path)
    assert (err.line, err.column) == (2, "vectors")
    np.savez(path, item_ids=np.array(["a", "b"], dtype=object), vectors=np.ones((2, 2)))
    assert "non-object" in error_of(read_image_vectors, path).expected
    np.savez(path, item_ids=np.array(["a", "a"]), vectors=np.ones((2, 2)))
    err = error_of(read_image_vectors, path)
    assert (err.line, err.column) == (2, "item_ids")


def test_image_vectors_tables(tmp_path):
    path = tmp_path / "v.parquet"
    pl.DataFrame({"item_id": ["a", "b"], "vec": [[1.0, 2.0], [3.0, 4.0]]}).write_parquet(path)
    ids, vectors = read_image_vectors(path)
    assert ids == ["a", "b"] and vectors.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    pl.DataFrame({"item_id": ["a", "b"], "vec": [[1.0, 2.0], [3.0]]}).write_parquet(path)
    err = error_of(read_image_vectors, path)
    assert (err.line, err.column) == (2, "vec")
    pl.DataFrame({"item": [1, 2], "d0": [0.5, 1.5], "d1": [2, 3]}).write_parquet(path)
    ids, vectors = read_image_vectors(path)
    assert ids == ["1", "2"] and vectors.tolist() == [[0.5, 2.0], [1.5, 3.0]]
    csv = write(tmp_path, "v.csv.gz", "item_id,d0,d1\na,1,2\nb,3,x\n")
    err = error_of(read_image_vectors, csv)
    assert (err.line, err.column) == (3, "d1")
    csv = write(tmp_path, "w.csv", "item_id,d0,d1\na,1,2\nb,3,inf\n")
    err = error_of(read_image_vectors, csv)
    assert (err.line, err.column) == (3, "d1")
    csv = write(tmp_path, "x.csv", "item_id,d0,d1\na,1,2\nb,3\n")
    assert error_of(read_image_vectors, csv).line == 3


# ---- Amazon reviews --------------------------------------------------------------------------


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_amazon_2018_format(tmp_path):
    arts = write(
        tmp_path,
        "Arts.json.gz",
        jsonl(
            [
                {
                    "reviewerID": "U1",
                    "asin": "A1",
                    "overall": 5.0,
                    "unixReviewTime": 1400000000,
                    "reviewTime": "05 13, 2014",
                },
                {"reviewerID": "U2", "asin": "A2", "overall": 3.0, "unixReviewTime": 1400000100, "reviewText": "nice"},
            ]
        ),
    )
    arts_meta = write(
        tmp_path,
        "meta_Arts.json.gz",
        jsonl(
            [
                {"asin": "A1", "title": "Brush", "description": ["Soft", "bristles"]},
                {"asin": "A2", "title": "Paint"},
            ]
        ),
    )
    office = write(
        tmp_path,
        "Office.json",
        jsonl(
            [
                {"reviewerID": "U1", "asin": "O1", "overall": 4.0, "unixReviewTime": 1400000200},
            ]
        ),
    )
    inter, items = read_amazon_reviews({"Arts": (arts, arts_meta), "Office": (office, None)}, text=True)
    assert inter.rows() == [
        ("U1", "A1", "Arts", 5.0, 1400000000, None),
        ("U2", "A2", "Arts", 3.0, 1400000100, "nice"),
        ("U1", "O1", "Office", 4.0, 1400000200, None),
    ]
    assert items.rows() == [("A1", "Arts", "Brush", "Soft bristles"), ("A2", "Arts", "Paint", None)]


def test_amazon_2023_format(tmp_path):
    reviews = write(
        tmp_path,
        "Toys.jsonl.gz",
        jsonl(
            [
                {
                    "rating": 4.0,
                    "title": "ok",
                    "text": "fine",
                    "asin": "B01",
                    "parent_asin": "P01",
                    "user_id": "AG1",
                    "timestamp": 1588687728923,
                },
                {
                    "rating": 1.0,
                    "title": "bad",
                    "text": "no",
                    "asin": "B02",
                    "parent_asin": "P01",
                    "user_id": "AG2",
                    "timestamp": 1588687729000,
                },
            ]
        ),
    )
    meta = write(
        tmp_path,
        "meta_Toys.jsonl.gz",
        jsonl(
            [
                {
                    "main_category": "Toys",
                    "title": "Robot",
                    "description": ["Walks.", "Talks."],
                    "parent_asin": "P01",
                    "price": None,
                },
            ]
        ),
    )
    inter, items = read_amazon_reviews({"Toys": (reviews, meta)})
    assert inter.rows() == [("AG1", "P01", "Toys", 4.0, 1588687728), ("AG2", "P01", "Toys", 1.0, 1588687729)]
    assert items.rows() == [("P01", "Toys", "Robot", "Walks. Talks.")]


def test_amazon_item_in_two_categories(tmp_path):
    a = write(tmp_path, "A.json", jsonl([{"reviewerID": "U", "asin": "X", "overall": 5, "unixReviewTime": 1}]))
    b = write(
        tmp_path,
        "B.json",
        jsonl(
            [
                {"reviewerID": "U", "asin": "Y", "overall": 5, "unixReviewTime": 1},
                {"reviewerID": "V", "asin": "X", "overall": 4, "unixReviewTime": 2},
            ]
        ),
    )
    err = error_of(read_amazon_reviews, {"A": (a, None), "B": (b, None)})
    assert (err.file, err.line, err.column) == (str(b), 2, None)
    assert f"{a}:1" in err.expected
    inter, _ = read_amazon_reviews({"A": (a, None), "B": (b, None)}, shared_items="first")
    assert inter["item"].to_list() == ["X", "Y"]


def test_amazon_bad_rating_is_located(tmp_path):
    a = write(
        tmp_path,
        "A.json.gz",
        jsonl(
            [
                {"reviewerID": "U", "asin": "X", "overall": 5, "unixReviewTime": 1},
                {"reviewerID": "V", "asin": "X", "overall": "five", "unixReviewTime": 1},
            ]
        ),
    )
    err = error_of(read_amazon_reviews, {"A": (a, None)})
    assert (err.file, err.line, err.column) == (str(a), 2, "overall")


# ---- built-in datasets -----------------------------------------------------------------------


def test_read_dataset_unknown_name():
    with pytest.raises(KeyError, match="amazon-arts-office, anime-mal"):
        read_dataset("movielens", "/nowhere")


@pytest.mark.skipif(not (DATA / "amazon-arts-office").is_dir(), reason="shared data folder absent")
def test_amazon_arts_office():
    raw = read_dataset("amazon-arts-office", DATA / "amazon-arts-office")
    assert isinstance(raw, RawDataset)
    inter = raw.interactions
    assert inter.height == 208_541
    assert inter.columns == ["user", "item", "category", "order", "source_split"]
    assert "split" not in inter.columns and "timestamp" not in inter.columns
    assert inter["user"].n_unique() == 9_577 and inter["item"].n_unique() == 34_419
    counts = dict(inter.group_by("category").len().iter_rows())
    assert counts == {"Arts_Crafts_and_Sewing": 110_877, "Office_Products": 97_664}
    assert dict(inter.group_by("source_split").len().iter_rows()) == {"train": 183_092, "valid": 8_800, "test": 16_649}
    assert raw.items.height == 38_396 and raw.items.columns == ["item", "category", "title", "description"]
    assert raw.split_defaults == {"split": "leave_last_out", "order": "order"}
    assert [p.name for p in raw.sources] == ["interactions.csv.gz", "items.csv.gz"]


@pytest.mark.skipif(not (DATA / "anime-mal").is_dir(), reason="shared data folder absent")
def test_anime_mal():
    raw = read_dataset("anime-mal", str(DATA / "anime-mal"))
    inter = raw.interactions
    assert inter.height == 520_609
    assert inter["rating"].is_not_null().sum() == 419_943
    assert inter.columns == ["user", "item", "category", "rating"]
    assert inter["user"].n_unique() == 5_000 and inter["item"].n_unique() == 7_390
    assert dict(inter.group_by("category").len().iter_rows())["Music"] == 1_679
    assert raw.items.height == 7_390
    assert raw.split_defaults == {"split": "random", "test_ratio": 0.2, "valid_ratio": 0.1, "seed": 2024}
