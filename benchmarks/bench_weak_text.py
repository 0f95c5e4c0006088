"""Weak item text (issue 37): how the flagship with text (`crossrec-text`, text+id item tower)
fares against the ID flagship where item text says little, on the shared datasets with text you
can make weaker without other data: each dataset's own text (the encoder's default template),
titles only (`{title}`) and titles cut to their first 3 words (`{title:3}`). text-kNN on each
text shows how weak it is (against popularity). The main protocol, or with `--cold-items` the
cold-item protocol (`prepare.cold_item_fraction: 0.1`), which adds the cold-item Recall@10.

Each cell is `crossrec experiment configs/experiments/<dataset>.yaml --only ...` with the text
override, so the models, splits and training are the experiment's own.

    python benchmarks/bench_weak_text.py --seeds 0 1 2 [--cold-items]   # results/weak_text[_cold].{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_experiment, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXTS = {"own": None, "titles": "{title}", "title3": "{title:3}"}
DATASETS = ("anime-mal", "amazon-arts-office")


def experiment(dataset: str, labels: str, seeds: list[int], out: Path, extra: list[str]) -> dict:
    cfg = ROOT / "configs" / "experiments" / f"{dataset}.yaml"
    return run_experiment(cfg, out, "--only", labels, f"--seeds={json.dumps(seeds)}", *extra)


def cells(res: dict) -> dict[str, dict[str, float]]:
    """model -> {'all', 'all_std', 'new', 'new_std', 'cold_recall'} on the ALL rows."""
    out: dict[str, dict[str, float]] = {}
    for r in res["summary"]:
        if r["category"] != "ALL":
            continue
        m = out.setdefault(r["model"], {})
        if r["slice"] == "all":
            m["all"], m["all_std"] = r["ndcg@10"], r.get("ndcg@10_std", 0.0)
        elif r["slice"] == "new_to_category":
            m["new"], m["new_std"] = r["ndcg@10"], r.get("ndcg@10_std", 0.0)
        elif r["slice"] == "cold_item":
            m["cold_recall"] = r.get("recall@10", 0.0)
    return out


def trust_picks(out: Path, seeds: list[int], label: str = "crossrec-text") -> list[float | str]:
    """The text-trust kappa picked per category (models/crossrec/trust.py), over the seeds'
    artifacts; infinity as "inf" (JSON has no infinity)."""
    from safetensors import safe_open

    picks: list[float | str] = []
    for s in seeds:
        f = out / "models" / label / f"seed-{s}" / "model.safetensors"
        if f.exists():
            with safe_open(str(f), "np") as t:
                if "text_kappa_" in t.keys():
                    picks += [float(k) if k < float("inf") else "inf" for k in t.get_tensor("text_kappa_")]
    return picks


def summary(picks: list[float | str]) -> str:
    """'∞ ×15, 30 ×3': how often each kappa was picked (categories x seeds)."""
    vals = sorted(set(picks), key=lambda k: -float(k))
    return ", ".join(f"{'∞' if k == 'inf' else f'{k:g}'} ×{picks.count(k)}" for k in vals) or "–"


def holds(text: dict, ids: dict, key: str) -> str:
    """text+id >= the ID flagship within one standard deviation (the larger of the two)."""
    sd = max(text.get(key + "_std", 0.0), ids.get(key + "_std", 0.0))
    return "yes" if text[key] >= ids[key] - sd else "no"


def shared_cells(row: dict, text: dict) -> str:
    """The columns every weak-text table has, dataset to ≥ ID, for the text+id cells `text`."""
    pop, knn, ids = row["pop"], row["textknn"], row["crossrec"]

    def f(c: dict, k: str) -> str:
        return f"{c[k]:.4f} ± {c[k + '_std']:.4f}" if k in c else "–"

    d_all = (text["all"] - ids["all"]) / ids["all"] * 100
    d_new = (text["new"] - ids["new"]) / ids["new"] * 100
    return (
        f"| {row['dataset']} | {row['text']} | {pop['all']:.4f} | {knn['all']:.4f} | {f(ids, 'all')} / "
        f"{f(ids, 'new')} | {f(text, 'all')} / {f(text, 'new')} | {d_all:+.1f}% | {d_new:+.1f}% | "
        f"{holds(text, ids, 'all')} / {holds(text, ids, 'new')} |"
    )


def markdown(res: dict) -> str:
    cold = res["cold_items"]
    lines = [
        f"# Weak item text{' (cold-item protocol)' if cold else ''} (benchmarks/bench_weak_text.py)",
        "",
        f"Test NDCG@10 (full ranking), mean ± std over seeds {res['seeds']}: all users / users new to a "
        "category. `own`: the dataset's own item text (the encoder's default template); `titles`: "
        "`{title}`; `title3`: `{title:3}`. The ID flagship and popularity do not read text (one run per "
        "dataset). Δ: text+id over the ID flagship; ≥ ID: text+id at least the ID flagship within one "
        "standard deviation (the larger of the two), all users / new to a category. κ: the text-trust picks "
        "(models/crossrec/trust.py), categories × seeds: ∞ keeps the text as trained, 0 scores trained items "
        "from their ID part alone." + (" Cold: Recall@10 on the cold-item slice." if cold else ""),
        "",
    ]
    if res.get("text_model", "crossrec-text") != "crossrec-text":
        lines += [
            f"text+id here is `{res['text_model']}` (`text.residual: true`): its ID part trains exactly as the ID "
            "flagship (its own stage and early stopping), then its text part on top with the rest held, and κ "
            "picks per category between 0 (the ID flagship, untrained items too) and ∞ (the text stage's model) "
            "on validation, whole ranking.",
            "",
        ]
    lines += [
        "| dataset | text | pop | text-kNN | ID flagship | text+id | Δ all | Δ new to a category | ≥ ID | κ |"
        + (" cold: text-kNN | cold: text+id |" if cold else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|" + ("---:|---:|" if cold else ""),
    ]

    for row in res["rows"]:
        knn, text = row["textknn"], row["crossrec-text"]
        line = shared_cells(row, text) + f" {summary(row.get('trust', []))} |"
        if cold:
            line += f" {knn.get('cold_recall', 0.0):.4f} | {text.get('cold_recall', 0.0):.4f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--cold-items", action="store_true", help="the cold-item protocol (cold_item_fraction 0.1)")
    ap.add_argument("--keep", help="a folder for the runs, kept (finished cells are reused by a rerun)")
    ap.add_argument(
        "--text-model",
        default="crossrec-text",
        help="the experiment's text+id model to measure (crossrec-text-residual: text.residual); "
        "another than crossrec-text writes results/weak_text[_cold]_<its suffix>",
    )
    args = ap.parse_args()
    label = args.text_model
    protocol = ["--prepare.cold_item_fraction=0.1"] if args.cold_items else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-weak-text-") as t:
        tmp = Path(args.keep or t) / ("cold" if args.cold_items else "main") / "-".join(map(str, args.seeds))
        tmp.mkdir(parents=True, exist_ok=True)
        for ds in args.datasets:
            base = cells(experiment(ds, "pop,crossrec", args.seeds, tmp / f"{ds}-id", protocol))
            for name in args.texts:
                template = TEXTS[name]
                extra = protocol + ([f"--encoder.template={json.dumps(template)}"] if template else [])  # a YAML string
                out = tmp / f"{ds}-{name}" / label
                text = cells(experiment(ds, f"textknn,{label}", args.seeds, out, extra))
                text["crossrec-text"] = text.pop(label)  # the table's text+id column
                row = {"dataset": ds, "text": name, "template": template, **base, **text}
                row["trust"] = trust_picks(out, args.seeds, label)
                print({k: row[k] for k in ("dataset", "text")}, {m: row[m].get("all") for m in base | text}, flush=True)
                rows.append(row)
    res = {"seeds": args.seeds, "cold_items": args.cold_items, "text_model": label, "rows": rows}
    name = "weak_text_cold" if args.cold_items else "weak_text"
    write_results(
        name if label == "crossrec-text" else f"{name}_{label.removeprefix('crossrec-text-')}", res, markdown(res)
    )


if __name__ == "__main__":
    main()
