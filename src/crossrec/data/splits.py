"""The split strategies of `prepare` (`prepare.split`: given, leave_last_out, temporal, random):
the int8 `split` column, and the one-line refusal of a split that left nothing to test or train on."""

from __future__ import annotations

from typing import Any, cast

import polars as pl

from crossrec.data.bundle import SPLIT_CODES
from crossrec.data.config import PrepareConfig
from crossrec.data.schema import DataError
from crossrec.errors import InputDataError


def split_rows(df: pl.DataFrame, cfg: PrepareConfig) -> pl.DataFrame:
    """Add the int8 `split` column."""
    train, valid, test = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]
    group = ["user", "category"]
    if cfg.split == "given":
        bad = df.filter(~pl.col("split").is_in(list(SPLIT_CODES)))
        if bad.height:
            raise DataError("<interactions>", None, "split", "train, valid or test", repr(bad["split"][0]))
        return df.with_columns(pl.col("split").replace_strict(SPLIT_CODES, return_dtype=pl.Int8))
    if cfg.split == "leave_last_out":
        df = df.sort("user", "category", "order", "_row")
        n = pl.len().over(group)
        from_end = n - 1 - pl.int_range(pl.len()).over(group)
        code = (
            pl.when((from_end == 0) & (n >= 2))
            .then(test)
            .when((from_end == 1) & (n >= 3) & cfg.valid)
            .then(valid)
            .otherwise(train)
        )
        return df.with_columns(code.cast(pl.Int8).alias("split"))
    if cfg.split == "temporal":
        return temporal_split(df, *temporal_cuts(df["order"], cfg))
    # random: shuffle within (user, category) by a seeded key, then cut by rounded counts.
    return random_split(df.with_columns(pl.int_range(pl.len()).shuffle(seed=cfg.seed).alias("_key")), cfg)


def temporal_cuts(order: pl.Series, cfg: PrepareConfig) -> tuple[Any, Any]:
    """The temporal split's (valid start, test start): rows with `order` above the second go to
    test, those above the first to valid."""
    hi = order.quantile(1.0 - cfg.test_ratio, "lower")
    lo = order.quantile(1.0 - cfg.test_ratio - (cfg.valid_ratio if cfg.valid else 0.0), "lower")
    return lo, hi


def temporal_split(df: pl.DataFrame, lo: Any, hi: Any) -> pl.DataFrame:
    """Add the `split` column of a temporal cut at (`lo`, `hi`) from `temporal_cuts`."""
    train, valid, test = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]
    if hi is None:  # no orders (an empty piece): every row, if any, is training (no null comparison)
        return df.with_columns(pl.lit(train, pl.Int8).alias("split"))
    code = pl.when(pl.col("order") > hi).then(test).when(pl.col("order") > lo).then(valid).otherwise(train)
    return df.with_columns(code.cast(pl.Int8).alias("split"))


def random_split(df: pl.DataFrame, cfg: PrepareConfig) -> pl.DataFrame:
    """Add the random split's `split` column, given each row's seeded shuffle key `_key`: per
    (user, category), the rows first by key go to test, the next to valid (rounded counts)."""
    train, valid, test = SPLIT_CODES["train"], SPLIT_CODES["valid"], SPLIT_CODES["test"]
    group = ["user", "category"]
    df = df.sort("user", "category", "_key")
    n = pl.len().over(group)
    pos = pl.int_range(pl.len()).over(group)
    n_test = (n * cfg.test_ratio).round().cast(pl.Int64).clip(0, n - 1)
    v_ratio = cfg.valid_ratio if cfg.valid else 0.0
    n_valid = (n * v_ratio).round().cast(pl.Int64).clip(0, (n - 1 - n_test).clip(0))
    code = pl.when(pos < n_test).then(test).when(pos < n_test + n_valid).then(valid).otherwise(train)
    return df.with_columns(code.cast(pl.Int8).alias("split")).drop("_key")


def check_split(df: pl.DataFrame, cfg: PrepareConfig) -> None:
    """Refuse, in one line, a split that left nothing to test on (or to train on) although the
    settings ask for both: data too small to split. A dataset's own split (`given`) and
    `test_ratio=0` are taken as they are."""
    if cfg.split == "given" or (cfg.split != "leave_last_out" and cfg.test_ratio == 0):
        return
    codes = df["split"]
    n_test, n_train = int((codes == SPLIT_CODES["test"]).sum()), int((codes == SPLIT_CODES["train"]).sum())
    if n_test and n_train:
        return
    size = (
        f"after filtering{f' (prepare.k_core={cfg.k_core})' if cfg.k_core else ''}, {df.height} interactions of "
        f"{df['user'].n_unique()} users"
    )
    if n_train == 0:
        raise InputDataError(f"too little data to split: {size}, and prepare.split={cfg.split} left none for training")
    per_group = df.group_by("user", "category").len()["len"]
    most = int(cast(int, per_group.max()) or 0)
    if cfg.split == "leave_last_out":
        why = (
            f"no user has 2 or more interactions in one category (the most is {most}), which "
            f"prepare.split=leave_last_out needs to hold one out"
        )
    elif cfg.split == "random":
        n = pl.Series(range(2, 100_002))
        ok = ((n * cfg.test_ratio).round() >= 1).arg_true()
        need = f"at least {int(n[int(ok[0])])}" if len(ok) else "more"
        why = (
            f"prepare.split=random with test_ratio={cfg.test_ratio:g} needs a user with {need} interactions in a "
            f"category; the most is {most}"
        )
    else:
        why = (
            f"prepare.split=temporal found no interaction after the {1 - cfg.test_ratio:g} quantile of time "
            f"({df['order'].n_unique()} distinct times)"
        )
    raise InputDataError(f"too little data to split: {size}, none for test: {why}")


__all__ = ["check_split", "random_split", "split_rows", "temporal_cuts", "temporal_split"]
