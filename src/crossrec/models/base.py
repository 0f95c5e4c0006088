"""The Recommender contract, the training Batch, model sizes and the model registry.

Every model, neural or not, is a `torch.nn.Module` that scores whole categories for a batch of
users: `score(users, category) -> [len(users), n_items(category)]`, columns in the category's local
item order (`Bundle.item_index(category)`). Neural models also define `loss(batch)`; non-neural ones
define `fit(bundle)` instead and keep learned state in buffers so the same safetensors artifact
format holds them.

Example:
    >>> @register("mymodel", MyConfig)                    # doctest: +SKIP
    ... class MyModel(nn.Module): ...
    >>> model = build_model("mymodel", MyConfig(), sizes) # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.typed import ConfigError, from_dict


@dataclass(frozen=True)
class Sizes:
    """Data-derived sizes a model is built with (filled in once, where pieces are wired together).

    Args:
        n_users: number of users.
        n_items: number of items over all categories (global ids).
        item_category: [n_items] category index of each item.
        item_local: [n_items] position of each item within its category.
        categories: category names, in index order.
    """

    n_users: int
    n_items: int
    item_category: tuple[int, ...]
    item_local: tuple[int, ...]
    categories: tuple[str, ...]

    @classmethod
    def from_bundle(cls, bundle: Any) -> "Sizes":
        return cls(
            n_users=bundle.n_users,
            n_items=bundle.n_items,
            item_category=tuple(int(x) for x in bundle.item_category),
            item_local=tuple(int(x) for x in bundle.item_local),
            categories=tuple(bundle.categories),
        )

    @property
    def n_categories(self) -> int:
        return len(self.categories)

    @cached_property
    def _item_indexes(self) -> tuple[np.ndarray, ...]:
        # One pass over all items: order by (category, local position), then cut per category.
        cat = np.asarray(self.item_category, dtype=np.int64)
        order = np.lexsort((np.asarray(self.item_local, dtype=np.int64), cat))
        bounds = np.searchsorted(cat[order], np.arange(self.n_categories + 1))
        return tuple(order[bounds[c] : bounds[c + 1]] for c in range(self.n_categories))

    def item_index(self, category: int) -> np.ndarray:
        """Global ids of one category's items, in local order (computed once for all categories)."""
        return self._item_indexes[category]

    def to_json(self) -> dict[str, Any]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "item_category": list(self.item_category),
            "item_local": list(self.item_local),
            "categories": list(self.categories),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Sizes":
        return cls(
            n_users=int(d["n_users"]),
            n_items=int(d["n_items"]),
            item_category=tuple(int(x) for x in d["item_category"]),
            item_local=tuple(int(x) for x in d["item_local"]),
            categories=tuple(d["categories"]),
        )


@dataclass
class Batch:
    """One training batch; all ids are global.

    Args:
        users: [B] user ids.
        pos_items: [B] observed items.
        neg_items: [B, n_neg] sampled items from the same category as the positive.
        category: [B] category of each row.
        ratings: [B] explicit ratings, or None for implicit feedback.
    """

    users: Tensor
    pos_items: Tensor
    neg_items: Tensor
    category: Tensor
    ratings: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            users=self.users.to(device, non_blocking=True),
            pos_items=self.pos_items.to(device, non_blocking=True),
            neg_items=self.neg_items.to(device, non_blocking=True),
            category=self.category.to(device, non_blocking=True),
            ratings=None if self.ratings is None else self.ratings.to(device, non_blocking=True),
        )

    def pin_memory(self) -> "Batch":
        return Batch(
            users=self.users.pin_memory(),
            pos_items=self.pos_items.pin_memory(),
            neg_items=self.neg_items.pin_memory(),
            category=self.category.pin_memory(),
            ratings=None if self.ratings is None else self.ratings.pin_memory(),
        )

    def __len__(self) -> int:
        return int(self.users.shape[0])


def adopt_stored_shapes(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, names: tuple[str, ...]) -> None:
    """Before loading: resize buffers with data-dependent shapes (e.g. a graph's nnz) to the stored ones."""
    for name in names:
        key, buf = prefix + name, module._buffers[name]
        if key in state_dict and buf is not None and state_dict[key].shape != buf.shape:
            module._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)


def covered_training_rows(bundle: Any, covered: Tensor, categories: Any) -> tuple[np.ndarray, Any]:
    """For models whose `setup` accumulates categories over transfer stages: the covered mask
    [n_categories] with `categories` (None = all) added, and the training rows of every covered one."""
    mask = covered.detach().cpu().numpy().copy()
    if categories is None:
        mask[:] = True
    else:
        mask[[int(k) for k in categories]] = True
    rows = bundle.split("train")
    return mask, rows.filter(rows["category"].is_in(np.flatnonzero(mask).tolist()))


