"""GPU scale (issue 35): one flagship epoch and one BPR-MF epoch on one CUDA device, at 10M and 30M
synthetic interactions over 50 categories (users N/10, items N/50), with each one's peak GPU
memory, both models in the same run on the same card.

Prepared for the lent device machine (one H100), one call:

    python benchmarks/bench_gpu.py --sizes 10M 30M     # writes benchmarks/results/gpu_scale.{json,md}

Each (size, model) runs in its own process, so peak memory is its own. Without CUDA it exits with a
message and writes nothing (the docs then say "unmeasured").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import count  # noqa: E402
from common import write_results  # noqa: E402

GENERATE = r"""
import sys
from pathlib import Path
import polars as pl
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.scale_world import ScaleConfig, write_scale
root, n = Path(sys.argv[1]), int(sys.argv[2])
root.mkdir(parents=True, exist_ok=True)
write_scale(root / "raw", ScaleConfig(interactions=n, categories=50))
inter = pl.read_parquet(root / "raw" / "interactions.parquet")
items = pl.read_parquet(root / "raw" / "items.parquet")
prepare(inter, items, PrepareConfig(split="leave_last_out"), root / "bundle")
"""

EPOCH = r"""
import json, sys, time
import crossrec
import torch
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
name, root, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
bundle = Bundle.load(root)
torch.manual_seed(0)
model = build(name, "pooled", {"dim": 64}, Sizes.from_bundle(bundle))
cfg = TrainConfig(epochs=1, batch_size=batch, device="cuda", progress=False, checkpoint=False, patience=0, seed=0)
torch.cuda.reset_peak_memory_stats()
res = Trainer(cfg).fit(model, bundle)
print(json.dumps({"epoch_seconds": res.history[0]["train_seconds"],
                  "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}))
"""

MODELS = (("mf", "BPR-MF"), ("crossrec", "flagship"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["10M", "30M"])
    ap.add_argument("--batch-size", type=int, default=8192)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device here; nothing measured, nothing written")
    rows = []
    for n in [count(s) for s in args.sizes]:
        with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", GENERATE, tmp, str(n)], check=True)
            prepared = time.perf_counter() - t
            for model, label in MODELS:
                p = subprocess.run(
                    [sys.executable, "-c", EPOCH, model, f"{tmp}/bundle", str(args.batch_size)],
                    capture_output=True,
                    text=True,
                )
                row = {"interactions": n, "model": label, "prepare_seconds": prepared}
                if p.returncode == 0:
                    row |= json.loads(p.stdout.strip().splitlines()[-1])
                else:
                    row["error"] = p.stderr.strip().splitlines()[-1][:300] if p.stderr.strip() else "failed"
                print(row, flush=True)
                rows.append(row)
    lines = [
        "# GPU scale (benchmarks/bench_gpu.py)",
        "",
        f"One epoch on {torch.cuda.get_device_name(0)}, dim 64, batch {args.batch_size}; synthetic logs over "
        "50 categories (users N/10, items N/50); each (size, model) in its own process.",
        "",
        "| interactions | model | epoch (s) | peak GPU memory (MB) |",
        "|---:|---|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['interactions']:,} | {r['model']} | failed: {r['error']} | |")
        else:
            lines.append(
                f"| {r['interactions']:,} | {r['model']} | {r['epoch_seconds']:.1f} | {r['peak_gpu_mb']:,.0f} |"
            )
    write_results("gpu_scale", {"batch_size": args.batch_size, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
