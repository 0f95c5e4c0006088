"""The flagship's options, in sections read by the modules of the same name.

Top level: the embedding size and init, the in-category loss and L2, which user-tower parts
exist, and what the item tower reads (`item_tower`; `text`: its text adapter). `history`: the history encoder (`HistoryEncoder`) and how training rows read a history.
`neighbourhood`: the co-occurrence term (`NeighbourhoodTerm`). `warm_start`: where the ID
embeddings start (warm.py). `objective`: negatives, category
weights and the transfer / adversarial terms. In YAML a section is a mapping
(`history: {encoder: mean}`); on the command line a dotted key (`--model.neighbourhood.k=0`).

Options that were flat before sections existed (`neighbours`, `history_len`, `encoder`, ...) are
refused with the key they moved to (`MOVED`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from crossrec.typed import Checked, ConfigError, Positive, Share, Size


@dataclass(frozen=True)
class HistoryConfig(Checked):
    section: ClassVar[str] = "model.history"
    length: Size = 25  # (int) most recent training items (all categories) the encoder reads
    rows: Literal["all", "causal"] = (
        "all"  # (str) a training row reads: all = the user's most recent items but the target | causal = only items before the row
    )
    encoder: Literal["attention", "transformer", "mean", "none"] = (
        "attention"  # (str) attention | transformer | mean | none
    )
    n_layers: int = 1  # (int) transformer blocks (encoder=transformer)
    n_heads: Size = 2  # (int) transformer heads (encoder=transformer)
    dropout: Share = 0.1  # (float) share of history items hidden per training row (and transformer dropout)
    category_dropout: Share = 0.3  # (float) P(hide a row's in-category history): trains serving new-to-category users
    items: Literal["separate", "shared"] = (
        "separate"  # (str) separate: own embedding table for history items (FISM/SVD++) | shared: the item tower's
    )
    init_std: float = 0.1  # (float) init std of the separate history item table


@dataclass(frozen=True)
class NeighbourhoodConfig(Checked):
    section: ClassVar[str] = "model.neighbourhood"
    k: int = 50  # (int) top-k co-occurrence neighbours per item (Koren 2008); 0 = the term is off
    shrink: float = 10.0  # (float) cosine shrinkage of the similarities (as ItemKNN)
    leave_out: bool = True  # (bool) training rows score their own pair as held out (off: ablation only)


@dataclass(frozen=True)
class ObjectiveConfig(Checked):
    section: ClassVar[str] = "model.objective"
    in_batch: bool = (
        True  # (bool) softmax: the batch's other positives of the same category are negatives (logQ-corrected)
    )
    mixed_negatives: bool = False  # (bool) softmax with in_batch: the sampled uniform negatives join them
    full_softmax: bool = (
        False  # (bool) softmax over every item of the row's category (exact, no sampling; O(B x n_items(c)))
    )
    category_weights: Literal["uniform", "inverse_frequency", "learned"] = (
        "inverse_frequency"  # (str) w_c: uniform (every row) | inverse_frequency (every category) | learned
    )
    alpha: float = 0.0  # (float) weight of L_transfer (contrastive alignment); 0 = off (measured: see docs/DESIGN.md)
    tau: Positive = 0.2  # (float) InfoNCE temperature of L_transfer
    adversarial: float = 0.0  # (float) weight of the gradient-reversal category classifier; 0 = off


@dataclass(frozen=True)
class TextTowerConfig(Checked):
    section: ClassVar[str] = "model.text"
    experts: Size = 4  # (int) parametric-whitening experts of the text adapter (UniSRec uses 8)
    id_dropout: Share = 0.0  # (float) share of training item occurrences whose ID part (embedding, bias, neighbourhood score) is hidden: teaches scoring from text alone (DropoutNet). Off by default since cold items borrow their text neighbours' ID parts (`borrow`); the pick's evidence: docs/DESIGN.md, models
    text_dropout: Share = 0.25  # (float) text+id: share of training item occurrences whose text part is hidden, so the ID part must score alone and the text part adds to it; picked on validation (benchmarks/results/text_dropout_grid.md)
    calibrate_cold: bool = True  # (bool) text+id: after training, fit per category the offset added to items scored from text alone (no training interactions) on the validation split's positives on such items (models/crossrec/calibration.py); no-op when validation has none
    borrow: int = 20  # (int) text+id: after training, an item without training interactions takes the ID parts (embedding, bias, neighbourhood term) of its `borrow` nearest trained items by text cosine (models/crossrec/borrow.py); 0 = off
    borrow_temperature: Positive = 0.05  # (float) softmax temperature of the lenders' weights over their text cosines
    shrink: bool = True  # (bool) text+id: after training, shrink each trained item's ID embedding and bias toward its `borrow` nearest same-category trained items' by text, as (n e + kappa ebar) / (n + kappa) with n its training interactions, kappa picked per category on validation NDCG@10 (models/crossrec/shrink.py)
    trust: bool = True  # (bool) text+id: after training, weight each trained item's text part (vector and text bias) by kappa / (kappa + n) at scoring time, n its training interactions, kappa picked per category on validation NDCG@10 from 0 (ID part alone) to infinity (as trained); items without interactions keep their full text (models/crossrec/trust.py)
    residual: bool = False  # (bool) text+id: train in two stages: the ID part exactly as the ID flagship (its own loss and early stopping; the history encoder reads no text), then the text part (adapter, fusion gate, text bias) with everything else held; text trust then picks per category, on validation over the whole ranking, kappa 0 (the ID flagship, untrained items too) or infinity (the text stage's model) (models/crossrec/towers.py)
    content_term: bool = False  # (bool) the content term: the history's text vectors vote for a candidate by cosine (learned weights per category pair); helps cold items, costs warm accuracy

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0.0 <= self.id_dropout <= 1.0 and 0.0 <= self.text_dropout < 1.0):
            raise ConfigError(
                f"{self.section}: expected id_dropout in [0, 1] and text_dropout in [0, 1); "
                f"got id_dropout={self.id_dropout}, text_dropout={self.text_dropout}"
            )


@dataclass(frozen=True)
class WarmStartConfig(Checked):
    section: ClassVar[str] = "model.warm_start"
    method: Literal["ials", "none"] = (
        "ials"  # (str) ials: the shared user and item ID embeddings start from iALS factors fitted on the training rows (models/crossrec/warm.py) | none: random normal (init_std)
    )
    scale: float = 0.3  # (float) multiplier of the iALS factors
    regularization: float = 0.1  # (float) iALS L2 weight
    alpha: float = 10.0  # (float) iALS confidence of an observed interaction: 1 + alpha
    iterations: int = 15  # (int) iALS sweeps
    history: float = 1.0  # (float) > 0: the history encoder's separate item table starts from the iALS item factors times this; 0 = random normal (history.init_std)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (
            self.scale > 0
            and self.alpha >= 0
            and self.regularization >= 0
            and self.history >= 0
            and self.iterations >= 1
        ):
            raise ConfigError(
                f"{self.section}: expected scale > 0, alpha, regularization and history >= 0, iterations >= 1; "
                f"got scale={self.scale}, alpha={self.alpha}, regularization={self.regularization}, "
                f"history={self.history}, iterations={self.iterations}"
            )


@dataclass(frozen=True)
class CrossRecConfig(Checked):
    dim: Size = 64  # (int) embedding size of users, items and the encoder
    init_std: float = 0.01  # (float) normal init std of the ID embeddings
    loss: Literal["softmax", "bpr", "bce", "mse"] = (
        "softmax"  # (str) in-category loss: softmax | bpr | bce | mse (explicit ratings)
    )
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    user_embedding: bool = True  # (bool) shared user ID embedding p_u
    category_user: bool = True  # (bool) category-specific user embedding s_{u,c}
    new_user_prior: bool = True  # (bool) users new to a category: a learned per-category weight on the items' log training count (models/crossrec/prior.py; trained on the rows category dropout hides)
    prior_fit: bool = True  # (bool) after training, pick that weight again per category on the validation NDCG@10 of the users new to it (prepare.cold_user_valid_fraction; models/crossrec/prior.py); no-op without them
    item_tower: Literal["id", "id+image", "text", "text+id", "text+id+image"] = (
        "id"  # (str) what an item vector is made of: id | id+image | text (inductive) | text+id | text+id+image
    )
    history: HistoryConfig = field(default_factory=HistoryConfig)  # (section) the history encoder
    neighbourhood: NeighbourhoodConfig = field(default_factory=NeighbourhoodConfig)  # (section) the neighbourhood term
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # (section) negatives, weights, transfer terms
    text: TextTowerConfig = field(default_factory=TextTowerConfig)  # (section) the text adapter (item_tower with text)
    warm_start: WarmStartConfig = field(
        default_factory=WarmStartConfig
    )  # (section) initialisation of the ID embeddings

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text.residual and self.item_tower != "text+id":
            raise ConfigError(
                f"model.text.residual=true needs item_tower text+id (here {self.item_tower!r}): it trains "
                "an ID part and a text part apart"
            )

    @classmethod
    def migrate_check(cls, data: dict[str, Any]) -> None:
        """Refuse options written flat before sections existed, naming where each moved."""
        moved = [k for k in data if k in MOVED and not (k == "history" and isinstance(data[k], dict))]
        if moved:
            hints = ", ".join(f"model.{k} -> model.{MOVED[k]}" for k in moved)
            raise ConfigError(f"the crossrec option(s) {['model.' + k for k in moved]} moved into sections: {hints}")


# Flat option (before sections) -> its dotted key now.
MOVED: dict[str, str] = {
    "history_len": "history.length",
    "history": "history.rows",
    "encoder": "history.encoder",
    "n_layers": "history.n_layers",
    "n_heads": "history.n_heads",
    "dropout": "history.dropout",
    "category_dropout": "history.category_dropout",
    "history_items": "history.items",
    "history_init_std": "history.init_std",
    "neighbours": "neighbourhood.k",
    "neighbour_shrink": "neighbourhood.shrink",
    "neighbour_leave_out": "neighbourhood.leave_out",
    "in_batch": "objective.in_batch",
    "mixed_negatives": "objective.mixed_negatives",
    "full_softmax": "objective.full_softmax",
    "category_weights": "objective.category_weights",
    "alpha": "objective.alpha",
    "tau": "objective.tau",
    "adversarial": "objective.adversarial",
    "content": "item_tower (content=image is item_tower=id+image)",
}
