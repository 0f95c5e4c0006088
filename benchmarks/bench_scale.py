"""Scale: seconds and peak RSS of each stage on synthetic logs of N interactions over 50 categories
(users N/10, items N/50; data/scale_world.py), each stage in its own process so its peak RSS is
its own: generate, prepare, building the flagship (its parameter bytes, with the compact pair index
and what the dense users x categories table would have been), one BPR-MF epoch, one flagship epoch.
The log-log slope of each stage across sizes says how it grows (1.0: linear).

    python benchmarks/bench_scale.py --sizes 1M 3M      # writes benchmarks/results/scale.{json,md}

Stages not measured here yet (issue 35): warm start alone, validation and test evaluation at
scale, text encoding, index build, serving p99.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

STAGE = r"""
import json, resource, sys, time
from pathlib import Path
stage, root, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
out = {}
t = time.perf_counter()
if stage == "generate":
    from crossrec.data.scale_world import ScaleConfig, write_scale
    out["rows"] = write_scale(root / "raw", ScaleConfig(interactions=n, categories=50))[2]
elif stage == "prepare":
    import polars as pl
    from crossrec.data.prepare import PrepareConfig, prepare
    inter = pl.read_parquet(root / "raw" / "interactions.parquet")
    items = pl.read_parquet(root / "raw" / "items.parquet")
    prepare(inter, items, PrepareConfig(split="leave_last_out"), root / "bundle")
else:
    import torch
    from crossrec.data.batch import Sizes
    from crossrec.data.bundle import Bundle
    from crossrec.models.per_category import build
    from crossrec.training.trainer import TrainConfig, Trainer
    bundle = Bundle.load(root / "bundle")
    sizes = Sizes.from_bundle(bundle)
    torch.manual_seed(0)
    name, params = ("mf", {"dim": 64}) if stage == "bprmf_epoch" else ("crossrec", {"dim": 64})
    model = build(name, "pooled", params, sizes)
    cfg = TrainConfig(epochs=1, batch_size=2048, progress=False, checkpoint=False, patience=0, seed=0)
    if stage == "flagship_build":
        model.setup(bundle)
        out["param_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
        out["pair_rows"] = len(model.pair_keys_)
        out["dense_rows"] = sizes.n_users * sizes.n_categories
        out["dense_table_bytes"] = sizes.n_users * sizes.n_categories * 64 * 4
    else:
        t0 = time.perf_counter()
        res = Trainer(cfg).fit(model, bundle)  # set-up, one epoch, its validation, post-training steps
        out["fit_seconds"] = time.perf_counter() - t0
        out["epoch_train_seconds"] = res.history[0]["train_seconds"]  # the training steps alone
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

STAGES = ("generate", "prepare", "flagship_build", "bprmf_epoch", "flagship_epoch")


def count(text: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}
    t = text.lower()
    return int(float(t[:-1]) * scale[t[-1]]) if t[-1] in scale else int(t)


def run(sizes: list[int], stages: tuple[str, ...]) -> dict[int, dict[str, dict]]:
    out: dict[int, dict[str, dict]] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            out[n] = {}
            for stage in stages:
                p = subprocess.run([sys.executable, "-c", STAGE, stage, tmp, str(n)], capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{stage} at {n}: {p.stderr[-2000:]}")
                out[n][stage] = json.loads(p.stdout.strip().splitlines()[-1])
                print(n, stage, out[n][stage], flush=True)
    return out


def slope(sizes: list[int], values: list[float]) -> float | None:
    if len(sizes) < 2 or min(values) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def markdown(res: dict[int, dict[str, dict]]) -> str:
    sizes = sorted(res)
    lines = [
        "# Scale (benchmarks/bench_scale.py)",
        "",
        "Synthetic logs over 50 categories (users N/10, items N/50); each stage in its own process.",
        "",
        "| stage | " + " | ".join(f"N={n:,}: s / peak MB" for n in sizes) + " | slope (s) |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for stage in STAGES:
        if stage not in res[sizes[0]]:
            continue
        cells = [f"{res[n][stage]['seconds']:.1f} / {res[n][stage]['peak_rss_mb']:.0f}" for n in sizes]
        s = slope(sizes, [res[n][stage]["seconds"] for n in sizes])
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {'' if s is None else f'{s:.2f}'} |")
    lines += [
        "",
        "One epoch's training steps alone (the epoch rows above also hold the model's set-up, e.g. the",
        "flagship's warm start, its validation and its post-training steps):",
        "",
    ]
    lines += ["| N | BPR-MF epoch (s) | flagship epoch (s) | flagship / BPR-MF |", "|---:|---:|---:|---:|"]
    for n in sizes:
        b, f = res[n].get("bprmf_epoch", {}), res[n].get("flagship_epoch", {})
        if "epoch_train_seconds" in b and "epoch_train_seconds" in f:
            bs, fs = b["epoch_train_seconds"], f["epoch_train_seconds"]
            lines.append(f"| {n:,} | {bs:.1f} | {fs:.1f} | {fs / bs:.1f}x |")
    lines += ["", "Flagship parameters with the compact (user, category) index:", ""]
    lines += ["| N | pair rows | dense rows (users x categories) | parameter MB | dense table alone MB |"]
    lines += ["|---:|---:|---:|---:|---:|"]
    for n in sizes:
        b = res[n].get("flagship_build")
        if b:
            lines.append(
                f"| {n:,} | {b['pair_rows']:,} | {b['dense_rows']:,} | {b['param_bytes'] / 2**20:.0f} "
                f"| {b['dense_table_bytes'] / 2**20:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1M", "3M"])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = ap.parse_args()
    sizes = [count(s) for s in args.sizes]
    res = run(sizes, tuple(args.stages))
    write_results("scale", {"sizes": sizes, "results": {str(n): r for n, r in res.items()}}, markdown(res))


if __name__ == "__main__":
    main()
