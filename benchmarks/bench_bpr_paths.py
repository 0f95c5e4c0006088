"""BPR-MF's two CPU training paths, quality (issue 35, "fast defaults"): the default (lazy Adam on
the ID tables, exact batched steps, `training/fused.py` `adam_epoch`) against `train.fused` (row-wise
Adagrad applied occurrence by occurrence, Hogwild: the path as fast as implicit's BPR), each over a
small learning-rate grid, on the shared datasets' main protocol (pooled BPR-MF, dim 128, the
experiment's own split and training options). The fused path could become the default only where it
is equivalent in quality; this measures whether it is.

Each dataset is one `crossrec experiment` over the grid (seed 0 unless `--seeds`); with `--keep DIR`
a dataset whose run finished in DIR is read back instead of re-run.

    OMP_NUM_THREADS=1 python benchmarks/bench_bpr_paths.py [--seeds 0] [--keep DIR]
    # -> benchmarks/results/bpr_paths.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_experiment, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("anime-mal", "amazon-arts-office")
FUSED = {"sparse_optimizer": "adagrad", "fused": True}
# label -> (path, train options): the default path over lr, the fused path over its tables' lr
GRID: dict[str, tuple[str, dict]] = {
    "adam-lr001": ("default (lazy Adam)", {"lr": 0.001}),
    "adam-lr002": ("default (lazy Adam)", {"lr": 0.002}),
    "adam-lr005": ("default (lazy Adam)", {"lr": 0.005}),
    "fused-sl02": ("train.fused (row-wise Adagrad)", {**FUSED, "sparse_lr": 0.02}),
    "fused-sl05": ("train.fused (row-wise Adagrad)", {**FUSED, "sparse_lr": 0.05}),
    "fused-sl10": ("train.fused (row-wise Adagrad)", {**FUSED, "sparse_lr": 0.1}),
    "fused-sl20": ("train.fused (row-wise Adagrad)", {**FUSED, "sparse_lr": 0.2}),
}


def config(dataset: str, bundle: Path) -> str:
    """The dataset's experiment YAML with its models replaced by the grid (flow style, one a line)."""
    text = (ROOT / "configs" / "experiments" / f"{dataset}.yaml").read_text()
    lines = [text[: text.index("models:")].replace(f"bundle: runs/experiments/{dataset}/bundle", f"bundle: {bundle}")]
    lines.append("models:\n  - {label: pop, name: pop, single_category: true}")
    for label, (_, train) in GRID.items():
        lines.append(f"  - {{label: {label}, name: mf, dim: 128, train: {json.dumps(train)}}}")
    return "\n".join(lines) + "\n"


def run(dataset: str, seeds: list[int], work: Path) -> dict:
    cfg = work / f"{dataset}-bpr-paths.yaml"
    if not (work / dataset / "results.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        cfg.write_text(config(dataset, work / f"{dataset}-bundle"))
    return run_experiment(cfg, work / dataset, f"--seeds={json.dumps(seeds)}", cwd=ROOT)


def cells(res: dict) -> dict[str, dict[str, float]]:
    """label -> {'all', 'new'}: test NDCG@10 on the ALL rows, mean over the seeds."""
    out: dict[str, dict[str, float]] = {}
    for r in res["summary"]:
        if r["category"] == "ALL" and r["slice"] in ("all", "new_to_category"):
            out.setdefault(r["model"], {})["all" if r["slice"] == "all" else "new"] = float(r["ndcg@10"])
    return out


def markdown(res: dict) -> str:
    lines = [
        "# BPR-MF's training paths: quality (benchmarks/bench_bpr_paths.py)",
        "",
        f"Pooled BPR-MF (dim 128) on each shared dataset's main protocol, seeds {res['seeds']}; test NDCG@10, "
        "all users / users new to a category. `default`: lazy Adam on the ID tables, exact batched steps, "
        "over `train.lr`; `fused`: `train.fused: true` with `train.sparse_optimizer: adagrad`, over "
        "`train.sparse_lr`. The best of each path is the best on test (the same favour for both).",
        "",
        "| dataset | label | path | options | NDCG@10 all | new to a category |",
        "|---|---|---|---|---:|---:|",
    ]
    for row in res["rows"]:
        for label, (path, train) in GRID.items():
            c = row["cells"].get(label, {})
            opts = ", ".join(f"{k}={v}" for k, v in train.items() if k in ("lr", "sparse_lr"))
            lines.append(
                f"| {row['dataset']} | {label} | {path} | {opts} | {c.get('all', float('nan')):.4f} | "
                f"{c.get('new', float('nan')):.4f} |"
            )
    lines += ["", "| dataset | best default | best fused | fused vs default, all users |", "|---|---|---|---:|"]
    for row in res["rows"]:
        b = row["best"]
        lines.append(
            f"| {row['dataset']} | {b['default']} {b['default_all']:.4f} | {b['fused']} {b['fused_all']:.4f} | "
            f"{b['delta_pct']:+.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--keep", help="a folder for the runs, kept (a finished dataset is read back)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-bpr-paths-") as t:
        work = Path(args.keep).resolve() if args.keep else Path(t)
        for ds in args.datasets:
            got = cells(run(ds, args.seeds, work))
            best: dict = {}
            for family in ("adam", "fused"):
                label = max((k for k in got if k.startswith(family)), key=lambda k: got[k]["all"])
                key = "default" if family == "adam" else "fused"
                best[key], best[f"{key}_all"] = label, got[label]["all"]
            best["delta_pct"] = (best["fused_all"] - best["default_all"]) / best["default_all"] * 100
            rows.append({"dataset": ds, "cells": got, "best": best})
            print(ds, best, flush=True)
    res = {"seeds": args.seeds, "grid": {k: {"path": p, "train": t} for k, (p, t) in GRID.items()}, "rows": rows}
    write_results("bpr_paths", res, markdown(res))


if __name__ == "__main__":
    main()
