"""Where one BPR-MF training epoch's time goes (cProfile, by own time), before and after the
row-block sparse optimiser (`RowAdam`) replaced `torch.optim.SparseAdam`.

Same data as bench_speed.py: 50,000 users x 50,000 items, about 1M training interactions, dim 64,
batch 8192, one torch thread. Writes benchmarks/results/profile.{json,md}.

    python benchmarks/bench_profile.py [--users 50000 --items 50000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import bench_bpr_epoch, make_bundle  # noqa: E402
from common import write_results  # noqa: E402

import crossrec.training.optim as optim  # noqa: E402


def profiled_epoch(bundle, dim: int, batch: int, top: int = 8) -> dict:
    bench_bpr_epoch(bundle, dim, batch)  # warm-up
    t = time.perf_counter()
    bench_bpr_epoch(bundle, dim, batch)
    wall = time.perf_counter() - t
    prof = cProfile.Profile()
    prof.enable()
    bench_bpr_epoch(bundle, dim, batch)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # own time of everything
    rows = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}" if k[0] != "~" else k[2]) for k, v in stats.stats.items()), reverse=True)
    return {"seconds": wall, "profiled_seconds": total,
            "top": [{"what": name, "seconds": sec, "share": sec / total} for sec, name in rows[:top]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--per-user", type=int, default=22)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8192)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = make_bundle(args.users, args.items, args.per_user)
    row_adam = optim.RowAdam
    optim.RowAdam = lambda params, lr: torch.optim.SparseAdam(params, lr=lr)  # type: ignore[assignment,misc]
    before = profiled_epoch(bundle, args.dim, args.batch)
    optim.RowAdam = row_adam  # type: ignore[misc]
    after = profiled_epoch(bundle, args.dim, args.batch)
    md = ["# Profile: one BPR-MF epoch (CPU)\n",
          f"{bundle.split('train').height:,} training interactions, {args.users:,} users x {args.items:,} items, "
          f"dim {args.dim}, batch {args.batch}, 1 torch thread, cProfile own time (top entries).\n",
          f"Epoch wall time: **{before['seconds']:.2f} s** with torch.optim.SparseAdam, "
          f"**{after['seconds']:.2f} s** with RowAdam ({before['seconds'] / after['seconds']:.2f}x).\n"]
    for name, r in (("torch.optim.SparseAdam (before)", before), ("RowAdam (after)", after)):
        md += [f"## {name}\n", "| own time of | seconds | share |", "|---|---:|---:|"]
        md += [f"| `{x['what']}` | {x['seconds']:.2f} | {x['share']:.0%} |" for x in r["top"]]
        md.append("")
    write_results("profile", {"setup": vars(args), "sparse_adam": before, "row_adam": after}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
