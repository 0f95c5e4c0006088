"""Beyond accuracy: coverage, novelty, diversity, per-category exposure, and an exposure re-ranker.

One pass per evaluated split: every user with an interaction in the split gets, in every category,
the top `k` items the model ranks there (items seen in earlier splits masked, as in the accuracy
evaluation). From these lists, per category:

- `coverage@k`: distinct recommended items / items of the category;
- `novelty@k`: mean self-information of the recommended items, -log2((n_i + 1) / (n_users + 1)),
  n_i = the item's training users (Zhou et al. 2010's novelty, smoothed for unseen items);
- `ild@k`: intra-list diversity, the mean pairwise cosine distance of a list's items, with item
  vectors from co-occurrence (each item's column of the binary training matrix). One item space for
  every model, so the column compares models; a model's own vectors would make each model grade
  itself.

**Cross-category ranking.** A page that mixes categories shows each user the top `k` of all the
categories' lists merged by score. Per category:

- `exposure@k`: its share of those slots;
- `reach@k`: the share of users who see at least one of its items;
- `interaction_share`: its share of the training interactions.

On the ALL row:

- `exposure_gap@k`: half the L1 distance between the exposure shares and the interaction shares
  (0 = every category is shown in proportion to its use; 1 = all slots to categories nobody uses);
- `cross_ndcg@k`: the NDCG of the merged list against every split positive of the user, in any
  category.

**Re-ranker** (`eval.rerank: category_exposure`, weight `eval.rerank_weight` = lambda): builds the
merged list greedily, MMR-style. Each slot takes the candidate maximising

    (1 - lambda) * score' - lambda * max(0, (n_c + 1) / (t + 1) - target_c)

where score' is the candidate's score min-max scaled within the user's candidates, n_c counts
category c's items among the t already placed, and target_c is c's interaction share. lambda = 0 is
the plain merge; larger lambda moves exposure toward the targets at some cost in cross_ndcg.
`exposure_curve` measures that trade-off over a list of weights from one scoring pass.

Example:
    >>> lists = CrossLists.build(model, bundle, "test", k=10)          # doctest: +SKIP
    >>> beyond_table(bundle, lists, EvalConfig()).select("category", "exposure@10")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from crossrec.data.bundle import Bundle
from crossrec.evaluation.metrics import top_k_rows
from crossrec.evaluation.tensors import csr_coords, device_of, eval_mode
from crossrec.models.scoring import ScoreMemory

EARLIER = {"train": (), "valid": ("train",), "test": ("train", "valid")}


@dataclass
class CrossLists:
    """Per evaluated user, each category's top-k: global item ids, scores and categories, [U, C*k]
    (a category with fewer than k candidates pads with item -1 and score -inf)."""

    users: np.ndarray  # [U]
    items: torch.Tensor  # [U, C*k] global item ids (-1: padding)
    scores: torch.Tensor  # [U, C*k]
    cats: torch.Tensor  # [U, C*k] category of each candidate
    k: int

    @classmethod
    def build(
        cls,
        model: Any,
        bundle: Bundle,
        split: str,
        k: int,
        batch_size: int = 1024,
        mask_seen: bool = True,
        users: np.ndarray | None = None,
        max_users: int = 0,
        seed: int = 0,
    ) -> CrossLists:
        """Every category's top-k for `users` (sorted ids; None: every user with a row in `split`),
        or for a seeded draw of `max_users` of them when there are more (0: all)."""
        if users is None:
            users = np.flatnonzero(np.diff(bundle.csr(split).indptr))
        if 0 < max_users < len(users):
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        device = device_of(model)
        items, scores, cats = [], [], []
        with torch.no_grad(), eval_mode(model):
            for c in range(bundle.n_categories):
                n = bundle.n_items_in(c)
                index = torch.from_numpy(bundle.item_index(c).astype(np.int64))
                seen = None
                if mask_seen and EARLIER[split]:
                    seen = bundle.csr(EARLIER[split], c)[users]
                    pos = bundle.csr(split, c)[users]
                    seen = seen - seen.multiply(pos)  # a positive seen earlier stays a candidate
                    seen.eliminate_zeros()
                it, sc = [], []
                with ScoreMemory.active() as memory:  # one score buffer for every batch (models/scoring.py)
                    for lo in range(0, len(users), batch_size):
                        hi = min(lo + batch_size, len(users))
                        s = model.score(torch.from_numpy(users[lo:hi]).long().to(device), c).detach().float()
                        if not memory.lent(s):
                            s = s.clone()  # masking writes in place: never into the model's storage
                        if seen is not None:
                            s[csr_coords(seen[lo:hi], device)] = float("-inf")
                        values, local = top_k_rows(s, min(k, n))
                        it.append(local.cpu())
                        sc.append(values.cpu())
                        memory.give_back(s)
                loc, val = torch.cat(it), torch.cat(sc)
                glob = torch.where(torch.isfinite(val), index[loc], torch.full_like(loc, -1))
                if n < k:  # pad to k columns
                    pad = k - n
                    glob = torch.cat([glob, torch.full((len(users), pad), -1, dtype=torch.long)], 1)
                    val = torch.cat([val, torch.full((len(users), pad), float("-inf"))], 1)
                items.append(glob)
                scores.append(val.masked_fill(glob < 0, float("-inf")))
                cats.append(torch.full_like(glob, c))
        return cls(users, torch.cat(items, 1), torch.cat(scores, 1), torch.cat(cats, 1), k)

    def category_lists(self, c: int) -> torch.Tensor:
        """[U, k] category c's own top-k (global ids, -1 padding)."""
        return self.items[:, c * self.k : (c + 1) * self.k]

    def merged(self) -> torch.Tensor:
        """[U, k] positions (into the candidate columns) of the top k across categories."""
        return torch.topk(self.scores, self.k, dim=1).indices

    def reranked(self, target: torch.Tensor, weight: float) -> torch.Tensor:
        """[U, k] positions chosen by the exposure re-ranker (see the module docstring)."""
        if weight <= 0:
            return self.merged()
        s = self.scores
        finite = torch.isfinite(s)
        lo = torch.where(finite, s, torch.full_like(s, float("inf"))).min(1, keepdim=True).values
        hi = torch.where(finite, s, torch.full_like(s, float("-inf"))).max(1, keepdim=True).values
        scaled = torch.where(finite, (s - lo) / (hi - lo).clamp_min(1e-12), torch.full_like(s, float("-inf")))
        n_cat = int(target.numel())
        counts = torch.zeros(len(s), n_cat)
        taken = torch.zeros_like(finite)
        picks = []
        rows = torch.arange(len(s))
        for t in range(self.k):
            over = ((counts + 1) / (t + 1) - target.unsqueeze(0)).clamp_min(0)  # [U, C]
            value = (1 - weight) * scaled - weight * over.gather(1, self.cats)
            value = value.masked_fill(taken | ~finite, float("-inf"))
            j = value.argmax(1)
            picks.append(j)
            taken[rows, j] = True
            counts[rows, self.cats[rows, j]] += 1
        return torch.stack(picks, 1)


