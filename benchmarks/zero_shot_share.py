"""Zero-shot against warm on the same test rows: how much of the warm flagship's NDCG@10 in a
category a model that never saw that category reaches.

The zero-shot protocol (`prepare.zero_shot_category`) sends every interaction of the held-out
category to test, so its own table grades a user on their whole history there (about ten positives
a user on amazon-arts-office), while the warm table grades one held-out item (leave-last-out) or a
fifth of them (random split). NDCG@10 is not comparable across such positive sets: with more
positives a ranking finds some more easily. So this script scores the zero-shot model on the warm
Bundle's own test rows of the category, with the warm protocol's candidates (each user's
train + validation items there masked, as for the warm model), through `Remapped`
(evaluation/remap.py), and reports both readings.

    python benchmarks/zero_shot_share.py DATASET CATEGORY WARM_BUNDLE WARM_MODEL ZS_BUNDLE ZS_MODEL \
        [--textknn ZS_TEXTKNN] [--pop WARM_POP] [--text-warm WARM_TEXT_ONLY]

WARM_MODEL and ZS_MODEL are artifact directories (`RUN/models/<label>/seed-0`). References may
join them: the zero-shot run's text-kNN on the same rows; the warm run's popularity (how much of
the warm figure is the category's popularity, which no model can know without its interactions),
and with it the zero-shot model plus that popularity (`PlusPopularity`, an oracle whose weight is
picked on the warm validation split); and the warm run's flagship with a text-only item tower (what
the text carries once the category's interactions teach it). `bench_zero_shot.py` runs all of
them. Rows are kept in
benchmarks/results/text_zero-shot_like-for-like.{json,md}, one per (dataset, category), replaced
when re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402
from crossrec.artifact import load_artifact  # noqa: E402
from crossrec.data.bundle import Bundle  # noqa: E402
from crossrec.evaluation.config import EvalConfig  # noqa: E402
from crossrec.evaluation.evaluator import Evaluator  # noqa: E402
from crossrec.evaluation.remap import Remapped  # noqa: E402

NAME = "text_zero-shot_like-for-like"


def ndcg(bundle: Bundle, model: object, category: str) -> dict[str, float | int]:
    """Test NDCG@10 of one category, all users and users new to it, with the user counts."""
    table = Evaluator(bundle, EvalConfig(ks=[10], beyond=False)).evaluate(model, [category]).table
    out: dict[str, float | int] = {}
    for r in table.filter(table["category"] == category).to_dicts():
        out[r["slice"]] = float(r["ndcg@10"])
        out[f"n_{r['slice']}"] = int(r["n_users"])
    return out


# the oracle's popularity weights, picked on validation
BETAS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


class PlusPopularity(nn.Module):
    """A diagnostic, not a model: `base`'s scores plus beta x log(1 + n_i), n_i the item's training
    interactions in the warm run (`pop`, the warm popularity artifact). It reads what a zero-shot
    model cannot know, the held-out category's own popularity, to show how much of the gap to warm
    that is."""

    def __init__(self, base: nn.Module, pop: nn.Module, beta: float, cache: dict | None = None) -> None:
        super().__init__()
        self.base, self.pop, self.beta = base, pop, beta
        self.cache = {} if cache is None else cache  # the base's scores per (category, users): one pass for every beta

    def score(self, users: Tensor, category: int) -> Tensor:
        key = (category, users.cpu().numpy().tobytes())
        if key not in self.cache:
            self.cache[key] = self.base.score(users, category)
        s = self.cache[key]
        return s + self.beta * torch.log1p(self.pop.counts_[self.pop.index[category]]).to(s)


def with_popularity(bundle: Bundle, zs: nn.Module, pop: nn.Module, category: str) -> dict[str, float | int]:
    """The zero-shot model plus the category's popularity (`PlusPopularity`), its weight picked from
    `BETAS` on the warm validation split of the category (all users); its test NDCG@10 and the pick."""
    valid = Evaluator(bundle, EvalConfig(ks=[10], beyond=False), "valid")

    cache: dict = {}

    def on_valid(beta: float) -> float:
        t = valid.evaluate(PlusPopularity(zs, pop, beta, cache), [category]).table
        return float(t.filter((t["category"] == category) & (t["slice"] == "all"))["ndcg@10"][0])

    beta = max(BETAS, key=on_valid)
    cache.clear()
    return {**ndcg(bundle, PlusPopularity(zs, pop, beta), category), "beta": beta}


def main() -> None:
    try:
        run()
    except (FileNotFoundError, KeyError, ValueError) as e:  # a missing artifact or Bundle, an unknown category
        print(f"zero_shot_share: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ["dataset", "category", "warm_bundle", "warm_model", "zs_bundle", "zs_model"]:
        ap.add_argument(a)
    ap.add_argument("--textknn", help="the zero-shot run's text-kNN artifact")
    ap.add_argument("--pop", help="the warm run's popularity artifact")
    ap.add_argument("--text-warm", help="the warm run's flagship with a text-only item tower")
    args = ap.parse_args()
    warm_b, zs_b = Bundle.load(args.warm_bundle), Bundle.load(args.zs_bundle)
    if zs_b.split("train", args.category).height:
        raise SystemExit(f"{args.zs_bundle}: category {args.category!r} has training rows; not a zero-shot Bundle")
    warm = load_artifact(args.warm_model).model
    zs = load_artifact(args.zs_model).model
    row = {
        "dataset": args.dataset,
        "category": args.category,
        "warm_model": args.warm_model,
        "zs_model": args.zs_model,
        "warm": ndcg(warm_b, warm, args.category),
        "zero_shot_same_rows": ndcg(warm_b, Remapped(zs, zs_b, warm_b), args.category),
        "zero_shot_own_protocol": ndcg(zs_b, zs, args.category),
    }
    if args.textknn:
        row["textknn_same_rows"] = ndcg(
            warm_b, Remapped(load_artifact(args.textknn).model, zs_b, warm_b), args.category
        )
    if args.pop:
        pop = load_artifact(args.pop).model
        row["warm_pop"] = ndcg(warm_b, pop, args.category)
        row["zero_shot_plus_pop"] = with_popularity(warm_b, Remapped(zs, zs_b, warm_b), pop, args.category)
    if args.text_warm:
        row["warm_text_only"] = ndcg(warm_b, load_artifact(args.text_warm).model, args.category)
    path = RESULTS / f"{NAME}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [r for r in rows if (r["dataset"], r["category"]) != (args.dataset, args.category)] + [row]
    rows.sort(key=lambda r: (r["dataset"], r["category"]))
    lines = [
        "# Zero-shot category vs the warm flagship, on the same test rows",
        "",
        "Test NDCG@10 of the held-out category, seed 0 (benchmarks/zero_shot_share.py). *Warm*: the ID flagship",
        "trained with the category (the experiment tables' protocol). *Zero-shot, same rows*: the text+id",
        "flagship trained without the category, graded on the warm table's test rows and candidates.",
        "*Zero-shot, own protocol*: the same model on its own test split, where every interaction of the",
        "category is a positive (the number the zero-shot tables show; not comparable with the warm one).",
        "*text-kNN, same rows*: the zero-shot run's text-kNN on the warm rows. *Warm popularity*: the",
        "warm run's popularity, for how much of the warm figure the category's own popularity carries.",
        "*Warm, text only*: the flagship with a text-only item tower (`item_tower: text`) trained with the",
        "category: what the item text carries when the category's interactions are there to learn from,",
        "which a zero-shot model reads the same text without. *Zero-shot + popularity (oracle)*: the zero-shot",
        "model's scores plus beta x log(1 + n), n each item's training interactions in the warm run, beta",
        "picked on the warm validation split: what knowing the category's popularity, which no model",
        "without its interactions can, would add. Shares are of the warm figure.",
        "",
        "| dataset | held-out category | warm | zero-shot, same rows | share | warm, text only | share "
        "| warm popularity | share | zero-shot + popularity (oracle) | share | text-kNN, same rows "
        "| zero-shot, own protocol | share (own protocol) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def opt(r: dict, key: str, w: float | None = None) -> str:
        if key not in r:
            return "–" if w is None else "– | –"
        v = r[key]["all"]
        return f"{v:.4f}" if w is None else f"{v:.4f} | {v / w:.0%}"

    for r in rows:
        w, s, o = r["warm"]["all"], r["zero_shot_same_rows"]["all"], r["zero_shot_own_protocol"]["all"]
        lines.append(
            f"| {r['dataset']} | {r['category']} | {w:.4f} | {s:.4f} | {s / w:.0%} | {opt(r, 'warm_text_only', w)} "
            f"| {opt(r, 'warm_pop', w)} | {opt(r, 'zero_shot_plus_pop', w)} | {opt(r, 'textknn_same_rows')} | {o:.4f} | {o / w:.0%} |"
        )
    write_results(NAME, {"rows": rows}, "\n".join(lines))
    w, s = row["warm"]["all"], row["zero_shot_same_rows"]["all"]
    print(
        f"{args.dataset} {args.category}: warm {w:.4f}, zero-shot on the same rows {s:.4f} ({s / w:.0%}), "
        f"own protocol {row['zero_shot_own_protocol']['all']:.4f}"
    )


if __name__ == "__main__":
    main()
