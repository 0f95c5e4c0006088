"""What `crossrec tune` writes besides its study (experiment/tune.py): `best.yaml`, the experiment
with each tuned model's best options filled in (`best_experiment`), and `tuning.md`
(`tuning_markdown`).

Example:
    >>> yaml.safe_dump(best_experiment(cfg, tuning["models"]))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from crossrec.config import merge_dicts
from crossrec.experiment.space import split_point
from crossrec.experiment.spec import ExperimentConfig, ModelRun
from crossrec.experiment.tune_objective import objective_label


def _entry(m: ModelRun) -> dict[str, Any]:
    """A ModelRun as an experiment YAML entry (the inverse of spec._parse_model)."""
    out: dict[str, Any] = {"label": m.label, "name": m.name, "mode": m.mode}
    for key in ("baseline", "single_category", "flagship"):
        out[key] = getattr(m, key)
    for key in ("train", "transfer", "encoder", "params", "grid"):
        if getattr(m, key):
            out[key] = getattr(m, key)
    if m.seeds is not None:
        out["seeds"] = list(m.seeds)
    return {k: v for k, v in out.items() if v is not None}


def best_experiment(cfg: ExperimentConfig, tuned: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The experiment YAML with each tuned model's best options filled in (`search:` dropped)."""
    models = []
    for m in cfg.models:
        best = (tuned.get(m.label) or {}).get("best")
        if best is not None:
            params, train = split_point(best["params"])
            m = replace(m, params=merge_dicts(dict(m.params), params), train=merge_dicts(dict(m.train), train), grid={})
        models.append(_entry(replace(m, search={})))
    return {
        "name": f"{cfg.name}-tuned",
        **cfg.run,
        "seeds": list(cfg.seeds),
        "metrics": list(cfg.metrics),
        "out": f"{cfg.out}-tuned",
        "models": models,
    }


def tuning_markdown(
    cfg: ExperimentConfig,
    tuned: dict[str, dict[str, Any]],
    trials: int,
    timeout: float,
    objective: tuple[str, ...] = ("all",),
) -> str:
    """tuning.md: the budget and the objective, then per model its trials by state, the seconds
    spent and the best options."""
    limit = f", at most {timeout:.0f}s of trial time" if timeout else ""
    slices = "" if tuple(objective) == ("all",) else f" averaged over the slices {', '.join(objective)}"
    score = objective_label(cfg.metrics[0], objective)
    lines = [
        f"# Tuning: {cfg.name}",
        "",
        f"Budget per model: {trials} finished trials{limit}; TPE sampler, median pruner; "
        f"scored by validation {cfg.metrics[0]} (ALL categories){slices}, first seed ({cfg.seeds[0]}).",
        "",
        f"| model | trials (complete / pruned / failed) | seconds | best {score} | best options |",
        "|---|---|---:|---:|---|",
    ]
    for label, t in tuned.items():
        states = [x["state"] for x in t["trials"] if not x.get("interrupted")]
        counts = f"{len(states)} ({states.count('complete')} / {states.count('pruned')} / {states.count('fail')})"
        best = t["best"]
        value = "" if best is None else f"{best['value']:.4f}"
        opts = "" if best is None else ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best["params"].items()))
        lines.append(f"| {label} | {counts} | {t['seconds']:.0f} | {value} | {opts} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


__all__ = ["best_experiment", "tuning_markdown"]
