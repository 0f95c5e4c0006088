"""Text-kNN: the content baseline. A user's profile is the mean of the text vectors of their
training items (all categories); an item's score is the cosine between the profile and its text.

It needs no interaction with an item to score it, so it is the floor every text model has to clear
on cold items and zero-shot categories (the language model's vectors are the only signal here).

Reference: the classic content-based recommender (Lops, de Gemmis, Semeraro, "Content-based
Recommender Systems", Recommender Systems Handbook 2011), with sentence-encoder item vectors.

Example:
    >>> m = TextKNN(TextKNNConfig(), sizes); bundle.text_vectors = vecs; m.fit(bundle)  # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), 0).shape                       # [2, n_items(0)]   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.data.batch import Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


@dataclass(frozen=True)
class TextKNNConfig:
    """Text-kNN has no hyperparameters (the encoder is the `encoder:` section)."""


@register(
    "textknn", TextKNNConfig, paper="content-based baseline: mean-profile cosine over sentence-encoder item vectors"
)
class TextKNN(nn.Module):
    """Two towers: user = normalised mean of the history's text vectors, item = its text vector."""

    uses_text = True

    def __init__(self, config: TextKNNConfig, sizes: Sizes) -> None:
        super().__init__()
        self.config, self.sizes = config, sizes
        self.register_buffer("text_", torch.zeros(0, 0))
        self.register_buffer("profile_", torch.zeros(0, 0))
        self.index = CategoryIndex(sizes)

    def fit(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        if bundle.text_vectors is None:
            raise ConfigError(
                "textknn needs item text vectors: train through the pipeline (it encodes them "
                "with the `encoder:` section) or set bundle.text_vectors"
            )
        text = F.normalize(torch.from_numpy(np.asarray(bundle.text_vectors, dtype=np.float32)), dim=1)
        # The profile reads every category: that is how a user's other categories reach this one.
        if categories is None:
            m = bundle.csr("train")  # [n_users, n_items] 0/1
        else:  # a per-category model reads its own categories only
            rows = bundle.rows("train", categories)
            m = sp.csr_matrix(
                (np.ones(rows.height, dtype=np.float32), (rows["user"].to_numpy(), rows["item"].to_numpy())),
                shape=(self.sizes.n_users, self.sizes.n_items),
            )
        dense = torch.from_numpy(np.asarray(m @ text.numpy(), dtype=np.float32))  # sparse x dense, no per-row loop
        self.text_, self.profile_ = text, F.normalize(dense, dim=1)

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self.profile_[users]

    def item_vectors(self, category: int) -> Tensor:
        return self.text_[self.index[category]]

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.user_vectors(users, category) @ self.item_vectors(category).T

    def score_text_items(self, users: Tensor, category: int, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[B, n] scores of items known only by their text vectors [n, k] (added after training;
        text-kNN reads no image vectors)."""
        return self.user_vectors(users, category) @ F.normalize(text.float(), dim=1).T

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("text_", "profile_"):  # data-dependent shapes
            if prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
