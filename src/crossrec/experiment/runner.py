"""The experiment runner: prepare once, train every model over the seeds, evaluate, write the report.

The data is prepared once (the split does not change with the seed); every model is trained once
per seed (models fitted in closed form, like popularity and ItemKNN, once: their result does not
depend on the seed) and evaluated on the test split with the configured protocol. Runs already
finished in `out` are reused (`_reusable`), so an interrupted experiment continues where it stopped.

Output in `out`: `runs/<label>/seed-<s>.json` (each run's table), `results.json` (mean, std and
every seed), `results.md` (see `crossrec.experiment.results`).

Example:
    >>> res = run_experiment(load_experiment("configs/experiments/anime-mal.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import polars as pl

from crossrec.config import merge_dicts, to_dict
from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import Evaluator
from crossrec.experiment.results import ExperimentResult
from crossrec.experiment.spec import ExperimentConfig, ModelRun, own_seeds
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
    """A finished run is reused when its run config (but `out`: runs copied from another experiment
    directory count), its resolved model options and the fingerprint of the Bundle it ran on all match (a bundle re-prepared in place, e.g. with another split seed,
    is other data: its runs are stale). Runs stored without a fingerprint are never reused."""

    def same(a: Any) -> Any:  # where the artifact was written does not change the result
        return {k: v for k, v in a.items() if k != "out"} if isinstance(a, dict) else a

    if same(stored.get("run_config")) != same(run_config) or stored.get("bundle_fingerprint") != bundle:
        return False
    return stored.get("model_options", options) == options


def _train_or_reuse(
    run_cfg: Any,
    bundle: Bundle,
    fingerprint: str,
    path: Path,
    seed: int,
    evaluator: Evaluator,
    say: Callable[[str], None],
    what: str,
) -> dict[str, Any]:
    """Train and evaluate one run, or reuse the stored one at `path` when it matches (`_reusable`)."""
    from crossrec.pipeline import seed_everything, train

    wanted = json.loads(json.dumps(to_dict(run_cfg), default=str))  # as it reads back from JSON
    # Every model option with its default filled in, so a changed code default is a new run.
    resolved = json.loads(json.dumps(asdict(config_from_dict(run_cfg.model.name, run_cfg.model.params)), default=str))
    stored = read_json(path, "experiment run") if path.exists() else None
    if stored is not None and _reusable(stored, wanted, resolved, fingerprint):
        say(f"{what}: reusing {path}")
        return stored
    seed_everything(seed)
    t = time.perf_counter()
    art = train(run_cfg, bundle)
    secs = time.perf_counter() - t
    res = evaluator.evaluate(art.model)
    stored = {
        "run_config": wanted,
        "model_options": resolved,
        "bundle_fingerprint": fingerprint,
        "seconds": secs,
        "rows": res.table.to_dicts(),
    }
    write_json(path, stored)
    return stored


def _pick_or_reuse(
    cfg: ExperimentConfig,
    m: ModelRun,
    seed: int,
    bundle: Bundle,
    fingerprint: str,
    path: Path,
    evaluator: Evaluator,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """A pick entry's run: its candidates' artifacts of this seed (a closed-form candidate's one
    run) composed on validation (experiment/pick.py), saved as the entry's artifact and evaluated;
    or the stored run at `path` when it matches and so do the candidates' artifacts."""
    from crossrec.artifact import load_artifact, save_artifact
    from crossrec.experiment.pick import compose

    run_cfg = cfg.run_config(m, seed)
    by_label = {r.label: r for r in cfg.models}
    dirs = {}
    for x in m.pick:
        c = by_label[x]
        dirs[x] = Path(cfg.out) / "models" / x / f"seed-{own_seeds(c, cfg.seeds)[0] if c.closed_form else seed}"
    for x, d in dirs.items():
        if not (d / "config.json").is_file():
            run = Path(cfg.out) / "runs" / x / f"{d.name}.json"
            raise ConfigError(
                f"{m.label}: candidate {x} has no trained model in {d} (its run {run} was kept without it); "
                f"remove {run} and run the experiment again to train it"
            )
    shas = {x: read_json(d / "config.json", "artifact config").get("tensors_sha256") for x, d in dirs.items()}
    wanted = json.loads(json.dumps(to_dict(run_cfg), default=str))
    options = config_from_dict("pick", m.params)
    resolved = json.loads(json.dumps(asdict(options), default=str))
    stored = read_json(path, "experiment run") if path.exists() else None
    if stored is not None and _reusable(stored, wanted, resolved, fingerprint) and stored.get("candidates") == shas:
        say(f"{m.label} seed {seed}: reusing {path}")
        return stored
    t = time.perf_counter()
    picked, report = compose(bundle, {x: load_artifact(d) for x, d in dirs.items()}, run_cfg.eval, options.slices)
    params = {"candidates": list(picked.config.candidates), "slices": list(picked.config.slices)}
    extra = {"run_config": wanted, "pick": report}
    save_artifact(run_cfg.out, picked, "pick", "pooled", params, picked.sizes, extra, bundle=bundle)
    secs = time.perf_counter() - t
    say(f"{m.label} seed {seed}: " + ", ".join(f"{c} -> {x}" for c, x in report["choice"].items()))
    res = evaluator.evaluate(picked)
    stored = {
        "run_config": wanted,
        "model_options": resolved,
        "bundle_fingerprint": fingerprint,
        "seconds": secs,
        "candidates": shas,
        "pick": report,
        "rows": res.table.to_dicts(),
    }
    write_json(path, stored)
    return stored


