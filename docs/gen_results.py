"""Write the results pages (results/*.md) from benchmarks/results/*.json.

Runs inside `mkdocs build` through mkdocs-gen-files, so every figure on the site comes from a
results file at build time; nothing is copied by hand.

    python docs/gen_results.py            # print every page (a dry run)
    python docs/gen_results.py --readme   # rewrite the README's headline block from the JSON

Experiment results (`crossrec experiment`'s results.json: `summary` rows of model x category x
slice) are rendered from the JSON. A benchmark with a shape of its own is shown through the
markdown its script wrote next to the JSON from the same data; sentences in it that date a run
are left out here (the dates are in the JSON's `machine` block and in git history).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DATASETS = ("amazon-arts-office", "anime-mal")
BEGIN, END = "<!-- results:headline -->", "<!-- /results -->"
SLICE_TITLES = {
    "all": "all test users",
    "warm": "users with training history in the category",
    "new_to_category": "users new to the category",
    "cold_item": "test items never seen in training, ranked among all items",
    "new_items": "test items never seen in training, ranked among the untrained items only",
}


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def source(name: str) -> str:
    """The provenance line under a table: the file, the commit and the machine (no date)."""
    machine = load(name).get("machine") or {}
    bits = [f"`benchmarks/results/{name}.json`"]
    if machine.get("commit"):
        bits.append(f"commit `{machine['commit']}`")
    if machine.get("cpu_count"):
        bits.append(f"{machine['cpu_count']} CPU cores")
    if machine.get("torch_threads"):
        bits.append(f"{machine['torch_threads']} torch threads")
    if machine.get("cuda"):
        bits.append(str(machine["cuda"]))
    return "*Source: " + ", ".join(bits) + ".*"


# ---------------------------------------------------------------- experiment tables (from JSON)


def _fmt(row: dict[str, Any] | None, metric: str, std: bool = True) -> str:
    if row is None or row.get(metric) is None:
        return ""
    value = f"{row[metric]:.4f}"
    if row.get("n_seeds", 1) == 1:
        return value + "¹"
    s = row.get(f"{metric}_std")
    return f"{value} ± {s:.4f}" if std and s else value


def experiment_table(
    data: dict[str, Any],
    slice_: str,
    metric: str = "ndcg@10",
    models: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    std: bool = False,
) -> str:
    """One table: a row per category, a column per model, the best of each row in bold."""
    rows = {(r["model"], r["category"]): r for r in data["summary"] if r["slice"] == slice_}
    if not rows:
        return ""
    labels = [m["label"] for m in data["models"]]
    models = [m for m in (models or labels) if any(k[0] == m for k in rows)]
    cats = sorted({k[1] for k in rows} - {"ALL"}) + (["ALL"] if any(k[1] == "ALL" for k in rows) else [])
    if categories is not None:
        cats = [c for c in cats if c in set(categories)]
    has_users = any(r.get("n_users") not in (None, "") for r in rows.values())
    out = [
        "| category | " + ("users | " if has_users else "") + " | ".join(models) + " |",
        "|---|" + ("---:|" if has_users else "") + "---:|" * len(models),
    ]
    for cat in cats:
        cells = [rows.get((m, cat)) for m in models]
        values = [c[metric] for c in cells if c is not None and c.get(metric) is not None]
        best = max(values) if values else None
        n_users = next((c.get("n_users", "") for c in cells if c is not None), "")
        texts = []
        for c in cells:
            t = _fmt(c, metric, std)
            if t and best is not None and c[metric] == best and len(values) > 1:
                t = f"**{t}**"
            texts.append(t)
        n_users = f"{n_users:,}" if isinstance(n_users, int) else n_users
        out.append(f"| {cat} | " + (f"{n_users} | " if has_users else "") + " | ".join(texts) + " |")
    return "\n".join(out)


def acceptance_table(data: dict[str, Any]) -> str:
    checks = data.get("acceptance") or []
    if not checks:
        return ""
    out = ["| check | rule | flagship | best single-category model | passed |", "|---|---|---:|---|---|"]
    for c in checks:
        out.append(
            f"| {c['check']} ({c['slice']}) | {c['rule']} | {c['model']} {c['value']:.4f} | "
            f"{c['best_single']} {c['best_single_value']:.4f} | {'yes' if c['passed'] else '**no**'} |"
        )
    return "\n".join(out)


def experiment_section(
    name: str,
    slices: Iterable[str] = ("all", "new_to_category"),
    metric: str = "ndcg@10",
    models: Iterable[str] | None = None,
    level: str = "###",
    std: bool = False,
) -> str:
    data = load(name)
    seeds = data.get("seeds") or []
    parts = [
        f"{metric}, full ranking within the category, test split, "
        f"{'mean over seeds ' + ', '.join(map(str, seeds)) if len(seeds) > 1 else 'seed ' + ', '.join(map(str, seeds))}"
        "; ¹ = one run (closed-form models, or one seed in the experiment file); best per row in bold."
    ]
    for s in slices:
        table = experiment_table(data, s, metric, models, std=std)
        if table:
            parts += [f"{level} {SLICE_TITLES.get(s, s).capitalize()}", table]
    acc = acceptance_table(data)
    if acc:
        parts += [f"{level} Acceptance check", acc]
    parts.append(source(name))
    return "\n\n".join(parts)


# ---------------------------------------------------------------- markdown a benchmark wrote

DATED = re.compile(
    r"\b20\d\d-\d\d-\d\d\b|\bre-?run\b|\bre-measured\b|\bpredate|\bissue \d+|\bbefore commit\b|\bsince 20\d\d"
    r"|\bin git history\b|\bthe split of that day\b|\bof that day\b",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`*])")
_PAREN = re.compile(r"\s*\([^()]*\)")


def undated(markdown: str) -> str:
    """The markdown without its dated sentences and parentheses (tables and headings untouched)."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.splitlines()
        if any(line.lstrip().startswith(("|", "#", "```")) for line in lines):
            out.append(block)
            continue
        items: list[str] = []
        for line in lines:
            if not items or re.match(r"\s*[-*] ", line):
                items.append(line.rstrip())
            else:
                items[-1] += " " + line.strip()
        kept = [_clean(item) for item in items]
        kept = [k for k in kept if k.strip("-* ")]
        if len(kept) > 1 and not re.match(r"\s*[-*] ", kept[0]):
            kept[0] += "\n"  # Python-Markdown wants a blank line before a list
        if kept:
            out.append("\n".join(kept))
    return "\n\n".join(out)


