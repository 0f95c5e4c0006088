"""Interaction files read lazily for `prepare.streaming` (data/scan.py): the eager reader's table,
the same Bundle fingerprint through `crossrec prepare`, and the eager reader's errors, word for
word, wherever in the file the problem is."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.data import prepare_stream, scan, validate
from crossrec.data.bundle import Bundle
from crossrec.data.readers import read_interactions
from crossrec.data.scale_world import ScaleConfig, generate_scale
from crossrec.data.schema import ColumnMap, DataError, Limits

from .test_reader_fuzz import CELL, HEADER, JSON_VALUE
from .test_readers import COLS, error_of, write

NAMES = {"user": "uid", "item": "iid", "category": "cat", "rating": "stars", "timestamp": "ts"}
MIDDLE = 900  # a data row well inside the file: many pieces before and after it


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Small blocks and pieces, so a file of ~70 KB is some 25 pieces and problems fall inside one."""
    monkeypatch.setattr(validate, "_CHUNK", 1000)
    monkeypatch.setattr(scan, "CHUNK_BYTES", 3000)
    monkeypatch.setattr(prepare_stream, "ROWS_PER_BUCKET", 700)


@pytest.fixture(scope="module")
def world() -> tuple[pl.DataFrame, pl.DataFrame]:
    inter, items = generate_scale(ScaleConfig(interactions=3000, categories=4, seed=1))
    return inter.rename(NAMES), items


def save(tmp_path: Path, name: str, frame: pl.DataFrame) -> Path:
    """`frame` in the format of `name` (.gz: gzip-compressed)."""
    if ".parquet" in name:
        frame.write_parquet(tmp_path / "plain.parquet")
        return write(tmp_path, name, (tmp_path / "plain.parquet").read_bytes())
    if ".jsonl" in name:
        return write(tmp_path, name, frame.write_ndjson())
    return write(tmp_path, name, frame.write_csv(separator="\t" if ".tsv" in name else ","))


def scanned(path: Path, columns: ColumnMap = COLS, **kwargs: object) -> pl.DataFrame:
    with scan.scan_interactions(path, columns, **kwargs) as lf:  # type: ignore[arg-type]
        return lf.collect()


def same_error(path: Path, columns: ColumnMap = COLS, **kwargs: object) -> DataError:
    """The eager reader's error, after checking the lazy one says the same."""
    eager = error_of(read_interactions, path, columns, **kwargs)
    lazy = error_of(scanned, path, columns, **kwargs)
    assert str(lazy) == str(eager)
    assert (lazy.file, lazy.line, lazy.column) == (eager.file, eager.line, eager.column)
    return eager


@pytest.mark.parametrize(
    "name", ["a.csv", "a.csv.gz", "a.tsv", "a.tsv.gz", "a.jsonl", "a.jsonl.gz", "a.parquet", "a.parquet.gz"]
)
def test_lazy_table_is_the_eager_one(tmp_path, world, name):
    path = save(tmp_path, name, world[0])
    eager, lazy = read_interactions(path, COLS), scanned(path)
    assert lazy.schema == eager.schema and lazy.equals(eager)


@pytest.mark.parametrize("name", ["a.csv", "a.parquet"])
def test_constant_category_and_an_order_column(tmp_path, world, name):
    path = save(tmp_path, name, world[0].with_columns(pl.col("ts").rank("ordinal").alias("pos")))
    cols = ColumnMap(user="uid", item="iid", category=None, category_value="all", order="pos")
    eager, lazy = read_interactions(path, cols), scanned(path, cols)
    assert lazy.columns == ["user", "item", "category", "order"] and lazy.equals(eager)


def test_quoted_fields_crlf_and_blank_lines_across_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "CHUNK_BYTES", 40)
    rows = ['a,"x, ""y""",B,1', "", 'b,"multi, \nline",M,2', "", "c,z,M,3"] * 30
    path = write(tmp_path, "a.csv", "u,i,c,r\r\n" + "\r\n".join(rows) + "\r\n")
    cols = ColumnMap(user="u", item="i", category="c", rating="r")
    same_error(path, cols)  # the id spanning lines holds a newline
    path = write(tmp_path, "b.csv", path.read_text().replace("multi, \nline", "multi, line"))
    assert scanned(path, cols).equals(read_interactions(path, cols))


