"""Bounded input (issue 33 "Trust II", item 3).

Binary junk and oversized lines, headers and cells are refused by the readers while they stream
the file: one `DataError` naming `file:line` (and the byte position, for what the byte scan
finds), at most 300 characters with the CLI's `error: `, in bounded memory (peak RSS measured in
a fresh process, not time). A gzip bomb of one huge line is refused at its first megabyte.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from crossrec.data.readers import read_interactions
from crossrec.data.schema import ColumnMap, DataError

HEADER = b"user_id,item_id,category\n"
MIB = 1 << 20
RSS_BOUND_MB = 40  # extra peak memory a refusal may take; every junk file below is larger


def _urandom(path: Path) -> None:  # 50 MB of random bytes (seeded: the same junk every run)
    path.write_bytes(np.random.default_rng(0).bytes(50 * MIB))


def _gzip_named_csv(path: Path) -> None:
    path.write_bytes(gzip.compress(HEADER + b"u1,i1,b\nu2,i2,b\n" * 1000))


def _parquet_named_csv(path: Path) -> None:
    buf = io.BytesIO()
    pl.DataFrame({"user_id": ["u1"] * 1000, "item_id": ["i1"] * 1000, "category": ["b"] * 1000}).write_parquet(buf)
    path.write_bytes(buf.getvalue())


def _nul_bytes(path: Path) -> None:
    path.write_bytes(HEADER + b"u1,i1,b\nu2,i\x002,b\n" + b"u3,i3,b\n" * 1000)


def _long_line(path: Path) -> None:  # a 200 MB line 2, written in pieces
    with open(path, "wb") as f:
        f.write(HEADER + b"u1,i1,")
        for _ in range(200):
            f.write(b"x" * MIB)
        f.write(b"\n")


def _long_header(path: Path) -> None:  # 100 KiB of column names
    names = b",".join(b"column_%06d" % k for k in range(8000))
    path.write_bytes(names + b"\n" + b",".join([b"v"] * 8000) + b"\n")


def _long_cell(path: Path) -> None:  # a 100 KiB id: within the line bound, over the cell bound
    path.write_bytes(HEADER + b"u1,i1,b\nu2," + b"y" * (100 << 10) + b",b\n")


def _gzip_bomb(path: Path) -> None:  # 512 MB of one line in about half a megabyte
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"a" * (16 * MIB)
    with open(path, "wb") as f:
        f.write(z.compress(HEADER + b"u1,i1,"))
        for _ in range(32):
            f.write(z.compress(block))
        f.write(z.compress(b"\n") + z.flush())


def _deep_jsonl(path: Path) -> None:  # one short line nested 400,000 deep: Python's json recurses
    path.write_text('{"user_id": "u1", "item_id": "i1", "category": "b", "x": ' + "[" * 400_000 + "]" * 400_000 + "}\n")


# kind: (file name, writer, expected line, byte position in the line or None, needle in the message)
JUNK = {
    "urandom": ("junk.csv", _urandom, None, True, "UTF-8"),
    "gzip-named-csv": ("packed.csv", _gzip_named_csv, 1, 1, "gzip"),
    "parquet-named-csv": ("table.csv", _parquet_named_csv, 1, 1, "Parquet"),
    "nul-bytes": ("nul.csv", _nul_bytes, 3, 5, "NUL"),
    "long-line": ("line.csv", _long_line, 2, MIB + 1, "max_line_bytes"),
    "long-header": ("header.csv", _long_header, 1, (64 << 10) + 1, "max_header_bytes"),
    "long-cell": ("cell.csv", _long_cell, 3, None, "max_cell_bytes"),
    "gzip-bomb": ("bomb.csv.gz", _gzip_bomb, 2, MIB + 1, "max_line_bytes"),
    "deep-jsonl": ("deep.jsonl", _deep_jsonl, 1, None, "one JSON object per line"),
}

PROBE = r"""
import json, resource, sys, time
from pathlib import Path
from crossrec.data.readers import read_interactions
from crossrec.data.schema import DataError
warm = Path(sys.argv[2])
warm.write_text("user_id,item_id,category\nu1,i1,b\n")
read_interactions(warm)  # warm up: lazy allocations of polars and numpy count in the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    read_interactions(sys.argv[1])
    out = {"error": None}
except DataError as e:
    out = {"error": "DataError", "message": str(e), "file": e.file, "line": e.line, "offset": getattr(e, "offset", None)}
except Exception as e:
    out = {"error": type(e).__name__, "message": str(e)[:300]}
