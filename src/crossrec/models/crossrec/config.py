"""The flagship's options (flat, so presets and overrides read `--model.neighbours=0`).

Sections, as the modules that read them: item tower (`dim`, `init_std`, `content`), user tower
(`user_embedding`, `category_user`), history encoder (`history*`, `encoder`, `n_layers`,
`n_heads`, `dropout`, `category_dropout`), neighbourhood term (`neighbour*`), objective (`loss`,
`in_batch`, `mixed_negatives`, `full_softmax`, `category_weights`, `alpha`, `tau`, `adversarial`,
`reg`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossrec.typed import Checked


@dataclass(frozen=True)
class CrossRecConfig(Checked):
    dim: int = 64  # (int) embedding size of users, items and the encoder
    history_len: int = 25  # (int) most recent training items (all categories) the encoder reads
    history: Literal["all", "causal"] = "all"  # (str) training rows read: all = the user's most recent items but the target | causal = only items before the row
    encoder: Literal["attention", "transformer", "mean", "none"] = "attention"  # (str) attention | transformer | mean | none
    n_layers: int = 1  # (int) transformer blocks (encoder=transformer)
    n_heads: int = 2  # (int) transformer heads (encoder=transformer)
    dropout: float = 0.1  # (float) share of history items hidden per training row (and transformer dropout)
    user_embedding: bool = True  # (bool) shared user ID embedding p_u
    category_user: bool = True  # (bool) category-specific user embedding s_{u,c}
    loss: Literal["softmax", "bpr", "bce", "mse"] = "softmax"  # (str) in-category loss: softmax | bpr | bce | mse (explicit ratings)
    in_batch: bool = True  # (bool) softmax: the batch's other positives of the same category are negatives (logQ-corrected)
    mixed_negatives: bool = False  # (bool) softmax with in_batch: the sampled uniform negatives join them
    full_softmax: bool = False  # (bool) softmax over every item of the row's category (exact, no sampling; O(B x n_items(c)))
    category_weights: Literal["uniform", "inverse_frequency", "learned"] = "inverse_frequency"  # (str) w_c: uniform (every row) | inverse_frequency (every category) | learned
    alpha: float = 0.0  # (float) weight of L_transfer (contrastive alignment); 0 = off (measured: see docs/DESIGN.md)
    tau: float = 0.2  # (float) InfoNCE temperature of L_transfer
    adversarial: float = 0.0  # (float) weight of the gradient-reversal category classifier; 0 = off
    category_dropout: float = 0.3  # (float) P(hide a row's in-category history): trains serving new-to-category users
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std of the ID embeddings
    content: Literal["none", "image"] = "none"  # (str) none | image: item content vectors taken from the Bundle in setup
    history_items: Literal["separate", "shared"] = "separate"  # (str) separate: own embedding table for history items (FISM/SVD++) | shared: the item tower's
    history_init_std: float = 0.1  # (float) init std of the separate history item table
    neighbours: int = 50  # (int) top-k co-occurrence neighbours per item for the neighbourhood term (Koren 2008); 0 = off
    neighbour_shrink: float = 10.0  # (float) cosine shrinkage of the neighbourhood similarities (as ItemKNN)
    neighbour_leave_out: bool = True  # (bool) training rows score their own pair as held out (off: ablation only)
