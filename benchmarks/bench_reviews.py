"""User reviews as item text (issue 37, item 3): text-kNN and the text+id flagship with item text
from titles alone, from titles plus each item's most recent training-split reviews
(`prepare.item_reviews`), and from reviews alone, beside popularity and the ID flagship.

Neither shared dataset carries review text, so this reads McAuley-lab Amazon review dumps
(2014 / 2018 / 2023 JSON lines, with their metadata files where there are some) through
`read_amazon_reviews(..., text=True)`, writes them as one interaction file with a `text` column
and one item table, and runs `crossrec experiment` on them: the CLI path a user takes
(`data.columns.text`, `prepare.item_reviews`, an encoder template naming `{reviews}`).

    python benchmarks/bench_reviews.py --name amazon-reviews-2018 \
        --category Gift_Cards=Gift_Cards_5.json:meta_Gift_Cards.json \
        --category All_Beauty=All_Beauty_5.json ... --seeds 0 1 2

Writes benchmarks/results/reviews.{json,md}, naming the files read (with their SHA-256).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402
from crossrec.data.datasets import read_amazon_reviews  # noqa: E402
from crossrec.integrity import file_sha256  # noqa: E402

TEXTS = {"titles": "{title}", "titles_reviews": "{title}. {reviews}", "reviews": "{reviews}"}
TRAIN = {"epochs": 40, "batch_size": 1024, "lr": 0.002, "patience": 3, "progress": False, "checkpoint": False}


def experiment(name: str, data: Path, out: Path, seeds: list[int], reviews: int, chars: int, tokens: int) -> dict:
    models: list[dict] = [{"label": "pop", "name": "pop"}, {"label": "crossrec", "name": "crossrec", "dim": 64}]
    for key, template in TEXTS.items():
        enc = {"template": template, "max_tokens": tokens}
        models.append({"label": f"textknn-{key}", "name": "textknn", "encoder": dict(enc)})
        models.append(
            {
                "label": f"crossrec-text-{key}",
                "name": "crossrec",
                "dim": 64,
                "item_tower": "text+id",
                "encoder": dict(enc),
            }
        )
    cfg = {
        "name": name,
        "data": {
            "interactions": str(data / "interactions.parquet"),
            "items": str(data / "items.parquet"),
            "columns": {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp", "text": "text"},
            "item_columns": {"item": "item", "title": "title", "description": "description"},
            "bundle": str(out / "bundle"),
        },
        "prepare": {"split": "leave_last_out", "item_reviews": reviews, "item_review_chars": chars},
        "train": TRAIN,
        "eval": {"ks": [10]},
        "seeds": seeds,
        "metrics": ["ndcg@10", "recall@10"],
        "out": str(out / "run"),
        "models": models,
    }
    path = out / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    p = subprocess.run([sys.executable, "-m", "crossrec.cli", "experiment", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(p.stdout[-3000:] + p.stderr[-3000:])
    res = json.loads((out / "run" / "results.json").read_text())
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    return {"results": res, "manifest": manifest}


def markdown(res: dict) -> str:
    lines = [
        "# User reviews as item text (benchmarks/bench_reviews.py)",
        "",
        f"Data: {res['dataset']}: {res['counts']} (after dropping {res['variant_rows_dropped']} rows that "
        "repeat a review's user, time and text under another item: the 2018 release attaches one review to "
        "every variant of a product). Each item's text: its title, its title and its "
        f"{res['item_reviews']} most recent training-split reviews (each cut to {res['item_review_chars']} "
        f"characters; {res['items_with_reviews']} of {res['n_items']} items have some), or those reviews alone "
        f"(encoder.max_tokens {res['max_tokens']}). Test NDCG@10 and Recall@10 (full ranking, leave-last-out), "
        f"mean ± std over seeds {res['seeds']}, all categories.",
        "",
        "| model | item text | NDCG@10 | Recall@10 |",
        "|---|---|---:|---:|",
    ]
    for row in res["rows"]:
        lines.append(
            f"| {row['model']} | {row['text']} | {row['ndcg@10']:.4f} ± {row['ndcg@10_std']:.4f} | "
            f"{row['recall@10']:.4f} ± {row['recall@10_std']:.4f} |"
        )
    lines += ["", "Per category, NDCG@10:", "", "| model | " + " | ".join(res["categories"]) + " |"]
    lines.append("|---|" + "---:|" * len(res["categories"]))
    for label, per in res["per_category"].items():
        lines.append(f"| {label} | " + " | ".join(f"{per.get(c, float('nan')):.4f}" for c in res["categories"]) + " |")
    lines += ["", "Files read:", ""] + [f"- `{f['name']}` sha256 `{f['sha256'][:16]}…`" for f in res["files"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="what the data is, for the table")
    ap.add_argument("--category", action="append", required=True, help="NAME=REVIEWS[:META]")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--item-reviews", type=int, default=3)
    ap.add_argument("--review-chars", type=int, default=300)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--keep", help="a folder for the run, kept")
    args = ap.parse_args()
    files: dict[str, tuple[str, str | None]] = {}
    for spec in args.category:
        name, _, paths = spec.partition("=")
        reviews, _, meta = paths.partition(":")
        files[name] = (reviews, meta or None)
    inter, items = read_amazon_reviews(files, text=True, shared_items="first")
    raw_rows = inter.height
    # The 2018 release attaches one review to every variant of a product (the same user, time and
    # text under several asins): one purchase, many rows. Text from reviews then matches a user's
    # test item to the variant they "bought" in training, which no ID model can see: keep the
    # first row of each (user, time, text).
    reviewed = pl.col("text").is_not_null() & (pl.col("text") != "")
    first = pl.struct("user", "timestamp", "text").is_first_distinct()
    inter = inter.filter(~reviewed | first)
    with tempfile.TemporaryDirectory(prefix="bench-reviews-") as t:
        out = Path(args.keep or t)
        data = out / "data"
        data.mkdir(parents=True, exist_ok=True)
        inter.write_parquet(data / "interactions.parquet")
        items.write_parquet(data / "items.parquet")
        run = experiment(args.name, data, out, args.seeds, args.item_reviews, args.review_chars, args.max_tokens)
    summary, manifest = run["results"]["summary"], run["manifest"]
    rows, per_category = [], {}
    for r in summary:
        if r["slice"] != "all":
            continue
        if r["category"] == "ALL":
            model = r["model"]
            text = next((k for k in TEXTS if model.endswith("-" + k)), "–")
            rows.append(
                {
                    "model": model.removesuffix("-" + text) if text != "–" else model,
                    "text": text,
                    **{k: r.get(k, 0.0) for k in ("ndcg@10", "ndcg@10_std", "recall@10", "recall@10_std")},
                }
            )
        else:
            per_category.setdefault(r["model"], {})[r["category"]] = r["ndcg@10"]
    counts = manifest["counts"]
    res = {
        "dataset": args.name,
        "categories": sorted(c for c in counts if isinstance(counts[c], dict)),
        "counts": ", ".join(
            f"{c} {sum(v for k, v in counts[c].items() if k in ('train', 'valid', 'test'))}"
            for c in sorted(counts)
            if isinstance(counts[c], dict)
        )
        + f" interactions; {manifest.get('n_users', '?')} users",
        "n_items": manifest.get("n_items"),
        "items_with_reviews": manifest["item_reviews"]["items_with_reviews"],
        "item_reviews": args.item_reviews,
        "item_review_chars": args.review_chars,
        "max_tokens": args.max_tokens,
        "seeds": args.seeds,
        "variant_rows_dropped": raw_rows - inter.height,
        "files": [
            {"name": Path(p).name, "sha256": file_sha256(p)} for pair in files.values() for p in pair if p is not None
        ],
        "rows": rows,
        "per_category": per_category,
    }
    write_results("reviews", res, markdown(res))


if __name__ == "__main__":
    main()
