"""Warm start of the flagship's ID embeddings from a fitted iALS (`warm_start` section).

Before the first epoch, iALS (Hu, Koren & Volinsky, ICDM 2008; fitted by the PyPI `implicit` in
seconds) is fitted on the first stage's training rows, pooled over its categories, with `dim`
factors; its user factors become the shared user embeddings p_u and its item factors the item
tower's ID embeddings, times `scale`, and the history encoder's separate item table, times
`history`. Everything else (the category-specific user embeddings, the encoder's attention, the
neighbourhood weights, the text adapter) starts as before.

Why: the softmax objective then starts from the co-occurrence structure a closed-form solver
finds in seconds, and spends its epochs on what iALS cannot learn (the history encoder, the
neighbourhood weights, the category-specific parts). Measured on both shared datasets (seed 0,
validation and test NDCG@10, docs/DESIGN.md): better models in fewer epochs. The options' defaults
were picked on the validation splits of both shared datasets, one choice for both.

The fit reads only training rows (never validation or test) and runs once per model: a later
stage of a staged paradigm (source -> target) keeps what the earlier stage learnt, and a model
whose weights were loaded (`crossrec update` trains one further) is never warm-started.

Example:
    >>> warm_start(model, bundle, categories=None)   # the trainer's first setup calls it  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.crossrec.host import Flagship


def warm_start(model: Flagship, bundle: Bundle, categories: Sequence[int] | None = None) -> bool:
    """Overwrite `model`'s shared user embeddings and item ID embeddings with scaled iALS factors
    (`model.config.warm_start`); False (nothing changed) when it is off or the model lacks them."""
    from crossrec.models.ials import IALSConfig, fit_factors

    w = model.config.warm_start
    items = model.items
    if w.method == "none" or not items.use_id or model.user_emb is None:
        return False
    if bundle.rows("train", categories).height == 0:
        return False
    # the seed follows torch's generator (seeded by the run), drawn only when warm start is on
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    cfg = IALSConfig(
        factors=model.config.dim, regularization=w.regularization, alpha=w.alpha, iterations=w.iterations, seed=seed
    )
    users, item_f = fit_factors(bundle, model.sizes.n_users, model.sizes.n_items, cfg, categories)
    with torch.no_grad():
        emb = items.emb.weight
        emb[: model.sizes.n_items].copy_(torch.from_numpy(item_f).to(emb.device) * w.scale)
        model.user_emb.weight.copy_(torch.from_numpy(users).to(emb.device) * w.scale)
        hist = model.encoder.hist_emb if model.encoder is not None else None
        if w.history > 0 and hist is not None:
            hist.weight[: model.sizes.n_items].copy_(torch.from_numpy(item_f).to(emb.device) * w.history)
    return True
