"""`crossrec experiment`: train a list of models over seeds, compare them per category and slice.

An experiment YAML has the sections of a run config (`data`, `prepare`, `train`, `eval`, and
`transfer` where the run config has it) plus:

    seeds: [0, 1, 2]
    metrics: [ndcg@10, recall@10]
    models:
      - {label: pop, name: pop}
      - {label: bprmf-single, name: mf, mode: single, dim: 128}
      - {label: crossrec, name: crossrec, dim: 64, train: {lr: 0.002}}

Each model entry has a `label`, a registry `name`, a `mode` (single | pooled), optional `train` and
`transfer` overrides (the transfer paradigm), optional `params` (model options whose name collides
with an entry key), optional `baseline` (the label of the single-category model its gain is
measured against; default: the best single-category model of each row), optional
`single_category` (default: mode single, or popularity), optional `seeds` (a subset for an
expensive baseline; its cells then say how many seeds); every other key is a model option.

The data is prepared once (the split does not change with the seed); every model is trained once
per seed (models fitted in closed form, like popularity and ItemKNN, once: their result does not
depend on the seed) and evaluated on the test split with the configured protocol. Runs already
finished in `out` are reused, so an interrupted experiment continues where it stopped.

Output in `out`: `runs/<label>/seed-<s>.json` (each run's table), `results.json` (mean, std and
every seed), `results.md` (a summary per slice, one table per category and slice with the gain from
transfer in its own column, and the acceptance check of the flagship).

Example:
    >>> res = run_experiment(load_experiment("configs/experiments/anime-mal.yaml"))  # doctest: +SKIP
    >>> res.mean("crossrec", "ndcg@10", "Music", "all")                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from crossrec.config import RunConfig, _merge, _model_spec_hook, parse_overrides, to_dict, validate_run_config
from crossrec.data.bundle import Bundle
from crossrec.evaluation.evaluator import Evaluator
from crossrec.evaluation.report import LOWER_IS_BETTER, markdown_table
from crossrec.io import claim_output, read_json, write_json, write_marker, write_text
from crossrec.models.base import config_from_dict, get_entry
from crossrec.typed import ConfigError, check_type, from_dict, read_config_file

log = logging.getLogger(__name__)

RUN_SECTIONS = ("data", "prepare", "train", "eval", "transfer")
MODEL_KEYS = ("label", "name", "mode", "baseline", "single_category", "train", "transfer", "params", "seeds")
SLICE_ORDER = ("all", "warm", "new_to_category", "cold_item")


@dataclass(frozen=True)
class ModelRun:
    """One model of an experiment (see the module docstring)."""

    label: str
    name: str
    mode: str = "pooled"
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    single_category: bool = False
    train: dict[str, Any] = field(default_factory=dict)
    transfer: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None  # this model's seeds (e.g. an expensive baseline: [0]); None = all

    @property
    def closed_form(self) -> bool:
        """Fitted without a loss (popularity, ItemKNN): seeds cannot change its result."""
        cls = get_entry(self.name).cls
        return hasattr(cls, "fit") and not hasattr(cls, "loss")


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment: the shared run sections, the models, the seeds and the reported metrics."""

    run: dict[str, Any]  # the run-config sections shared by every model (data, prepare, train, eval, ...)
    models: tuple[ModelRun, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    metrics: tuple[str, ...] = ("ndcg@10", "recall@10")
    out: str = "runs/experiment"
    name: str = "experiment"

    def run_config(self, model: ModelRun, seed: int) -> RunConfig:
        """The full RunConfig of one (model, seed) run."""
        data = {k: v for k, v in self.run.items() if k in RUN_SECTIONS}
        data["train"] = _merge(dict(data.get("train", {})), dict(model.train)) | {"seed": seed}
        if model.transfer:
            data["transfer"] = _merge(dict(data.get("transfer", {})), dict(model.transfer))
        data["model"] = {"name": model.name, "mode": model.mode, **model.params}
        data["seed"] = seed
        data["out"] = str(Path(self.out) / "models" / model.label / f"seed-{seed}")
        return from_dict(RunConfig, data, hook=_model_spec_hook)


def _parse_model(i: int, entry: Any) -> ModelRun:
    key = f"models[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: expected a mapping with label and name, got {entry!r}")
    for req in ("label", "name"):
        if req not in entry:
            raise ConfigError(f"{key}: missing '{req}'")
    name = check_type(entry["name"], str, f"{key}.name")
    get_entry(name)  # unknown model names fail here, listing the registry
    mode = check_type(entry.get("mode", "pooled"), str, f"{key}.mode")
    if mode not in ("single", "pooled"):
        raise ConfigError(f"{key}.mode={mode!r}; expected single or pooled")
    single = entry.get("single_category")
    # Model options: the entry's other keys, plus an explicit `params` mapping for options whose name
    # is an entry key (e.g. BiTGCF's own `transfer` option).
    params = {k: v for k, v in entry.items() if k not in MODEL_KEYS} | check_type(entry.get("params", {}) or {}, dict, f"{key}.params")
    try:
        config_from_dict(name, params)  # unknown or mistyped model options fail before anything trains
    except ConfigError as e:
        raise ConfigError(f"{key} ({entry['label']}): {e}") from None
    return ModelRun(
        label=check_type(entry["label"], str, f"{key}.label"),
        name=name,
        mode=mode,
        params=params,
        baseline=check_type(entry.get("baseline"), str | None, f"{key}.baseline"),
        single_category=(mode == "single" or name == "pop") if single is None else check_type(single, bool, f"{key}.single_category"),
        train=check_type(entry.get("train", {}) or {}, dict, f"{key}.train"),
        transfer=check_type(entry.get("transfer", {}) or {}, dict, f"{key}.transfer"),
        seeds=None if entry.get("seeds") is None else tuple(check_type(entry["seeds"], tuple[int, ...], f"{key}.seeds")),
    )


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None, data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (or a dict) and apply dotted overrides (e.g. --seeds=[0])."""
    raw: dict[str, Any] = dict(data or {})
    if path is not None:
        raw = _merge(raw, read_config_file(path))
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
    known = set(RUN_SECTIONS) | {"models", "seeds", "metrics", "out", "name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown experiment key(s) {unknown}; known: {sorted(known)}")
    models = raw.get("models") or []
    if not isinstance(models, list) or not models:
        raise ConfigError("models: expected a non-empty list of {label, name, ...} entries")
    runs = tuple(_parse_model(i, m) for i, m in enumerate(models))
    labels = [m.label for m in runs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError(f"models: duplicate label(s) {dupes}")
    for m in runs:
        if m.baseline is not None and m.baseline not in labels:
            raise ConfigError(f"models[{labels.index(m.label)}].baseline={m.baseline!r} is not a model label; have {labels}")
    cfg = ExperimentConfig(
        run={k: raw[k] for k in RUN_SECTIONS if k in raw},
        models=runs,
        seeds=tuple(check_type(raw.get("seeds", [0, 1, 2]), tuple[int, ...], "seeds")),
        metrics=tuple(check_type(raw.get("metrics", ["ndcg@10", "recall@10"]), tuple[str, ...], "metrics")),
        out=check_type(raw.get("out", "runs/experiment"), str, "out"),
        name=check_type(raw.get("name", Path(path).stem if path else "experiment"), str, "name"),
    )
    if not cfg.seeds:
        raise ConfigError("seeds: expected at least one seed")
    for m in runs:  # every run config must be valid before anything trains
        try:
            validate_run_config(cfg.run_config(m, cfg.seeds[0]))
        except ConfigError as e:
            raise ConfigError(f"models[{labels.index(m.label)}] ({m.label}): {e}") from None
    return cfg


# ---------------------------------------------------------------------- results
@dataclass
class ExperimentResult:
    """Every run's table (`runs`: model, seed, category, slice, n_users, metrics) and their summary."""

    config: ExperimentConfig
    runs: pl.DataFrame
    bundle_info: dict[str, Any]
    seconds: dict[str, list[float]]

    @property
    def metric_names(self) -> list[str]:
        return list(self.config.metrics)

    def summary(self) -> pl.DataFrame:
        """Mean and std over seeds per (model, category, slice): columns <metric>, <metric>_std, n_seeds."""
        aggs = []
        for m in self.metric_names:
            aggs += [pl.col(m).mean().alias(m), pl.col(m).std(ddof=0).fill_null(0.0).alias(f"{m}_std")]
        return (
            self.runs.group_by("model", "category", "slice", maintain_order=True)
            .agg(pl.col("n_users").first(), pl.col("seed").n_unique().alias("n_seeds"), *aggs)
        )

    def mean(self, model: str, metric: str, category: str = "ALL", slice: str = "all") -> float:
        """Mean over seeds of one cell; NaN where that (category, slice) is empty (e.g. no cold items
        in one category); KeyError for a model the experiment does not have."""
        if model not in set(self.runs["model"].to_list()):
            raise KeyError(f"no result for model {model!r}; have {sorted(set(self.runs['model'].to_list()))}")
        rows = self.summary().filter(
            (pl.col("model") == model) & (pl.col("category") == category) & (pl.col("slice") == slice)
        )
        if rows.height == 0:
            return float("nan")
        v = rows[metric][0]
        return float("nan") if v is None else float(v)

    def best_single(self, metric: str, category: str, slice: str) -> tuple[str | None, float]:
        """The single-category model with the best mean in one row, and its value."""
        better = min if metric in LOWER_IS_BETTER else max
        cands = []
        for m in self.config.models:
            if m.single_category:
                v = self.mean(m.label, metric, category, slice)
                if not math.isnan(v):
                    cands.append((v, m.label))
        if not cands:
            return None, float("nan")
        v, label = better(cands)
        return label, v

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "seeds": list(self.config.seeds),
            "metrics": self.metric_names,
            "models": [
                {"label": m.label, "name": m.name, "mode": m.mode, "params": m.params, "single_category": m.single_category,
                 "baseline": m.baseline, "train": m.train, "transfer": m.transfer}
                for m in self.config.models
            ],
            "bundle": self.bundle_info,
            "train_seconds": self.seconds,
            "summary": self.summary().to_dicts(),
            "runs": self.runs.to_dicts(),
        }

    # ------------------------------------------------------------------ markdown
    def to_markdown(self) -> str:
        cfg = self.config
        protocol = self.runs["protocol"][0] if "protocol" in self.runs.columns and self.runs.height else "full ranking"
        info = self.bundle_info
        seeds = ", ".join(str(s) for s in cfg.seeds)
        lines = [
            f"# Experiment `{cfg.name}`",
            "",
            f"{info['n_users']} users, {info['n_items']} items, {info['n_interactions']} interactions in "
            f"{len(info['categories'])} categories; split `{info['split']}`; protocol: {protocol}, split: test. "
            f"Mean ± std over seeds {seeds} (models fitted in closed form run once). "
            f"Gain = relative change of the transfer model over its single-category baseline "
            f"(the best single-category model of each row unless the model names one).",
            "",
        ]
        lines += self._acceptance()
        for metric in cfg.metrics:
            for slc in self._slices():
                lines += [f"## {metric}, slice `{slc}`", "", self.summary_table(metric, slc), ""]
        lines += ["## Per category and slice", ""]
        for cat in self._categories():
            for slc in self._slices():
                lines += [f"### {cat}, slice `{slc}`", "", self._detail_table(cat, slc), ""]
        secs = " · ".join(f"{k} {np.mean(v):.1f}s" for k, v in self.seconds.items())
        lines += [f"Training seconds per run (mean over seeds): {secs}", ""]
        return "\n".join(lines)

    def _categories(self) -> list[str]:
        cats = list(dict.fromkeys(self.runs["category"].to_list()))
        return [c for c in cats if c != "ALL"] + [c for c in cats if c == "ALL"]

    def _slices(self) -> list[str]:
        have = set(self.runs["slice"].to_list())
        return [s for s in SLICE_ORDER if s in have] + sorted(have - set(SLICE_ORDER))

    def _n_users(self, cat: str, slc: str) -> Any:
        rows = self.runs.filter((pl.col("category") == cat) & (pl.col("slice") == slc))
        return rows["n_users"][0] if rows.height else None

    def _cell(self, model: str, metric: str, cat: str, slc: str) -> str:
        rows = self.summary().filter((pl.col("model") == model) & (pl.col("category") == cat) & (pl.col("slice") == slc))
        if rows.height == 0 or rows[metric][0] is None or math.isnan(rows[metric][0]):
            return "–"
        if len(self.config.seeds) == 1:
            return f"{rows[metric][0]:.4f}"
        if rows["n_seeds"][0] < len(self.config.seeds):
            return f"{rows[metric][0]:.4f} ({rows['n_seeds'][0]} seed)"
        return f"{rows[metric][0]:.4f} ± {rows[f'{metric}_std'][0]:.4f}"

    def _gain(self, model: ModelRun, metric: str, cat: str, slc: str) -> tuple[str, str]:
        if model.baseline is not None:
            base, b = model.baseline, self.mean(model.baseline, metric, cat, slc)
        else:
            base, b = self.best_single(metric, cat, slc)
        v = self.mean(model.label, metric, cat, slc)
        if base is None or math.isnan(v) or math.isnan(b) or b == 0:
            return base or "–", "–"
        g = (v - b) / abs(b) * 100.0
        if metric in LOWER_IS_BETTER:
            g = -g
        return base, f"{g:+.1f}%"

    def summary_table(self, metric: str, slc: str) -> str:
        """One slice as markdown: rows = categories, columns = models (mean ± std), best single, gains."""
        labels = [m.label for m in self.config.models]
        transfer = [m for m in self.config.models if not m.single_category]
        headers = ["category", "n_users", *labels, "best single"] + [f"gain {m.label}" for m in transfer]
        rows = []
        for cat in self._categories():
            best, _ = self.best_single(metric, cat, slc)
            cells = [self._cell(label, metric, cat, slc) for label in labels]
            gains = [self._gain(m, metric, cat, slc)[1] for m in transfer]
            rows.append([cat, str(self._n_users(cat, slc)), *cells, best or "–", *gains])
        return markdown_table(headers, rows)

    def _detail_table(self, cat: str, slc: str) -> str:
        headers = ["model", "kind"] + list(self.config.metrics) + ["baseline", f"gain {self.config.metrics[0]}"]
        rows = []
        for m in self.config.models:
            kind = "single-category" if m.single_category else "cross-category"
            base, gain = ("–", "–") if m.single_category else self._gain(m, self.config.metrics[0], cat, slc)
            rows.append([m.label, kind, *[self._cell(m.label, k, cat, slc) for k in self.config.metrics], base, gain])
        return f"n_users = {self._n_users(cat, slc)}\n\n" + markdown_table(headers, rows)

    def acceptance(self, metric: str | None = None) -> list[dict[str, Any]]:
        """The flagship (models named `crossrec`) against the best single-category model: sparsest and
        densest category (by training interactions), and users new to a category (ALL)."""
        metric = metric or self.config.metrics[0]
        counts = self.bundle_info["train_rows"]
        have = set(self.runs["category"].to_list())
        cats = [c for c in counts if c in have]
        if not cats:
            return []
        sparsest, densest = min(cats, key=lambda c: counts[c]), max(cats, key=lambda c: counts[c])
        checks = [(f"sparsest category ({sparsest})", sparsest, "all", "beat"),
                  (f"densest category ({densest})", densest, "all", "within 2%")]
        if "new_to_category" in set(self.runs["slice"].to_list()):
            checks.append(("users new to a category (ALL)", "ALL", "new_to_category", "beat"))
        out = []
        for m in self.config.models:
            if m.name != "crossrec":
                continue
            for what, cat, slc, rule in checks:
                base, b = self.best_single(metric, cat, slc)
                v = self.mean(m.label, metric, cat, slc)
                ok = v > b if rule == "beat" else v >= 0.98 * b
                out.append({"model": m.label, "check": what, "category": cat, "slice": slc, "rule": rule,
                            "value": v, "best_single": base, "best_single_value": b, "passed": bool(ok)})
        return out

    def _acceptance(self) -> list[str]:
        checks = self.acceptance()
        if not checks:
            return []
        metric = self.config.metrics[0]
        rows = [[c["model"], c["check"], c["rule"], f"{c['value']:.4f}", f"{c['best_single']} {c['best_single_value']:.4f}",
                 "yes" if c["passed"] else "**no**"] for c in checks]
        return ["## Flagship vs the best single-category model", "",
                markdown_table(["model", "check", "rule", metric, "best single-category", "passed"], rows), ""]


# ---------------------------------------------------------------------- running
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


def select(cfg: ExperimentConfig, labels: list[str]) -> ExperimentConfig:
    """The experiment restricted to some model labels (in the config's order)."""
    have = [m.label for m in cfg.models]
    unknown = [x for x in labels if x not in have]
    if unknown:
        raise ConfigError(f"--only: unknown model label(s) {unknown}; have {have}")
    models = tuple(m for m in cfg.models if m.label in labels)
    missing = sorted({m.baseline for m in models if m.baseline and m.baseline not in labels})
    if missing:
        raise ConfigError(f"--only: the selected models compare with {missing}; select them too")
    return replace(cfg, models=models)


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


__all__ = ["ExperimentConfig", "ExperimentResult", "ModelRun", "load_experiment", "run_experiment", "select"]
