"""Baselines on every dataset under ../shared/data, with the settings each README documents.

For each dataset: prepare, train popularity, ItemKNN and BPR-MF (single = one model per category,
and pooled = one model over all categories), evaluate with full ranking on test, and write
benchmarks/results/datasets.json + datasets.md (per-category NDCG@10 and Recall@10).

    python benchmarks/bench_datasets.py [--datasets anime-mal] [--epochs 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, write_results  # noqa: E402
from crossrec.config import DataConfig, ModelSpec, RunConfig, load_config  # noqa: E402
from crossrec.data.datasets import read_dataset  # noqa: E402
from crossrec.data.prepare import prepare  # noqa: E402
from crossrec.evaluation.evaluator import EvalConfig, Evaluator, comparison_markdown  # noqa: E402
from crossrec.pipeline import seed_everything, train  # noqa: E402

# params None = the dataset preset's model options (the same for every dataset).
MODELS = (
    ("pop", "pop", "pooled", {}),
    ("itemknn-single", "itemknn", "single", {}),
    ("itemknn-pooled", "itemknn", "pooled", {}),
    ("bprmf-single", "mf", "single", None),
    ("bprmf-pooled", "mf", "pooled", None),
)


def run_dataset(name: str, out: Path, epochs: int, seed: int) -> tuple[dict, str]:
    preset = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml")
    raw = read_dataset(name, SHARED_DATA / name)
    t = time.perf_counter()
    bundle = prepare(raw.interactions, raw.items, preset.prepare, out / name / "bundle", raw.sources)
    prep_s = time.perf_counter() - t
    evaluator = Evaluator(bundle, EvalConfig(ks=(10, 20)), split="test")
    tables, timings = {}, {}
    for label, model, mode, params in MODELS:
        seed_everything(seed)
        cfg = RunConfig(
            data=DataConfig(bundle=str(bundle.root)),
            prepare=preset.prepare,
            model=ModelSpec(name=model, mode=mode, params=preset.model.params if params is None else params),
            train=replace(preset.train, epochs=epochs, progress=False, seed=seed),
            out=str(out / name / "models" / label),
            seed=seed,
        )
        t = time.perf_counter()
        art = train(cfg, bundle)
        timings[label] = round(time.perf_counter() - t, 1)
        tables[label] = evaluator.evaluate(art.model).table
        print(
            f"{name:>20} {label:<15} {timings[label]:7.1f}s  ndcg@10 {tables[label].filter(pl.col('category') == 'ALL', pl.col('slice') == 'all')['ndcg@10'][0]:.4f}",
            flush=True,
        )
    md = [
        f"### {name}\n",
        f"{bundle.n_users} users, {bundle.n_items} items, {bundle.manifest['n_interactions']} interactions; "
        f"split `{preset.prepare.split}`; prepare {prep_s:.1f}s. Training seconds: "
        + ", ".join(f"{k} {v}" for k, v in timings.items())
        + "\n",
    ]
    for metric in ("ndcg@10", "recall@10"):
        md.append(
            comparison_markdown(tables, metric=metric, title=f"{name}: {metric} (protocol: full ranking, split: test)")
        )
    rows = pl.concat([t.with_columns(pl.lit(k).alias("model")) for k, t in tables.items()], how="diagonal")
    checks = beats_pop(rows)
    md.append(
        "BPR-MF and ItemKNN beat popularity on NDCG@10 in every category: "
        + ("**yes**" if all(checks.values()) else "**no**: " + ", ".join(k for k, v in checks.items() if not v))
    )
    return {
        "table": rows.to_dicts(),
        "train_seconds": timings,
        "prepare_seconds": prep_s,
        "manifest_counts": bundle.manifest["counts"],
        "beats_pop": checks,
    }, "\n\n".join(md)


def beats_pop(rows: pl.DataFrame) -> dict[str, bool]:
    """(model, category) -> does the best single/pooled variant beat popularity on NDCG@10."""
    full = rows.filter(pl.col("slice") == "all")
    out = {}
    for cat in full["category"].unique().sort().to_list():
        sub = full.filter(pl.col("category") == cat)
        pop = sub.filter(pl.col("model") == "pop")["ndcg@10"][0]
        for family in ("itemknn", "bprmf"):
            best = sub.filter(pl.col("model").str.starts_with(family))["ndcg@10"].max()
            out[f"{family}/{cat}"] = bool(best > pop)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=["amazon-arts-office", "anime-mal"])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    data, md = {}, ["# Baselines on the shared datasets\n"]
    for name in args.datasets:
        if not (SHARED_DATA / name).exists():
            print(f"skip {name}: {SHARED_DATA / name} not found")
            continue
        data[name], text = run_dataset(name, args.out, args.epochs, args.seed)
        md.append(text)
    write_results("datasets", data, "\n\n".join(md))
    print("\n\n".join(md))


if __name__ == "__main__":
    main()
