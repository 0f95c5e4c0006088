"""Scale quality: the flagship trained to early stopping on a synthetic log of N interactions over 50
categories (data/scale_world.py; users N/10, items N/50) against a pooled iALS tuned by a grid on
the same validation split, on the same machine. Each step runs in its own process, so its peak RSS
is its own: generate, prepare, each iALS grid point (fit + full validation), the chosen iALS point
(refit + test), the flagship (train to early stopping, validating on a fixed user sample each
epoch, then full validation and test).

    python benchmarks/bench_scale_quality.py --size 300k --grid wide
    python benchmarks/bench_scale_quality.py --size 10M --grid narrow --only ials   # the grid first
    python benchmarks/bench_scale_quality.py --size 10M --grid narrow               # then the flagship
    # writes benchmarks/results/scale_quality_<N>.{json,md}

Every finished step is stored under --root (<root>/<N>/steps/), and a rerun reuses it: a long run
that stopped resumes, and the flagship can run once the machine is quiet (its seconds are a target).

The flagship's validation during training uses `train.valid_users` (a seeded user sample); the
figures compared here are the full validation and test splits, the same evaluator for both models.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import count  # noqa: E402
from common import write_results  # noqa: E402

STEP = r"""
import json, resource, sys, time
from pathlib import Path
step, root, n, spec = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
out = {}
t = time.perf_counter()
if step == "generate":
    from crossrec.data.scale_world import ScaleConfig, write_scale
    out["rows"] = write_scale(root / "raw", ScaleConfig(interactions=n, categories=50))[2]
elif step == "prepare":
    import polars as pl
    from crossrec.data.prepare import PrepareConfig, prepare
    inter = pl.scan_parquet(root / "raw" / "interactions.parquet")
    items = pl.read_parquet(root / "raw" / "items.parquet")
    b = prepare(inter, items, PrepareConfig(split="leave_last_out", valid=True), root / "bundle")
    out["users"], out["items"], out["interactions"] = b.n_users, b.n_items, int(b.interactions.height)