def config(tmp_path: Path, data: Path, items: Path, streaming: bool, bundle: str) -> Path:
    cfg = tmp_path / f"{bundle}.yaml"
    cfg.write_text(
        f"data:\n  interactions: {data}\n  items: {items}\n"
        "  columns: {user: uid, item: iid, category: cat, rating: stars, timestamp: ts}\n"
        "  item_columns: {item: item, category: category, title: title}\n"
        f"  bundle: {tmp_path / bundle}\n"
        f"prepare:\n  streaming: {str(streaming).lower()}\n  k_core: 2\n"
    )
    return cfg


@pytest.mark.parametrize("name", ["a.csv", "a.tsv", "a.jsonl", "a.parquet", "a.csv.gz"])
def test_cli_prepare_streaming_gives_the_same_bundle(tmp_path, monkeypatch, world, name):
    temp = tmp_path / "temp"  # $TMPDIR: the temporary files go there, and are gone after
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data, items = save(tmp_path, name, world[0]), tmp_path / "items.parquet"
    world[1].write_parquet(items)
    prints = []
    for streaming in (False, True):
        bundle = f"bundle-{streaming}"
        r = CliRunner().invoke(app, ["prepare", str(config(tmp_path, data, items, streaming, bundle))])
        assert r.exit_code == 0, r.output
        prints.append(Bundle.load(tmp_path / bundle).fingerprint())
    assert prints[0] == prints[1]
    assert not list(temp.iterdir())


def edit_row(frame: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    """`frame` with one cell replaced (null: `value` None)."""
    at = pl.int_range(pl.len()) == row
    return frame.with_columns(pl.when(at).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


def edit_line(text: str, line: int, new: str) -> str:
    """`text` with its physical line `line` (1-based) replaced."""
    lines = text.split("\n")
    lines[line - 1] = new
    return "\n".join(lines)


@pytest.mark.parametrize("name", ["a.csv", "a.jsonl", "a.parquet", "a.tsv.gz"])
@pytest.mark.parametrize(
    "case",
    ["missing column", "null user", "long cell", "bad rating", "item in two categories"],
)
def test_bad_values_raise_the_same_error(tmp_path, world, name, case):
    frame, cols, limits = world[0], COLS, Limits()
    if case == "missing column":
        cols = ColumnMap(user="uid", item="iid", category="cat", rating="score")
    elif case == "null user":
        frame = edit_row(frame, MIDDLE, "uid", None)
    elif case == "long cell":
        frame, limits = edit_row(frame, MIDDLE, "iid", "i" * 40), Limits(max_cell_bytes=30)
    elif case == "bad rating":
        frame = edit_row(frame.with_columns(pl.col("stars").cast(pl.String)), MIDDLE, "stars", "five")
    else:
        item = frame["iid"][10]
        frame = edit_row(frame, MIDDLE, "iid", item).with_columns(
            pl.when(pl.int_range(pl.len()) == MIDDLE).then(pl.lit("elsewhere")).otherwise("cat").alias("cat")
        )
    err = same_error(save(tmp_path, name, frame), cols, limits=limits)
    if case != "missing column":
        assert err.line == MIDDLE + (2 if ".parquet" not in name and ".jsonl" not in name else 1), str(err)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: edit_line(t, MIDDLE, "u1,i1,c1"), id="too few fields"),
        pytest.param(lambda t: edit_line(t, MIDDLE, "u1,i1,c1,3,1600000000,extra"), id="too many fields"),
        pytest.param(lambda t: edit_line(t, 10, "u1,i1,c1,x,1") + 'u2,5" ruler,c1,3,1\n', id="quote beats fields"),
        pytest.param(lambda t: edit_line(t, 10, "u1,i1,c1,x,1") + "u2,i2,c1\n", id="fields beat values"),
        pytest.param(
            lambda t: edit_line(edit_line(t, 10, "u1,i1,c1,x,1"), 1500, "u1," + "i" * 70 + ",c1,3,1"), id="cell"
        ),
        pytest.param(lambda t: edit_line(t, 10, "u1,i1,c1,x,1") + "u\x002,i,c,1,1\n", id="NUL beats all"),
        pytest.param(lambda t: edit_line(t, 1, "uid,iid,cat,stars,stars") + "u2,i2\n", id="fields beat header"),
        pytest.param(lambda t: edit_line(t, 1, "uid,iid,cat,stars,time"), id="missing column"),
        pytest.param(lambda t: t[: t.index("\n") + 1] + "\n\n" * 3000, id="only a header"),
        pytest.param(lambda t: " \n" * 2000, id="empty"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_csv_lines_raise_the_same_error(tmp_path, world, edit: Callable[[str], str], gz):
    text = edit(world[0].write_csv())
    same_error(write(tmp_path, "a.csv.gz" if gz else "a.csv", text), limits=Limits(max_cell_bytes=60))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: edit_line(t, MIDDLE, '{"uid": "u1", "iid": '), id="bad line"),
        pytest.param(lambda t: edit_line(t, MIDDLE, "[1, 2]"), id="not an object"),
        pytest.param(lambda t: edit_line(t, 10, '{"uid": "u1"}') + "{\n", id="line beats values"),
        pytest.param(lambda t: t.replace('"ts":', '"time":'), id="missing column"),
    ],
)
def test_bad_jsonl_lines_raise_the_same_error(tmp_path, world, edit: Callable[[str], str]):
    same_error(write(tmp_path, "a.jsonl", edit(world[0].write_ndjson())))


