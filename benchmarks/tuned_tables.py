"""The tuned comparison of one dataset: the tuner's budget and choices, the tuned experiment's
NDCG@10 per category and on users new to a category, and the flagship's gain over the best tuned
single-category model against the same gain before tuning (the committed untuned table).

    python benchmarks/tuned_tables.py DATASET TUNE_DIR TUNED_RUN_DIR
    # -> benchmarks/results/tuned_<DATASET>.{json,md}, experiment_<DATASET>-tuned.{json,md}, tuning_<DATASET>.{json,md}

DATASET is the experiment name of the untuned table (benchmarks/results/experiment_<DATASET>.json).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, write_results


def _mean(res: dict[str, Any], model: str, cat: str, slc: str, metric: str = "ndcg@10") -> float:
    for r in res["summary"]:
        if r["model"] == model and r["category"] == cat and r["slice"] == slc and r.get(metric) is not None:
            return float(r[metric])
    return math.nan


def _std(res: dict[str, Any], model: str, cat: str, slc: str, metric: str = "ndcg@10") -> float:
    for r in res["summary"]:
        if r["model"] == model and r["category"] == cat and r["slice"] == slc:
            return float(r.get(f"{metric}_std") or 0.0)
    return math.nan


def _best_single(res: dict[str, Any], cat: str, slc: str) -> tuple[str, float]:
    singles = [m["label"] for m in res["models"] if m.get("single_category")]
    vals = [(v, m) for m in singles if not math.isnan(v := _mean(res, m, cat, slc))]
    v, m = max(vals) if vals else (math.nan, "–")
    return m, v


def _gain(v: float, b: float) -> float:
    return (v - b) / b * 100 if b and not math.isnan(b) and not math.isnan(v) else math.nan


def main(dataset: str, tune_dir: str, run_dir: str) -> None:
    tuned = json.loads((Path(run_dir) / "results.json").read_text())
    before = json.loads((RESULTS / f"experiment_{dataset}.json").read_text())
    tuning = json.loads((Path(tune_dir) / "tuning.json").read_text())
    flagship = next(m["label"] for m in tuned["models"] if m.get("flagship"))
    cats = list(tuned["bundle"]["categories"])
    labels = [m["label"] for m in tuned["models"]]
    rows, gains = [], []
    for cat, slc in [(c, "all") for c in cats] + [("ALL", "all"), ("ALL", "new_to_category")]:
        cells = []
        for label in labels:
            v, s = _mean(tuned, label, cat, slc), _std(tuned, label, cat, slc)
            n = next(
                (
                    r["n_seeds"]
                    for r in tuned["summary"]
                    if r["model"] == label and r["category"] == cat and r["slice"] == slc
                ),
                0,
            )
            closed = any(
                m["label"] == label and m["name"] in ("pop", "itemknn", "ials", "textknn") for m in tuned["models"]
            )
            spread = "" if closed else (f" ± {s:.4f}" if n > 1 else " (1 seed)")
            cells.append("–" if math.isnan(v) else f"{v:.4f}{spread}")
        best, b = _best_single(tuned, cat, slc)
        best0, b0 = _best_single(before, cat, slc)
        g, g0 = _gain(_mean(tuned, flagship, cat, slc), b), _gain(_mean(before, flagship, cat, slc), b0)
        gains.append(
            {
                "category": cat,
                "slice": slc,
                "flagship": _mean(tuned, flagship, cat, slc),
                "best_single": best,
                "best_single_value": b,
                "gain_pct": g,
                "untuned_flagship": _mean(before, flagship, cat, slc),
                "untuned_best_single": best0,
                "untuned_best_single_value": b0,
                "untuned_gain_pct": g0,
                "held": bool(g > 0) if not math.isnan(g) else None,
            }
        )
        rows.append(f"| {cat} ({slc}) | " + " | ".join(cells) + f" | {best} | {g:+.1f}% | {g0:+.1f}% |")
    budget = tuning["budget"]
    slices = tuning.get("objective", {}).get("slices", ["all"])  # tuning.json before objectives: `all`
    scored = "validation NDCG@10" + ("" if slices == ["all"] else f" averaged over the slices {', '.join(slices)}")
    lines = [
        f"# Tuned comparison: {dataset}",
        "",
        f"Every model below the line was tuned by `crossrec tune` with the same budget: {budget['trials']} finished "
        f"trials or {budget['timeout']:.0f} s of trial time per model, TPE, median pruning, {scored} "
        f"(seed 0), 1 thread per dataset. Then `crossrec experiment best.yaml`: test NDCG@10, mean ± std over "
        f"seeds {tuned['seeds']} (one seed where the entry says so).",
        "",
        "| model | trials (complete / pruned / failed) | trial seconds | best valid "
        + ("NDCG@10" if slices == ["all"] else "objective")
        + " | chosen |",
        "|---|---|---:|---:|---|",
    ]
    for label, t in tuning["models"].items():
        states = [x["state"] for x in t["trials"] if not x.get("interrupted")]
        best = t["best"] or {}
        first = next((x for x in t["trials"] if x.get("configured")), None)
        chosen = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(best.get("params", {}).items())
        )
        conf = "" if first is None or first.get("value") is None else f" (hand-set: {first['value']:.4f})"
        lines.append(
            f"| {label} | {len(states)} ({states.count('complete')} / {states.count('pruned')} / "
            f"{states.count('fail')}) | {t['seconds']:.0f} | {best.get('value', math.nan):.4f}{conf} | {chosen} |"
        )
    lines += [
        "",
        "Test NDCG@10 with the tuned options; gain = the flagship against the best single-category model of "
        "the row, after tuning and before it (the committed untuned table).",
        "",
        "| row | " + " | ".join(labels) + " | best single (tuned) | flagship gain, tuned | gain before tuning |",
        "|---|" + "---:|" * len(labels) + "---|---:|---:|",
        *rows,
        "",
    ]
    md = "\n".join(lines)
    write_results(f"tuned_{dataset}", {"flagship": flagship, "gains": gains, "budget": budget, "objective": slices}, md)
    shutil.copy(Path(run_dir) / "results.md", RESULTS / f"experiment_{dataset}-tuned.md")
    shutil.copy(Path(run_dir) / "results.json", RESULTS / f"experiment_{dataset}-tuned.json")
    shutil.copy(Path(tune_dir) / "tuning.json", RESULTS / f"tuning_{dataset}.json")
    shutil.copy(Path(tune_dir) / "tuning.md", RESULTS / f"tuning_{dataset}.md")
    print(md)


if __name__ == "__main__":
    main(*sys.argv[1:4])
