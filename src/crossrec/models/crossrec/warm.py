"""Warm start of the flagship's ID embeddings from a fitted iALS (`warm_start` section).

Before the first epoch, iALS (Hu, Koren & Volinsky, ICDM 2008; fitted by the PyPI `implicit` in
seconds) is fitted on the first stage's training rows, pooled over its categories, with `dim`
factors; its user factors become the shared user embeddings p_u and its item factors the item
tower's ID embeddings, times `scale`. Everything else (the category-specific user embeddings, the
history encoder, the neighbourhood weights, the text adapter) starts as before.

Why: the softmax objective then starts from the co-occurrence structure a closed-form solver
finds in seconds, and spends its epochs on what iALS cannot learn (the history encoder, the
neighbourhood weights, the category-specific parts). Measured on both shared datasets (seed 0,
validation and test NDCG@10, docs/DESIGN.md): better models in fewer epochs. The options' defaults
were picked on the validation splits of both shared datasets, one choice for both.

The fit reads only training rows (never validation or test) and runs once per model: a later
stage of a staged paradigm (source -> target) keeps what the earlier stage learnt.

Example:
    >>> warm_start(model, bundle, categories=None)   # the trainer's first setup calls it  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


def warm_start(model: Any, bundle: Bundle, categories: Sequence[int] | None = None) -> bool:
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
    cfg = IALSConfig(factors=model.config.dim, regularization=w.regularization, alpha=w.alpha,
                     iterations=w.iterations, seed=seed)
    users, item_f = fit_factors(bundle, model.sizes.n_users, model.sizes.n_items, cfg, categories)
    with torch.no_grad():
        emb = items.emb.weight
        emb[: model.sizes.n_items].copy_(torch.from_numpy(item_f).to(emb.device) * w.scale)
        model.user_emb.weight.copy_(torch.from_numpy(users).to(emb.device) * w.scale)
        if w.text and items.adapter is not None and items.has_text:
            trained = torch.from_numpy(item_f).abs().sum(1).to(emb.device) > 0
            _map_text(items, emb[: model.sizes.n_items], trained)
        hist = getattr(model.encoder, "hist_emb", None)
        if w.history > 0 and hist is not None:
            hist.weight[: model.sizes.n_items].copy_(torch.from_numpy(item_f).to(emb.device) * w.history)
    return True


def _map_text(items: Any, ids: Tensor, trained: Tensor) -> None:
    """Start the text adapter as the ridge map from the items' text vectors to their warm ID
    embeddings `ids` [n_items, d] (fitted on the trained items), and the ID part of each trained
    item as what the map leaves over: a trained item's fused vector stays its iALS factors, and an
    item nobody trained on starts from its text's estimate of them (content -> CF, as in CB2CF)."""
    x, y = items.text_[trained], ids[trained]  # [n, k], [n, d]
    if len(x) == 0:
        return
    gram = x.T @ x
    ridge = gram.diagonal().mean().clamp_min(1e-6)  # the mean feature energy: scale-free
    w = torch.linalg.solve(gram + ridge * torch.eye(len(gram), device=gram.device), x.T @ y)  # [k, d]
    adapter = items.adapter
    adapter.center.zero_()
    # every expert is the map plus a tenth of its own random init (rescaled), so the experts differ
    noise = adapter.proj * (0.1 * w.std() / adapter.proj.std().clamp_min(1e-12))
    adapter.proj.copy_(w.unsqueeze(0) + noise)
    rows = torch.nonzero(trained).squeeze(1)
    ids.index_copy_(0, rows, y - adapter(x))
