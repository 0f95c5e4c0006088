"""The Recommender contract and the capabilities models declare (protocols), the building blocks
models share, and (re-exported from models/registry.py) the model registry.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Protocol,
    runtime_checkable,
)

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.models.category_index import CategoryIndex
from crossrec.models.registry import (  # noqa: F401  (re-exported: where models import them from)
    REGISTRY,
    ModelEntry,
    build_model,
    config_from_dict,
    get_entry,
    register,
)
from crossrec.models.scoring import dot_scores

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


def user_item_tables(n_user_rows: int, n_items: int, dim: int, init_std: float) -> tuple[nn.Embedding, nn.Embedding]:
    """Sparse user-row and item embedding tables, normal(0, init_std), users drawn first."""
    users, items = nn.Embedding(n_user_rows, dim, sparse=True), nn.Embedding(n_items, dim, sparse=True)
    nn.init.normal_(users.weight, std=init_std)
    nn.init.normal_(items.weight, std=init_std)
    return users, items


def covered_training_rows(bundle: Bundle, covered: Tensor, categories: Any) -> tuple[np.ndarray, Any]:
    """For models whose `setup` accumulates categories over transfer stages: the covered mask
    [n_categories] with `categories` (None = all) added, and the training rows of every covered one."""
    mask = covered.detach().cpu().numpy().copy()
    if categories is None:
        mask[:] = True
    else:
        mask[[int(k) for k in categories]] = True
    return mask, bundle.rows("train", np.flatnonzero(mask).tolist())


class BiasedItems(nn.Module):
    """The item side of a biased dot-product model: `score = <u, q_i> + b_i`.

    Owns the item table, the optional per-item bias and the category index; the host model supplies
    user vectors. The bias is folded into a constant extra dimension of the two-tower vectors, so
    `user_vectors(u) @ item_vectors(c).T` equals `score(u, c)` exactly.

    Args:
        emb: the [n_items, d] item table (built by the host, so its initial draw keeps its place).
        bias: whether to learn a per-item bias.
        sizes: the data sizes (for the category index).
    """

    def __init__(self, emb: nn.Embedding, bias: bool, sizes: Sizes) -> None:
        super().__init__()
        self.emb = emb
        self.bias = nn.Parameter(torch.zeros(sizes.n_items)) if bias else None
        self.index = CategoryIndex(sizes)

    def user_vectors(self, u: Tensor) -> Tensor:
        """[B, d] user vectors -> the two-tower form ([B, d + 1] with the bias)."""
        return u if self.bias is None else torch.cat([u, torch.ones_like(u[:, :1])], dim=1)

    def item_vectors(self, category: int) -> Tensor:
        idx = self.index[category]
        v = self.emb(idx)  # [n_items(c), d]
        return v if self.bias is None else torch.cat([v, self.bias[idx].unsqueeze(1)], dim=1)

    def pair_scores(self, u: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Scores of user vectors u [B, d] against the batch's positives [B] and negatives [B, n_neg],
        with the embeddings p [B, d] and n [B, n_neg, d] they used (for the L2 term)."""
        p, n = self.emb(batch.pos_items), self.emb(batch.neg_items)
        pos, neg = (u * p).sum(-1), (u.unsqueeze(1) * n).sum(-1)
        if self.bias is not None:
            pos, neg = pos + self.bias[batch.pos_items], neg + self.bias[batch.neg_items]
        return pos, neg, p, n

    def score(self, u: Tensor, category: int) -> Tensor:
        idx = self.index[category]
        s = dot_scores(u, self.emb.weight[idx])
        return s if self.bias is None else s.add_(self.bias[idx])


