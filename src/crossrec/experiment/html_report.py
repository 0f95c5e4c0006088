"""`crossrec report RUN_DIR`: an experiment's results as one self-contained HTML page plus PNGs.

Reads what `crossrec experiment` wrote in RUN_DIR (results.json, results.md, and where present the
trained models' logs under models/), the tuner's directory where there is one (`--tuning`, default
`<RUN_DIR>-tune`), and writes RUN_DIR/report/: `report.html` with every figure embedded (data URIs;
no script, font or style from the network, so it opens offline) and the same figures as PNGs.

Sections: the flagship's acceptance table; per category, every model's NDCG@10 with its seed spread
(single-category models grey, cross-category models coloured, the flagship dark blue), so before and
after transfer read side by side; the cold-start slices; the metric against K; learning curves from
the trainer's logs; beyond accuracy (table, exposure heatmap, and with `--exposure-curve LABEL` the
re-ranker's NDCG against exposure gap for that model's first seed); the tuner's history; every
table of results.md; the run configuration. Every number in the tables is results.md's, which the
runner writes from the same data as results.json.

Example:
    >>> write_report("runs/experiments/anime-mal", exposure_label="crossrec")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from crossrec.errors import MissingInputError
from crossrec.experiment import plots
from crossrec.experiment.markdown_html import CSS, markdown_to_html, split_sections
from crossrec.io import OutputError, claim_output, read_json, write_json, write_marker, write_text

CURVE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _flagships(res: dict[str, Any]) -> set[str]:
    flags = {m["label"] for m in res["models"] if m.get("flagship")}
    return flags or {a["model"] for a in res.get("acceptance", [])}


def _cells(res: dict[str, Any], metric: str, category: str, slc: str) -> list[tuple[str, float, float]]:
    rows = [r for r in res["summary"] if r["category"] == category and r["slice"] == slc]
    return [(r["model"], _num(r.get(metric)), _num(r.get(f"{metric}_std"), 0.0)) for r in rows]


def _num(v: Any, default: float = math.nan) -> float:
    return default if v is None else float(v)


def _learning_curves(run_dir: Path, res: dict[str, Any], metric: str) -> dict[str, list[list[tuple[int, float]]]]:
    """label -> validation curves of its first seed (one per category for a single-category model)."""
    out: dict[str, list[list[tuple[int, float]]]] = {}
    for m in res["models"]:
        seeds = sorted((run_dir / "models" / m["label"]).glob("seed-*/config.json"))
        if not seeds:
            continue
        result = read_json(seeds[0], "artifact config").get("train_result") or {}
        histories = []
        for key, part in result.items():
            if key == "stages":
                continue
            if isinstance(part, dict) and part.get("history"):
                histories.append(part["history"])
        lines = [
            [(int(h["epoch"]), float(h[f"valid_{metric}"])) for h in hist if f"valid_{metric}" in h]
            for hist in histories
        ]
        lines = [line for line in lines if line]
        if lines:
            out[m["label"]] = lines
    return out


def _exposure_curve(run_dir: Path, res: dict[str, Any], label: str, k: int) -> list[dict[str, Any]]:
    """The re-ranker's curve for `label`'s first trained seed, on the test split of its Bundle."""
    from crossrec.artifact import check_bundle, load_artifact
    from crossrec.data.bundle import Bundle
    from crossrec.evaluation.beyond import CrossLists, exposure_curve

    seeds = sorted((run_dir / "models" / label).glob("seed-*"))
    if not seeds:
        raise MissingInputError(f"--exposure-curve {label}: no trained model under {run_dir / 'models' / label}")
    art = load_artifact(seeds[0])
    bundle = Bundle.load(art.meta["run_config"]["data"]["bundle"])
    check_bundle(art, bundle)
    lists = CrossLists.build(art.model, bundle, "test", k)
    return exposure_curve(bundle, "test", lists, list(CURVE_WEIGHTS)).to_dicts()


def write_report(
    run_dir: str | Path,
    tuning_dir: str | Path | None = None,
    exposure_label: str | None = None,
    out_dir: str | Path | None = None,
) -> Path:
    """Render RUN_DIR's experiment as RUN_DIR/report/report.html (+ PNGs); returns the HTML path.

    The output directory must be missing, empty or a report directory (else `OutputError`)."""
    run_dir = Path(run_dir)
    res = read_json(run_dir / "results.json", "experiment results")
    md_path = run_dir / "results.md"
    md = md_path.read_text() if md_path.is_file() else ""
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    if not out.parent.is_dir():  # a typo in the parent is an error, not a new tree
        raise OutputError(f"--out={str(out)!r}: its directory {str(out.parent)!r} does not exist; create it first")
    with claim_output(out, "report", "--out"):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "report")
        return _render(run_dir, res, md, out, tuning_dir, exposure_label)


def _render(
    run_dir: Path, res: dict[str, Any], md: str, out: Path, tuning_dir: str | Path | None, exposure_label: str | None
) -> Path:
    """Draw the figures into `out` and write `out`/report.html: the intro, then the sections in
    order (acceptance, accuracy figures, learning curves, beyond accuracy, tuning, tables, config)."""
    metric = res["metrics"][0]
    flagships = _flagships(res)
    colours = plots.model_colours(res["models"], flagships)
    categories = list(res["bundle"]["categories"])
    sections = split_sections(md)
    body: list[str] = []
    nav: list[tuple[str, str]] = []

    def section(anchor: str, title: str, content: str) -> None:
        nav.append((anchor, title))
        body.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>\n{content}')

    intro = _intro(res, categories, flagships)
    accept = next((v for k, v in sections.items() if k.startswith("Flagship vs")), "")
    if accept.strip():
        section("acceptance", "Flagship against the best single-category model", markdown_to_html(accept))
    _accuracy_sections(section, res, metric, colours, flagships, out)
    _learning_section(section, run_dir, res, metric, colours, out)
    section("beyond", "Beyond accuracy", _beyond_content(run_dir, res, sections, out, exposure_label))
    _tuning_section(section, run_dir, res, metric, tuning_dir, out)
    _tables_and_config(section, res, sections)
    return _write_page(out, res, intro, nav, body)


_Section = Callable[[str, str, str], None]  # section(anchor, title, html content): appends one section


def _intro(res: dict[str, Any], categories: list[str], flagships: set[str]) -> str:
    """The paragraph under the title: the data, split and seeds, and how to read the bar colours."""
    info = res["bundle"]
    return (
        f"<p>{info['n_users']:,} users, {info['n_items']:,} items, {info['n_interactions']:,} interactions in "
        f"{len(categories)} categories ({html.escape(', '.join(categories))}); split <code>{html.escape(str(info['split']))}"
        f"</code>; seeds {res['seeds']}; test split, full ranking. Grey bars: single-category models; coloured: "
        f"cross-category; dark blue, outlined: the flagship ({html.escape(', '.join(sorted(flagships)) or 'none')}). "
        "Error bars: standard deviation over seeds.</p>"
    )


def _accuracy_sections(
    section: _Section, res: dict[str, Any], metric: str, colours: dict[str, str], flagships: set[str], out: Path
) -> None:
    """The accuracy figures: `metric` per category, on the cold-start slices (where the run has
    them) and, with several K, the metric against K."""
    categories = list(res["bundle"]["categories"])
    slices = list(dict.fromkeys(r["slice"] for r in res["summary"]))
    panels = {c: _cells(res, metric, c, "all") for c in categories + ["ALL"]}
    png = plots.bars_by_panel(
        panels,
        colours,
        flagships,
        metric,
        out / "per_category.png",
        f"{metric} per category: single-category models (grey) against cross-category ones",
    )
    section("per-category", f"Before and after transfer: {metric} per category", _img(png, "per category"))

    cold = [s for s in ("new_to_category", "cold_item", "new_items") if s in slices]
    if cold:
        png = plots.bars_by_panel(
            {s: _cells(res, metric, "ALL", s) for s in cold},
            colours,
            flagships,
            metric,
            out / "cold_start.png",
            f"{metric} on the cold-start slices (ALL categories)",
        )
        section(
            "cold-start",
            "Cold-start slices",
            _img(png, "cold start")
            + '<p class="note">new_to_category: users whose whole history in the category was held out; '
            "cold_item: positives without training interactions, ranked among all items; new_items: the same, "
            "ranked among the items without training interactions.</p>",
        )

    base = metric.split("@")[0]
    ks = sorted({int(c.split("@")[1]) for r in res["runs"][:1] for c in r if c.startswith(f"{base}@")})
    if len(ks) > 1:
        png = plots.metric_vs_k(_metric_by_k(res, base, ks), colours, base, out / "metric_vs_k.png")
        section("metric-k", f"{base} against K", _img(png, "metric against K"))


def _metric_by_k(res: dict[str, Any], base: str, ks: list[int]) -> dict[str, list[tuple[int, float]]]:
    """label -> [(K, mean over seeds of `base`@K on ALL categories, all users)] for the K it has."""
    series = {}
    for label in [m["label"] for m in res["models"]]:
        pts = []
        for k in ks:
            vals = [
                r[f"{base}@{k}"]
                for r in res["runs"]
                if r["model"] == label
                and r["category"] == "ALL"
                and r["slice"] == "all"
                and r.get(f"{base}@{k}") is not None
            ]
            if vals:
                pts.append((k, sum(vals) / len(vals)))
        series[label] = pts
    return series


def _learning_section(
    section: _Section, run_dir: Path, res: dict[str, Any], metric: str, colours: dict[str, str], out: Path
) -> None:
    """The validation learning curves from the trained models' logs, or a note that there are none."""
    curves = _learning_curves(run_dir, res, metric)
    if curves:
        png = plots.learning_curves(curves, colours, metric, out / "learning_curves.png")
        section(
            "learning",
            "Learning curves (validation, first seed)",
            _img(png, "learning curves")
            + '<p class="note">From the trainer\'s logs; a single-category model has one thin line per category. '
            "Models fitted in closed form have none.</p>",
        )
    else:
        section(
            "learning",
            "Learning curves",
            '<p class="note">No trainer logs under models/ in this run '
            "directory (the curves are drawn from the trained models' config.json).</p>",
        )