def test_jsonl_field_absent_from_the_first_record(tmp_path, world):
    text = world[0].write_ndjson()
    first, rest = text.split("\n", 1)
    first = first.replace('"ts":', '"_":')
    assert '"ts"' not in first
    err = same_error(write(tmp_path, "a.jsonl", first + "\n" + rest))  # there later: a blank cell
    assert (err.line, err.column, err.got) == (1, "ts", "an empty cell")
    err = same_error(write(tmp_path, "b.jsonl", first + "\n" + rest.replace('"ts":', '"_":')))
    assert (err.line, err.column) == (None, "ts")  # nowhere: a missing column


def test_parquet_problems_raise_the_same_error(tmp_path, world):
    frame = world[0]
    same_error(save(tmp_path, "float.parquet", frame.with_columns(pl.col("iid").str.len_chars().cast(pl.Float64))))
    same_error(save(tmp_path, "empty.parquet", frame.head(0)))
    same_error(write(tmp_path, "blank.parquet", b"  \n"))
    same_error(write(tmp_path, "text.parquet", b"uid,iid\n1,2\n"))
    same_error(write(tmp_path, "named.parquet", gzip.compress(b"PAR1")))
    long_and_bad = edit_row(edit_row(frame, MIDDLE, "iid", "i" * 40), 5, "uid", None)
    same_error(save(tmp_path, "long.parquet", long_and_bad), limits=Limits(max_cell_bytes=30))  # the cell wins


