"""Evaluation results and their reports: `EvalResult`, markdown tables and model comparisons.

Every table names the protocol that produced it, in a `protocol` column and in the caption line
of its markdown (ARCHITECTURE.md, "Evaluation protocol").

Example:
    >>> res = Evaluator(bundle).evaluate(model)                    # doctest: +SKIP
    >>> res.metric("ndcg@10"), res.metric("recall@10", "books", "new_to_category")  # doctest: +SKIP
    (0.0831, 0.0412)
    >>> print(res.to_markdown().splitlines()[0])                   # doctest: +SKIP
    Evaluation (protocol: full ranking, split: test)
    >>> print(comparison_markdown({"mf": res.table, "pop": pop.table}, "ndcg@10"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from crossrec.errors import ConfigError, UnknownNameError

KEY_COLUMNS = ("protocol", "category", "slice", "n_users")
LOWER_IS_BETTER = ("rmse", "mae")


def protocol_label(protocol: str, n_negatives: int) -> str:
    """Human-readable protocol name, as written into tables and captions."""
    if protocol == "full":
        return "full ranking"
    if protocol == "sampled":
        return f"sampled: 1 positive + {n_negatives} negatives"
    raise ConfigError(f"unknown protocol {protocol!r}; expected 'full' or 'sampled'")


@dataclass
class EvalResult:
    """Metrics of one model on one split.

    Args:
        protocol: "full" or "sampled".
        split: the evaluated split.
        table: one row per (category, slice), then rows with category "ALL"; columns `protocol`,
            `category`, `slice`, `n_users` (evaluated (user, category) units), the metric columns
            ("recall@10", "ndcg@10", "hr@10", "mrr@10", "precision@10", "f1@10" per cut-off, "auc")
            and "rmse"/"mae" when ratings were evaluated.
        config: the resolved `EvalConfig` as a dict.
    """

    protocol: str
    split: str
    table: pl.DataFrame
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        return [c for c in self.table.columns if c not in KEY_COLUMNS]

    def metric(self, name: str, category: str = "ALL", slice: str = "all") -> float:
        """One number from the table, e.g. `metric("ndcg@10", "books", "warm")`."""
        if name not in self.metric_names:
            raise UnknownNameError(f"no metric {name!r}; have {self.metric_names}")
        rows = self.table.filter((pl.col("category") == category) & (pl.col("slice") == slice))
        if rows.height == 0:
            have = sorted({(r["category"], r["slice"]) for r in self.table.select("category", "slice").to_dicts()})
            raise UnknownNameError(f"no row for category {category!r}, slice {slice!r}; have {have}")
        value = rows[name][0]
        return float("nan") if value is None else float(value)

    def describe(self) -> str:
        label = protocol_label(self.protocol, int(self.config.get("n_negatives", 100)))
        return f"protocol: {label}, split: {self.split}"

    def to_markdown(self, title: str | None = None) -> str:
        """The table as markdown; its first line names the protocol and the split."""
        head = f"{title or 'Evaluation'} ({self.describe()})"
        cols = [c for c in self.table.columns if c != "protocol"]
        rows = [[r[c] for c in cols] for r in self.table.iter_rows(named=True)]
        return head + "\n\n" + markdown_table(cols, rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "protocol_label": protocol_label(self.protocol, int(self.config.get("n_negatives", 100))),
            "split": self.split,
            "config": dict(self.config),
            "rows": self.table.to_dicts(),
        }


def format_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats to 4 decimals, missing values as "–"."""
    cells = [[c if isinstance(c, str) else format_cell(c) for c in row] for row in rows]
    numeric = [all(not isinstance(r[i], str) for r in rows) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def comparison_markdown(
    tables: Mapping[str, pl.DataFrame] | pl.DataFrame, metric: str = "ndcg@10", title: str | None = None
) -> str:
    """One metric for several models: rows = categories (+ALL) x slices, columns = models.

    Args:
        tables: {model name: `EvalResult.table`}, or the frame of `evaluate_many` (a `model` column).
        metric: the metric column to compare; the best value in each row is bold.
        title: the first line; by default it names the metric, and the protocol is appended
            when the title does not already say "protocol".
    """
    if isinstance(tables, pl.DataFrame):
        if "model" not in tables.columns:
            raise ValueError("a single frame needs a 'model' column (as evaluate_many returns)")
        tables = {str(k[0]): g for k, g in tables.group_by("model", maintain_order=True)}
    if not tables:
        raise ValueError("no tables to compare")
    for name, t in tables.items():
        if metric not in t.columns:
            raise UnknownNameError(f"table of {name!r} has no metric {metric!r}")
    labels = sorted({p for t in tables.values() if "protocol" in t.columns for p in t["protocol"].unique().to_list()})
    keys: dict[tuple[str, str], int | None] = {}  # (category, slice) -> n_users, in first-seen order
    values: dict[str, dict[tuple[str, str], Any]] = {}
    for name, t in tables.items():
        values[name] = {}
        for r in t.iter_rows(named=True):
            key = (r["category"], r["slice"])
            keys.setdefault(key, r.get("n_users"))
            values[name][key] = r[metric]
    # Categories keep their order of first appearance, with "ALL" last.
    cats = list(dict.fromkeys(k[0] for k in keys))
    order = [c for c in cats if c != "ALL"] + [c for c in cats if c == "ALL"]
    rows = []
    for cat in order:
        for key in [k for k in keys if k[0] == cat]:
            vals = [values[m].get(key) for m in tables]
            present = [v for v in vals if v is not None and not math.isnan(v)]
            best = (min if metric in LOWER_IS_BETTER else max)(present) if len(tables) > 1 and present else None
            cells = [f"**{format_cell(v)}**" if best is not None and v == best else format_cell(v) for v in vals]
            rows.append([key[0], key[1], format_cell(keys[key]), *cells])
    head = title or f"{metric} by category and slice"
    if "protocol" not in head and labels:
        head += f" (protocol: {'; '.join(labels)})"
    return head + "\n\n" + markdown_table(["category", "slice", "n_users", *tables], rows)
