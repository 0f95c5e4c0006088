"""Refresh one model's column of a committed item-text acceptance table
(`benchmarks/results/text_acceptance_<name>.{json,md}`) from new runs: the mean and std of NDCG@10
over the seeds of `RUN/runs/<label>/seed-*.json` (what `crossrec experiment ... --only <label>`
writes), per category and slice. The other columns are kept as committed.

    python benchmarks/text_acceptance.py anime-mal RUN [--label crossrec-text] [--note "..."]
    python benchmarks/text_acceptance.py anime-mal RUN --all --note "..."   # every column from RUN
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402

COLUMNS = [
    "crossrec-text",
    "crossrec",
    "ials-pooled",
    "pop",
    "textknn",
    "itemknn-pooled",
    "bprmf-pooled",
    "cmf",
    "emcdr",
    "dtcdr",
]
SLICES = {
    "all": "All test users",
    "new_to_category": "Users new to a category (cold-start user protocol, fraction 0.2)",
}


def seed_cells(run: Path, label: str) -> list[dict]:
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    files = sorted((run / "runs" / label).glob("seed-*.json"))
    if not files:
        raise SystemExit(f"no seed-*.json under {run / 'runs' / label}")
    for f in files:
        for row in json.loads(f.read_text())["rows"]:
            if row.get("ndcg@10") is not None:
                values[(row["category"], row["slice"])].append(float(row["ndcg@10"]))
    return [
        {
            "model": label,
            "category": c,
            "slice": s,
            "m": statistics.mean(v),
            "s": statistics.stdev(v) if len(v) > 1 else None,
            "n": len(v),
        }
        for (c, s), v in values.items()
    ]


def cell(rows: dict, model: str, cat: str, slice_: str) -> str:
    r = rows.get((model, cat, slice_))
    if r is None:
        return "–"
    return f"{r['m']:.4f} ± {r['s']:.4f}" if r.get("s") is not None else f"{r['m']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("run", type=Path)
    ap.add_argument("--label", default="crossrec-text")
    ap.add_argument("--note", default="", help="a line on what changed, kept in the table's header")
    ap.add_argument(
        "--all",
        action="store_true",
        help="refresh every column from RUN and start the notes afresh (after a change of the split)",
    )
    args = ap.parse_args()
    path = RESULTS / f"text_acceptance_{args.name}.json"
    data = json.loads(path.read_text())
    labels = COLUMNS if args.all else [args.label]
    if args.all:
        data["notes"] = []
    summary = [r for r in data["summary"] if r["model"] not in labels] + [
        c for label in labels for c in seed_cells(args.run, label)
    ]
    rows = {(r["model"], r["category"], r["slice"]): r for r in summary}
    cats = [c for c in dict.fromkeys(r["category"] for r in summary if r["model"] == "crossrec") if c != "ALL"] + [
        "ALL"
    ]
    notes = data.get("notes", []) + ([args.note] if args.note else [])
    md = [
        f"# Item text acceptance: {args.name}\n",
        "NDCG@10, full ranking, test split; mean ± std over seeds 0, 1, 2 (models fitted in closed form: one run).",
        "`crossrec-text`: the flagship with `item_tower: text+id` and the text defaults picked on validation",
        "(`text.id_dropout` 0, no content term). The other columns are the committed experiment's runs",
        f"(`experiment_{args.name}.md`) and the runs of `ials-pooled` (18-point grid on validation) and `textknn`.",
    ]
    md += [f"\n{n}" for n in notes]
    for slice_, title in SLICES.items():
        md += [f"\n## {title}\n", "| category | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
        md += [f"| {c} | " + " | ".join(cell(rows, m, c, slice_) for m in COLUMNS) + " |" for c in cats]
    write_results(
        f"text_acceptance_{args.name}", {"name": args.name, "summary": summary, "notes": notes}, "\n".join(md)
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
