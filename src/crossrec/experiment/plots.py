"""The report's figures (matplotlib, Agg backend: no display needed). Each function draws one PNG
from plain data (results.json's rows, trainer histories, tuning trials) and returns its path.

Colours: single-category models grey, cross-category models in colour, the flagship dark blue and
outlined; error bars are the standard deviation over seeds.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crossrec.io import atomic_path  # noqa: E402

# Category names are any unicode: a glyph the font lacks draws as a box, not a warning per figure.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)

FLAGSHIP = "#1f3b73"
SINGLE = "#9a9a9a"
PALETTE = [
    "#d95f02",
    "#1b9e77",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#17becf",
    "#bcbd22",
    "#8c564b",
    "#ff7f0e",
    "#2ca02c",
]


def model_colours(models: list[dict[str, Any]], flagships: set[str]) -> dict[str, str]:
    """label -> colour: grey for single-category models, dark blue for the flagships, else the palette."""
    out, j = {}, 0
    for m in models:
        if m["label"] in flagships:
            out[m["label"]] = FLAGSHIP
        elif m.get("single_category"):
            out[m["label"]] = SINGLE
        else:
            out[m["label"]] = PALETTE[j % len(PALETTE)]
            j += 1
    return out


def _save(fig: Any, path: Path) -> Path:
    """Write the PNG atomically (`io.atomic_path`): a reader never sees half a file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def bars_by_panel(
    panels: dict[str, list[tuple[str, float, float]]],
    colours: dict[str, str],
    flagships: set[str],
    metric: str,
    path: Path,
    title: str,
) -> Path:
    """Small multiples: one panel per key (a category or a slice), a horizontal bar per model
    (mean, std error bar), best at the top."""
    names = list(panels)
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    n_models = max((len(v) for v in panels.values()), default=1)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 0.28 * n_models * rows + 1.2 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        cells = sorted([c for c in panels[name] if not math.isnan(c[1])], key=lambda c: c[1])
        labels = [c[0] for c in cells]
        ax.barh(
            range(len(cells)),
            [c[1] for c in cells],
            xerr=[c[2] for c in cells],
            color=[colours.get(x, SINGLE) for x in labels],
            edgecolor=["black" if x in flagships else "none" for x in labels],
            error_kw={"elinewidth": 0.8, "capsize": 2},
        )
        ax.set_yticks(range(len(cells)), labels, fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(metric, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def metric_vs_k(series: dict[str, list[tuple[int, float]]], colours: dict[str, str], metric: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, pts in series.items():
        if pts:
            ks, vs = zip(*pts)
            ax.plot(
                ks,
                vs,
                marker="o",
                color=colours.get(label, SINGLE),
                label=label,
                linewidth=2.2 if colours.get(label) == FLAGSHIP else 1.2,
            )
    ax.set_xlabel("K")
    ax.set_ylabel(f"{metric}@K (ALL)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def learning_curves(
    curves: dict[str, list[list[tuple[int, float]]]], colours: dict[str, str], metric: str, path: Path
) -> Path:
    """Validation metric per epoch; a single-category model has one thin line per category."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for label, lines in curves.items():
        for j, pts in enumerate(lines):
            if pts:
                ep, vs = zip(*pts)
                ax.plot(
                    ep,
                    vs,
                    color=colours.get(label, SINGLE),
                    linewidth=1.8 if len(lines) == 1 else 0.8,
                    label=label if j == 0 else None,
                )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def tuning_history(studies: dict[str, list[dict[str, Any]]], metric: str, path: Path) -> Path:
    """One panel per tuned model: every trial's value (x: pruned, at its last reported value) and the
    best so far."""
    names = list(studies)
    cols = min(3, max(len(names), 1))
    rows = max(math.ceil(len(names) / cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names):
        best, xs, ys = -math.inf, [], []
        for t in studies[name]:
            if t.get("interrupted"):
                continue
            if t["state"] == "complete" and t["value"] is not None:
                ax.plot(t["number"], t["value"], "o", color=FLAGSHIP, markersize=4)
                best = max(best, t["value"])
            elif t["state"] == "pruned" and t.get("curve"):
                last = t["curve"][max(t["curve"], key=int)]
                ax.plot(t["number"], last, "x", color="#d95f02", markersize=5)
            if best > -math.inf:
                xs.append(t["number"])
                ys.append(best)
        ax.step(xs, ys, where="post", color="black", linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("trial", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"valid {metric}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def exposure_heatmap(
    models: list[str], categories: list[str], exposure: dict[str, list[float]], target: list[float], path: Path
) -> Path:
    """Exposure share minus interaction share, per model (rows) and category (columns)."""
    import numpy as np

    diff = np.array([[e - t for e, t in zip(exposure[m], target)] for m in models])
    fig, ax = plt.subplots(figsize=(1.2 * len(categories) + 3, 0.32 * len(models) + 1.6))
    lim = max(float(np.nanmax(np.abs(diff))) if diff.size else 0.0, 0.01)
    im = ax.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(categories)), [f"{c}\n({t:.2f})" for c, t in zip(categories, target)], fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    for i in range(len(models)):
        for j in range(len(categories)):
            dark = abs(diff[i, j]) > lim * 0.55
            ax.text(
                j,
                i,
                f"{exposure[models[i]][j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    fig.colorbar(im, ax=ax, label="exposure share - interaction share")
    ax.set_title("share of the merged top-K per category (cell); column: its share of interactions", fontsize=9)
    return _save(fig, path)


def exposure_curve(points: list[dict[str, Any]], k: int, label: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    gaps = [p[f"exposure_gap@{k}"] for p in points]
    ndcg = [p[f"cross_ndcg@{k}"] for p in points]
    ax.plot(gaps, ndcg, marker="o", color=FLAGSHIP)
    for p, g, v in zip(points, gaps, ndcg):
        ax.annotate(f"λ={p['weight']:g}", (g, v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"exposure gap@{k} (lower: closer to interaction shares)")
    ax.set_ylabel(f"cross-category NDCG@{k}")
    ax.set_title(f"{label}: category-exposure re-ranker trade-off", fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


__all__ = [
    "bars_by_panel",
    "exposure_curve",
    "exposure_heatmap",
    "learning_curves",
    "metric_vs_k",
    "model_colours",
    "tuning_history",
]
