"""One training epoch of the flagship (`crossrec`) against one BPR-MF epoch on the same data.

Both run the trainer's step (its sampler; `manual_backward` where the model has one, else `loss` and
backward; the optimiser step; no validation) with
the same batch size and negatives, on amazon-arts-office from ../shared/data (leave-last-out) when
it is there, else on the synthetic world. The flagship is timed with its default attention encoder
(L_transfer off), with L_transfer on (alpha=0.1), and with the transformer encoder.

    python benchmarks/bench_flagship.py [--batch-size 2048 --dim 64 --repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, write_results  # noqa: E402
from crossrec.data.batch import Sizes  # noqa: E402
from crossrec.data.prepare import PrepareConfig, prepare  # noqa: E402
from crossrec.data.sampling import TrainSampler  # noqa: E402
from crossrec.models.per_category import build  # noqa: E402
from crossrec.training.optim import Optimizers  # noqa: E402
from crossrec.training.trainer import TrainConfig  # noqa: E402


def load_bundle():
    if (SHARED_DATA / "amazon-arts-office").exists():
        from crossrec.data.datasets import read_dataset

        raw = read_dataset("amazon-arts-office", SHARED_DATA / "amazon-arts-office")
        return "amazon-arts-office", prepare(raw.interactions, raw.items, PrepareConfig(split="leave_last_out"))
    from crossrec.data.synthetic import SyntheticConfig, generate

    inter, items = generate(SyntheticConfig(seed=0))
    return "synthetic", prepare(inter, items, PrepareConfig())


def epoch_seconds(
    name: str, params: dict, bundle, batch_size: int, n_neg: int, repeats: int, tensor_path: bool = False
) -> float:
    """Best epoch time of `repeats`; `tensor_path`: every compiled kernel off (crossrec/kernels/:
    the flagship's neighbourhood term, attention and softmax logits, and RowAdam), CUDA's path."""
    torch.manual_seed(0)
    model = build(name, "pooled", params, Sizes.from_bundle(bundle))
    if hasattr(model, "setup"):
        model.setup(bundle, None)
    cfg = TrainConfig(batch_size=batch_size, n_negatives=n_neg, lr=1e-3)
    opts = Optimizers(model, cfg)
    if tensor_path:
        for part in (model, getattr(model, "encoder", None), getattr(model, "neighbours", None), opts.sparse):
            if part is not None and hasattr(part, "compiled"):
                part.compiled = False
    sampler = TrainSampler(bundle, batch_size, n_neg, seed=0)
    model.train()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        manual = getattr(model, "manual_backward", None)  # as the trainer: BPR-MF's hand-written gradients
        for batch in sampler:
            opts.zero_grad()
            if manual is None or manual(batch) is None:
                model.loss(batch).backward()
            opts.step()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--baselines",
        action="store_true",
        help="also time the published cross-domain baselines (EMCDR, BiTGCF, CoNet; experiment options)",
    )
    args = ap.parse_args()
    data, bundle = load_bundle()
    n = bundle.split("train").height
    d = args.dim
    tensor_ops = ("BPR-MF (mf), RowAdam on tensor ops", "crossrec, default, on tensor ops (every compiled kernel off)")
    runs = {
        "BPR-MF (mf)": ("mf", {"dim": d}),
        tensor_ops[0]: ("mf", {"dim": d}),
        "crossrec, default (attention encoder + neighbourhood term, k=50)": ("crossrec", {"dim": d}),
        tensor_ops[1]: ("crossrec", {"dim": d}),
        "crossrec, without the neighbourhood term (neighbourhood.k=0)": (
            "crossrec",
            {"dim": d, "neighbourhood": {"k": 0}},
        ),
        "crossrec, attention, with L_transfer (alpha=0.1)": ("crossrec", {"dim": d, "objective": {"alpha": 0.1}}),
        "crossrec, transformer encoder (1 block)": ("crossrec", {"dim": d, "history": {"encoder": "transformer"}}),
    }
    if args.baselines:
        runs |= {
            "EMCDR (dim 64)": ("emcdr", {"dim": d}),
            "BiTGCF (dim 64, transfer: count)": ("bitgcf", {"dim": d, "transfer": "count"}),
            "CoNet (dim 32)": ("conet", {"dim": 32}),
        }
    results = {}
    for label, (name, params) in runs.items():
        sec = epoch_seconds(name, params, bundle, args.batch_size, args.negatives, args.repeats, label in tensor_ops)
        results[label] = {"model": name, "params": params, "seconds": sec, "interactions_per_s": n / sec}
        print(f"{label}: {sec:.2f}s", flush=True)
    base = results["BPR-MF (mf)"]["seconds"]
    md = [
        "# Flagship epoch vs BPR-MF epoch (CPU)\n",
        f"Data: {data}, {bundle.n_users:,} users, {bundle.n_items:,} items, {n:,} training interactions; "
        f"batch {args.batch_size}, {args.negatives} negatives, dim {d}, {torch.get_num_threads()} torch thread(s); "
        f"best of {args.repeats} epochs, no validation.\n",
        "| model | seconds / epoch | interactions/s | x BPR-MF |",
        "|---|---:|---:|---:|",
    ]
    for label, r in results.items():
        md.append(f"| {label} | {r['seconds']:.2f} | {r['interactions_per_s']:,.0f} | {r['seconds'] / base:.1f} |")
    write_results(
        "flagship_speed", {"data": data, "setup": vars(args), "interactions": n, "runs": results}, "\n".join(md)
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