class BiasedDotModel(nn.Module):
    """Base of models that score `<user tower(u, c), q_i> + b_i`: the subclass defines the user
    tower `_users(users, category) -> [B, d]` and sets `self.items` (a `BiasedItems`); this gives
    `score` and the two-tower `user_vectors` / `item_vectors`."""

    items: BiasedItems

    def _users(self, users: Tensor, category: Tensor | int) -> Tensor:
        raise NotImplementedError

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        return self.items.user_vectors(self._users(users, category))

    def item_vectors(self, category: int) -> Tensor:
        return self.items.item_vectors(category)

    def score(self, users: Tensor, category: int) -> Tensor:
        return self.items.score(self._users(users, category), category)


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

    def fit(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None: ...


@runtime_checkable
class TwoTower(Recommender, Protocol):
    """A model whose score is a dot product of a user tower and an item tower (the service builds
    its nearest-neighbour index from these two methods alone).

    `score(users, c) == user_vectors(users, c) @ item_vectors(c).T`, plus `extra_scores(users, c)`
    where the model also is `Decomposed` (the contract suite checks both).
    """

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        """[B, d] user vectors for target category `category`."""
        ...

    def item_vectors(self, category: int) -> Tensor:
        """[n_items(category), d] item vectors, rows in the category's local order."""
        ...


@runtime_checkable
class Decomposed(TwoTower, Protocol):
    """A two-tower model whose score has terms beyond the dot product (biases, a neighbourhood
    term): `score = user_vectors @ item_vectors.T + extra_scores`."""

    def extra_scores(self, users: Tensor, category: int) -> Tensor:
        """[B, n_items(category)] what `score` adds to the two towers' dot product."""
        ...


@runtime_checkable
class HasSetup(Protocol):
    """A trainable model with structures derived from the training data (a graph, histories),
    built by the trainer before the loop."""

    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None: ...


@runtime_checkable
class ReadsText(Protocol):
    """A model that reads language-model vectors of the items' text: the pipeline encodes them
    (`encoder:` section) into `bundle.text_vectors` before `setup`."""

    uses_text: bool


@runtime_checkable
class Calibrates(Protocol):
    """A trainable model with post-hoc parameters set once training has ended and the best weights
    are restored (the flagship's borrowed ID parts; its text shrinkage and new-user prior, picked on
    validation; its cold offset, fitted on the validation split where there is one). Models sit
    below evaluation, so what the picks measure with comes in as `tools` (`PickTools`)."""

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None: ...


@runtime_checkable
class Staged(Protocol):
    """A trainable model whose fit runs in stages: when a stage's early stopping (or the epoch
    budget) ends it, the trainer restores that stage's best weights and, while `next_stage()`
    returns True, trains on with fresh early stopping (the residual text+id flagship's ID stage,
    then its text stage)."""

    def next_stage(self) -> bool: ...


@dataclass(frozen=True)
class PickTools:
    """What a post-training pick measures with, passed in by the trainer (training/picks.py
    `pick_tools()` builds it from crossrec.evaluation): models never import the evaluator.

    - `evaluator(bundle, k, split)`: an object whose `evaluate(model, categories)` gives the
      Evaluator's result (NDCG@k per category, no slices);
    - `pad_positives`, `rank_items_top`, `ndcg_at_k`: the Evaluator's ranking kernels, for a pick
      that scores once and ranks many variants (the new-user prior's grid).
    """

    evaluator: Callable[[Bundle, int, str], Any]
    pad_positives: Callable[..., Any]
    rank_items_top: Callable[..., Any]
    ndcg_at_k: Callable[..., Any]


@runtime_checkable
class TrainsEncoder(Protocol):
    """A model that trains a language model inside the loop (`encoder.finetune`): the trainer gives
    those weights their own learning rate, calls `epoch_end()` after every epoch (re-encode the
    catalogue before validation) and `fit_end()` after the best weights are restored (keep the
    vectors, drop the language model)."""

    def own_lr(self) -> list[tuple[list[nn.Parameter], float]]: ...

    def epoch_end(self) -> None: ...

    def fit_end(self) -> None: ...


def reads_text(model: nn.Module) -> bool:
    """True when `model` reads item text (a per-category wrapper: when any of its sub-models does;
    its `uses_text` says so)."""
    return isinstance(model, ReadsText) and bool(model.uses_text)


@runtime_checkable
class ReadsImages(Protocol):
    """A model whose item tower may read image vectors of the items: `uses_images` says whether it
    does (`item_tower` naming `image`), `image_dim` their width once attached (None: none)."""

    uses_images: bool
    image_dim: int | None


def reads_images(model: nn.Module) -> bool:
    """True for a model whose item tower reads image vectors (`item_tower` naming `image`)."""
    return isinstance(model, ReadsImages) and bool(model.uses_images)


@runtime_checkable
class HasParameterGroups(Protocol):
    """A model that names its parameter groups ("shared", "specific", "heads") for freezing."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]: ...


# ---------------------------------------------------------------------------- training steps
# (`ManualBackward`, the trainer's hand-written-gradient step, is below `Borrows`.)
@runtime_checkable
class FusedStep(Protocol):
    """A model whose whole training step can run as one compiled kernel (`train.fused`,
    training/fused.py): `fused_tables()` gives (user table, item table, reg), or None where the
    configuration has no fused step."""

    def fused_tables(self) -> tuple[Tensor, Tensor, float] | None: ...


# ---------------------------------------------------------------------------- serving
# What serving/service.py asks of a model beyond `score` (`TwoTower` for the index, `Decomposed`
# for a re-rank); each is checked with isinstance at the call site and per model in the contract suite.
@runtime_checkable
class ScoresCandidates(Protocol):
    """A model that scores a pool of candidate items exactly (the re-rank of index candidates)."""

    def score_items(self, users: Tensor, category: int, items: Tensor) -> Tensor:
        """[B, n] scores of each row's candidate items [B, n] (global ids of `category`)."""
        ...


@runtime_checkable
class IndexColumns(Protocol):
    """A model that folds user-independent terms of `score` into its index: extra item columns
    [n_items(c), e] and the user columns [B, e] they are dotted with."""

    def index_item_columns(self, category: int) -> Tensor: ...

    def index_user_columns(self, users: Tensor, category: int) -> Tensor: ...


@runtime_checkable
class SparseCandidates(Protocol):
    """A model whose index-free term is non-zero only on some items per user (the flagship's
    neighbourhood term): `sparse_candidates` gives them (global ids), or None without such a term."""

    def sparse_candidates(self, users: Tensor, category: int) -> Tensor | None: ...


@runtime_checkable
class ScoresText(Protocol):
    """A model that scores items known only by their text vectors (items added while serving)."""

    def score_text_items(self, users: Tensor, category: int, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[B, n] scores of items known by their text vectors [n, k] (and image vectors [n, k'])."""
        ...


@runtime_checkable
class EmbedsText(ScoresText, Protocol):
    """A text-scoring model with an item tower of its own for text: the vectors of items known by
    their text alone (without it the text vector itself is the item's vector, as in text-kNN)."""

    def text_item_vectors(self, text: Tensor, image: Tensor | None = None) -> Tensor:
        """[n, d] item vectors of items known by their text vectors [n, k]."""
        ...


@runtime_checkable
class ScoresHistory(Protocol):
    """A model that scores users known only by a history of item ids (users not in the training
    data); `history_` [n_users, L] is its stored histories (L: the length it reads)."""

    history_: Tensor

    def score_history(self, hist: Tensor, category: int) -> Tensor:
        """[B, n_items(category)] scores for histories [B, L] (pad = n_items)."""
        ...


@runtime_checkable
class Explains(Protocol):
    """A model that names each history item's own contribution to a score (explanations)."""

    def contributions(
        self, user: int, category: int, items: Tensor, center: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The user's history items [H] and each one's contribution [H, n] to each of `items` [n]."""
        ...


@runtime_checkable
class Borrows(Protocol):
    """A model whose untrained items may borrow ID parts from trained ones: `lenders(item)` names
    them with their weights (empty: nothing borrowed)."""

    def lenders(self, item: int) -> list[tuple[int, float]]: ...


@runtime_checkable
class PerturbedByAPR(Protocol):
    """A sub-module whose output APR perturbs besides every nn.Embedding's (training/adversarial.py):
    the flagship's fused text + ID item vectors declare `apr_point`."""

    apr_point: bool


@runtime_checkable
class ManualBackward(Protocol):
    """A model that writes its own gradients for a batch (BPR-MF): the trainer's `ManualStep` calls
    `manual_backward(batch)` instead of autograd; it returns the batch loss, or None for a batch it
    cannot take (that batch, and the rest of the epoch, go through autograd)."""

    def manual_backward(self, batch: Any) -> Any: ...