def interaction_shares(bundle: Bundle) -> torch.Tensor:
    """[C] each category's share of the training interactions."""
    counts = np.bincount(bundle.split("train")["category"].to_numpy(), minlength=bundle.n_categories)
    return torch.from_numpy(counts / max(counts.sum(), 1)).float()


def _cooccurrence(bundle: Bundle) -> sp.csr_matrix:
    """[n_items, n_users] binary training columns, rows L2-normalised (co-occurrence cosine)."""
    x = bundle.csr("train").T.tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    return sp.diags(1.0 / np.maximum(norms, 1e-12)).dot(x).tocsr()


def _ild(lists: np.ndarray, xn: sp.csr_matrix) -> float:
    """Mean over lists of the mean pairwise cosine distance (lists [N, k], -1 padding).

    The cosines come from one sparse Gram matrix over the distinct listed items, so the cost
    follows the distinct items, not the number of lists times their pairs."""
    n, k = lists.shape
    a, b = np.triu_indices(k, 1)
    left, right = lists[:, a].ravel(), lists[:, b].ravel()
    ok = (left >= 0) & (right >= 0)
    if not ok.any():
        return float("nan")
    distinct, local = np.unique(np.concatenate([left[ok], right[ok]]), return_inverse=True)
    rows = xn[distinct]
    gram = (rows @ rows.T).tocsr()
    half = int(ok.sum())
    sim = np.asarray(gram[local[:half], local[half:]]).ravel()
    # an item without training users has a zero vector: distance 1 to everything
    owner = np.repeat(np.arange(n), len(a))[ok]
    pairs = np.bincount(owner, minlength=n)
    per_list = np.bincount(owner, weights=1.0 - sim, minlength=n)
    has = pairs > 0
    return float((per_list[has] / pairs[has]).mean()) if has.any() else float("nan")


