"""Where one BPR-MF training epoch's time goes (cProfile, by own time), stage by stage: autograd
with `torch.optim.SparseAdam`, autograd with `RowAdam` on tensor ops, hand-written BPR gradients
with it, with `RowAdam` as one compiled kernel per table (the default), with row-wise Adagrad, and
`train.fused`; then the flagship's training step by op (torch.profiler), with and without the
compiled kernels.

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
import crossrec.training.optim as optim  # noqa: E402
from bench_speed import make_bundle  # noqa: E402
from common import SHARED_DATA, write_results  # noqa: E402
from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.models.mf import MF, MFConfig  # noqa: E402
from crossrec.training.trainer import TrainConfig, Trainer  # noqa: E402


def one_epoch(bundle, dim: int, batch: int, options: dict | None = None) -> float:
    """Seconds of one BPR-MF training epoch (model set-up excluded)."""
    torch.manual_seed(0)
    model = MF(MFConfig(dim=dim), Sizes.from_bundle(bundle))
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, progress=False, checkpoint=False, **(options or {}))
    return Trainer(cfg).fit(model, bundle).history[0]["train_seconds"]


def profiled_epoch(bundle, dim: int, batch: int, options: dict | None = None, top: int = 8) -> dict:
    one_epoch(bundle, dim, batch, options)  # warm-up
    wall = min(one_epoch(bundle, dim, batch, options) for _ in range(2))
    prof = cProfile.Profile()
    prof.enable()
    one_epoch(bundle, dim, batch, options)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # own time of everything
    rows = sorted(
        ((v[2], f"{Path(k[0]).name}:{k[2]}" if k[0] != "~" else k[2]) for k, v in stats.stats.items()), reverse=True
    )
    return {
        "seconds": wall,
        "profiled_seconds": total,
        "top": [{"what": name, "seconds": sec, "share": sec / total} for sec, name in rows[:top]],
    }


def flagship_ops(top: int = 12, batches: int = 10, compiled: bool = True) -> dict | None:
    """torch.profiler self time by op over `batches` flagship training steps on amazon-arts-office;
    `compiled=False`: every compiled kernel off (the tensor path, as before them)."""
    if not (SHARED_DATA / "amazon-arts-office").exists():
        return None
    from torch.profiler import profile

    from bench_flagship import load_bundle
    from crossrec.data.sampling import TrainSampler
    from crossrec.models.per_category import build
    from crossrec.training.optim import Optimizers

    _, bundle = load_bundle()
    torch.manual_seed(0)
    model = build("crossrec", "pooled", {"dim": 64}, Sizes.from_bundle(bundle))
    model.setup(bundle, None)
    opts = Optimizers(model, TrainConfig(batch_size=2048, n_negatives=4, lr=1e-3))
    model.compiled = model.encoder.compiled = model.neighbours.compiled = opts.sparse.compiled = compiled
    sampler = TrainSampler(bundle, 2048, 4, seed=0)
    todo = [b for _, b in zip(range(batches + 2), sampler)]
    model.train()

    def step(b):
        loss = model.loss(b)
        opts.zero_grad()
        loss.backward()
        opts.step()

    for b in todo[:2]:
        step(b)
    t = time.perf_counter()
    with profile() as prof:
        for b in todo[2:]:
            step(b)
    wall = time.perf_counter() - t
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    return {
        "batches": batches,
        "seconds_per_batch": wall / batches,
        "batches_per_epoch": len(sampler),
        "top": [
            {"what": e.key, "calls_per_batch": e.count / batches, "share": e.self_cpu_time_total / total}
            for e in ev[:top]
        ],
    }


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
    stages = {}
    hand = MF.manual_backward
    row_adam = optim.RowAdam
    MF.manual_backward = lambda self, batch: None  # type: ignore[method-assign]  # autograd, as before
    optim.RowAdam = lambda params, lr: torch.optim.SparseAdam(params, lr=lr)  # type: ignore[assignment,misc]
    stages["autograd + torch.optim.SparseAdam"] = profiled_epoch(bundle, args.dim, args.batch)

    def tensor_row_adam(params, lr):  # RowAdam on tensor ops (before kernels/optim.py)
        opt = row_adam(params, lr=lr)
        opt.compiled = False
        return opt

    optim.RowAdam = tensor_row_adam  # type: ignore[assignment,misc]
    stages["autograd + RowAdam on tensor ops"] = profiled_epoch(bundle, args.dim, args.batch)
    MF.manual_backward = hand  # type: ignore[method-assign]
    stages["hand-written gradients + RowAdam on tensor ops"] = profiled_epoch(bundle, args.dim, args.batch)
    optim.RowAdam = row_adam  # type: ignore[misc]
    stages["hand-written gradients + RowAdam, one compiled kernel per table (default)"] = profiled_epoch(
        bundle, args.dim, args.batch
    )
    stages["hand-written gradients + row-wise Adagrad"] = profiled_epoch(
        bundle, args.dim, args.batch, {"sparse_optimizer": "adagrad", "sparse_lr": 0.05}
    )
    fused = {"sparse_optimizer": "adagrad", "sparse_lr": 0.02, "fused": True}
    one_epoch(bundle, args.dim, args.batch, fused)  # compile (or load) the kernel outside the profile
    stages["`train.fused`: one compiled kernel per batch (row-wise Adagrad)"] = profiled_epoch(
        bundle, args.dim, args.batch, fused
    )
    flag = flagship_ops()
    flag_tensor = flagship_ops(compiled=False)
    base = next(iter(stages.values()))["seconds"]
    md = [
        "# Profile: one BPR-MF epoch, and the flagship's training step (CPU)\n",
        f"{bundle.split('train').height:,} training interactions, {args.users:,} users x {args.items:,} items, "
        f"dim {args.dim}, batch {args.batch}, 1 torch thread, cProfile own time (top entries). Every stage "
        "uses today's sampler (one-probe bit filter before the binary search of the seen-item check).\n",
        "| stage | epoch seconds | x first |",
        "|---|---:|---:|",
    ]
    md += [f"| {name} | {r['seconds']:.2f} | {base / r['seconds']:.2f}x |" for name, r in stages.items()]
    md.append("")
    for name, r in stages.items():
        md += [f"## {name}\n", "| own time of | seconds | share |", "|---|---:|---:|"]
        md += [f"| `{x['what']}` | {x['seconds']:.2f} | {x['share']:.0%} |" for x in r["top"]]
        md.append("")
    if flag is not None and flag_tensor is not None:
        md += [
            "## The flagship's training step (amazon-arts-office, batch 2048, 1 thread)\n",
            f"{flag['seconds_per_batch']:.3f} s per batch with the compiled kernels (crossrec/kernels/: "
            f"neighbourhood term, history attention, in-batch softmax logits, RowAdam), "
            f"{flag_tensor['seconds_per_batch']:.3f} s on tensor ops alone "
            f"({flag_tensor['seconds_per_batch'] / flag['seconds_per_batch']:.2f}x); "
            f"{flag['batches_per_epoch']} batches per epoch; torch.profiler self time by op, with the kernels:\n",
            "| op | calls per batch | share |",
            "|---|---:|---:|",
        ]
        md += [f"| `{x['what']}` | {x['calls_per_batch']:.0f} | {x['share']:.0%} |" for x in flag["top"]]
    write_results(
        "profile",
        {"setup": vars(args), "stages": stages, "flagship": flag, "flagship_tensor_ops": flag_tensor},
        "\n".join(md),
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
