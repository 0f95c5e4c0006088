"""The tuned headline of one dataset (issue 37, item 5): `crossrec tune` with the same budget for
every model and a validation objective that includes users new to a category, then the tuned
experiment on test over the experiment's seeds, then the tables (`tuned_tables.py`).

The models: popularity and ItemKNN per category (the single-category references), pooled ItemKNN
and iALS (the tuned classics, iALS's factors up to 512), the ID flagship and the text+id flagship.
Each stage is resumable: the tuner's study is kept in `WORK/<dataset>-tune` (a rerun continues it)
and a finished tuned run is reused.

    OMP_NUM_THREADS=1 python benchmarks/bench_tuned.py anime-mal [--trials 20] [--timeout 600] \
        [--objective all,new_to_category] [--work runs/tuned]
    # -> benchmarks/results/tuned_<dataset>.{json,md}, experiment_<dataset>-tuned.{json,md}, tuning_<dataset>.{json,md}
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = "pop,itemknn-single,itemknn-pooled,ials-pooled,crossrec,crossrec-text"


def sh(*cmd: str) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", help="an experiment of configs/experiments (anime-mal, amazon-arts-office)")
    ap.add_argument("--only", default=LABELS, help="comma-separated model labels")
    ap.add_argument("--trials", default="20")
    ap.add_argument("--timeout", default="600", help="seconds of trial time per model")
    ap.add_argument("--objective", default="all,new_to_category")
    ap.add_argument("--work", default="runs/tuned", help="where the study and the tuned run live")
    args = ap.parse_args()
    cfg = ROOT / "configs" / "experiments" / f"{args.dataset}.yaml"
    work = Path(args.work).resolve()
    tune_dir, run_dir = work / f"{args.dataset}-tune", work / f"{args.dataset}-tuned"
    cli = [sys.executable, "-m", "crossrec.cli"]
    sh(*cli, "tune", str(cfg), "--only", args.only, "--trials", args.trials, "--timeout", args.timeout,
       "--objective", args.objective, "--out", str(tune_dir))  # fmt: skip
    if not (run_dir / "results.json").exists():
        sh(*cli, "experiment", str(tune_dir / "best.yaml"), "--only", args.only, f"--out={run_dir}")
    sh(sys.executable, str(ROOT / "benchmarks" / "tuned_tables.py"), args.dataset, str(tune_dir), str(run_dir))


if __name__ == "__main__":
    main()
