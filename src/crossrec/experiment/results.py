"""The report of an experiment: mean ± std over seeds, best single-category model, gains, acceptance.

`ExperimentResult` holds every run's table (one row per model, seed, category and slice, as the
runner in `crossrec.experiment.runner` collects it) and writes `results.json` / `results.md`.
Which models are single-category references and which is the flagship comes from the flags of the
model entries (`ModelRun.single_category`, `ModelRun.flagship`), never from model names.

Example:
    >>> res = run_experiment(load_experiment("configs/experiments/anime-mal.yaml"))  # doctest: +SKIP
    >>> res.mean("crossrec", "ndcg@10", "Music", "all")                              # doctest: +SKIP
    >>> print(res.summary_table("ndcg@10", "new_to_category"))                       # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from crossrec.errors import UnknownNameError
from crossrec.evaluation.evaluator import SLICES
from crossrec.evaluation.report import LOWER_IS_BETTER, markdown_table

if TYPE_CHECKING:
    from crossrec.experiment.spec import ExperimentConfig, ModelRun


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
        return self.runs.group_by("model", "category", "slice", maintain_order=True).agg(
            pl.col("n_users").first(), pl.col("seed").n_unique().alias("n_seeds"), *aggs
        )

    def mean(self, model: str, metric: str, category: str = "ALL", slice: str = "all") -> float:
        """Mean over seeds of one cell; NaN where that (category, slice) is empty (e.g. no cold items
        in one category); KeyError for a model the experiment does not have."""
        if model not in set(self.runs["model"].to_list()):
            raise UnknownNameError(f"no result for model {model!r}; have {sorted(set(self.runs['model'].to_list()))}")
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
                {
                    "label": m.label,
                    "name": m.name,
                    "mode": m.mode,
                    "params": m.params,
                    "single_category": m.single_category,
                    "flagship": m.flagship,
                    "baseline": m.baseline,
                    "train": m.train,
                    "transfer": m.transfer,
                    "seeds": None if m.seeds is None else list(m.seeds),
                }
                for m in self.config.models
            ],
            "run": self.config.run,
            "bundle": self.bundle_info,
            "train_seconds": self.seconds,
            "summary": self.summary().to_dicts(),
            "beyond": self.beyond_summary().to_dicts(),
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
            (
                f"{info['n_users']} users, {info['n_items']} items, {info['n_interactions']} interactions in "
                f"{len(info['categories'])} categories; split `{info['split']}`; protocol: {protocol}, split: test. "
                f"Mean ± std over seeds {seeds} (models fitted in closed form run once). "
                f"Gain = relative change of the transfer model over its single-category baseline "
                f"(the best single-category model of each row unless the model names one)."
            ),
            "",
        ]
        lines += self._acceptance()
        lines += self._beyond_markdown()
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

    # ------------------------------------------------------------------ beyond accuracy
    BEYOND = ("coverage", "novelty", "ild", "exposure_gap", "cross_ndcg")

    def beyond_columns(self) -> list[str]:
        """The beyond-accuracy columns the runs have (evaluation/beyond.py), e.g. coverage@10."""
        return [c for c in self.runs.columns if c.split("@")[0] in self.BEYOND + ("exposure", "reach")]

    def beyond_summary(self) -> pl.DataFrame:
        """Mean over seeds of the beyond-accuracy columns per (model, category), slice `all`."""
        cols = self.beyond_columns() + (["interaction_share"] if "interaction_share" in self.runs.columns else [])
        if not cols:
            return pl.DataFrame()
        return (
            self.runs.filter(pl.col("slice") == "all")
            .group_by("model", "category", maintain_order=True)
            .agg(*[pl.col(c).mean() for c in cols])
        )

    def _beyond_markdown(self) -> list[str]:
        summary = self.beyond_summary()
        if summary.height == 0:
            return []
        cols = [c for c in self.beyond_columns() if c.split("@")[0] in self.BEYOND]
        labels = [m.label for m in self.config.models]
        overall = summary.filter(pl.col("category") == "ALL")
        rows = []
        for label in labels:
            r = overall.filter(pl.col("model") == label)
            rows.append([label, *[_num(r[c][0]) if r.height else "–" for c in cols]])
        exp_col = next((c for c in self.beyond_columns() if c.startswith("exposure@")), None)
        cats = [c for c in self._categories() if c != "ALL"]
        lines = [
            "## Beyond accuracy (test, mean over seeds)",
            "",
            "Coverage, novelty (self-information, bits) and intra-list diversity (co-occurrence cosine distance) "
            "of each category's own top-K, averaged over categories' lists; exposure gap and cross NDCG of the "
            "top-K merged across categories (evaluation/beyond.py).",
            "",
            markdown_table(["model", *cols], rows),
            "",
        ]
        if exp_col is not None and cats:
            share = (
                summary.filter(pl.col("category").is_in(cats))
                .group_by("category")
                .agg(pl.col("interaction_share").first())
            )
            target = dict(zip(share["category"].to_list(), share["interaction_share"].to_list()))
            erows = [["training interactions", *[_num(target.get(c)) for c in cats]]]
            for label in labels:
                r = summary.filter(pl.col("model") == label)
                got = dict(zip(r["category"].to_list(), r[exp_col].to_list()))
                erows.append([label, *[_num(got.get(c)) for c in cats]])
            lines += [
                f"Share of the merged top-K slots per category ({exp_col}) against its share of the training "
                "interactions:",
                "",
                markdown_table(["model", *cats], erows),
                "",
            ]
        return lines

    def _categories(self) -> list[str]:
        cats = list(dict.fromkeys(self.runs["category"].to_list()))
        return [c for c in cats if c != "ALL"] + [c for c in cats if c == "ALL"]

    def _slices(self) -> list[str]:
        """The slices present, in the evaluator's order (`SLICES`), then any others sorted."""
        have = set(self.runs["slice"].to_list())
        return [s for s in SLICES if s in have] + sorted(have - set(SLICES))

    def _n_users(self, cat: str, slc: str) -> Any:
        rows = self.runs.filter((pl.col("category") == cat) & (pl.col("slice") == slc))
        return rows["n_users"][0] if rows.height else None

    def _cell(self, model: str, metric: str, cat: str, slc: str) -> str:
        rows = self.summary().filter(
            (pl.col("model") == model) & (pl.col("category") == cat) & (pl.col("slice") == slc)
        )
        if rows.height == 0 or rows[metric][0] is None or math.isnan(rows[metric][0]):
            return "–"
        if len(self.config.seeds) == 1:
            return f"{rows[metric][0]:.4f}"
        if rows["n_seeds"][0] < len(self.config.seeds):
            return f"{rows[metric][0]:.4f} ({rows['n_seeds'][0]} seed)"
        return f"{rows[metric][0]:.4f} ± {rows[f'{metric}_std'][0]:.4f}"

    def _gain(self, model: ModelRun, metric: str, cat: str, slc: str) -> tuple[str, str]:
        base: str | None
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
        """The flagship models (entries with `flagship: true`) against the best single-category model:
        sparsest and densest category (by training interactions), and users new to a category (ALL)."""
        metric = metric or self.config.metrics[0]
        counts = self.bundle_info["train_rows"]
        have = set(self.runs["category"].to_list())
        cats = [c for c in counts if c in have]
        if not cats:
            return []
        sparsest, densest = min(cats, key=lambda c: counts[c]), max(cats, key=lambda c: counts[c])
        checks = [
            (f"sparsest category ({sparsest})", sparsest, "all", "beat"),
            (f"densest category ({densest})", densest, "all", "within 2%"),
        ]
        if "new_to_category" in set(self.runs["slice"].to_list()):
            checks.append(("users new to a category (ALL)", "ALL", "new_to_category", "beat"))
        out = []
        for m in self.config.models:
            if not m.flagship:
                continue
            for what, cat, slc, rule in checks:
                base, b = self.best_single(metric, cat, slc)
                v = self.mean(m.label, metric, cat, slc)
                ok = v > b if rule == "beat" else v >= 0.98 * b
                out.append(
                    {
                        "model": m.label,
                        "check": what,
                        "category": cat,
                        "slice": slc,
                        "rule": rule,
                        "value": v,
                        "best_single": base,
                        "best_single_value": b,
                        "passed": bool(ok),
                    }
                )
        return out

    def _acceptance(self) -> list[str]:
        checks = self.acceptance()
        if not checks:
            return []
        metric = self.config.metrics[0]
        rows = [
            [
                c["model"],
                c["check"],
                c["rule"],
                f"{c['value']:.4f}",
                f"{c['best_single']} {c['best_single_value']:.4f}",
                "yes" if c["passed"] else "**no**",
            ]
            for c in checks
        ]
        return [
            "## Flagship vs the best single-category model",
            "",
            markdown_table(["model", "check", "rule", metric, "best single-category", "passed"], rows),
            "",
        ]


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


__all__ = ["ExperimentResult"]
