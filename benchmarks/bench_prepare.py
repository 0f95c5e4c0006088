"""Prepare at scale: N interactions -> Bundle, in memory and out of core, with peak memory (max RSS).

Each run is a child process that reports its own peak resident memory (getrusage), so the figure
covers everything prepare holds at once, the interpreter and imports included:

- `memory`: a gzip CSV read by `read_interactions` (string ids in memory), then `prepare`;
- `streaming`: the same rows as Parquet parts, scanned lazily (`pl.scan_parquet`) and prepared
  with `prepare.streaming: true` (data/prepare_stream.py), which never collects the input.

The data (Zipf-like items over 8 categories, N/10 users, N/50 items, timestamps; leave-last-out,
global 5-core) is generated once per size under --work (default: $TMPDIR/crossrec-bench) and
reused. A run replaces its (path, rows) entry in benchmarks/results/prepare.json and keeps the
others, so sizes measured separately add up in one table.

    python benchmarks/bench_prepare.py --rows 10M --paths memory streaming
    python benchmarks/bench_prepare.py --rows 100M --paths streaming --work /tmp/crossrec-bench
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_results  # noqa: E402

CHILD = """
import json, resource, sys, time
t = time.perf_counter()
import polars as pl
from crossrec.data.prepare import PrepareConfig, prepare
path, src, out = sys.argv[1:4]
if path == "memory":
    from crossrec.data.readers import read_interactions
    from crossrec.data.schema import ColumnMap
    inter = read_interactions(src, ColumnMap(timestamp="timestamp"))
    rows_in = inter.height
else:
    inter = pl.scan_parquet(src + "/*.parquet")
    rows_in = inter.select(pl.len()).collect().item()
t_read = time.perf_counter() - t
b = prepare(inter, None, PrepareConfig(k_core=5, streaming=path == "streaming"), out, sources=[])
print(json.dumps({"read_seconds": t_read if path == "memory" else None, "total_seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows_in": rows_in, "rows_out": b.interactions.height, "users": b.n_users, "items": b.n_items}))
"""
CATEGORIES = np.array(["books", "music", "movies", "garden", "toys", "kitchen", "beauty", "sports"])


def chunks(rows: int, seed: int = 0, chunk: int = 2_000_000) -> Iterator[pl.DataFrame]:
    """The rows, `chunk` at a time: Zipf-like items over 8 categories, N/10 users, N/50 items."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 10, 1), max(rows // 50, 1)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    cdf = np.cumsum(pop / pop.sum())
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        items = np.searchsorted(cdf, rng.random(n))
        yield pl.DataFrame(
            {
                "user_id": rng.integers(0, n_users, n).astype(str),
                "item_id": items.astype(str),
                "category": CATEGORIES[items % len(CATEGORIES)],
                "timestamp": rng.integers(1_500_000_000, 1_700_000_000, n),
            }
        )


def make_csv(path: Path, rows: int) -> None:
    """The gzip CSV the `memory` path reads, written chunk by chunk."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as f:
        for i, df in enumerate(chunks(rows)):
            df.write_csv(f, include_header=i == 0)
    tmp.rename(path)


def make_parquet(folder: Path, rows: int) -> None:
    """The same rows as canonical Parquet parts (user, item, category, timestamp)."""
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i, df in enumerate(chunks(rows)):
        df.rename({"user_id": "user", "item_id": "item"}).write_parquet(tmp / f"part-{i:05d}.parquet")
    tmp.rename(folder)


def source(work: Path, path: str, rows: int) -> Path:
    """The input of one path at one size, generated when missing."""
    src = work / (f"interactions_{rows}.csv.gz" if path == "memory" else f"interactions_{rows}_parquet")
    if not src.exists():
        t = time.perf_counter()
        (make_csv if path == "memory" else make_parquet)(src, rows)
        print(f"generated {src} in {time.perf_counter() - t:.0f}s", flush=True)
    return src


def run(work: Path, path: str, rows: int) -> dict[str, Any]:
    src = source(work, path, rows)
    out = work / f"bundle_{path}_{rows}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, path, str(src), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    shutil.rmtree(out, ignore_errors=True)
    size = sum(p.stat().st_size for p in ([src] if src.is_file() else src.iterdir()))
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"path": path, "rows": rows, "input_mb": size / 2**20, "wall_seconds": time.perf_counter() - t, **stats}


def earlier_runs() -> list[dict[str, Any]]:
    """The runs already in prepare.json (a file from before the streaming path: one memory run)."""
    file = RESULTS / "prepare.json"
    if not file.exists():
        return []
    data = json.loads(file.read_text())
    if "runs" in data:
        return list(data["runs"])
    return [{"path": "memory", **{k: v for k, v in data.items() if k != "rows"}, "rows": data["rows"]}]


def table(runs: list[dict[str, Any]]) -> str:
    def cell(x: float | None, fmt: str) -> str:
        return "" if x is None else format(x, fmt)

    lines = [
        "# Prepare at scale (CPU)\n",
        "| path | input | rows in | rows after 5-core | users | items | read s | read+prepare s | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["rows"], r["path"])):
        src = "gzip CSV" if r["path"] == "memory" else "Parquet scan"
        lines.append(
            f"| {r['path']} | {src} | {r['rows_in']:,} | {r['rows_out']:,} | {r['users']:,} | {r['items']:,} | "
            f"{cell(r.get('read_seconds'), '.1f')} | {r['total_seconds']:.1f} | {r['peak_rss_mb'] / 1024:.2f} GiB |"
        )
    lines.append(
        "\nString ids, 8 categories, leave-last-out split, global 5-core. `memory`: `read_interactions` on a gzip "
        "CSV, then `prepare`; `streaming`: `prepare.streaming: true` on a lazy Parquet scan of the same rows "
        "(data/prepare_stream.py). Peak RSS of the child process that reads and prepares (includes the Python "
        "interpreter and imports); each row's machine and date are in prepare.json."
    )
    return "\n".join(lines)


def count(text: str) -> int:
    """'10M', '2.5k', '300000' -> an integer."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
    return int(round(float(t[:-1]) * scale[t[-1]])) if t[-1] in scale else int(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=count, nargs="+", default=[10_000_000], help="sizes: 10M 100M")
    ap.add_argument("--paths", nargs="+", choices=["memory", "streaming"], default=["memory", "streaming"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "crossrec-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runs = earlier_runs()
    for rows in args.rows:
        for path in args.paths:
            r = run(args.work, path, rows) | {"machine": machine()}
            print(json.dumps(r), flush=True)
            runs = [x for x in runs if (x["path"], x["rows"]) != (path, rows)] + [r]
            write_results("prepare", {"runs": runs}, table(runs))
    print(table(runs))


if __name__ == "__main__":
    main()
