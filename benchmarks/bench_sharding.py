"""Per-process memory of the flagship trained by 2 processes, replicated vs its user tables
sharded on TorchRec (issue 36, `train.sharding`), on the scale log (`crossrec synth`: N
interactions over 50 categories, users N/10, items N/50).

For each size and each set-up, `torchrun --nproc_per_node 2` starts two processes (one thread
each: the machine has 2 cores) that load the Bundle, build the flagship (d = 64, row-wise Adagrad
on the ID tables: fbgemm's CPU kernels have no fused Adam), run the trainer's set-up (histories,
neighbours, warm start, the tables sharded or not) and `--steps` training steps, then gather the
tables whole once, as validation and checkpoints do. Each process reports its peak RSS after each
phase, the bytes of the shardable tables it holds (weights + row accumulators) and the mean step.

    python benchmarks/bench_sharding.py --sizes 3M 10M   # writes results/sharding.{json,md}
    python benchmarks/bench_sharding.py --device cuda --procs 2 --sizes 10M 30M   # NCCL, 2 GPUs: results/sharding_gpu.*
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import count  # noqa: E402
from common import write_results  # noqa: E402

WORKER = r"""
import json, os, resource, sys, time
import crossrec
import torch
from pathlib import Path
from crossrec import collectives, distributed
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.models.per_category import build
from crossrec.training import sharding
from crossrec.training.steps import AutogradStep
from crossrec.training.trainer import TrainConfig, Trainer

root, mode, steps, out, device = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
distributed.init_from_env(device)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
held = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")  # RSS now
rec = {"rank": collectives.rank()}
t = time.perf_counter()
bundle = Bundle.load(root)
rec["load_peak"] = peak()
torch.manual_seed(0)
model = build("crossrec", "pooled", {"dim": 64}, Sizes.from_bundle(bundle))
cfg = TrainConfig(
    epochs=1, progress=False, checkpoint=False, sparse_optimizer="adagrad", sharding=mode, valid_users=20000, device=device
)
trainer = Trainer(cfg)
run = trainer._start(model, bundle, time.perf_counter())
rec["setup_s"], rec["setup_peak"] = time.perf_counter() - t, peak()
rec["tables_bytes"] = run.sharded.local_bytes() if run.sharded is not None else sharding.table_bytes(model, cfg)
rec["plan"] = {} if run.sharded is None else run.sharded.plan
step = AutogradStep(model, run.opts, 0)
batches = iter(run.sampler)
step(next(batches))  # the first step allocates what every later one reuses
t = time.perf_counter()
for _ in range(steps):
    step(next(batches))
rec["step_ms"], rec["steps_peak"], rec["steps_held"] = (time.perf_counter() - t) / steps * 1e3, peak(), held()
with sharding.whole(run.sharded):
    pass
rec["gather_peak"] = peak()
if device.startswith("cuda"):
    rec["gpu_peak"] = torch.cuda.max_memory_allocated()
(out / f"{mode}-rank{rec['rank']}.json").write_text(json.dumps(rec))
"""

GENERATE = r"""
import sys
from pathlib import Path
import polars as pl
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.scale_world import ScaleConfig, write_scale
root, n = Path(sys.argv[1]), int(sys.argv[2])
root.mkdir(parents=True, exist_ok=True)
write_scale(root / "raw", ScaleConfig(interactions=n, categories=50, seed=0))
prepare(pl.read_parquet(root / "raw" / "interactions.parquet"), pl.read_parquet(root / "raw" / "items.parquet"),
        PrepareConfig(split="leave_last_out"), root / "bundle")
"""

MODES = ("none", "column", "table")


def measure(bundle: Path, mode: str, steps: int, tmp: Path, device: str, procs: int) -> list[dict]:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // procs))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    args = [str(script), str(bundle), mode, str(steps), str(tmp), device]
    p = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    return [json.loads((tmp / f"{mode}-rank{r}.json").read_text()) for r in range(procs)]


def markdown(res: dict) -> str:
    gb = 1024**3
    lines = [
        "# The flagship on 2 processes: replicated vs sharded user tables (benchmarks/bench_sharding.py)",
        "",
        "Scale log (50 categories, users N/10, items N/50), flagship d = 64 with row-wise Adagrad on the ID "
        f"tables, {res.get('procs', 2)} processes on {res.get('device', 'cpu')} ({os.cpu_count()} cores, "
        "threads split between the processes). `none`: every process holds "
        "the whole model (data parallel); `column` / `table`: the user tables (`user_emb`, `user_cat_emb`) "
        "sharded on TorchRec (`train.sharding`). Peak RSS per process (GiB; the larger rank's) after "
        "loading the Bundle, after the trainer's set-up, after the training steps, and after one gather of "
        "the whole tables (what validation and checkpoints do); `held`: the RSS held while training, "
        "after the steps (the set-up's transient peak is past). `tables`: the shardable tables' bytes "
        "this process holds (weights + row accumulators).",
        "",
        "| interactions | set-up | tables per process (GiB) | peak: load | peak: set-up | peak: steps "
        "| peak: gather | held while training | step (ms) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in res["sizes"]:
        for mode, ranks in size["modes"].items():

            def top(k: str, ranks: list[dict] = ranks) -> float:
                return max(r[k] for r in ranks) / gb

            plan = ", ".join(sorted(set(ranks[0]["plan"].values()))) or "replicated"
            lines.append(
                f"| {size['interactions']:,} | {mode} ({plan}) | {top('tables_bytes'):.2f} | {top('load_peak'):.2f} | "
                f"{top('setup_peak'):.2f} | {top('steps_peak'):.2f} | {top('gather_peak'):.2f} | "
                f"{top('steps_held'):.2f} | {max(r['step_ms'] for r in ranks):.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["3M", "10M"])
    ap.add_argument("--modes", nargs="+", default=list(MODES))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--keep", help="a folder to keep the generated logs in (reused when there)")
    ap.add_argument("--device", default="cpu", help="cpu (gloo) | cuda (NCCL: one GPU per process)")
    ap.add_argument("--procs", type=int, default=2, help="processes (on CUDA: at most the GPUs)")
    args = ap.parse_args()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="bench-sharding-") as tmp:
        for label in args.sizes:
            n = count(label)
            root = Path(args.keep or tmp) / f"log-{n}"
            if not (root / "bundle").exists():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", GENERATE, str(root), str(n)], check=True)
                print(f"{label}: generated and prepared in {time.perf_counter() - t:.0f} s", flush=True)
            modes = {}
            for mode in args.modes:
                modes[mode] = measure(root / "bundle", mode, args.steps, Path(tmp), args.device, args.procs)
                print(label, mode, modes[mode], flush=True)
            sizes.append({"interactions": n, "modes": modes})
    res = {"steps": args.steps, "device": args.device, "procs": args.procs, "sizes": sizes}
    write_results("sharding" if args.device == "cpu" else "sharding_gpu", res, markdown(res))


if __name__ == "__main__":
    main()