def _beyond_content(
    run_dir: Path, res: dict[str, Any], sections: dict[str, str], out: Path, exposure_label: str | None
) -> str:
    """The beyond-accuracy section: results.md's table, the exposure heatmap (when the run measured
    exposure) and, for `exposure_label`, the re-ranker's exposure curve (also written as JSON)."""
    categories = list(res["bundle"]["categories"])
    labels = [m["label"] for m in res["models"]]
    beyond = next((v for k, v in sections.items() if k.startswith("Beyond accuracy")), "")
    content = markdown_to_html(beyond) if beyond.strip() else '<p class="note">No beyond-accuracy columns.</p>'
    rows = res.get("beyond") or []
    exp_col = next((c for r in rows[:1] for c in r if c.startswith("exposure@")), None)
    if exp_col:
        k = int(exp_col.split("@")[1])
        share = {r["category"]: r["interaction_share"] for r in rows if r["category"] in categories}
        exposure = {
            m: [
                next((_num(r[exp_col]) for r in rows if r["model"] == m and r["category"] == c), math.nan)
                for c in categories
            ]
            for m in labels
            if any(r["model"] == m for r in rows)
        }
        png = plots.exposure_heatmap(
            list(exposure), categories, exposure, [share.get(c, math.nan) for c in categories], out / "exposure.png"
        )
        content += _img(png, "exposure per category")
        if exposure_label:
            points = _exposure_curve(run_dir, res, exposure_label, k)
            write_json(out / "exposure_curve.json", {"model": exposure_label, "k": k, "points": points})
            png = plots.exposure_curve(points, k, exposure_label, out / "exposure_curve.png")
            content += _img(png, "exposure trade-off") + markdown_to_html(_curve_md(points, k))
    return content


