"""How to evaluate, as a plain dataclass (no torch import): `EvalConfig`.

Example:
    >>> EvalConfig(ks=(10, 20), protocol="sampled", n_negatives=100)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    ks: tuple[int, ...] = (5, 10, 20)
    protocol: str = "full"
    n_negatives: int = 100
    batch_size: int = 1024
    mask_seen: bool = True
    seed: int = 0
    slices: bool = True
    auc: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"eval.ks must be positive cut-offs, got {self.ks}")
        protocol_label(self.protocol, self.n_negatives)  # raises on an unknown protocol
        if self.n_negatives < 1:
            raise ValueError(f"eval.n_negatives must be >= 1, got {self.n_negatives}")
        if self.batch_size < 1:
            raise ValueError(f"eval.batch_size must be >= 1, got {self.batch_size}")
