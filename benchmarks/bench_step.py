"""Where each millisecond of a training step goes, at a given size: the flagship's step and BPR-MF's,
as the Trainer runs them (training/steps.py `pick_step`: BPR-MF's hand-written gradients, the
flagship's autograd), on one prepared Bundle, with torch.profiler self time by op for the flagship.
Steps per epoch x milliseconds per step is the epoch arithmetic; the ratio is the flagship's epoch
over BPR-MF's.

    python benchmarks/bench_step.py --bundle /tmp/sq/10000000/bundle   # writes results/step.{json,md}

Both use bench_scale.py's training settings (batch 2048, 1 negative, dim 64). The flagship's warm
start is off here: it sets initial values, not the step's cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402


def build(name: str, bundle: Any) -> tuple[Any, Any, Any, Any]:
    from crossrec.data.batch import Sizes
    from crossrec.data.sampling import TrainSampler
    from crossrec.models.base import HasSetup
    from crossrec.models.per_category import build as build_model
    from crossrec.training.optim import Optimizers
    from crossrec.training.steps import pick_step
    from crossrec.training.trainer import TrainConfig

    torch.manual_seed(0)
    params: dict[str, Any] = {"dim": 64}
    if name == "crossrec":
        params["warm_start"] = {"method": "none"}
    model = build_model(name, "pooled", params, Sizes.from_bundle(bundle))
    t = time.perf_counter()
    if isinstance(model, HasSetup):  # as the Trainer does
        model.setup(bundle, None)
    setup_s = time.perf_counter() - t
    cfg = TrainConfig(batch_size=2048, n_negatives=1, progress=False, checkpoint=False)
    opts = Optimizers(model, cfg)
    model.train()
    sampler = TrainSampler(bundle, cfg.batch_size, cfg.n_negatives, seed=0)
    return model, pick_step(model, opts, cfg, 0), sampler, setup_s


def measure(name: str, bundle: Any, steps: int, top: int) -> dict[str, Any]:
    from torch.profiler import profile

    model, step, sampler, setup_s = build(name, bundle)
    it = iter(sampler)
    batches = [next(it) for _ in range(steps + 3)]
    for b in batches[:3]:  # warm-up: kernels loaded, buffers sized
        step(b)
    t = time.perf_counter()
    for b in batches[3:]:
        step(b)
    ms = (time.perf_counter() - t) / steps * 1e3
    t = time.perf_counter()
    draws = [next(it) for _ in range(steps)]
    sample_ms = (time.perf_counter() - t) / steps * 1e3
    with profile() as prof:
        for b in draws:
            step(b)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev)
    ops = [
        {"op": e.key, "calls_per_step": e.count / steps, "ms_per_step": ms * e.self_cpu_time_total / total}
        for e in ev[:top]
    ]
    return {
        "ms_per_step": ms,
        "sampler_ms_per_step": sample_ms,
        "steps_per_epoch": len(sampler),
        "epoch_seconds_estimate": (ms + sample_ms) * len(sampler) / 1e3,
        "setup_seconds": setup_s,
        "ops": ops,
        "ops_other_ms": ms - sum(o["ms_per_step"] for o in ops),
        "op_calls_per_step": sum(e.count for e in ev) / steps,
    }


def markdown(res: dict[str, Any]) -> str:
    f, m = res["crossrec"], res["mf"]
    lines = [
        f"# Where a training step's time goes, N={res['interactions']:,} (benchmarks/bench_step.py)",
        "",
        f"{res['users']:,} users, {res['items']:,} items, {res['categories']} categories; batch 2048, 1 negative, "
        f"dim 64, {res['threads']} torch threads; {res['steps']} timed steps each.",
        "",
        "| model | ms per step | sampler ms per step | steps per epoch | epoch estimate (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in (("BPR-MF", m), ("flagship", f)):
        lines.append(
            f"| {label} | {r['ms_per_step']:.1f} | {r['sampler_ms_per_step']:.1f} | {r['steps_per_epoch']:,} "
            f"| {r['epoch_seconds_estimate']:.1f} |"
        )
    ratio = f["epoch_seconds_estimate"] / m["epoch_seconds_estimate"]
    lines += [
        "",
        f"Flagship / BPR-MF epoch: **{ratio:.1f}x**. The flagship's step by op (torch.profiler self time, "
        "scaled to the measured step):",
        "",
        "| op | calls per step | ms per step |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{o['op']}` | {o['calls_per_step']:.0f} | {o['ms_per_step']:.1f} |" for o in f["ops"]]
    lines.append(f"| every other op | | {f['ops_other_ms']:.1f} |")
    calls = f["op_calls_per_step"]
    lines += [
        "",
        f"The flagship's step runs {calls:,.0f} profiled op calls (BPR-MF's: {m['op_calls_per_step']:,.0f}), "
        f"{f['ms_per_step'] * 1e3 / calls:.0f} us each on average: most are per-category pieces of the objective, "
        f"so the step's cost follows the number of categories in a batch more than the rows.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="a prepared Bundle (e.g. bench_scale_quality's)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    from crossrec.data.bundle import Bundle

    bundle = Bundle.load(args.bundle)
    res: dict[str, Any] = {
        "interactions": int(bundle.interactions.height),
        "users": bundle.n_users,
        "items": bundle.n_items,
        "categories": bundle.n_categories,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
    }
    for name in ("mf", "crossrec"):
        res[name] = measure(name, bundle, args.steps, args.top)
        print(name, {k: v for k, v in res[name].items() if k != "ops"}, flush=True)
    write_results("step", res, markdown(res))


if __name__ == "__main__":
    main()