def _clean(text: str) -> str:
    indent = re.match(r"\s*(?:[-*] )?", text).group(0)
    text = _PAREN.sub(lambda m: "" if DATED.search(m.group(0)) else m.group(0), text[len(indent) :])
    kept = " ".join(s for s in _SENTENCE.split(text) if not DATED.search(s)).strip()
    return indent + kept if kept else ""


def bench_md(name: str, drop_title: bool = True) -> str:
    md = (RESULTS / f"{name}.md").read_text()
    if drop_title:
        md = re.sub(r"\A# [^\n]*\n", "", md)
    md = re.sub(r"^(#{1,5}) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", md, flags=re.M)
    return undated(md) + "\n\n" + source(name)


# ---------------------------------------------------------------- the headline (tuned comparison)


def headline() -> str:
    """The tuned comparison: every model tuned with the same budget, then 3 seeds on test."""
    parts: list[str] = []
    for ds in DATASETS:
        data = load(f"experiment_{ds}-tuned")
        tuned = load(f"tuned_{ds}")
        budget = tuned.get("budget") or {}
        commit = (tuned.get("machine") or {}).get("commit")
        rows = {(r["model"], r["category"], r["slice"]): r for r in data["summary"]}
        models = [m["label"] for m in data["models"]]
        head = "| row | " + " | ".join(models) + " |"
        out = [
            f"**{ds}** (test NDCG@10, mean of seeds {', '.join(map(str, data['seeds']))}"
            + (f"; tuned at commit `{commit}`" if commit else "")
            + ")",
            "",
            head,
            "|---|" + "---:|" * len(models),
        ]
        cats = [c for c in dict.fromkeys(r["category"] for r in data["summary"]) if c != "ALL"]
        for cat, slice_ in [*((c, "all") for c in cats), ("ALL", "all"), ("ALL", "new_to_category")]:
            cells = [rows.get((m, cat, slice_)) for m in models]
            best = max((c["ndcg@10"] for c in cells if c), default=None)
            texts = [
                (f"**{_fmt(c, 'ndcg@10', False)}**" if c and c["ndcg@10"] == best else _fmt(c, "ndcg@10", False))
                for c in cells
            ]
            label = cat if slice_ == "all" else f"{cat} (new to category)"
            out.append(f"| {label} | " + " | ".join(texts) + " |")
        parts.append("\n".join(out))
        if budget:
            parts.append(
                f"Budget per model: {budget.get('trials')} finished trials or {budget.get('timeout'):.0f} s "
                "of trial time on the validation split"
                + (
                    f", objective: validation NDCG@10 averaged over {', '.join(tuned['objective'])}."
                    if tuned.get("objective", ["all"]) != ["all"]
                    else "."
                )
            )
    parts.append(
        "¹ one run: closed-form models, or one seed in the experiment file. "
        "Sources: `benchmarks/results/experiment_<dataset>-tuned.json`, `tuned_<dataset>.json`."
    )
    return "\n\n".join(parts)


