"""The `prepare:` section of a run config (`PrepareConfig`): how raw interactions become a Bundle
(data/prepare.py) and which cold-start protocols run (data/protocols.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossrec.errors import ConfigError
from crossrec.typed import Checked, Count, Share, Size

SPLIT_STRATEGIES = ("leave_last_out", "temporal", "random", "given")


@dataclass(frozen=True)
class PrepareConfig(Checked):
    """How raw interactions become a Bundle."""

    section = "prepare"

    split: Literal["leave_last_out", "temporal", "random", "given"] = (
        "leave_last_out"  # (str) leave_last_out | temporal | random | given
    )
    valid: bool = True  # (bool) hold out a validation split (for early stopping)
    test_ratio: Share = 0.2  # (float) temporal / random: share of interactions in test
    valid_ratio: Share = 0.1  # (float) temporal / random: share of interactions in valid
    k_core: Count = 0  # (int) keep users and items with >= k interactions (0 = off); iterated
    k_core_scope: Literal["global", "category"] = (
        "global"  # (str) global: counts over all categories | category: within each
    )
    dedupe: Literal["last", "first", "none"] = "last"  # (str) repeated (user, item): keep "last" | "first" | "none"
    cold_user_fraction: Share = 0.0  # (float) cold-start user protocol: share of multi-category users
    cold_user_category: str | None = None  # (str|None) target category of that protocol; None = random
    cold_user_valid_fraction: Share = 0.0  # (float) with a validation split: a further share of multi-category users (not those of the test draw) whose rows in one category go to validation, so new-to-category users are tuned and calibrated on (the new-user prior's weight: models/crossrec/prior.py)
    cold_item_fraction: Share = 0.0  # (float) cold-start item protocol: share of items whose every interaction goes to test (or valid: next option)
    cold_item_valid_share: Share | None = (
        None  # (float|None) share of those cold items whose interactions go to validation instead of test (with a validation split; 0 = all to test): what a model is tuned and calibrated on. None: validation's share of the other held-out rows (valid / (valid + test)), so cold items' positives are as large a part of validation as of test
    )
    zero_shot_category: str | None = (
        None  # (str|None) zero-shot protocol: every interaction of this category goes to test
    )
    item_reviews: Count = 0  # (int) keep up to this many of each item's training-split review texts (interactions' `text` column) as the item table's `reviews` column, for the encoder template's `{reviews}`; 0 = off
    item_review_chars: Size = 300  # (int) each kept review cut to this many characters
    keep_unused_items: bool = False  # (bool) keep catalogue items that have no interaction at all
    seed: int = 0  # (int) seed of the random split and the cold-start user draw
    pseudonymise: bool = False  # (bool) replace raw user ids by HMAC-SHA256 under the key in $CROSSREC_PSEUDONYM_KEY (never stored; data/pseudonym.py)
    streaming: bool = False  # (bool) out-of-core prepare (data/prepare_stream.py): two streaming passes over the input, integer columns only in memory; the same Bundle and fingerprint as in memory, and not recorded in the manifest. Memory stays bounded for a lazy input: prepare() given pl.scan_parquet, or `crossrec prepare`, which then reads the interaction file lazily with the readers' checks and errors (data/scan.py: Parquet scanned, CSV/TSV/JSONL converted piece by piece to temporary Parquet); the item table is read whole

    def validate(self) -> None:
        """What spans fields (each field's own range is declared beside it: `Share`, `Count`)."""
        if self.test_ratio + self.valid_ratio >= 1.0:
            raise ConfigError("prepare.test_ratio + prepare.valid_ratio must be < 1")
        if self.cold_user_fraction + self.cold_user_valid_fraction >= 1.0:
            raise ConfigError("prepare.cold_user_fraction + prepare.cold_user_valid_fraction must be < 1")
        if self.streaming and self.item_reviews > 0:
            raise ConfigError(
                "prepare.item_reviews > 0 is not supported with prepare.streaming: true; "
                "set prepare.item_reviews: 0 or prepare.streaming: false"
            )


__all__ = ["PrepareConfig", "SPLIT_STRATEGIES"]