def tune(
    cfg: ExperimentConfig, m: ModelRun, bundle: Bundle, seed: int, out: Path, say: Callable[[str], None]
) -> tuple[ModelRun, dict[str, Any]]:
    """Train every point of `m.grid` (seed `seed`), score it on the validation split with the
    experiment's first metric (ALL categories, all users), and return the entry with the best
    point's options plus the search table. Test data is never read here."""
    if bundle.split("valid").height == 0:
        raise ConfigError(f"{m.label}: grid search needs a validation split (prepare.valid: true)")
    metric = cfg.metrics[0]
    fingerprint = (bundle.manifest.get("fingerprint") or bundle.fingerprint())["bundle"]
    base = cfg.run_config(m, seed)
    valid = Evaluator(bundle, replace(base.eval, beyond=False), split="valid")
    table = []
    for i, point in enumerate(m.grid_points()):
        trial = replace(m, params=merge_dicts(dict(m.params), point))
        run_cfg = cfg.run_config(trial, seed)
        run_cfg = replace(run_cfg, out=str(out / "tuning" / m.label / f"point-{i}"))
        stored = _train_or_reuse(
            run_cfg,
            bundle,
            fingerprint,
            out / "tuning" / m.label / f"point-{i}.json",
            seed,
            valid,
            say,
            f"{m.label} grid point {i}",
        )
        rows = pl.DataFrame(stored["rows"]).filter((pl.col("category") == "ALL") & (pl.col("slice") == "all"))
        score = float(rows[metric][0]) if rows.height else float("nan")
        table.append({"point": point, f"valid_{metric}": score, "seconds": stored["seconds"]})
        say(f"{m.label} grid point {i} {point}: valid {metric} {score:.4f}")
    best = max(range(len(table)), key=lambda j: (table[j][f"valid_{metric}"], -j))
    chosen = table[best]["point"]
    say(f"{m.label}: chose {chosen} on validation")
    return replace(m, params=merge_dicts(dict(m.params), chosen)), {
        "metric": f"valid {metric}",
        "chosen": chosen,
        "points": table,
    }


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


def _run_experiment(
    cfg: ExperimentConfig, out: Path, bundle: Bundle | None, say: Callable[[str], None]
) -> ExperimentResult:
    from crossrec.pipeline import prepare_data

    base = cfg.run_config(cfg.models[0], cfg.seeds[0])
    if bundle is None:
        t = time.perf_counter()
        bundle = prepare_data(base)
        say(
            f"prepared {bundle.n_users} users, {bundle.n_items} items in {time.perf_counter() - t:.1f}s -> {bundle.root}"
        )
    fingerprint = (bundle.manifest.get("fingerprint") or bundle.fingerprint())["bundle"]
    evaluator = Evaluator(bundle, base.eval, split="test")
    tables: list[pl.DataFrame] = []
    seconds: dict[str, list[float]] = {}
    tuning: dict[str, Any] = {}
    for m in cfg.models:
        own = own_seeds(m, cfg.seeds)
        seeds = own[:1] if m.closed_form else own
        if m.grid:
            m, tuning[m.label] = tune(cfg, m, bundle, own[0], out, say)
        for seed in seeds:
            path = out / "runs" / m.label / f"seed-{seed}.json"
            if m.pick:
                stored = _pick_or_reuse(cfg, m, seed, bundle, fingerprint, path, evaluator, say)
            else:
                stored = _train_or_reuse(
                    cfg.run_config(m, seed), bundle, fingerprint, path, seed, evaluator, say, f"{m.label} seed {seed}"
                )
            say(f"{m.label} seed {seed}: {float(stored['seconds']):.1f}s")
            seconds.setdefault(m.label, []).append(float(stored["seconds"]))
            table = pl.DataFrame(stored["rows"])
            for s in cfg.seeds if m.closed_form else (seed,):
                tables.append(table.select(pl.lit(m.label).alias("model"), pl.lit(s).alias("seed"), pl.all()))
    runs = pl.concat(tables, how="diagonal_relaxed")
    missing = [k for k in cfg.metrics if k not in runs.columns]
    if missing:
        raise ConfigError(
            f"metrics {missing} were not computed; the eval section gives {sorted(set(runs.columns) - {'model', 'seed', 'protocol', 'category', 'slice', 'n_users'})}"
        )
    result = ExperimentResult(cfg, runs, _bundle_info(bundle), seconds)
    write_json(out / "results.json", result.to_json() | {"acceptance": result.acceptance(), "tuning": tuning})
    write_text(out / "results.md", result.to_markdown())
    return result


__all__ = ["run_experiment"]
