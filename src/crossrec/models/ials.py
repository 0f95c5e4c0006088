"""iALS: implicit-feedback alternating least squares, fitted by
the PyPI `implicit` library and exposed under the model contract as a two-tower model.

Confidence `1 + alpha * x` on the binary user x item training matrix, L2 `regularization`,
`factors` dimensions, `iterations` sweeps (conjugate gradient). Rendle et al. ("Revisiting the
Performance of iALS on Item Recommendation Benchmarks", RecSys 2022) show that a tuned iALS is
level with most neural recommenders: give it a fair grid on validation before comparing (an
experiment entry's `grid:`; configs/experiments/*.yaml documents the one used).

Pooled, one model reads every category (the shared users carry signal across them); single mode
fits one per category.

Reference: Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets",
ICDM 2008; Rendle et al., RecSys 2022 (tuning).

Example:
    >>> m = IALS(IALSConfig(factors=64), sizes); m.fit(bundle)   # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), 0).shape                  # [2, n_items(0)]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.scoring import dot_scores

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class IALSConfig:
    factors: int = 64  # (int) latent dimensions
    regularization: float = 0.01  # (float) L2 weight of the factors
    alpha: float = 1.0  # (float) confidence of an observed interaction: 1 + alpha
    iterations: int = 15  # (int) ALS sweeps
    seed: int = 0  # (int) seed of the factors' initialisation


@register("ials", IALSConfig, paper="Hu, Koren & Volinsky, ICDM 2008; Rendle et al., RecSys 2022 (via PyPI implicit)")
class IALS(nn.Module):
    """User and item factors from `implicit`'s CPU ALS; score = <user, item>."""

    def __init__(self, config: IALSConfig, sizes: Sizes) -> None:
        super().__init__()
        self.config, self.sizes = config, sizes
        self.register_buffer("user_factors_", torch.zeros(sizes.n_users, config.factors))
        self.register_buffer("item_factors_", torch.zeros(sizes.n_items, config.factors))
        self.index = CategoryIndex(sizes)

    def fit(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        c = self.config
        users, items = fit_factors(bundle, self.sizes.n_users, self.sizes.n_items, c, categories)
        self.user_factors_, self.item_factors_ = torch.from_numpy(users), torch.from_numpy(items)

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self.user_factors_[users]

    def item_vectors(self, category: int) -> Tensor:
        return self.item_factors_[self.index[category]]

    def score(self, users: Tensor, category: int) -> Tensor:
        return dot_scores(self.user_vectors(users, category), self.item_vectors(category))


def fit_factors(
    bundle: Bundle, n_users: int, n_items: int, c: IALSConfig, categories: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """iALS user [n_users, factors] and item [n_items, factors] factors (float32) of the binary
    user x item matrix of the training rows in `categories` (None: all), fitted by `implicit`."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as e:  # pragma: no cover - a pinned dependency
        raise ImportError("iALS needs the PyPI package `implicit` (pip install implicit==0.7.3)") from e
    from threadpoolctl import threadpool_limits

    rows = bundle.rows("train", categories)
    users, items = rows["user"].to_numpy().astype(np.int64), rows["item"].to_numpy().astype(np.int64)
    m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS pool on top oversubscribes
        model = AlternatingLeastSquares(
            factors=c.factors,
            regularization=c.regularization,
            alpha=c.alpha,
            iterations=c.iterations,
            random_state=c.seed,
            num_threads=torch.get_num_threads(),
        )
        model.fit(m, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )
