"""Speed on CPU: full-ranking evaluation of 50k users x 50k items, and one BPR-MF epoch over 1M
interactions, next to implicit's BPR (PyPI `implicit`) on the same data in the same run.

Data: 50,000 users x 50,000 items in one category, 20 training interactions per user drawn from a
Zipf-like popularity (1,000,000 in all) + 1 test item per user; leave-last-out.

    python benchmarks/bench_speed.py [--users 50000 --items 50000 --per-user 21]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.data.prepare import PrepareConfig, prepare  # noqa: E402
from crossrec.evaluation.evaluator import EvalConfig, Evaluator  # noqa: E402
from crossrec.models.mf import MF, MFConfig  # noqa: E402
from crossrec.training.trainer import TrainConfig, Trainer  # noqa: E402


def make_bundle(n_users: int, n_items: int, per_user: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    items = rng.choice(n_items, size=(n_users, per_user * 2), p=pop)
    # keep the first `per_user` distinct items per user (vectorised: sort + first-occurrence mask)
    order = np.argsort(items, axis=1, kind="stable")
    srt = np.take_along_axis(items, order, 1)
    first = np.ones_like(srt, dtype=bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    keep_pos = np.where(first, order, items.shape[1] + 1)
    rank = np.argsort(np.argsort(keep_pos, axis=1), axis=1)
    mask = first[np.arange(n_users)[:, None], np.argsort(order, axis=1)] & (rank < per_user)
    u = np.repeat(np.arange(n_users), items.shape[1]).reshape(items.shape)[mask]
    i = items[mask]
    t = np.tile(np.arange(items.shape[1]), (n_users, 1))[mask]
    df = pl.DataFrame({
        "user": u.astype(str), "item": i.astype(str), "category": ["all"] * len(u), "timestamp": t.astype(np.int64),
    })
    return prepare(df, None, PrepareConfig(valid=False, dedupe="none"))


def bench_eval(bundle, dim: int, repeats: int = 2) -> dict:
    torch.manual_seed(0)
    model = MF(MFConfig(dim=dim), Sizes.from_bundle(bundle)).eval()
    ev = Evaluator(bundle, EvalConfig(ks=(10, 20), batch_size=1024, slices=False), split="test")
    ev.evaluate(model)  # warm-up (CSR caches, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ev.evaluate(model)
        times.append(time.perf_counter() - t)
    n_units = bundle.split("test").select("user").n_unique()
    return {"seconds": min(times), "users": n_units, "items": bundle.n_items, "users_per_s": n_units / min(times)}


def bench_bpr_epoch(bundle, dim: int, batch_size: int) -> dict:
    torch.manual_seed(0)
    model = MF(MFConfig(dim=dim, loss="bpr"), Sizes.from_bundle(bundle))
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, progress=False, checkpoint=False)
    t = time.perf_counter()
    Trainer(cfg).fit(model, bundle)
    return {"seconds": time.perf_counter() - t, "interactions": bundle.split("train").height, "batch_size": batch_size}


def bench_implicit(bundle, dim: int) -> dict:
    try:
        from implicit.cpu.bpr import BayesianPersonalizedRanking
        from threadpoolctl import threadpool_limits
    except ImportError as e:  # pragma: no cover
        return {"error": f"implicit not installed: {e}"}
    x = bundle.csr("train").tocsr()
    model = BayesianPersonalizedRanking(factors=dim, iterations=1, random_state=0)
    with threadpool_limits(1, "blas"):
        t = time.perf_counter()
        model.fit(x, show_progress=False)
        sec = time.perf_counter() - t
    return {"seconds": sec, "interactions": int(x.nnz), "threads": model.num_threads or torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--per-user", type=int, default=22)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    t = time.perf_counter()
    bundle = make_bundle(args.users, args.items, args.per_user)
    build_s = time.perf_counter() - t
    ev = bench_eval(bundle, args.dim)
    ours = {bs: bench_bpr_epoch(bundle, args.dim, bs) for bs in (1024, 8192)}
    imp = bench_implicit(bundle, args.dim)
    best = min(r["seconds"] for r in ours.values())
    ratio = best / imp["seconds"] if "seconds" in imp else None
    data = {"setup": vars(args) | {"prepare_seconds": build_s}, "eval_full_ranking": ev,
            "bprmf_epoch": {str(k): v for k, v in ours.items()}, "implicit_bpr_epoch": imp, "ratio_ours_over_implicit": ratio}
    md = [
        "# Speed (CPU)\n",
        f"Data: {args.users:,} users x {args.items:,} items, {ours[1024]['interactions']:,} training interactions "
        f"(Zipf-like popularity), dim {args.dim}, {torch.get_num_threads()} torch threads.\n",
        "| what | seconds | notes |", "|---|---:|---|",
        f"| full-ranking evaluation, {ev['users']:,} users x {ev['items']:,} items (K=10,20) | {ev['seconds']:.2f} | {ev['users_per_s']:,.0f} users/s |",
    ]
    for bs, r in ours.items():
        md.append(f"| crossrec BPR-MF, one epoch, batch {bs} | {r['seconds']:.2f} | {r['interactions'] / r['seconds']:,.0f} interactions/s |")
    if "seconds" in imp:
        md.append(f"| implicit BPR (Cython, Hogwild), one epoch | {imp['seconds']:.2f} | {imp['interactions'] / imp['seconds']:,.0f} interactions/s |")
        md.append(f"\ncrossrec / implicit epoch-time ratio: **{ratio:.1f}x** (best batch size).")
    else:
        md.append(f"\nimplicit: {imp['error']}")
    write_results("speed", data, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