def tuned_gains(ds: str) -> str:
    t = load(f"tuned_{ds}")
    out = [
        "| category | slice | flagship, tuned | best single-category (tuned) | gain | "
        "flagship, before tuning | best single-category before | gain before |",
        "|---|---|---:|---|---:|---:|---|---:|",
    ]
    for g in t["gains"]:
        out.append(
            f"| {g['category']} | {g['slice']} | {g['flagship']:.4f} | {g['best_single']} {g['best_single_value']:.4f} | "
            f"{g['gain_pct']:+.1f}% | {g['untuned_flagship']:.4f} | {g['untuned_best_single']} "
            f"{g['untuned_best_single_value']:.4f} | {g['untuned_gain_pct']:+.1f}% |"
        )
    return "\n".join(out) + "\n\n" + source(f"tuned_{ds}")


# ---------------------------------------------------------------- pages


def page_index() -> str:
    return f"""# Results

Every number on these pages is read from `benchmarks/results/*.json` when the site is built
(`docs/gen_results.py`); the scripts under `benchmarks/` and `crossrec experiment` write those files.
Tables are NDCG@10 with full ranking inside the target category unless they say otherwise.

| page | what it holds |
|---|---|
| [Tuned comparison](tuned.md) | every model tuned with one budget on validation, then 3 seeds on test (the headline) |
| [Cross-category transfer](transfer.md) | every model with hand-set options, 3 seeds, per category and slice |
| [Single-category baselines](baselines.md) | the foundation models on both shared datasets |
| [Item text](text.md) | the text+id flagship, cold items, zero-shot categories, the option grids |
| [Speed](speed.md) | evaluation, training epochs, profiles, time to a good model, prepare at scale |
| [Serving](serving.md) | exactness of the index, load on one process and on several |

## Headline: the tuned comparison

{headline()}
"""


def page_tuned() -> str:
    parts = [
        "# Tuned comparison",
        "",
        "`crossrec tune` on the validation split with the same budget per model, then "
        "`crossrec experiment OUT/best.yaml` on test. The tuned flagship here is the one of the commit "
        "named under each table; the [hand-set table](transfer.md) is the current default flagship.",
        "",
    ]
    for ds in DATASETS:
        parts += [
            f"## {ds}",
            "",
            experiment_section(f"experiment_{ds}-tuned", std=True),
            "",
            "### Gain of the flagship over the best single-category model, tuned and before tuning",
            "",
            tuned_gains(ds),
            "",
            "### The search",
            "",
            bench_md(f"tuning_{ds}"),
            "",
        ]
    return "\n".join(parts)


def page_transfer() -> str:
    parts = [
        "# Cross-category transfer (hand-set options)",
        "",
        "`crossrec experiment configs/experiments/<dataset>.yaml`: the same model options on both "
        "datasets, nothing tuned per dataset; both add the cold-start user protocol so that users new "
        "to a category are measured.",
        "",
    ]
    for ds in DATASETS:
        parts += [
            f"## {ds}",
            "",
            experiment_section(f"experiment_{ds}", slices=("all", "new_to_category", "warm"), std=True),
            "",
            "### Recall@10, all test users",
            "",
            experiment_table(load(f"experiment_{ds}"), "all", "recall@10", std=True),
            "",
        ]
    return "\n".join(parts)


def page_baselines() -> str:
    return (
        "# Single-category baselines\n\n`python benchmarks/bench_datasets.py`: seed 0, without the "
        "cold-start user protocol, models with the options of `configs/<dataset>.yaml`.\n\n" + bench_md("datasets")
    )


