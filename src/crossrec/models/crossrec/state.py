"""The flagship's data-derived buffers: registered in one fixed order (the order artifacts store
them), and the defaults an artifact written before a buffer existed loads with."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from crossrec.data.batch import Sizes
from crossrec.models.crossrec.pairs import migrate


def register_state(model: nn.Module, sizes: Sizes, history_length: int) -> None:
    """Register the buffers `setup` fills and the parts read (their meaning beside each name)."""
    n_cat, pad = sizes.n_categories, sizes.n_items
    model.register_buffer("history_", torch.full((sizes.n_users, history_length), pad, dtype=torch.int64))
    # history='causal': every training sequence, flat (training-only state, rebuilt by setup, not saved)
    for name in ("seq_items_", "seq_starts_", "seq_keys_", "seq_positions_"):
        model.register_buffer(name, torch.zeros(0, dtype=torch.int64), persistent=False)
    cat_items = torch.bincount(torch.tensor(list(sizes.item_category)), minlength=n_cat).clamp_min(1).float()
    for name, value in (
        ("log_count_", torch.zeros(sizes.n_items)),  # logQ correction: log training count of each item (+1)
        ("log_cat_rows_", torch.zeros(n_cat)),
        ("log_cat_items_", torch.log(cat_items)),  # rows, items per category
        ("bias_ready_", torch.zeros((), dtype=torch.bool)),
        ("pair_keys_", torch.zeros(0, dtype=torch.int64)),  # (user, category) pairs trained (pairs.py)
        ("cold_offset_", torch.zeros(n_cat)),  # text+id: what untrained items get added (calibration.py)
        ("shrink_kappa_", torch.zeros(n_cat)),  # text shrinkage picked per category (shrink.py)
        ("text_kappa_", torch.full((n_cat,), float("inf"))),  # text trust picked per category (trust.py)
        ("borrow_row_", torch.full((sizes.n_items,), -1, dtype=torch.int64)),  # ID parts lent (borrow.py)
        ("borrow_nbr_", torch.zeros(0, 0, dtype=torch.int64)),
        ("borrow_w_", torch.zeros(0, 0)),
    ):
        model.register_buffer(name, value)
    item_cat = torch.tensor(list(sizes.item_category) + [n_cat], dtype=torch.int64)
    model.register_buffer("item_category_", item_cat, persistent=False)  # [n_items + 1], pad -> n_cat


def stored_defaults(model: nn.Module, table: nn.Embedding | None, state_dict: dict[str, Any], prefix: str) -> None:
    """Fill `state_dict` with what artifacts written before a buffer existed load with; the
    tensors of data-dependent shape (the pair index and its table `table`, the borrowed rows)
    adopt the stored shapes."""
    buffers: dict[str, Any] = dict(model.named_buffers(recurse=False))
    state_dict.setdefault(prefix + "cold_offset_", torch.zeros_like(buffers["cold_offset_"]))
    state_dict.setdefault(prefix + "shrink_kappa_", torch.zeros_like(buffers["shrink_kappa_"]))
    state_dict.setdefault(prefix + "text_kappa_", torch.full_like(buffers["text_kappa_"], float("inf")))
    n_users, n_cat = len(buffers["history_"]), len(buffers["cold_offset_"])
    migrate(state_dict, prefix, n_users, n_cat)  # an artifact written before the pair index (pairs.py)
    keys, device = state_dict[prefix + "pair_keys_"], buffers["pair_keys_"].device
    if keys.shape != buffers["pair_keys_"].shape:
        model._buffers["pair_keys_"] = torch.empty_like(keys, device=device)
    stored = state_dict.get(prefix + "user_cat_emb.weight")
    if table is not None and stored is not None and stored.shape != table.weight.shape:
        table.weight.data = torch.empty_like(stored, device=device)
        table.num_embeddings = len(stored)
    prior = dict(model.named_parameters(recurse=False)).get("new_prior")
    if prior is not None:
        state_dict.setdefault(prefix + "new_prior", torch.zeros_like(prior))
    state_dict.setdefault(prefix + "borrow_row_", torch.full_like(buffers["borrow_row_"], -1))
    for name in ("borrow_nbr_", "borrow_w_"):
        stored = state_dict.setdefault(prefix + name, buffers[name][:0])
        model._buffers[name] = torch.empty_like(stored, device=buffers["borrow_row_"].device)