def _cross_ndcg(bundle: Bundle, split: str, users: np.ndarray, chosen: torch.Tensor) -> float:
    """Mean NDCG@k of the merged lists (global ids [U, k]) against every split positive."""
    pos = bundle.csr(split)[users]
    k = chosen.shape[1]
    flat = chosen.numpy()
    rows = np.repeat(np.arange(len(users)), k)
    hit = np.zeros(flat.size, dtype=bool)
    ok = flat.ravel() >= 0
    hit[ok] = np.asarray(pos[rows[ok], flat.ravel()[ok]]).ravel() > 0
    gains = hit.reshape(len(users), k) / np.log2(np.arange(2, k + 2))
    ideal_n = np.minimum(np.diff(pos.indptr), k)
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.maximum(ideal_n - 1, 0)]
    return float((gains.sum(1) / ideal).mean())


def cross_metrics(
    bundle: Bundle, split: str, lists: CrossLists, picks: torch.Tensor, target: torch.Tensor
) -> dict[str, Any]:
    """Exposure, reach, gap (against `target`, the interaction shares) and cross NDCG of the merged
    lists given by candidate positions `picks`."""
    n_cat = bundle.n_categories
    cats = lists.cats.gather(1, picks)
    chosen = lists.items.gather(1, picks)
    valid = chosen >= 0
    counts = torch.zeros(len(picks), n_cat).scatter_add_(1, cats, valid.float())  # [U, C]
    exposure = counts.sum(0) / counts.sum().clamp_min(1)
    reach = (counts > 0).float().mean(0)
    return {
        "exposure": exposure,
        "reach": reach,
        "target": target,
        "gap": float((exposure - target).abs().sum() / 2),
        "cross_ndcg": _cross_ndcg(bundle, split, lists.users, chosen),
    }


def beyond_table(
    bundle: Bundle, split: str, lists: CrossLists, rerank: str = "none", weight: float = 0.0
) -> pl.DataFrame:
    """Rows (category, slice="all") with the beyond-accuracy columns (module docstring), plus ALL."""
    k = lists.k
    pop = np.bincount(bundle.split("train")["item"].to_numpy(), minlength=bundle.n_items)
    info = -np.log2((pop + 1.0) / (bundle.n_users + 1.0))
    xn = _cooccurrence(bundle)
    target = interaction_shares(bundle)
    picks = lists.reranked(target, weight) if rerank == "category_exposure" else lists.merged()
    cross = cross_metrics(bundle, split, lists, picks, target)
    rows, all_items, all_info, ild_parts = [], [], [], []
    for c, name in enumerate(bundle.categories):
        li = lists.category_lists(c).numpy()
        got = li[li >= 0]
        all_items.append(np.unique(got))
        all_info.append(info[got])
        ild = _ild(li, xn)
        ild_parts.append((ild, len(li)))
        rows.append(
            {
                "category": name,
                f"coverage@{k}": len(np.unique(got)) / max(bundle.n_items_in(c), 1),
                f"novelty@{k}": float(info[got].mean()) if got.size else float("nan"),
                f"ild@{k}": ild,
                f"exposure@{k}": float(cross["exposure"][c]),
                f"reach@{k}": float(cross["reach"][c]),
                "interaction_share": float(target[c]),
            }
        )
    got_all = np.concatenate(all_info) if all_info else np.zeros(0)
    ilds = [(v, n) for v, n in ild_parts if np.isfinite(v)]
    rows.append(
        {
            "category": "ALL",
            f"coverage@{k}": sum(len(x) for x in all_items) / max(bundle.n_items, 1),
            f"novelty@{k}": float(got_all.mean()) if got_all.size else float("nan"),
            f"ild@{k}": float(sum(v * n for v, n in ilds) / sum(n for _, n in ilds)) if ilds else float("nan"),
            f"exposure_gap@{k}": cross["gap"],
            f"cross_ndcg@{k}": cross["cross_ndcg"],
        }
    )
    return pl.DataFrame(rows).with_columns(pl.lit("all").alias("slice"))


def exposure_curve(bundle: Bundle, split: str, lists: CrossLists, weights: list[float]) -> pl.DataFrame:
    """cross_ndcg@k and exposure_gap@k of the re-ranked merged lists for each weight (0 = plain)."""
    target = interaction_shares(bundle)
    out = []
    for w in weights:
        m = cross_metrics(bundle, split, lists, lists.reranked(target, float(w)), target)
        out.append(
            {
                "weight": float(w),
                f"cross_ndcg@{lists.k}": m["cross_ndcg"],
                f"exposure_gap@{lists.k}": m["gap"],
                **{f"exposure_{name}": float(m["exposure"][c]) for c, name in enumerate(bundle.categories)},
            }
        )
    return pl.DataFrame(out)


__all__ = ["CrossLists", "beyond_table", "cross_metrics", "exposure_curve", "interaction_shares"]