out["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
out["seconds"] = time.perf_counter() - t
print(json.dumps(out))
"""


def probe(path: Path) -> dict:
    """Read `path` in a fresh process; the outcome and the extra peak memory it took."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLARS_MAX_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), str(path.parent / "warm.csv")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def located(message: str, path: Path, where: str) -> bool:
    """The message starts with `path` + `where`, or with its end after "..." (a long path keeps its
    end so the line stays under 300 characters)."""
    full = f"{path}{where}"
    cut = message.find(f"{path.name}{where}")
    if cut < 0:
        return False
    head = message[: cut + len(path.name) + len(where)]
    return head == full or (head.startswith("...") and full.endswith(head[3:]))


@pytest.mark.parametrize("kind", list(JUNK))
def test_junk_is_refused_in_one_short_line_in_bounded_memory(tmp_path, kind):
    name, write, line, offset, needle = JUNK[kind]
    path = tmp_path / name
    write(path)
    out = probe(path)
    assert out["error"] == "DataError", out
    message = out["message"]
    assert out["file"] == str(path)
    assert "\n" not in message and len("error: " + message) <= 300, message
    assert needle in message, message
    if line is not None:
        assert out["line"] == line, message
    assert isinstance(out["line"], int), message
    if offset is True:  # found by the byte scan: `file:line:offset:`
        assert located(message, path, f":{out['line']}:{out['offset']}:") and out["offset"] >= 1, message
    elif offset is not None:
        assert out["offset"] == offset and located(message, path, f":{line}:{offset}:"), message
    else:
        assert located(message, path, f":{line}:"), message
    assert out["rss_mb"] < RSS_BOUND_MB, f"{kind}: {out['rss_mb']:.0f} MB extra peak memory"


def test_the_bounds_are_configurable(tmp_path):
    from crossrec.data.schema import Limits

    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + b"u1,i1,b\nu2," + b"z" * 300 + b",b\n")
    assert read_interactions(path).height == 2  # within the defaults
    with pytest.raises(DataError, match="max_cell_bytes") as e:
        read_interactions(path, limits=Limits(max_cell_bytes=100))
    assert (e.value.line, e.value.column) == (3, "item_id")
    with pytest.raises(DataError, match="max_line_bytes") as e:
        read_interactions(path, limits=Limits(max_line_bytes=200))
    assert (e.value.line, e.value.offset) == (3, 201)
    with pytest.raises(DataError, match="max_header_bytes") as e:
        read_interactions(path, limits=Limits(max_header_bytes=10))
    assert (e.value.line, e.value.offset) == (1, 11)


def test_a_bad_byte_across_block_boundaries_is_located(tmp_path, monkeypatch):
    from crossrec.data import validate

    monkeypatch.setattr(validate, "_CHUNK", 3)  # blocks of 3 bytes: every character straddles one
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(HEADER + "u1,\u20ac\u20ac,b\n".encode() + b"u2,i\xe2\x82,b\n"))
    with pytest.raises(DataError, match="UTF-8") as e:
        read_interactions(path)
    assert (e.value.line, e.value.column, e.value.offset) == (3, "item_id", 5)


def test_a_missing_column_lists_the_header_briefly(tmp_path):
    path = tmp_path / "wide.csv"
    names = [f"a_rather_long_column_name_{k}" for k in range(500)]
    path.write_text(",".join(names) + "\n" + ",".join("v" for _ in names) + "\n")
    with pytest.raises(DataError) as e:
        read_interactions(path, ColumnMap(user="a_rather_long_column_name_1", item="nope", category="category"))
    message = str(e.value)
    assert len("error: " + message) <= 300 and "more" in message, message


@pytest.mark.parametrize("kind", ["urandom", "gzip-named-csv"])
def test_prepare_refuses_junk_with_exit_2_and_one_short_line(tmp_path, kind):
    junk = tmp_path / JUNK[kind][0]
    JUNK[kind][1](junk)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  interactions: {junk}\n  bundle: {tmp_path / 'b'}\n")
    exe = Path(sys.executable).with_name("crossrec")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "crossrec.cli"]
    p = subprocess.run(
        cmd + ["prepare", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1 and len(lines[0]) <= 300, p.stderr[-2000:]
    offset = re.search(rf"{re.escape(junk.name)}:1:(\d+): ", lines[0])  # file:line:offset
    assert offset and located(lines[0].removeprefix("error: "), junk, f":1:{offset.group(1)}:"), lines[0]
    assert not (tmp_path / "b").exists()


def test_a_parquet_bomb_is_refused_from_its_footer(tmp_path):
    """A few compressed kilobytes holding a 150 MB cell: refused before anything is decoded."""
    path = tmp_path / "bomb.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["x" * (150 * MIB), "i2"], "category": ["b", "b"]}).write_parquet(
        path, compression="zstd"
    )
    assert path.stat().st_size < MIB
    out = probe(path)
    assert out["error"] == "DataError" and "max_cell_bytes" in out["message"] and "item_id" in out["message"], out
    assert out["rss_mb"] < RSS_BOUND_MB, f"{out['rss_mb']:.0f} MB extra peak memory"