class BiasedDotProduct:
    """Mixin for models scoring `<user vector, item embedding> + item bias`.

    The host defines `_users(users, category) -> [B, d]`, `_index(category)`, `item_emb` and
    `item_bias` (a [n_items] parameter or None). The bias is folded into a constant extra dimension
    of the two-tower vectors, so `user_vectors @ item_vectors.T` equals `score` exactly.
    """

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        u = self._users(users, category)  # type: ignore[attr-defined]  # [B, d]
        if self.item_bias is not None:  # type: ignore[attr-defined]
            u = torch.cat([u, torch.ones_like(u[:, :1])], dim=1)  # [B, d + 1]
        return u

    def item_vectors(self, category: int) -> Tensor:
        idx = self._index(category)  # type: ignore[attr-defined]
        v = self.item_emb(idx)  # type: ignore[attr-defined]  # [n_items(c), d]
        if self.item_bias is not None:  # type: ignore[attr-defined]
            v = torch.cat([v, self.item_bias[idx].unsqueeze(1)], dim=1)  # type: ignore[attr-defined]
        return v

    def pair_scores(self, u: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scores of user vectors u [B, d] against the batch's positives [B] and negatives [B, n_neg],
        with the embeddings p [B, d] and n [B, n_neg, d] they used (for the L2 term)."""
        p = self.item_emb(batch.pos_items)  # type: ignore[attr-defined]
        n = self.item_emb(batch.neg_items)  # type: ignore[attr-defined]
        pos = (u * p).sum(-1)
        neg = (u.unsqueeze(1) * n).sum(-1)
        if self.item_bias is not None:  # type: ignore[attr-defined]
            pos = pos + self.item_bias[batch.pos_items]  # type: ignore[attr-defined]
            neg = neg + self.item_bias[batch.neg_items]  # type: ignore[attr-defined]
        return pos, neg, p, n

    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self._index(category)  # type: ignore[attr-defined]
        s = self._users(users, category) @ self.item_emb.weight[idx].T  # type: ignore[attr-defined]
        if self.item_bias is not None:  # type: ignore[attr-defined]
            s = s + self.item_bias[idx]  # type: ignore[attr-defined]
        return s


@runtime_checkable
class Recommender(Protocol):
    """What the evaluator and the service call."""

    def score(self, users: Tensor, category: int) -> Tensor:
        """[len(users), n_items(category)] scores, columns in the category's local order."""
        ...


@runtime_checkable
class RatingPredictor(Recommender, Protocol):
    """A model trained on explicit ratings; the evaluator reports RMSE/MAE for it."""

    predicts_ratings: bool

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings of aligned (user, global item id) pairs."""
        ...


@runtime_checkable
class Trainable(Recommender, Protocol):
    """A model the trainer's loop optimises."""

    def loss(self, batch: Batch) -> Tensor: ...


@runtime_checkable
class Fittable(Recommender, Protocol):
    """A non-neural model fitted in closed form / by counting (popularity, ItemKNN)."""

    def fit(self, bundle: Any) -> None: ...


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type
    paper: str


REGISTRY: dict[str, ModelEntry] = {}

M = TypeVar("M", bound=type[nn.Module])


def register(name: str, config_cls: type, paper: str = "") -> Callable[[M], M]:
    """Class decorator: register a model under a lowercase name with its config dataclass."""

    def deco(cls: M) -> M:
        if name in REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        REGISTRY[name] = ModelEntry(name, cls, config_cls, paper)
        return cls

    return deco


# Model options that must be at least 1 (sizes and counts); other integer options may be 0 (off).
POSITIVE_OPTIONS = frozenset({"dim", "k", "history_len", "n_heads", "max_len", "n_neg", "score_chunk"})


def config_from_dict(name: str, params: dict[str, Any]) -> Any:
    """Build a model's config dataclass from a plain dict.

    Unknown keys, wrong types and impossible values are `ConfigError`s: every number must be
    finite and >= 0, sizes and counts (`POSITIVE_OPTIONS`) >= 1, dropouts in [0, 1).
    """
    cfg = from_dict(get_entry(name).config_cls, params, prefix="model.")
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        key = f"model.{f.name}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value}; expected a finite number")
        if value < 0:
            raise ConfigError(f"{key}={value}; expected a value >= 0")
        if f.name in POSITIVE_OPTIONS and value < 1:
            raise ConfigError(f"{key}={value}; expected a value >= 1")
        if "dropout" in f.name and value >= 1:
            raise ConfigError(f"{key}={value}; expected a share in [0, 1)")
    return cfg


def get_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(REGISTRY)}") from None


def build_model(name: str, config: Any, sizes: Sizes) -> nn.Module:
    """Instantiate a registered model."""
    entry = get_entry(name)
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"model {name!r} expects {entry.config_cls.__name__}, got {type(config)}")
    return entry.cls(config, sizes)
