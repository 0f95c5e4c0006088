"""`crossrec demo`: the whole pipeline on the embedded synthetic world, in a few minutes on CPU.

Writes the world as CSV, reads it back through the readers, prepares a Bundle (leave-last-out by
time), trains the before-transfer baselines in single (one model per category) and pooled (one
model over all categories) mode, evaluates them with full ranking, and prints the per-category table.

Example:
    >>> run_demo(Path("runs/demo"))   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from crossrec.config import DataConfig, ModelSpec, RunConfig
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.readers import read_interactions, read_items
from crossrec.data.schema import ColumnMap, ItemColumnMap
from crossrec.data.synthetic import SyntheticConfig, write_world
from crossrec.evaluation.evaluator import EvalConfig, Evaluator, comparison_markdown
from crossrec.io import write_json, write_text
from crossrec.pipeline import seed_everything, train
from crossrec.training.trainer import TrainConfig

# (label, registry name, mode, options): the before-transfer references.
DEMO_MODELS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("pop", "pop", "pooled", {}),
    ("itemknn-single", "itemknn", "single", {}),
    ("itemknn-pooled", "itemknn", "pooled", {}),
    ("bprmf-single", "mf", "single", {"dim": 64}),
    ("bprmf-pooled", "mf", "pooled", {"dim": 64}),
    ("neumf-single", "neumf", "single", {}),
    ("neumf-pooled", "neumf", "pooled", {}),
)


def run_demo(out: Path, seed: int = 0, epochs: int = 20, console: Console | None = None) -> pl.DataFrame:
    """Run the demo end to end; returns the combined result table (also written under `out`)."""
    console = console or Console()
    seed_everything(seed)
    t0 = time.perf_counter()
    paths = write_world(out / "raw", SyntheticConfig(seed=seed))
    inter = read_interactions(paths["interactions"], ColumnMap(user="user", item="item", rating="rating", timestamp="timestamp"))
    items = read_items(paths["items"], ItemColumnMap(item="item", description="description"))
    bundle = prepare(inter, items, PrepareConfig(split="leave_last_out", cold_user_fraction=0.2, seed=seed), out / "bundle", tuple(paths.values()))
    m = bundle.manifest
    console.print(
        f"[bold]synthetic world[/]: {m['n_users']} users, {m['n_items']} items, "
        f"{m['n_interactions']} interactions in {len(m['categories'])} categories -> {bundle.root}"
    )
    for name, c in m["counts"].items():
        console.print(
            f"  {name:<12} items {c['items']:>5}  train {c['train']:>6}  test {c['test']:>5}  "
            f"(new-to-category {c.get('test_new_to_category_rows', 0)}, cold-item {c.get('test_cold_item_rows', 0)})"
        )

    base = RunConfig(
        data=DataConfig(bundle=str(out / "bundle")),
        train=TrainConfig(epochs=epochs, batch_size=1024, lr=3e-3, patience=3, seed=seed, progress=False),
        eval=EvalConfig(ks=(10, 20)),
        seed=seed,
    )
    evaluator = Evaluator(bundle, base.eval, split="test")
    tables = {}
    for label, name, mode, params in DEMO_MODELS:
        t = time.perf_counter()
        cfg = RunConfig(
            data=base.data, train=base.train, eval=base.eval, seed=seed,
            model=ModelSpec(name=name, mode=mode, params=params), out=str(out / "models" / label),
        )
        art = train(cfg, bundle)
        res = evaluator.evaluate(art.model)
        tables[label] = res.table
        console.print(
            f"  trained {label:<15} in {time.perf_counter() - t:5.1f}s   "
            f"test NDCG@10 {res.metric('ndcg@10'):.4f}  Recall@10 {res.metric('recall@10'):.4f}"
        )
    parts = [
        comparison_markdown(tables, metric=k, title=f"{k} on the synthetic world (protocol: full ranking, split: test)")
        for k in ("ndcg@10", "recall@10")
    ]
    md = "\n\n".join(parts)
    # Plain print: a console would wrap the wide table at the terminal width.
    print("\n" + parts[0], flush=True)
    combined = pl.concat([t.with_columns(pl.lit(k).alias("model")) for k, t in tables.items()], how="diagonal")
    write_text(out / "results.md", md + "\n")
    write_json(out / "results.json", combined.to_dicts())
    console.print(f"\nwrote {out / 'results.md'} and results.json in {time.perf_counter() - t0:.0f}s")
    return combined