else:
    import torch
    from crossrec.data.batch import Sizes
    from crossrec.data.bundle import Bundle
    from crossrec.evaluation.config import EvalConfig
    from crossrec.evaluation.evaluator import Evaluator
    from crossrec.models.per_category import build
    from crossrec.training.trainer import TrainConfig, Trainer
    bundle = Bundle.load(root / "bundle")
    torch.manual_seed(0)
    model = build(spec["name"], "pooled", spec["params"], Sizes.from_bundle(bundle))
    cfg = TrainConfig(progress=False, checkpoint=False, seed=0, **spec.get("train", {}))
    res = Trainer(cfg).fit(model, bundle)
    out["fit_seconds"] = time.perf_counter() - t
    out["epochs"] = len(res.history)
    out["history"] = res.history
    ev = EvalConfig(ks=(10,), auc=False, beyond=False)
    for split in spec["splits"]:
        t1 = time.perf_counter()
        table = Evaluator(bundle, ev, split=split).evaluate(model).table
        row = table.filter((table["category"] == "ALL") & (table["slice"] == "all")).row(0, named=True)
        out[split] = {k: row[k] for k in ("ndcg@10", "recall@10", "n_users")}
        out[f"{split}_eval_seconds"] = time.perf_counter() - t1
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["load_avg_15min"] = __import__("os").getloadavg()[2]  # > cores: the step shared the machine
print(json.dumps(out, default=str))
"""

GRIDS = {
    # 27 points: the search at small N
    "wide": {"factors": [64, 128, 256], "regularization": [0.1, 1.0, 10.0], "alpha": [1.0, 10.0, 40.0]},
    # 6 points around the wide grid's choice at 300k (256 factors, regularization 10, alpha 10), for
    # large N where one fit takes minutes (the log keeps its per-user and per-item density at every N)
    "narrow": {"factors": [128, 256], "regularization": [3.0, 10.0, 30.0], "alpha": [10.0]},
}
FLAGSHIP = {
    "name": "crossrec",
    "params": {"dim": 64},
    # the shared-dataset experiments' settings (configs/experiments/*.yaml), plus a validation sample
    "train": {"epochs": 30, "batch_size": 2048, "n_negatives": 4, "lr": 0.002, "patience": 2, "valid_users": 20000},
}


def step(name: str, root: Path, n: int, spec: dict[str, Any] | None = None, key: str | None = None) -> dict[str, Any]:
    """Run one step in its own process, or reuse its stored result (root/steps/<key>.json), so a
    long run that stopped resumes where it was."""
    done = root / "steps" / f"{key or name}.json"
    if done.exists():
        return json.loads(done.read_text())
    p = subprocess.run(
        [sys.executable, "-c", STEP, name, str(root), str(n), json.dumps(spec or {})], capture_output=True, text=True
    )
    if p.returncode != 0:
        raise SystemExit(f"{name}: {p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(name, {k: v for k, v in res.items() if k != "history"}, flush=True)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(res))
    return res


def run(n: int, root: Path, grid: str, only: str | None) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"size": n}
    res["generate"] = step("generate", root, n)
    res["prepare"] = step("prepare", root, n)
    g = GRIDS[grid]
    res["grid"] = {"name": grid, "values": g}
    points = [dict(zip(g, v)) for v in itertools.product(*g.values())]
    res["ials_grid"] = [
        {"point": p}
        | step(
            "ials",
            root,
            n,
            {"name": "ials", "params": p, "splits": ["valid"]},
            f"ials-{json.dumps(p, sort_keys=True)}",
        )
        for p in points
    ]
    best = max(res["ials_grid"], key=lambda r: r["valid"]["ndcg@10"])["point"]
    spec = {"name": "ials", "params": best, "splits": ["test"]}
    res["ials"] = {"point": best} | step("ials", root, n, spec, f"ials-test-{json.dumps(best, sort_keys=True)}")
    res["ials"]["valid"] = max(r["valid"]["ndcg@10"] for r in res["ials_grid"])
    if only != "ials":
        res["flagship"] = step("flagship", root, n, FLAGSHIP | {"splits": ["valid", "test"]})
    return res


def markdown(res: dict[str, Any]) -> str:
    n, f = res["size"], res.get("flagship")
    lines = [
        f"# Scale quality, N={n:,} (benchmarks/bench_scale_quality.py)",
        "",
        "Synthetic log over 50 categories (users N/10, items N/50), leave-last-out split; full-ranking NDCG@10",
        "over every user of the split. Each row is its own process (seconds and peak RSS are its own).",
        "",
        "| model | valid NDCG@10 | test NDCG@10 | epochs | seconds | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if "ials" in res:
        i = res["ials"]
        grid_s = sum(r["seconds"] for r in res["ials_grid"])
        lines.append(
            f"| iALS, tuned ({len(res['ials_grid'])}-point {res['grid']['name']} grid, {grid_s:.0f} s; chose {i['point']}) "
            f"| {i['valid']:.4f} | {i['test']['ndcg@10']:.4f} | — | {i['seconds']:.0f} | {i['peak_rss_mb'] / 1024:.2f} |"
        )
    if f is None:
        return "\n".join(lines)
    lines.append(
        f"| crossrec flagship (to early stopping) | {f['valid']['ndcg@10']:.4f} | {f['test']['ndcg@10']:.4f} "
        f"| {f['epochs']} | {f['seconds']:.0f} | {f['peak_rss_mb'] / 1024:.2f} |"
    )
    hist = f["history"]
    train_s = [h.get("train_seconds") for h in hist if h.get("train_seconds") is not None]
    if train_s:
        lines += [
            "",
            f"Flagship training steps per epoch: {min(train_s):.0f}-{max(train_s):.0f} s over {len(hist)} epochs.",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1M")
    ap.add_argument("--root", default="/tmp/scale-quality", help="where the log and bundle go (reused if there)")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="wide", help="the iALS grid (see GRIDS)")
    ap.add_argument(
        "--only", choices=["ials"], help="only generate, prepare and the iALS grid (a later full run reuses them)"
    )
    args = ap.parse_args()
    n = count(args.size)
    t = time.perf_counter()
    res = run(n, Path(args.root) / str(n), args.grid, args.only)
    res["total_seconds"] = time.perf_counter() - t
    if args.only != "ials":
        write_results(f"scale_quality_{n}", res, markdown(res))


if __name__ == "__main__":
    main()