def page_text() -> str:
    parts = [
        "# Item text",
        "",
        "`crossrec-text` is the flagship with `item_tower: text+id` and the text defaults; `textknn` is "
        "the content baseline (mean of the history's text vectors, cosine to each item's).",
        "",
    ]
    for ds in DATASETS:
        data = load(f"text_acceptance_{ds}")
        summary = [
            {
                "model": r["model"],
                "category": r["category"],
                "slice": r["slice"],
                "ndcg@10": r["m"],
                "ndcg@10_std": r["s"],
                "n_seeds": r["n"],
            }
            for r in data["summary"]
        ]
        parts += [
            f"## {ds}: text+id against the rest",
            "",
            "NDCG@10, test split, mean ± std over seeds 0, 1, 2; ¹ = one run.",
            "",
        ]
        for s in ("all", "new_to_category"):
            parts += [
                f"### {SLICE_TITLES[s].capitalize()}",
                "",
                experiment_table(
                    {
                        "summary": summary,
                        "models": [
                            {"label": m}
                            for m in dict.fromkeys(
                                sorted((r["model"] for r in summary), key=lambda m: (not m.startswith("crossrec"), m))
                            )
                        ],
                    },
                    s,
                    std=True,
                ),
                "",
            ]
        parts += [source(f"text_acceptance_{ds}"), ""]
    parts += [
        "## Cold items",
        "",
        "`configs/experiments/<dataset>-cold-items.yaml`: 10% of the items lose every interaction, half "
        "of them to validation and half to test (these runs predate the default that gives validation "
        "its share of the held-out rows, `prepare.cold_item_valid_share`; the weak-text tables below use "
        "it). Recall@10.",
        "",
    ]
    for ds in DATASETS:
        parts += [
            f"### {ds}",
            "",
            experiment_section(
                f"text_{ds}-cold-items",
                slices=("cold_item", "new_items", "all"),
                metric="recall@10",
                level="####",
                std=True,
            ),
            "",
        ]
    parts += [
        "## Zero-shot categories",
        "",
        "`configs/experiments/<dataset>-zero-shot.yaml` with `--prepare.zero_shot_category`: every "
        "interaction of one category goes to test; the models never see it. Seed 0, NDCG@10.",
        "",
    ]
    for f in sorted(RESULTS.glob("text_zero-shot_*_seed0.json")):
        name = f.stem
        data = load(name)
        held = name.removeprefix("text_zero-shot_").removesuffix("_seed0")
        cat = held.split("-", 1)[1]
        parts += [f"### {held}", "", experiment_table(data, "all", categories=[cat, "ALL"]), "", source(name), ""]
    parts += [
        "### Like for like: the zero-shot model on the warm split's test rows",
        "",
        bench_md("text_zero-shot_like-for-like"),
        "",
    ]
    for name, title in [
        ("weak_text", "main protocol"),
        ("weak_text_cold", "cold-item protocol"),
        ("weak_text_residual", "main protocol, `text.residual`"),
        ("weak_text_cold_residual", "cold-item protocol, `text.residual`"),
    ]:
        if (RESULTS / f"{name}.md").exists():
            parts += [f"## Weak item text, {title} (`benchmarks/bench_weak_text.py`)", "", bench_md(name), ""]
    for name, title in [("weak_text_pick", "main protocol"), ("weak_text_cold_pick", "cold-item protocol")]:
        if (RESULTS / f"{name}.md").exists():
            parts += [
                f"## Weak item text, per-category pick, {title} (`benchmarks/bench_weak_text_pick.py`)",
                "",
                bench_md(name),
                "",
            ]
    if (RESULTS / "reviews.md").exists():
        parts += ["## User reviews as item text (`benchmarks/bench_reviews.py`)", "", bench_md("reviews"), ""]
    parts += ["## Option grids (validation)", ""]
    for name, title in [
        ("warm_start_grid", "Warm start"),
        ("text_id_dropout_grid", "`text.id_dropout`"),
        ("text_dropout_grid", "`text.text_dropout`"),
        ("text_variants_grid", "Variants not kept"),
    ]:
        parts += [f"### {title}", "", bench_md(name), ""]
    parts += [
        "## Fine-tuning the encoder",
        "",
        "### Three epochs each (`configs/experiments/anime-mal-finetune.yaml`)",
        "",
        experiment_section("text_anime-mal-finetune_seed0", slices=("all",), level="####"),
        "",
        "### LoRA to early stopping (`configs/experiments/anime-mal-lora.yaml`)",
        "",
        bench_md("text_anime-mal-lora_seed0"),
        "",
        "## Encoding cost",
        "",
        bench_md("text_encoding"),
        "",
    ]
    return "\n".join(parts)


