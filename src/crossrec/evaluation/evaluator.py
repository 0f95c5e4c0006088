"""The evaluator: full-ranking (default) or sampled-negatives evaluation, per category and slice.

An evaluation unit is a (user, category) pair with at least one interaction in the evaluated split.
Its positives are that split's items of the user in the category. Under the full protocol every
item of the category is a candidate, except the items the user has in earlier splits of that
category (train for "valid", train + valid for "test"), which are masked to -inf. A positive that
the user also had in an earlier split stays a positive and is not masked: the split says the user
interacted with it again, and masking it would make that interaction impossible to retrieve.

Slices (each a mean over its units; empty slices are left out):
    all              every unit
    warm             the user has training interactions in the category
    new_to_category  the evaluated rows carry `new_to_category` (no training history in the category)
    cold_item        units with a positive whose item has no training interaction at all; the
                     positives are only those cold items, and the unit's other positives are
                     removed from the candidate list (masked)
    new_items        the cold_item units ranked among the category's items with no training
                     interaction only (full protocol): the item cold-start setting of DropoutNet
                     and CLCRec, i.e. which new item to show (a "new arrivals" shelf)
(A unit whose user has no training interaction anywhere falls in neither warm nor
new_to_category.) The "ALL" category rows average over all units of all evaluated categories.

Ratings: when the bundle has ratings and the model predicts them (`predicts_ratings`, with
`predict_rating(users, items)`), RMSE and MAE over the split's rated rows join each category and slice.

The sampled protocol exists only to compare with papers that used it: each (unit, positive) pair
is ranked among 1 + n_negatives candidates, the negatives drawn uniformly (with replacement) from
the category's items the user never interacted with in any split, from a generator seeded by
(seed, category); a unit's value is the mean over its pairs. Candidates are ordered by item index,
so ties follow the same rule as under full ranking. Neither protocol's numbers depend on
`batch_size`.

Example:
    >>> ev = Evaluator(bundle, EvalConfig(ks=(10, 20)), split="test")   # doctest: +SKIP
    >>> res = ev.evaluate(model)                                        # doctest: +SKIP
    >>> res.metric("ndcg@10", category="books", slice="new_to_category")  # doctest: +SKIP
    0.0734
    >>> print(res.to_markdown().splitlines()[0])                        # doctest: +SKIP
    Evaluation (protocol: full ranking, split: test)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import Tensor

from crossrec import collectives
from crossrec.data.bundle import Bundle, split_code
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.metrics import (
    Ranking,
    mae,
    rank_items,
    rank_items_top,
    ranking_metrics,
    rmse,
)
from crossrec.evaluation.report import EvalResult, comparison_markdown, protocol_label
from crossrec.evaluation.tensors import (
    concat_chunks,
    csr_coords,
    device_of,
    eval_mode,
    mean_by,
    padded_rows,
    row_keys,
    sample_unseen,
    shares_storage,
)
from crossrec.models.base import RatingPredictor
from crossrec.models.scoring import ScoreMemory, lent_block

__all__ = ["EvalConfig", "EvalResult", "Evaluator", "comparison_markdown", "evaluate_many"]

log = logging.getLogger(__name__)

SLICES = ("all", "warm", "new_to_category", "cold_item", "new_items")
EARLIER_SPLITS = {"train": (), "valid": ("train",), "test": ("train", "valid")}
ALL_SPLITS = ("train", "valid", "test")


@dataclass
class _Units:
    """The evaluation units of one category; every matrix has one row per unit."""

    users: np.ndarray  # [U] user ids
    pos: sp.csr_matrix  # [U, n_items(c)] positives
    seen: sp.csr_matrix | None  # [U, n_items(c)] earlier-split items to mask (positives excluded)
    cold: sp.csr_matrix  # [U, n_items(c)] cold positives
    warm: np.ndarray  # [U] bool
    new: np.ndarray  # [U] bool

    def take(self, keep: np.ndarray) -> _Units:
        seen = None if self.seen is None else self.seen[keep]
        return _Units(self.users[keep], self.pos[keep], seen, self.cold[keep], self.warm[keep], self.new[keep])


class Evaluator:
    """Evaluates any model with `score(users, category)` on one split of a Bundle.

    Args:
        bundle: the prepared dataset.
        cfg: the evaluation settings.
        split: "test" (default) or "valid" ("train" evaluates fit, with nothing masked).
    """

    def __init__(self, bundle: Bundle, cfg: EvalConfig = EvalConfig(), split: str = "test") -> None:
        split_code(split)  # raises on an unknown split
        self.bundle = bundle
        self.cfg = cfg
        self.split = split
        self.sample = self._sample_users()  # None: every user (cfg.max_users = 0)

    def _sample_users(self) -> np.ndarray | None:
        """The sorted user ids `cfg.max_users` draws (seeded: the same at every call), or None."""
        if self.cfg.max_users == 0:
            return None
        users = np.flatnonzero(np.diff(self.bundle.csr(self.split).indptr))
        if len(users) <= self.cfg.max_users:
            return None
        rng = np.random.default_rng(self.cfg.seed)
        return np.sort(rng.choice(users, self.cfg.max_users, replace=False))

    def evaluate(self, model: Any, categories: list[int] | None = None) -> EvalResult:
        """Score every unit of the split in `categories` (default: all) and aggregate the metrics."""
        b = self.bundle
        cats = list(range(b.n_categories)) if categories is None else [b.category_id(c) for c in categories]
        device = device_of(model)
        parts: list[pl.DataFrame] = []
        world, rank = collectives.world_size(), collectives.rank()
        with torch.no_grad(), eval_mode(model):
            for c in cats:
                units = self._units(c)
                if self.sample is not None:  # eval.max_users: the fixed sample only
                    units = units.take(np.isin(units.users, self.sample))
                if world > 1:  # multi-process training: this process scores every world-th unit
                    units = units.take(np.arange(len(units.users)) % world == rank)
                if len(units.users) == 0:
                    continue
                if self.cfg.protocol == "full":
                    per_unit, cold = self._full(model, c, units, device)
                else:
                    units, per_unit, sampled_cold = self._sampled(model, c, units, device)
                    cold = {"cold_item": sampled_cold}
                parts.append(self._unit_frame(b.categories[c], units, per_unit, cold))
            ratings = self._ratings(model, cats, device)
        if world > 1:  # every process gets every unit's values, so all take the same decisions
            gathered = collectives.gather_frame(pl.concat(parts) if parts else pl.DataFrame())
            parts = [gathered] if gathered.height else []
        table = _aggregate(parts, ratings, self.cfg)
        if self.cfg.beyond and self.cfg.protocol == "full" and categories is None and table.height:
            from crossrec.evaluation.beyond import CrossLists, beyond_table

            ec = self.cfg  # eval.beyond_users: a seeded draw (seed + 1: not max_users') from the users evaluated
            args = (ec.beyond_k, ec.batch_size, ec.mask_seen, self.sample, ec.beyond_users, ec.seed + 1)
            lists = CrossLists.build(model, b, self.split, *args)
            extra = beyond_table(b, self.split, lists, ec.rerank, ec.rerank_weight)
            table = table.join(extra, on=["category", "slice"], how="left", maintain_order="left")
        return EvalResult(self.cfg.protocol, self.split, table, config=asdict(self.cfg))

    # ------------------------------------------------------------------ units
    def _units(self, c: int) -> _Units:
        b, n = self.bundle, self.bundle.n_items_in(c)
        pos_all = b.csr(self.split, c)
        users = np.flatnonzero(np.diff(pos_all.indptr))
        earlier = EARLIER_SPLITS[self.split]
        pos = pos_all[users]
        seen = None
        if self.cfg.mask_seen and earlier:
            seen = b.csr(earlier, c)[users]
            seen = seen - seen.multiply(pos)  # a positive seen earlier stays a candidate
            seen.eliminate_zeros()
        rows = b.split(self.split, c)
        warm = np.diff(b.csr("train", c).indptr)[users] > 0
        if "new_to_category" in rows.columns:
            new = np.isin(users, rows.filter(pl.col("new_to_category"))["user"].to_numpy())
        else:
            new = ~warm
        if "cold_item" in rows.columns:
            cold_rows = rows.filter(pl.col("cold_item"))
            u = cold_rows["user"].to_numpy().astype(np.int64)
            i = b.item_local[cold_rows["item"].to_numpy().astype(np.int64)]
            cold = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(b.n_users, n))
            cold.sum_duplicates()
            cold.data[:] = 1.0
            cold = cold[users]
        else:
            cold = sp.csr_matrix((len(users), n), dtype=np.float32)
        return _Units(users, pos, seen, cold, warm, new)

    def _score(self, model: Any, users: np.ndarray, c: int, device: torch.device) -> Tensor:
        """[B, n_items(c)] float32 scores that the evaluator owns and may write -inf into."""
        scores = model.score(torch.from_numpy(users).long().to(device), c)
        n = self.bundle.n_items_in(c)
        if scores.shape != (len(users), n):
            raise ValueError(
                f"{type(model).__name__}.score returned {tuple(scores.shape)} for {len(users)} users in "
                f"category {c}; expected ({len(users)}, {n}) (= [len(users), n_items(category)])"
            )
        out = scores.detach().float()
        # Masking writes in place; a view (Pop's expand) or the model's own storage must be copied.
        if (
            out.data_ptr() == scores.data_ptr()
            and not lent_block(scores)
            and (scores._base is not None or shares_storage(scores, model))
        ):
            out = out.clone()
        return out

    # ------------------------------------------------------------------ full ranking
    def _full(
        self, model: Any, c: int, units: _Units, device: torch.device
    ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """Per-unit metrics of all units, and of the units with cold positives: among every item
        (cold_item slice) and among the items without training interactions (new_items slice)."""
        bs, ks = self.cfg.batch_size, self.cfg.ks
        per_unit: list[dict[str, Tensor]] = []
        cold_vals: list[dict[str, Tensor]] = []
        new_vals: list[dict[str, Tensor]] = []
        trained = torch.from_numpy(self.bundle.csr("train", c).getnnz(axis=0) > 0).to(device)  # [n_items(c)]
        with ScoreMemory.active() as memory:  # one score buffer for every batch (models/scoring.py)
            for lo in range(0, len(units.users), bs):
                scores = self._score(model, units.users[lo : lo + bs], c, device)  # [B, n_items(c)]
                self._full_batch(scores, units, lo, ks, trained, device, per_unit, cold_vals, new_vals)
                memory.give_back(scores)
        return concat_chunks(per_unit), {"cold_item": concat_chunks(cold_vals), "new_items": concat_chunks(new_vals)}

    def _full_batch(
        self,
        scores: Tensor,
        units: _Units,
        lo: int,
        ks: Any,
        trained: Tensor,
        device: torch.device,
        per_unit: list,
        cold_vals: list,
        new_vals: list,
    ) -> None:
        """The metrics of one batch of units (rows lo.. of `units`), appended to the three lists."""
        hi = lo + len(scores)
        pos = units.pos[lo:hi]
        if units.seen is not None:
            scores[csr_coords(units.seen[lo:hi], device)] = float("-inf")  # sparse write, no dense mask
        per_unit.append(ranking_metrics(self._rank(scores, *padded_rows(pos, device)), ks))
        cold = units.cold[lo:hi]
        rows = np.flatnonzero(np.diff(cold.indptr))
        if len(rows):
            # Cold slice: only the cold positives count; the other positives leave the list.
            other = pos[rows] - cold[rows]  # cold positives are a subset of the positives
            other.eliminate_zeros()
            s = scores[torch.from_numpy(rows).to(device)]  # [rows, n_items(c)], a copy
            s[csr_coords(other, device)] = float("-inf")
            where = padded_rows(cold[rows], device)
            cold_vals.append(ranking_metrics(self._rank(s, *where), ks))
            s[:, trained] = float("-inf")
            new_vals.append(ranking_metrics(self._rank(s, *where), ks))

    def _rank(self, scores: Tensor, items: Tensor, valid: Tensor) -> Ranking:
        """Every positive's rank (for AUC), or only those in the top max(ks) (`eval.auc: false`)."""
        if self.cfg.auc:
            return rank_items(scores, items, valid)
        return rank_items_top(scores, items, valid, max(self.cfg.ks))

    # ------------------------------------------------------------------ sampled negatives
    def _sampled(
        self, model: Any, c: int, units: _Units, device: torch.device
    ) -> tuple[_Units, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Like `_full`, for the kept units (those with an item they never touched), returned first."""
        n, bs = self.bundle.n_items_in(c), self.cfg.batch_size
        history = self.bundle.csr(ALL_SPLITS, c)[units.users]
        keep = np.diff(history.indptr) < n  # a unit needs at least one item it never touched
        if not keep.all():
            log.warning("category %d: %d units interacted with every item; left out", c, int((~keep).sum()))
            units, history = units.take(keep), history[keep]
        pair_unit = np.repeat(np.arange(len(units.users)), np.diff(units.pos.indptr))  # [R]
        pair_item = units.pos.indices.astype(np.int64)  # [R]
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.seed, c]).generate_state(1)[0]))
        negatives = sample_unseen(history, pair_unit, self.cfg.n_negatives, gen)  # [R, n_neg]
        cand = torch.cat([torch.from_numpy(pair_item).unsqueeze(1), negatives], 1)
        cand = cand.sort(dim=1, stable=True).values  # item order, so ties break as in full ranking
        is_pos = cand == torch.from_numpy(pair_item).unsqueeze(1)  # [R, 1 + n_neg]
        cold_keys = row_keys(units.cold, n)
        pair_cold = np.isin(pair_unit * n + pair_item, cold_keys)
        vals: list[dict[str, Tensor]] = []
        for lo in range(0, len(units.users), bs):
            hi = min(lo + bs, len(units.users))
            scores = self._score(model, units.users[lo:hi], c, device)
            p0, p1 = units.pos.indptr[lo], units.pos.indptr[hi]
            row = torch.from_numpy(pair_unit[p0:p1] - lo).to(device).unsqueeze(1)
            s = scores[row, cand[p0:p1].to(device)]  # [pairs, 1 + n_neg]
            where = is_pos[p0:p1].long().argmax(1, keepdim=True).to(device)  # [pairs, 1] positive's column
            valid = torch.ones(p1 - p0, 1, dtype=torch.bool, device=device)
            vals.append(ranking_metrics(rank_items(s, where, valid), self.cfg.ks))
        per_pair = concat_chunks(vals)
        per_unit = {k: mean_by(v, pair_unit, len(units.users)) for k, v in per_pair.items()}
        cold_units = np.unique(pair_unit[pair_cold])
        in_cold = pair_unit[pair_cold]
        cold = {k: mean_by(v[pair_cold], in_cold, len(units.users))[cold_units] for k, v in per_pair.items()}
        return units, per_unit, cold

    # ------------------------------------------------------------------ ratings
    def _ratings(self, model: Any, cats: list[int], device: torch.device) -> pl.DataFrame | None:
        b = self.bundle
        if not b.has_ratings or not (isinstance(model, RatingPredictor) and model.predicts_ratings):
            return None
        rows = b.split(self.split).filter(pl.col("category").is_in(cats) & pl.col("rating").is_not_null())
        if rows.height == 0:
            return None
        users = torch.from_numpy(rows["user"].to_numpy().astype(np.int64))
        items = torch.from_numpy(rows["item"].to_numpy().astype(np.int64))
        step = max(self.cfg.batch_size, 1) * 64
        pred = torch.cat(
            [
                model.predict_rating(users[i : i + step].to(device), items[i : i + step].to(device)).float().cpu()
                for i in range(0, len(users), step)
            ]
        )
        target = torch.from_numpy(rows["rating"].to_numpy().astype(np.float32))
        cat = rows["category"].to_numpy().astype(np.int64)
        train_nnz = np.zeros((b.n_categories, b.n_users), dtype=bool)
        for c in cats:
            train_nnz[c] = np.diff(b.csr("train", c).indptr) > 0
        flags = {
            "all": np.ones(len(cat), dtype=bool),
            "warm": train_nnz[cat, users.numpy()],
            "new_to_category": rows["new_to_category"].to_numpy() if "new_to_category" in rows.columns else None,
            "cold_item": rows["cold_item"].to_numpy() if "cold_item" in rows.columns else None,
            "new_items": None,  # a ranking slice: rating errors of cold items are under cold_item
        }
        out = []
        for name, c_mask in [(b.categories[c], cat == c) for c in cats] + [("ALL", np.ones(len(cat), dtype=bool))]:
            for slc in SLICES if self.cfg.slices else ("all",):
                if flags[slc] is None:
                    continue
                m = torch.from_numpy(c_mask & flags[slc])
                if m.any():
                    p, t = pred[m], target[m]
                    out.append({"category": name, "slice": slc, "rmse": rmse(p, t), "mae": mae(p, t)})
        schema = {"category": pl.String, "slice": pl.String, "rmse": pl.Float64, "mae": pl.Float64}
        return pl.DataFrame(out, schema=schema)

    # ------------------------------------------------------------------ aggregation
    def _unit_frame(
        self, name: str, units: _Units, per_unit: dict[str, np.ndarray], cold: dict[str, dict[str, np.ndarray]]
    ) -> pl.DataFrame:
        """Long frame of per-unit values: one row per (unit, slice it belongs to)."""

        def frame(slc: str, values: dict[str, np.ndarray]) -> pl.DataFrame:
            n = len(next(iter(values.values())))
            return pl.DataFrame({"category": [name] * n, "slice": [slc] * n, **values})

        frames = [frame("all", per_unit)]
        if self.cfg.slices:
            for slc, m in (("warm", units.warm), ("new_to_category", units.new)):
                if m.any():
                    frames.append(frame(slc, {k: v[m] for k, v in per_unit.items()}))
            for slc, vals in cold.items():
                if vals and len(next(iter(vals.values()))):
                    frames.append(frame(slc, vals))
        return pl.concat(frames)


def _aggregate(parts: list[pl.DataFrame], ratings: pl.DataFrame | None, cfg: EvalConfig) -> pl.DataFrame:
    label = protocol_label(cfg.protocol, cfg.n_negatives)
    metric_cols = [f"{m}@{k}" for m in ("recall", "ndcg", "hr", "mrr", "precision", "f1") for k in cfg.ks]
    metric_cols.append("auc")
    aggs = [pl.len().cast(pl.Int64).alias("n_users")] + [pl.col(m).fill_nan(None).mean().alias(m) for m in metric_cols]
    if not parts:
        schema = {"category": pl.String, "slice": pl.String, "n_users": pl.Int64} | {m: pl.Float64 for m in metric_cols}
        table = pl.DataFrame(schema=schema)
    else:
        long = pl.concat(parts)
        per_cat = long.group_by(["category", "slice"], maintain_order=True).agg(aggs)
        overall = [
            long.filter(pl.col("slice") == s).select(pl.lit("ALL").alias("category"), pl.lit(s).alias("slice"), *aggs)
            for s in SLICES
            if long.filter(pl.col("slice") == s).height
        ]
        table = pl.concat([per_cat, *overall])
    if ratings is not None:
        table = table.join(ratings, on=["category", "slice"], how="left", maintain_order="left")
    return table.select(pl.lit(label).alias("protocol"), pl.all())


def evaluate_many(models: Mapping[str, Any], evaluator: Evaluator) -> pl.DataFrame:
    """Evaluate several models with one evaluator; their tables stacked with a leading `model` column."""
    tables = [evaluator.evaluate(m).table.select(pl.lit(name).alias("model"), pl.all()) for name, m in models.items()]
    return pl.concat(tables, how="diagonal")


# ---------------------------------------------------------------------- helpers