@pytest.mark.parametrize("case", ["missing column", "null user", "long cell", "bad line"])
@pytest.mark.parametrize("name", ["a.csv", "a.parquet"])
def test_cli_prepare_gives_the_same_error_message(tmp_path, world, case, name):
    frame, columns, extra = world[0], "{user: uid, item: iid, category: cat, rating: stars}", ""
    if case == "missing column":
        columns = "{user: uid, item: iid, category: cat, rating: score}"
    elif case == "null user":
        frame = edit_row(frame, MIDDLE, "uid", None)
    elif case == "long cell":
        frame, extra = edit_row(frame, MIDDLE, "iid", "i" * 40), "  max_cell_bytes: 30\n"
    elif name == "a.parquet":
        frame = edit_row(frame.with_columns(pl.col("ts").cast(pl.String)), MIDDLE, "ts", "yesterday")
        columns = columns[:-1] + ", timestamp: ts}"
    data = save(tmp_path, name, frame)
    if case == "bad line" and name == "a.csv":
        data.write_text(edit_line(data.read_text(), MIDDLE, "u1,i1"))
    outputs = []
    for streaming in (False, True):
        bundle = tmp_path / f"b-{streaming}"
        cfg = tmp_path / f"c-{streaming}.yaml"
        cfg.write_text(
            f"data:\n  interactions: {data}\n  columns: {columns}\n  bundle: {bundle}\n{extra}"
            f"prepare:\n  streaming: {str(streaming).lower()}\n"
        )
        r = CliRunner().invoke(app, ["prepare", str(cfg)])
        assert r.exit_code == 2, r.output
        assert not bundle.exists()
        outputs.append(r.output)
    assert outputs[0] == outputs[1]
    assert str(data) in outputs[0] or data.name in outputs[0]


def same_outcome(path: Path, columns: ColumnMap, fmt: str | None = None, sep: str | None = None) -> None:
    """The eager and lazy reads agree: the same table, or the same error."""
    try:
        eager = read_interactions(path, columns, fmt, sep)
    except DataError:
        same_error(path, columns, fmt=fmt, sep=sep)
        return
    assert scanned(path, columns, fmt=fmt, sep=sep).equals(eager)


FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FUZZ_COLS = ColumnMap(rating="rating", timestamp="ts")
KEYS = ["user_id", "item_id", "category", "rating", "ts"]
GOOD = st.sampled_from([b"u1", b"i1", b"b", b"4", b"1600000000", b"2024-01-02"])
TEXTY = st.text(alphabet=',"\n\r \tu1\u00e9', max_size=5).map(str.encode)  # quotes, delimiters, newlines
CSV_CELL = st.one_of(GOOD, GOOD, GOOD, GOOD, TEXTY, CELL)  # mostly good: most files get far


@FUZZ
@given(
    header=st.one_of(st.just([k.encode() for k in KEYS]), st.just([k.encode() for k in KEYS[:3]]), HEADER),
    rows=st.lists(st.lists(CSV_CELL, min_size=3, max_size=5), min_size=0, max_size=20),
    sep=st.sampled_from([b",", b"\t"]),
    gz=st.booleans(),
    piece=st.integers(1, 60),
)
def test_hostile_csv_gives_the_same_outcome(tmp_path, monkeypatch, header, rows, sep, gz, piece):
    monkeypatch.setattr(validate, "_CHUNK", 7)
    monkeypatch.setattr(scan, "CHUNK_BYTES", piece)
    data = b"\n".join(sep.join(r) for r in [header, *rows]) + b"\n"
    path = tmp_path / ("f.csv.gz" if gz else "f.csv")
    path.write_bytes(gzip.compress(data) if gz else data)
    same_outcome(path, FUZZ_COLS, "csv", sep.decode())


RECORD = st.fixed_dictionaries(
    {k: st.sampled_from(["u1", "i1", "b"]) for k in KEYS[:3]} | {"rating": st.just(4), "ts": st.just(1600000000)}
)


@FUZZ
@given(
    records=st.lists(
        st.one_of(RECORD, RECORD, RECORD, st.dictionaries(st.sampled_from(KEYS), JSON_VALUE, max_size=5)),
        min_size=1,
        max_size=20,
    ),
    junk=st.lists(CELL, max_size=1),
    piece=st.integers(1, 80),
)
def test_hostile_jsonl_gives_the_same_outcome(tmp_path, monkeypatch, records, junk, piece):
    monkeypatch.setattr(scan, "CHUNK_BYTES", piece)
    path = tmp_path / "f.jsonl"
    lines = [json.dumps(r).encode() for r in records]
    lines[len(lines) // 2 : len(lines) // 2] = junk
    path.write_bytes(b"\n".join(lines) + b"\n")
    same_outcome(path, FUZZ_COLS)
