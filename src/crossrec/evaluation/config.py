"""How to evaluate, as a plain dataclass (no torch import): `EvalConfig`.

Example:
    >>> EvalConfig(ks=(10, 20), protocol="sampled", n_negatives=100)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from crossrec.errors import ConfigError
from crossrec.evaluation.report import protocol_label


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate.

    Args:
        ks: (tuple[int]) cut-offs of the @K metrics.
        protocol: (str) "full" ranking within the category, or "sampled" (1 positive + n_negatives).
        n_negatives: (int) negatives per positive under the sampled protocol.
        batch_size: (int) users per `score()` call; the results do not depend on it.
        mask_seen: (bool) mask items the user interacted with in earlier splits (full protocol).
        seed: (int) seed of the sampled protocol's negatives.
        slices: (bool) also report the warm / new_to_category / cold_item slices.
        auc: (bool) also report AUC. It needs every positive's rank among all items (a comparison
            pass over every score); without it only the top max(ks) are ranked (`torch.topk`), with
            the same tie rule, and the auc column is empty. Training's validation turns it off.
        beyond: (bool) also report the beyond-accuracy columns (evaluation/beyond.py): coverage,
            novelty, intra-list diversity per category, and the exposure each category gets when
            the categories' lists are merged into one ranking (full protocol, all categories).
        beyond_k: (int) list length of the beyond-accuracy columns.
        beyond_users: (int) the beyond-accuracy pass ranks every item of every category for each
            user it reads (users x all items), so past this many users it reads a fixed, seeded
            sample of them (the same at every call; from the `max_users` sample when there is
            one); 0: every user. Its columns are then estimates over that sample; the accuracy
            metrics still read every user.
        rerank: (str) "none" or "category_exposure": the merged ranking is re-ranked toward each
            category's share of the interactions (MMR-style; evaluation/beyond.py).
        rerank_weight: (float) the re-ranker's lambda in [0, 1] (0 = no re-ranking).
        max_users: (int) 0: every user with a positive in the split; n: a fixed sample of n of them
            (drawn once with `seed`, the same users at every call), so one evaluation costs about
            n / users of a full one. The metrics are then estimates over that sample (their
            standard error grows as 1 / sqrt(n)): training's validation (`train.valid_users`).
    """

    ks: tuple[int, ...] = (5, 10, 20)
    protocol: str = "full"
    n_negatives: int = 100
    batch_size: int = 1024
    mask_seen: bool = True
    seed: int = 0
    slices: bool = True
    auc: bool = True
    beyond: bool = True
    beyond_k: int = 10
    beyond_users: int = 50_000
    rerank: str = "none"
    rerank_weight: float = 0.5
    max_users: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"eval.ks must be positive cut-offs, got {self.ks}")
        protocol_label(self.protocol, self.n_negatives)  # raises on an unknown protocol
        if self.n_negatives < 1:
            raise ConfigError(f"eval.n_negatives must be >= 1, got {self.n_negatives}")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")
        if self.max_users < 0:
            raise ConfigError(f"eval.max_users must be >= 0 (0: every user), got {self.max_users}")
        if self.beyond_users < 0:
            raise ConfigError(f"eval.beyond_users must be >= 0 (0: every user), got {self.beyond_users}")
        if self.beyond_k < 1:
            raise ConfigError(f"eval.beyond_k must be >= 1, got {self.beyond_k}")
        if self.rerank not in ("none", "category_exposure"):
            raise ConfigError(f"eval.rerank must be none or category_exposure, got {self.rerank!r}")
        if not 0.0 <= self.rerank_weight <= 1.0:
            raise ConfigError(f"eval.rerank_weight must be in [0, 1], got {self.rerank_weight}")