def page_speed() -> str:
    parts = ["# Speed", "", "CPU timings on a shared machine; compare ratios within one table.", ""]
    for name, title in [
        ("speed", "Evaluation and BPR-MF epochs (`benchmarks/bench_speed.py`)"),
        ("bpr_paths", "BPR-MF's training paths: quality (`benchmarks/bench_bpr_paths.py`)"),
        ("flagship_speed", "Training cost per epoch by model (`benchmarks/bench_flagship.py`)"),
        ("time_to_quality", "Time to a good model (`benchmarks/bench_time_to_quality.py`)"),
        ("prepare", "Prepare at scale (`benchmarks/bench_prepare.py`)"),
        ("scale", "Scale: each stage on synthetic logs over 50 categories (`benchmarks/bench_scale.py`)"),
        *[
            (p.stem, f"Scale quality, N={int(p.stem.rsplit('_', 1)[1]):,} (`benchmarks/bench_scale_quality.py`)")
            for p in sorted(RESULTS.glob("scale_quality_*.md"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        ],
        ("step", "Where a training step's time goes (`benchmarks/bench_step.py`)"),
        ("contention", "Shared cores and compile caches (`benchmarks/bench_contention.py`)"),
        ("sharding", "Sharded user tables on 2 processes (`benchmarks/bench_sharding.py`)"),
        ("sharding_quality", "Sharded vs replicated quality (`benchmarks/bench_sharding_quality.py`)"),
        ("gpu_scale", "GPU scale (`benchmarks/bench_gpu.py`)"),
        ("profile", "Where an epoch goes (`benchmarks/bench_profile.py`)"),
    ]:
        body = bench_md(name) if (RESULTS / f"{name}.md").exists() else UNMEASURED.get(name, "Unmeasured.")
        parts += [f"## {title}", "", body, ""]
    return "\n".join(parts)


# Results a script writes only on hardware this project has not had: what the page says meanwhile.
UNMEASURED = {
    "step": "Not run yet: `python benchmarks/bench_step.py --bundle BUNDLE`.",
    "sharding": "Not run yet: `python benchmarks/bench_sharding.py --sizes 3M 10M`.",
    "sharding_quality": "Not run yet: `python benchmarks/bench_sharding_quality.py`.",
    "gpu_scale": "**Unmeasured**: no CUDA device has run it yet. On one, "
    "`python benchmarks/bench_gpu.py --sizes 10M 30M` writes `benchmarks/results/gpu_scale.json` "
    "(one flagship and one BPR-MF epoch at 10M and 30M interactions, with peak GPU memory).",
}


def page_serving() -> str:
    workers = (
        "\n\n## Several server processes (benchmarks/bench_serving_workers.py)\n\n" + bench_md("serving_workers")
        if (RESULTS / "serving_workers.md").exists()
        else ""
    )
    return (
        "# Serving\n\n`python benchmarks/bench_serving.py --users 50000`\n\n"
        + bench_md("serving")
        + workers
        + "\n\n## The web page\n\n![the serving web page](serving_page.png)\n"
    )


PAGES = {
    "results/index.md": page_index,
    "results/tuned.md": page_tuned,
    "results/transfer.md": page_transfer,
    "results/baselines.md": page_baselines,
    "results/text.md": page_text,
    "results/speed.md": page_speed,
    "results/serving.md": page_serving,
}
IMAGES = {"results/serving_page.png": "serving_page.png", "results/scale.png": "scale.png"}


def rewrite_readme() -> bool:
    """Replace the README block between the headline markers; True when the file changed."""
    text = README.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    new = text[: start + len(BEGIN)] + "\n" + headline() + "\n" + text[end:]
    if new != text:
        README.write_text(new)
    return new != text


def main(argv: list[str]) -> None:
    if "--readme" in argv:
        print("README.md headline " + ("rewritten" if rewrite_readme() else "unchanged"))
        return
    for path, render in PAGES.items():
        sys.stdout.write(f"===== {path}\n{render()}\n")


if __name__ == "__main__" and "mkdocs" not in sys.modules:
    main(sys.argv[1:])
else:
    import mkdocs_gen_files

    for path, render in PAGES.items():
        with mkdocs_gen_files.open(path, "w") as fh:
            fh.write(render())
    for path, name in IMAGES.items():
        with mkdocs_gen_files.open(path, "wb") as fh:
            fh.write((RESULTS / name).read_bytes())
