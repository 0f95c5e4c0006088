"""Shared cores and compile caches (issue 35): how one training epoch holds up when three trainings
start together on this machine, and what a new dataset costs the first time.

- **Contention**: one epoch of each model, first alone, then three processes started together.
  A fair share on a machine with fewer cores than jobs is (jobs / cores) x the solo time at worst;
  the target is <= 3.5x for three jobs on 2 cores. Three set-ups: `default` (`train.threads: 0`, auto:
  the cores free at each epoch's start, training/threads.py; idle OpenMP threads spin crossrec's
  `SPINCOUNT` rounds, then sleep), `libgomp` (GNU OpenMP's own
  300,000 rounds: crossrec's default before) and `threads=1` (`train.threads: 1`); on request
  `passive` (`OMP_WAIT_POLICY=PASSIVE`: idle threads sleep at once) and `spin=N`
  (`GOMP_SPINCOUNT=N`). torch and numba share torch's libgomp.
- **First run on a new log**: the wall time of a flagship process on a log it has never seen
  (a different size, so different array shapes) against a rerun on the same log; the compiled
  kernels are specialised on types only, so the new log compiles nothing (target <= 1.2x).

    python benchmarks/bench_contention.py --interactions 1M   # writes results/contention.{json,md}
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
import crossrec  # noqa: E402
from bench_scale import count  # noqa: E402
from common import write_results  # noqa: E402

EPOCH = r"""
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
import crossrec  # first, as the CLI does: its OpenMP spin default applies before torch loads OpenMP
import torch
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
name, root, threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
bundle = Bundle.load(root)
torch.manual_seed(0)
model = build(name, "pooled", {"dim": 64}, Sizes.from_bundle(bundle))
res = Trainer(TrainConfig(epochs=1, progress=False, checkpoint=False, patience=0, seed=0, threads=threads)).fit(model, bundle)
print(json.dumps({"epoch_seconds": res.history[0]["train_seconds"], "process_seconds": time.perf_counter() - t0}))
"""

GENERATE = r"""
import sys
from pathlib import Path
import polars as pl
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.scale_world import ScaleConfig, write_scale
root, n, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
write_scale(root / "raw", ScaleConfig(interactions=n, categories=30, seed=seed))
inter = pl.read_parquet(root / "raw" / "interactions.parquet")
items = pl.read_parquet(root / "raw" / "items.parquet")
prepare(inter, items, PrepareConfig(split="leave_last_out"), root / "bundle")
"""


SETUPS = ("default", "libgomp", "threads=1")


def env_for(setup: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    if setup == "libgomp":  # GNU OpenMP's own default spin (crossrec's before it set a shorter one)
        env["GOMP_SPINCOUNT"] = "300000"
    if setup == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if setup.startswith("spin="):  # GOMP_SPINCOUNT: how long an idle OpenMP thread spins before it sleeps
        env["GOMP_SPINCOUNT"] = setup.split("=", 1)[1]
    return env


def epochs(model: str, bundle: Path, jobs: int, setup: str) -> list[dict]:
    """Start `jobs` processes together, each training one epoch; each one's timings."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EPOCH, model, str(bundle), "1" if setup == "threads=1" else "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(setup),
        )
        for _ in range(jobs)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(stderr[-2000:])
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def contention(bundle: Path, models: list[str], jobs: int, setups: tuple[str, ...] = SETUPS) -> list[dict]:
    rows = []
    for model in models:
        epochs(model, bundle, 1, "default")  # warm: kernels compiled, file cache hot
        for setup in setups:
            solo = epochs(model, bundle, 1, setup)[0]["epoch_seconds"]
            together = [r["epoch_seconds"] for r in epochs(model, bundle, jobs, setup)]
            row = {"model": model, "setup": setup, "jobs": jobs, "solo_s": solo, "together_s": together}
            row["worst_ratio"] = max(together) / solo
            print(row, flush=True)
            rows.append(row)
    return rows


def first_run(root: Path, n: int) -> dict:
    """A flagship process on a log it has not seen vs a rerun; the kernels' caches are warm from
    the contention runs on another log (another size: other array shapes)."""
    new = root / "new"
    subprocess.run([sys.executable, "-c", GENERATE, str(new), str(n * 3 // 4), "7"], check=True)
    first = epochs("crossrec", new / "bundle", 1, "default")[0]["process_seconds"]
    rerun = epochs("crossrec", new / "bundle", 1, "default")[0]["process_seconds"]
    return {"interactions": n * 3 // 4, "first_s": first, "rerun_s": rerun, "ratio": first / rerun}


def markdown(res: dict) -> str:
    cores = os.cpu_count()
    lines = [
        "# Shared cores and compile caches (benchmarks/bench_contention.py)",
        "",
        f"{res['interactions']:,} synthetic interactions over 30 categories; {cores} cores. One epoch "
        f"alone, then {res['rows'][0]['jobs']} processes started together. `default`: `train.threads: 0` "
        "(auto: the cores free at each epoch's start, `training/threads.py`), "
        f"idle OpenMP threads spin crossrec's {crossrec.SPINCOUNT} rounds before they sleep "
        "(`crossrec/__init__.py`); `libgomp`: GNU OpenMP's own 300,000 rounds (`GOMP_SPINCOUNT=300000`, "
        "crossrec's default before); `passive`: `OMP_WAIT_POLICY=PASSIVE` "
        "(idle threads sleep at once); `threads=1`: `train.threads: 1`; `spin=N`: `GOMP_SPINCOUNT=N` "
        "(idle threads spin N rounds, then sleep). worst / alone: the slowest "
        "of the jobs started together over the same set-up alone; vs default alone: over the "
        "default set-up alone.",
        "",
        "| model | set-up | alone (s) | together (s, each) | worst / alone | worst vs default alone |",
        "|---|---|---:|---|---:|---:|",
    ]
    base = {r["model"]: r["solo_s"] for r in res["rows"] if r["setup"] == "default"}
    for r in res["rows"]:
        together = ", ".join(f"{s:.1f}" for s in r["together_s"])
        vs = max(r["together_s"]) / base[r["model"]]
        lines.append(
            f"| {r['model']} | {r['setup']} | {r['solo_s']:.1f} | {together} | {r['worst_ratio']:.2f}x | {vs:.2f}x |"
        )
    f = res["first_run"]
    lines += [
        "",
        f"First flagship process on a new log ({f['interactions']:,} interactions, never seen) vs a rerun "
        f"on it: {f['first_s']:.1f} s vs {f['rerun_s']:.1f} s (**{f['ratio']:.2f}x**).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interactions", default="1M")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["mf", "crossrec"])
    ap.add_argument(
        "--setups", nargs="+", default=list(SETUPS), help="default | libgomp | passive | threads=1 | spin=N"
    )
    ap.add_argument("--keep", help="a folder to keep the generated log in (reused when there)")
    args = ap.parse_args()
    n = count(args.interactions)
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp:
        root = Path(args.keep or tmp)
        t = time.perf_counter()
        if not (root / "log" / "bundle").exists():
            subprocess.run([sys.executable, "-c", GENERATE, str(root / "log"), str(n), "0"], check=True)
            print(f"generated and prepared in {time.perf_counter() - t:.0f} s", flush=True)
        rows = contention(root / "log" / "bundle", args.models, args.jobs, tuple(args.setups))
        first = first_run(root, n)
    res = {"interactions": n, "rows": rows, "first_run": first}
    write_results("contention", res, markdown(res))


if __name__ == "__main__":
    main()
