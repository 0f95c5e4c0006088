"""Sharded vs replicated flagship quality (issue 36): the same flagship trained by 2 gloo processes
on amazon-arts-office, replicated (`train.sharding: none`) with seeds 0 and 1, and with its user
tables column-sharded on TorchRec (seed 0); test NDCG@10 of each artifact (full ranking). Row-wise
Adagrad on the ID tables (sparse lr 0.05) in every run: the optimiser a sharded fit needs on CPU.

    python benchmarks/bench_sharding_quality.py   # writes results/sharding_quality.{json,md}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("none", 0), ("column", 0), ("none", 1)]


def config(tmp: Path, data: Path) -> Path:
    cfg = {
        "data": {"dataset": "amazon-arts-office", "root": str(data), "bundle": str(tmp / "bundle")},
        "prepare": {"split": "leave_last_out", "cold_user_fraction": 0.2, "cold_user_valid_fraction": 0.1},
        "model": {"name": "crossrec", "mode": "pooled", "dim": 64},
        "train": {
            "epochs": 40,
            "batch_size": 2048,
            "n_negatives": 4,
            "lr": 0.002,
            "patience": 3,
            "progress": False,
            "sparse_optimizer": "adagrad",
            "sparse_lr": 0.05,
        },
        "out": str(tmp / "out"),
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cell(table: dict, slice_: str) -> float:
    return next(r["ndcg@10"] for r in table["rows"] if r["category"] == "ALL" and r["slice"] == slice_)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "amazon-arts-office"))
    args = ap.parse_args()
    crossrec = [sys.executable, "-m", "crossrec.cli"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sharding-quality-") as t:
        tmp = Path(t)
        cfg = config(tmp, Path(args.data))
        subprocess.run([*crossrec, "prepare", str(cfg)], check=True, capture_output=True)
        for mode, seed in RUNS:
            out = tmp / f"{mode}-{seed}"
            train = [*crossrec, "train", str(cfg), "--nproc", "2", f"--train.sharding={mode}", f"--train.seed={seed}"]
            subprocess.run([*train, f"--out={out}"], check=True, capture_output=True)
            subprocess.run(
                [*crossrec, "evaluate", str(cfg), f"--out={out}", f"--json={out}.json"], check=True, capture_output=True
            )
            table = json.loads(Path(f"{out}.json").read_text())
            result = json.loads((out / "config.json").read_text())["train_result"]["all"]
            row = {
                "sharding": mode,
                "seed": seed,
                "plan": result.get("sharding", {}),
                "ndcg@10": cell(table, "all"),
                "ndcg@10_new_to_category": cell(table, "new_to_category"),
                "epochs_run": result["epochs_run"],
                "best_epoch": result["best_epoch"],
            }
            print(row, flush=True)
            rows.append(row)
    res = {"dataset": "amazon-arts-office", "processes": 2, "rows": rows}
    lines = [
        "# Sharded vs replicated flagship, amazon-arts-office (benchmarks/bench_sharding_quality.py)",
        "",
        "2 gloo processes, flagship d = 64, row-wise Adagrad on the ID tables (sparse lr 0.05); test "
        "NDCG@10, full ranking, all users and users new to a category. `none`: replicated; `column`: "
        "the user tables sharded on TorchRec. Two replicated seeds give the run-to-run spread.",
        "",
        "| sharding | seed | NDCG@10 | new to a category | epochs (best) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sharding']} | {r['seed']} | {r['ndcg@10']:.4f} | {r['ndcg@10_new_to_category']:.4f} | "
            f"{r['epochs_run']} ({r['best_epoch']}) |"
        )
    write_results("sharding_quality", res, "\n".join(lines))


if __name__ == "__main__":
    main()
