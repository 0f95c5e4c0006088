"""`crossrec demo`: the whole pipeline on the embedded synthetic world, in a few minutes on CPU.

Writes the world as CSV, reads it back through the readers, prepares a Bundle (leave-last-out by
time, plus the cold-start user protocol so the new-to-category slice exists), and runs an
experiment (`crossrec.experiment`): the single-category baselines, their pooled versions and the
flagship `crossrec` model (with ID items, and with a text + ID item tower), evaluated with full ranking; prints the per-category table with the gain
from transfer and writes the experiment's report.

Example:
    >>> run_demo(Path("runs/demo"))   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.readers import read_interactions, read_items
from crossrec.data.schema import ColumnMap, ItemColumnMap
from crossrec.data.synthetic import SyntheticConfig, write_world
from crossrec.experiment import load_experiment, run_experiment
from crossrec.io import claim_output, write_marker
from crossrec.pipeline import seed_everything

# Model entries of the demo experiment: single-category references, pooled, and the flagship
# (`single_category` and `flagship` flags as in configs/experiments/*.yaml).
DEMO_MODELS: tuple[dict[str, Any], ...] = (
    {"label": "pop", "name": "pop", "single_category": True},
    {"label": "itemknn-single", "name": "itemknn", "mode": "single"},
    {"label": "bprmf-single", "name": "mf", "mode": "single", "dim": 64},
    {"label": "itemknn-pooled", "name": "itemknn"},
    {"label": "bprmf-pooled", "name": "mf", "dim": 64},
    {"label": "crossrec", "name": "crossrec", "dim": 64, "flagship": True},
    # The flagship reading item text too (all-MiniLM-L6-v2, offline; cached after the first run).
    {"label": "crossrec-text", "name": "crossrec", "dim": 64, "item_tower": "text+id"},
)


def run_demo(
    out: Path, seed: int = 0, epochs: int = 20, console: Console | None = None, world: SyntheticConfig | None = None
) -> pl.DataFrame:
    """Run the demo end to end; returns every run's result table (also written under `out`).
    `world`: the synthetic world to generate (default: `SyntheticConfig(seed=seed)`; the tests pass
    a smaller one)."""
    console = console or Console()
    with claim_output(out, "experiment", "--out"):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "experiment")
        return _run_demo(out, seed, epochs, console, world or SyntheticConfig(seed=seed))


def _run_demo(out: Path, seed: int, epochs: int, console: Console, world: SyntheticConfig) -> pl.DataFrame:
    seed_everything(seed)
    t0 = time.perf_counter()
    paths = write_world(out / "raw", world)
    inter = read_interactions(
        paths["interactions"], ColumnMap(user="user", item="item", rating="rating", timestamp="timestamp")
    )
    items = read_items(paths["items"], ItemColumnMap(item="item", description="description"))
    bundle = prepare(
        inter,
        items,
        PrepareConfig(split="leave_last_out", cold_user_fraction=0.2, seed=seed),
        out / "bundle",
        tuple(paths.values()),
    )
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
    cfg = load_experiment(
        data={
            "name": "demo (synthetic world)",
            "data": {"bundle": str(out / "bundle")},
            "train": {
                "epochs": epochs,
                "batch_size": 1024,
                "n_negatives": 4,
                "lr": 3e-3,
                "patience": 3,
                "progress": False,
                "checkpoint": False,
            },
            "eval": {"ks": [10, 20]},
            "seeds": [seed],
            "out": str(out),
            "models": [dict(x) for x in DEMO_MODELS],
        }
    )
    result = run_experiment(
        cfg, bundle=bundle, progress=lambda s: console.print("  " + s, markup=False, highlight=False)
    )
    # Plain print: a console would wrap the wide table at the terminal width.
    print("\nndcg@10 on the synthetic world, slice `all` (protocol: full ranking, split: test)\n", flush=True)
    print(result.summary_table("ndcg@10", "all"), flush=True)
    print("\nndcg@10, users new to a category\n", flush=True)
    print(result.summary_table("ndcg@10", "new_to_category"), flush=True)
    console.print(f"\nwrote {out / 'results.md'} and results.json in {time.perf_counter() - t0:.0f}s")
    return result.runs
