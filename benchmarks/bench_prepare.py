"""Prepare at scale: 10M interactions from a gzip CSV -> Bundle, with peak memory (max RSS).

Generates the CSV once (cached under runs/bench/), then runs read + prepare in a child process and
reads its peak resident memory from the kernel (getrusage of children), so the figure covers
everything prepare holds at once.

    python benchmarks/bench_prepare.py [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

CHILD = """
import json, sys, time
from crossrec.data.readers import read_interactions
from crossrec.data.schema import ColumnMap
from crossrec.data.prepare import PrepareConfig, prepare
t = time.perf_counter()
df = read_interactions(sys.argv[1], ColumnMap(timestamp="timestamp"))
t_read = time.perf_counter() - t
b = prepare(df, None, PrepareConfig(k_core=5), sys.argv[2], sources=[sys.argv[1]])
print(json.dumps({"read_seconds": t_read, "total_seconds": time.perf_counter() - t,
                  "rows_in": df.height, "rows_out": b.interactions.height,
                  "users": b.n_users, "items": b.n_items}))
"""


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Zipf-like items over 8 categories, ~1M users; written in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    n_users, n_items, chunk = max(rows // 10, 1), max(rows // 50, 1), 2_000_000
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    cdf = np.cumsum(pop / pop.sum())
    cats = np.array(["books", "music", "movies", "garden", "toys", "kitchen", "beauty", "sports"])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw:
        import gzip

        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as f:
            header = True
            for start in range(0, rows, chunk):
                n = min(chunk, rows - start)
                items = np.searchsorted(cdf, rng.random(n))
                df = pl.DataFrame(
                    {
                        "user_id": rng.integers(0, n_users, n).astype(str),
                        "item_id": items.astype(str),
                        "category": cats[items % len(cats)],
                        "timestamp": rng.integers(1_500_000_000, 1_700_000_000, n),
                    }
                )
                df.write_csv(f, include_header=header)
                header = False
    tmp.rename(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    csv = args.work / f"interactions_{args.rows}.csv.gz"
    if not csv.exists():
        t = time.perf_counter()
        make_csv(csv, args.rows)
        print(f"generated {csv} in {time.perf_counter() - t:.0f}s")
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(csv), str(args.work / "bundle_10m")], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    data = {
        "rows": args.rows,
        "csv_mb": csv.stat().st_size / 2**20,
        "peak_rss_mb": peak_mb,
        "wall_seconds": wall,
        **stats,
    }
    md = "\n".join(
        [
            "# Prepare at scale (CPU)\n",
            "| rows in | rows after 5-core | users | items | read s | read+prepare s | peak RSS |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {stats['rows_in']:,} | {stats['rows_out']:,} | {stats['users']:,} | {stats['items']:,} | "
            f"{stats['read_seconds']:.1f} | {stats['total_seconds']:.1f} | {peak_mb / 1024:.2f} GiB |",
            "\nGzip CSV with string ids, 8 categories, leave-last-out split, global 5-core; peak RSS of the child "
            "process that reads and prepares (includes the Python interpreter and imports).",
        ]
    )
    write_results("prepare", data, md)
    print(md)


if __name__ == "__main__":
    main()