def _tuning_section(
    section: _Section, run_dir: Path, res: dict[str, Any], metric: str, tuning_dir: str | Path | None, out: Path
) -> None:
    """The tuner's history (from `tuning_dir`, default `<run_dir>-tune`), else the runner's own grid
    search where it ran one, else nothing."""
    tuning = Path(tuning_dir) if tuning_dir is not None else Path(f"{run_dir}-tune")
    if (tuning / "tuning.json").is_file():
        tj = read_json(tuning / "tuning.json", "tuning results")
        studies = {label: t["trials"] for label, t in tj["models"].items()}
        png = plots.tuning_history(studies, metric, out / "tuning.png")
        md_t = (tuning / "tuning.md").read_text() if (tuning / "tuning.md").is_file() else ""
        section(
            "tuning",
            "Tuning history",
            _img(png, "tuning")
            + markdown_to_html(md_t.split("\n", 1)[-1])
            + '<p class="note">Dots: complete trials; crosses: pruned trials at their last reported value; line: '
            "best so far.</p>",
        )
    elif res.get("tuning"):
        section(
            "tuning", "Grid search on validation", "<pre>" + html.escape(json.dumps(res["tuning"], indent=1)) + "</pre>"
        )


def _tables_and_config(section: _Section, res: dict[str, Any], sections: dict[str, str]) -> None:
    """The last two sections: results.md's other tables (folded) and the run configuration as YAML."""
    tables = "".join(
        markdown_to_html(f"## {k}\n{v}")
        for k, v in sections.items()
        if k and not k.startswith("Flagship vs") and not k.startswith("Beyond accuracy")
    )
    section(
        "tables",
        "All tables (results.md)",
        f"<details><summary>every metric, slice and category</summary>{tables}</details>",
    )
    config = {
        "run": res.get("run"),
        "models": res["models"],
        "bundle": res["bundle"],
        "train_seconds": res.get("train_seconds"),
    }
    text = yaml.safe_dump(
        json.loads(json.dumps(config, default=str)), sort_keys=False, default_flow_style=None, width=110
    )
    section("config", "Run configuration", "<pre>" + html.escape(text) + "</pre>")


def _write_page(out: Path, res: dict[str, Any], intro: str, nav: list[tuple[str, str]], body: list[str]) -> Path:
    """Assemble the page (title, intro, navigation, sections; inline CSS) and write `out`/report.html."""
    links = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in nav)
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>crossrec report: '
        f'{html.escape(res["name"])}</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body><main><h1>Experiment <code>{html.escape(res['name'])}</code></h1>{intro}"
        f"<nav>{links}</nav>{''.join(body)}</main></body></html>\n"
    )
    write_text(out / "report.html", page)
    return out / "report.html"


def _curve_md(points: list[dict[str, Any]], k: int) -> str:
    rows = [f"| {p['weight']:g} | {p[f'cross_ndcg@{k}']:.4f} | {p[f'exposure_gap@{k}']:.4f} |" for p in points]
    return "\n".join([f"| λ | cross NDCG@{k} | exposure gap@{k} |", "|---|---|---|", *rows])


__all__ = ["markdown_to_html", "write_report"]
