"""The evaluation protocols `prepare` applies after the split: each moves some rows to test.

- cold-start users (`cold_user_fraction`, after EMCDR/PTUPCDR): a seeded fraction of the users
  active in two or more categories lose all their rows in one category;
- cold-start items (`cold_item_fraction`): a seeded fraction of the items lose every row, to test
  or (a share `cold_item_valid_share` of them, with a validation split) to validation, so that a
  model can be tuned and calibrated for items nobody trained on, as DropoutNet and CLCRec split
  their cold items. By default that share is validation's share of the other held-out rows, so
  cold items' positives are as large a part of validation as of test: a validation split richer
  in them than test makes what is calibrated on it (the flagship's cold offset) favour cold items
  more than test rewards;
- a zero-shot category (`zero_shot_category`): every row of that category.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from crossrec.data.bundle import SPLIT_CODES
from crossrec.errors import ConfigError

if TYPE_CHECKING:
    from crossrec.data.config import PrepareConfig


def _to_test(df: pl.DataFrame, rows: pl.Expr) -> pl.DataFrame:
    return df.with_columns(
        pl.when(rows).then(pl.lit(SPLIT_CODES["test"], pl.Int8)).otherwise(pl.col("split")).alias("split")
    )


def cold_user_protocol(df: pl.DataFrame, cfg: PrepareConfig, categories: list[str]) -> pl.DataFrame:
    """Move all of a seeded fraction of multi-category users' rows in one category to test; with a
    validation split, a further seeded `cold_user_valid_fraction` of them (other users, drawn after
    the test users, so the test draw does not depend on it) have theirs moved to validation."""
    active = df.select("user", "category").unique().sort("user", "category")
    multi = active.filter(pl.len().over("user") >= 2)
    if cfg.cold_user_category is not None:
        if cfg.cold_user_category not in categories:
            raise ConfigError(f"prepare.cold_user_category={cfg.cold_user_category!r} not in {categories}")
        target = categories.index(cfg.cold_user_category)
        multi = multi.filter(pl.col("category") == target)
    else:
        # One random active category per user.
        multi = (
            multi.with_columns(pl.int_range(pl.len()).shuffle(seed=cfg.seed + 1).alias("_k"))
            .sort("user", "_k")
            .unique("user", keep="first", maintain_order=True)
            .drop("_k")
        )
    chosen = multi.sample(fraction=cfg.cold_user_fraction, seed=cfg.seed, shuffle=False)
    to_valid = multi.head(0)
    n_valid = int(round(cfg.cold_user_valid_fraction * multi.height)) if cfg.valid else 0
    if n_valid > 0:
        rest = multi.join(chosen, on="user", how="anti")
        to_valid = rest.sample(n=min(n_valid, rest.height), seed=cfg.seed + 4, shuffle=False)
    marks = pl.concat(
        [
            chosen.with_columns(pl.lit(SPLIT_CODES["test"], pl.Int8).alias("_to")),
            to_valid.with_columns(pl.lit(SPLIT_CODES["valid"], pl.Int8).alias("_to")),
        ]
    )
    df = df.join(marks, on=["user", "category"], how="left")
    return df.with_columns(pl.coalesce("_to", "split").alias("split")).drop("_to")


def held_out_share(splits: Sequence[pl.Series]) -> float:
    """valid / (valid + test) rows of split columns (pieces of one; 0 without held-out rows)."""
    n_valid, n_test = (sum(int((s == SPLIT_CODES[k]).sum()) for s in splits) for k in ("valid", "test"))
    return n_valid / (n_valid + n_test) if n_valid + n_test else 0.0


def cold_item_protocol(df: pl.DataFrame, cfg: PrepareConfig, held: float | None = None) -> pl.DataFrame:
    """Move every interaction of a seeded fraction of the items to test (they become cold items);
    with a validation split, a seeded share `cold_item_valid_share` of those items go to validation
    instead (disjoint item sets: no item is cold in both). Where that option is None, the share is
    `held` (validation's share of the held-out rows; computed from `df`'s split column when None)."""
    items = df.select("item").unique().sort("item")
    chosen = items.sample(fraction=cfg.cold_item_fraction, seed=cfg.seed + 2, shuffle=False)["item"]
    share = cfg.cold_item_valid_share
    if share is None:
        share = held if held is not None else held_out_share([df["split"]])
    share = share if cfg.valid else 0.0
    if share <= 0 or len(chosen) == 0:
        return _to_test(df, pl.col("item").is_in(chosen.implode()))
    to_valid = chosen.sample(fraction=share, seed=cfg.seed + 3, shuffle=False)
    to_test = chosen.filter(~chosen.is_in(to_valid.implode()))
    df = _to_test(df, pl.col("item").is_in(to_test.implode()))
    return df.with_columns(
        pl.when(pl.col("item").is_in(to_valid.implode()))
        .then(pl.lit(SPLIT_CODES["valid"], pl.Int8))
        .otherwise(pl.col("split"))
        .alias("split")
    )


def zero_shot_protocol(df: pl.DataFrame, cfg: PrepareConfig, categories: list[str]) -> pl.DataFrame:
    """Move every interaction of one category to test: models train on the others only."""
    if cfg.zero_shot_category not in categories:
        raise ConfigError(f"prepare.zero_shot_category={cfg.zero_shot_category!r} not in {categories}")
    return _to_test(df, pl.col("category") == categories.index(cfg.zero_shot_category))
