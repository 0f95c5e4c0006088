"""Add the runs of models trained later (e.g. CoNet and BiTGCF, which cost the most on 2 cores) to
a committed experiment table: the committed `benchmarks/results/experiment_<name>.json` plus the
`results.json` of one or more `crossrec experiment ... --only a,b` runs on the same Bundle, written
back as one table by the same report code (`ExperimentResult`).

    python benchmarks/merge_experiment.py configs/experiments/amazon-arts-office.yaml RUN/results.json ...
    python benchmarks/merge_experiment.py configs/experiments/anime-mal-cold-items.yaml RUN/results.json \
        --name text_anime-mal-cold-items     # a table committed under another name
    python benchmarks/merge_experiment.py configs/experiments/anime-mal.yaml A/results.json B/results.json \
        --fresh      # the split changed: the table is these runs alone (the first one's Bundle)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402
from crossrec.experiment.results import ExperimentResult  # noqa: E402
from crossrec.experiment.spec import load_experiment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("new", nargs="+", type=Path, help="results.json of the runs to add")
    ap.add_argument(
        "--name", help="the committed table's name in benchmarks/results (default: experiment_<config name>)"
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="replace the committed table by these runs alone (after a change of the split)",
    )
    args = ap.parse_args()
    cfg = load_experiment(args.config)
    name = args.name or f"experiment_{cfg.name}"
    if args.fresh:
        base = json.loads(args.new[0].read_text()) | {"runs": [], "train_seconds": {}}
    elif not (RESULTS / f"{name}.json").exists():
        raise SystemExit(f"no committed table {RESULTS / (name + '.json')} (--name: a table in benchmarks/results)")
    else:
        base = json.loads((RESULTS / f"{name}.json").read_text())
    runs, seconds = list(base["runs"]), dict(base["train_seconds"])
    for path in args.new:
        new = json.loads(path.read_text())
        if new["bundle"] != base["bundle"]:
            raise SystemExit(f"{path}: another Bundle than the committed table's: {new['bundle']} vs {base['bundle']}")
        labels = set(new["train_seconds"])
        runs = [r for r in runs if r["model"] not in labels] + list(new["runs"])
        seconds |= new["train_seconds"]
    present = {r["model"] for r in runs}
    cfg = replace(cfg, models=tuple(m for m in cfg.models if m.label in present))
    result = ExperimentResult(cfg, pl.DataFrame(runs, infer_schema_length=None), base["bundle"], seconds)
    data = result.to_json() | {"acceptance": result.acceptance()}
    write_results(name, data, result.to_markdown())
    print(result.to_markdown()[:3000])


if __name__ == "__main__":
    main()
