"""Weak item text, per-category pick (issue 37): the joint text+id flagship (`crossrec-text`) and the
residual one (`crossrec-text-residual`, `text.residual`) composed per category on validation
(`crossrec.experiment.pick.compose`, what an experiment entry `pick: [crossrec-text,
crossrec-text-residual]` runs), on the same cells as bench_weak_text.py: both shared datasets, their
own text, titles only and 3-word titles, the main or (`--cold-items`) the cold-item protocol.

The candidates are the artifacts bench_weak_text.py trained and kept (`--keep`): `--joint` and
`--residual` name those folders, so each composite is made from exactly the models behind
results/weak_text[_cold].json and results/weak_text[_cold]_residual.json, whose popularity, text-kNN
and ID flagship cells this table repeats. Each composite is evaluated on the test split as the
experiment evaluates any model.

    python benchmarks/bench_weak_text_pick.py --joint KEEP_J --residual KEEP_R --seeds 0 1 2 [--cold-items]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_weak_text import DATASETS, ROOT, TEXTS, cells, shared_cells  # noqa: E402
from common import RESULTS, write_results
from crossrec.artifact import load_artifact  # noqa: E402
from crossrec.evaluation.evaluator import Evaluator  # noqa: E402
from crossrec.experiment import load_experiment  # noqa: E402
from crossrec.experiment.pick import compose  # noqa: E402
from crossrec.io import write_text  # noqa: E402
from crossrec.pipeline import prepare_data  # noqa: E402

LABELS = ("crossrec-text", "crossrec-text-residual")
SHORT = {"crossrec-text": "joint", "crossrec-text-residual": "residual"}


def artifact_dir(keep: Path, protocol: str, seeds: list[int], cell: str, label: str, seed: int) -> Path:
    """Where bench_weak_text.py --keep left a label's artifact (with or without the label's folder)."""
    base = keep / protocol / "-".join(map(str, seeds)) / cell
    for d in (base / label / "models" / label / f"seed-{seed}", base / "models" / label / f"seed-{seed}"):
        if (d / "config.json").is_file():
            return d
    raise SystemExit(f"no {label} artifact for {cell} seed {seed} under {base}")


def kept_cells(keep: Path, protocol: str, seeds: list[int], cell: str, label: str) -> dict[str, float]:
    """A candidate's own test cells (all, new, cold_recall; mean and std) from its kept experiment."""
    base = keep / protocol / "-".join(map(str, seeds)) / cell
    for f in (base / label / "results.json", base / "results.json"):
        if f.is_file():
            return cells(json.loads(f.read_text())).get(label, {})
    return {}


def all_rows(table: list[dict]) -> dict[str, float]:
    """{'all', 'new', 'cold_recall'} of one test table's ALL rows."""
    out = {}
    for r in table:
        if r["category"] == "ALL":
            if r["slice"] == "all":
                out["all"] = r["ndcg@10"]
            elif r["slice"] == "new_to_category":
                out["new"] = r["ndcg@10"]
            elif r["slice"] == "cold_item":
                out["cold_recall"] = r["recall@10"]
    return out


