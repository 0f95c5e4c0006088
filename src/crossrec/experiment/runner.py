"""The experiment runner: prepare once, train every model over the seeds, evaluate, write the report.

The data is prepared once (the split does not change with the seed); every model is trained once
per seed (models fitted in closed form, like popularity and ItemKNN, once: their result does not
depend on the seed) and evaluated on the test split with the configured protocol. Runs already
finished in `out` are reused (`_reusable`), so an interrupted experiment continues where it stopped.

Output in `out`: `runs/<label>/seed-<s>.json` (each run's table), `results.json` (mean, std and
every seed), `results.md` (see `crossrec.evaluation.experiment_report`).

Example:
    >>> res = run_experiment(load_experiment("configs/experiments/anime-mal.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl

from crossrec.config import to_dict
from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import Evaluator
from crossrec.evaluation.experiment_report import ExperimentResult
from crossrec.experiment.spec import ExperimentConfig
from crossrec.io import claim_output, read_json, write_json, write_marker, write_text
from crossrec.models.base import config_from_dict
from crossrec.typed import ConfigError

log = logging.getLogger(__name__)


def _bundle_info(bundle: Bundle) -> dict[str, Any]:
    train = bundle.split("train")
    counts = train.group_by("category").len()
    by_cat = {bundle.categories[int(r["category"])]: int(r["len"]) for r in counts.iter_rows(named=True)}
    m = bundle.manifest
    return {
        "n_users": bundle.n_users,
        "n_items": bundle.n_items,
        "n_interactions": int(bundle.interactions.height),
        "categories": bundle.categories,
        "split": (m.get("settings") or m.get("prepare") or {}).get("split", "?"),
        "train_rows": {c: by_cat.get(c, 0) for c in bundle.categories},
    }


def _reusable(stored: dict[str, Any], run_config: dict[str, Any], options: dict[str, Any], bundle: str) -> bool:
    """A finished run is reused when its run config, its resolved model options and the fingerprint
    of the Bundle it ran on all match (a bundle re-prepared in place, e.g. with another split seed,
    is other data: its runs are stale). Runs stored without a fingerprint are never reused."""
    if stored.get("run_config") != run_config or stored.get("bundle_fingerprint") != bundle:
        return False
    return stored.get("model_options", options) == options


def run_experiment(
    cfg: ExperimentConfig, bundle: Bundle | None = None, progress: Callable[[str], None] | None = None
) -> ExperimentResult:
    """Prepare (unless a bundle is given), train every model over the seeds, evaluate, write the report.

    `cfg.out` must be missing, empty or an experiment directory (else `OutputError`); it is locked
    while the experiment runs.
    """
    say = progress or (lambda s: log.info(s))
    out = Path(cfg.out)
    with claim_output(out, "experiment", "out"):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "experiment")
        return _run_experiment(cfg, out, bundle, say)


def _run_experiment(cfg: ExperimentConfig, out: Path, bundle: Bundle | None, say: Callable[[str], None]) -> ExperimentResult:
    from crossrec.pipeline import prepare_data, seed_everything, train

    base = cfg.run_config(cfg.models[0], cfg.seeds[0])
    if bundle is None:
        t = time.perf_counter()
        bundle = prepare_data(base)
        say(f"prepared {bundle.n_users} users, {bundle.n_items} items in {time.perf_counter() - t:.1f}s -> {bundle.root}")
    fingerprint = (bundle.manifest.get("fingerprint") or bundle.fingerprint())["bundle"]
    evaluator = Evaluator(bundle, base.eval, split="test")
    tables, seconds = [], {}
    for m in cfg.models:
        own = [s for s in cfg.seeds if m.seeds is None or s in m.seeds] or list(m.seeds or cfg.seeds)
        seeds = own[:1] if m.closed_form else own
        for seed in seeds:
            path = out / "runs" / m.label / f"seed-{seed}.json"
            run_cfg = cfg.run_config(m, seed)
            wanted = json.loads(json.dumps(to_dict(run_cfg), default=str))  # as it reads back from JSON
            # Every model option with its default filled in, so a changed code default is a new run.
            resolved = json.loads(json.dumps(asdict(config_from_dict(run_cfg.model.name, run_cfg.model.params)), default=str))
            stored = read_json(path, "experiment run") if path.exists() else None
            if stored is not None and _reusable(stored, wanted, resolved, fingerprint):
                say(f"{m.label} seed {seed}: reusing {path}")
            else:
                seed_everything(seed)
                t = time.perf_counter()
                art = train(run_cfg, bundle)
                secs = time.perf_counter() - t
                res = evaluator.evaluate(art.model)
                stored = {"run_config": wanted, "model_options": resolved, "bundle_fingerprint": fingerprint,
                          "seconds": secs, "rows": res.table.to_dicts()}
                write_json(path, stored)
                say(f"{m.label} seed {seed}: {secs:.1f}s, test {cfg.metrics[0]} {res.metric(cfg.metrics[0]):.4f}")
            seconds.setdefault(m.label, []).append(float(stored["seconds"]))
            table = pl.DataFrame(stored["rows"])
            for s in cfg.seeds if m.closed_form else (seed,):
                tables.append(table.select(pl.lit(m.label).alias("model"), pl.lit(s).alias("seed"), pl.all()))
    runs = pl.concat(tables, how="diagonal_relaxed")
    missing = [k for k in cfg.metrics if k not in runs.columns]
    if missing:
        raise ConfigError(f"metrics {missing} were not computed; the eval section gives {sorted(set(runs.columns) - {'model', 'seed', 'protocol', 'category', 'slice', 'n_users'})}")
    result = ExperimentResult(cfg, runs, _bundle_info(bundle), seconds)
    write_json(out / "results.json", result.to_json() | {"acceptance": result.acceptance()})
    write_text(out / "results.md", result.to_markdown())
    return result


__all__ = ["run_experiment"]