def mean_std(values: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ("all", "new", "cold_recall"):
        xs = [v[k] for v in values if k in v]
        if xs:
            m = sum(xs) / len(xs)
            out[k], out[k + "_std"] = m, (sum((x - m) ** 2 for x in xs) / len(xs)) ** 0.5
    return out


def markdown(res: dict) -> str:
    cold = res["cold_items"]
    lines = [
        f"# Weak item text, per-category pick{' (cold-item protocol)' if cold else ''} "
        "(benchmarks/bench_weak_text_pick.py)",
        "",
        "Test NDCG@10 (full ranking), mean ± std over seeds "
        f"{res['seeds']}: all users / users new to a category. text+id here is the per-category pick "
        "(models/pick.py) between `crossrec-text` (joint) and `crossrec-text-residual` (`text.residual`), "
        "each category answered by the one with the better validation NDCG@10, mean of the slices all users, "
        "users new to the category and cold items. Candidates, popularity, text-kNN and the ID flagship: the "
        "runs of results/weak_text"
        + ("_cold" if cold else "")
        + ".json and its `_residual` twin (the candidates' own cells are in the JSON). ≥ ID: text+id at least the ID flagship within one standard "
        "deviation (the larger of the two), all users / new to a category. Picks: categories × seeds."
        + (" Cold: Recall@10 on the cold-item slice; ≥ 3×: text+id's at least three times text-kNN's." if cold else ""),
        "",
        "| dataset | text | pop | text-kNN | ID flagship | text+id (pick) | Δ all | Δ new to a category | ≥ ID | picks |"
        + (" cold: text-kNN | cold: text+id | ≥ 3× |" if cold else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|" + ("---:|---:|---|" if cold else ""),
    ]

    for row in res["rows"]:
        knn, text = row["textknn"], row["pick"]
        picks = ", ".join(f"{SHORT[lab]} ×{n}" for lab, n in row["picks"].items())
        line = shared_cells(row, text) + f" {picks} |"
        if cold:
            k, t = knn.get("cold_recall", 0.0), text.get("cold_recall", 0.0)
            line += f" {k:.4f} | {t:.4f} | {'yes' if t >= 3 * k else 'no'} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joint", help="bench_weak_text.py's --keep folder of crossrec-text")
    ap.add_argument("--residual", help="its --keep folder of crossrec-text-residual")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cold-items", action="store_true", help="the cold-item protocol (cold_item_fraction 0.1)")
    ap.add_argument("--merge", action="store_true", help="keep the other cells of an earlier run's results")
    ap.add_argument("--render", action="store_true", help="only write the markdown again from the results JSON")
    args = ap.parse_args()
    protocol = "cold" if args.cold_items else "main"
    source = "weak_text_cold" if args.cold_items else "weak_text"
    if args.render:
        write_text(
            RESULTS / f"{source}_pick.md", markdown(json.loads((RESULTS / f"{source}_pick.json").read_text())) + "\n"
        )
        return
    if not (args.joint and args.residual):
        ap.error("--joint and --residual name the kept runs to compose")
    base = {(r["dataset"], r["text"]): r for r in json.loads((RESULTS / f"{source}.json").read_text())["rows"]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-weak-text-pick-") as tmp:
        for ds in args.datasets:
            overrides = [f"--data.bundle={tmp}/{ds}"] + (
                ["--prepare.cold_item_fraction=0.1"] if args.cold_items else []
            )
            cfg = load_experiment(ROOT / "configs" / "experiments" / f"{ds}.yaml", overrides)
            run = cfg.run_config(cfg.models[0], args.seeds[0])
            bundle = prepare_data(run)
            test = Evaluator(bundle, run.eval, split="test")
            for name in args.texts:
                cell, per_seed, picks = f"{ds}-{name}", [], {label: 0 for label in LABELS}
                for seed in args.seeds:
                    arts = {
                        label: load_artifact(artifact_dir(Path(keep), protocol, args.seeds, cell, label, seed))
                        for label, keep in zip(LABELS, (args.joint, args.residual))
                    }
                    picked, report = compose(bundle, arts, run.eval)
                    for label in report["choice"].values():
                        picks[label] += 1
                    per_seed.append(all_rows(test.evaluate(picked).table.to_dicts()))
                    print(cell, seed, report["choice"], per_seed[-1], flush=True)
                b = base[(ds, name)]
                rows.append(
                    {
                        "dataset": ds,
                        "text": name,
                        "template": TEXTS[name],
                        "pop": b["pop"],
                        "textknn": b["textknn"],
                        "crossrec": b["crossrec"],
                        **{
                            SHORT[label]: kept_cells(Path(keep), protocol, args.seeds, cell, label)
                            for label, keep in zip(LABELS, (args.joint, args.residual))
                        },
                        "pick": mean_std(per_seed),
                        "per_seed": per_seed,
                        "picks": picks,
                    }
                )
    out = RESULTS / f"{source}_pick.json"
    if args.merge and out.is_file():  # the cells of an earlier run (same seeds) that this one did not redo
        old = json.loads(out.read_text())
        done = {(r["dataset"], r["text"]) for r in rows}
        if old.get("seeds") == args.seeds:
            rows = [r for r in old["rows"] if (r["dataset"], r["text"]) not in done] + rows
    order = {(ds, t): i for i, (ds, t) in enumerate((ds, t) for ds in DATASETS for t in TEXTS)}
    rows.sort(key=lambda r: order[(r["dataset"], r["text"])])
    res = {"seeds": args.seeds, "cold_items": args.cold_items, "rows": rows}
    write_results(f"{source}_pick", res, markdown(res))


if __name__ == "__main__":
    main()
