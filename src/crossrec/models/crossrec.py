"""The flagship cross-category model: one user tower that reads a user's history in every category.

User tower, for user u and target category c:

    u_c = g_c * ( p_u                      shared user embedding (all categories train it)
                + s_{u,c}                  category-specific user embedding
                + Enc(history_u, c) )      encoder over u's most recent items in *all* categories

`Enc` pools the embeddings of the user's recent items with attention whose query is the target
category; a learned (target category x history category) affinity lets each category decide how much
every other category tells it, and a per-category recency bias how much recent items count.
`encoder=transformer` first runs self-attention blocks over item + category + position embeddings.
A user with no history in c is served from the other categories (the attention simply finds no
in-category items), and training *teaches* that case: with probability `category_dropout` a row's
in-category history and its category-specific embedding are hidden, so the model learns to predict
category c from the rest of the user's life.

Item tower: ID embedding, plus a projected content vector where one is set (`set_content`, e.g.
image vectors from the Bundle with `content=image`; text vectors come from the encoder module),
plus a per-item bias. score(u, i) = <u_c, v_i> + b_i + N_c(u, i).

N_c(u, i) (`neighbours` > 0) is the neighbourhood term of Koren's integrated model (KDD 2008):
sum over the user's history items h (all categories) of w[c, cat(h)] * exp(r[c, slot(h)]) *
cos(h, i), with cos the shrunk cosine of training co-occurrence, kept for each item's top-k
neighbours (pooled, so an Arts item can vouch for an Office item). The weights are learned per
(target, history) category pair and recency slot. The latent part needs several interactions per
item before its vectors mean much; the neighbourhood term works from the first co-occurrence, which
is what long-tail catalogues (most items seen a handful of times) have. In training a row's own pair
is left out of the similarity (the target scored as if it were held out), so the model does not
learn to trust a co-occurrence that the row itself created.

Objective (per batch): sum_c w_c L_c + alpha * L_transfer + beta * L_adv + lambda * L2 where
- L_c is the in-category loss of the rows of category c: sampled softmax, BPR, BCE over
  in-category negatives, or MSE on explicit ratings;
- w_c is uniform (every interaction counts the same), inverse_frequency (every category counts the
  same) or learned (homoscedastic uncertainty weighting: exp(-s_c) L_c + s_c, Kendall et al. 2018);
- L_transfer aligns a user's per-category views: the encoding of the user's history *inside* c and
  the encoding of their history *outside* c (same query c) are pulled together with an InfoNCE loss
  over the batch's users (others are negatives), so the other categories predict what c's own
  history would say;
- L_adv (optional, `adversarial > 0`) is a category classifier behind a gradient-reversal layer on
  the user's per-category mean item embedding, which pushes the categories' item spaces to overlap
  (domain-adversarial training, Ganin & Lempitsky, ICML 2015).

Parameter groups (for the transfer paradigms' freezing policies): "shared" (user and item
embeddings, encoder, category embeddings, content projection, alignment/adversarial heads),
"specific" (category-specific user embeddings), "heads" (item biases, per-category gates, learned
loss weights).

Reference: the design in docs/DESIGN.md ("The flagship model"); attention over a user's history as
in DIN (Zhou et al., KDD 2018) and SASRec (Kang & McAuley, ICDM 2018); shared + domain-specific
user parts as in DTCDR (Zhu et al., CIKM 2019) and CDRIB/DisenCDR-style contrastive alignment
(Cao et al., SIGIR 2022); uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018); the
neighbourhood term after Koren, "Factorization meets the neighborhood", KDD 2008.

Example:
    >>> m = CrossRec(CrossRecConfig(dim=64), sizes); m.setup(bundle)   # doctest: +SKIP
    >>> m.score(torch.tensor([0, 1]), category=2).shape                 # [2, n_items(2)]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.models.base import Batch, Sizes, register
from crossrec.models.history import causal_history, history_index, history_matrix
from crossrec.models.itemknn import binary_matrix, cosine_top_k
from crossrec.models.losses import l2_penalty, mse_loss


@dataclass(frozen=True)
class CrossRecConfig:
    dim: int = 64  # (int) embedding size of users, items and the encoder
    history_len: int = 25  # (int) most recent training items (all categories) the encoder reads
    history: str = "all"  # (str) training rows read: all = the user's most recent items but the target | causal = only items before the row
    encoder: str = "attention"  # (str) attention | transformer | mean | none
    n_layers: int = 1  # (int) transformer blocks (encoder=transformer)
    n_heads: int = 2  # (int) transformer heads (encoder=transformer)
    dropout: float = 0.1  # (float) share of history items hidden per training row (and transformer dropout)
    user_embedding: bool = True  # (bool) shared user ID embedding p_u
    category_user: bool = True  # (bool) category-specific user embedding s_{u,c}
    loss: str = "softmax"  # (str) in-category loss: softmax | bpr | bce | mse (explicit ratings)
    in_batch: bool = True  # (bool) softmax: the batch's other positives of the same category are negatives (logQ-corrected)
    mixed_negatives: bool = False  # (bool) softmax with in_batch: the sampled uniform negatives join them
    full_softmax: bool = False  # (bool) softmax over every item of the row's category (exact, no sampling; O(B x n_items(c)))
    category_weights: str = "inverse_frequency"  # (str) w_c: uniform (every row) | inverse_frequency (every category) | learned
    alpha: float = 0.0  # (float) weight of L_transfer (contrastive alignment); 0 = off (measured: see docs/DESIGN.md)
    tau: float = 0.2  # (float) InfoNCE temperature of L_transfer
    adversarial: float = 0.0  # (float) weight of the gradient-reversal category classifier; 0 = off
    category_dropout: float = 0.3  # (float) P(hide a row's in-category history): trains serving new-to-category users
    reg: float = 1e-4  # (float) L2 on the batch's embeddings (lambda)
    init_std: float = 0.01  # (float) normal init std of the ID embeddings
    content: str = "none"  # (str) none | image: item content vectors taken from the Bundle in setup
    history_items: str = "separate"  # (str) separate: own embedding table for history items (FISM/SVD++) | shared: the item tower's
    history_init_std: float = 0.1  # (float) init std of the separate history item table
    neighbours: int = 50  # (int) top-k co-occurrence neighbours per item for the neighbourhood term (Koren 2008); 0 = off
    neighbour_shrink: float = 10.0  # (float) cosine shrinkage of the neighbourhood similarities (as ItemKNN)
    neighbour_leave_out: bool = True  # (bool) training rows score their own pair as held out (off: ablation only)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return -ctx.scale * grad, None


@register("crossrec", CrossRecConfig, paper="crossrec flagship (docs/DESIGN.md); DIN/SASRec history attention, DTCDR shared+specific users")
class CrossRec(nn.Module):
    """Shared + category-specific + cross-category-history user tower; ID (+ content) item tower.

    Call `setup(bundle, categories)` before `loss`/`score` (the trainer does): it stores every
    user's recent training history (all categories) and the category sizes as buffers.
    """

    def __init__(self, config: CrossRecConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if c.loss not in ("softmax", "bpr", "bce", "mse"):
            raise ValueError(f"crossrec.loss={c.loss!r}; expected softmax, bpr, bce or mse")
        if c.encoder not in ("attention", "transformer", "mean", "none"):
            raise ValueError(f"crossrec.encoder={c.encoder!r}; expected attention, transformer, mean or none")
        if c.category_weights not in ("uniform", "inverse_frequency", "learned"):
            raise ValueError(
                f"crossrec.category_weights={c.category_weights!r}; expected uniform, inverse_frequency or learned"
            )
        if c.history not in ("all", "causal"):
            raise ValueError(f"crossrec.history={c.history!r}; expected all or causal")
        if c.history_items not in ("separate", "shared"):
            raise ValueError(f"crossrec.history_items={c.history_items!r}; expected separate or shared")
        if c.content not in ("none", "image"):
            raise ValueError(f"crossrec.content={c.content!r}; expected none or image")
        if c.encoder == "transformer" and c.dim % c.n_heads:
            raise ValueError(f"crossrec.dim={c.dim} must be divisible by n_heads={c.n_heads}")
        if not 0.0 <= c.category_dropout < 1.0:
            raise ValueError("crossrec.category_dropout must be in [0, 1)")
        if c.neighbours < 0:
            raise ValueError("crossrec.neighbours must be >= 0")
        if c.history_len < 1:
            raise ValueError("crossrec.history_len must be >= 1")
        self.config = c
        self.sizes = sizes
        n_cat, d, pad = sizes.n_categories, c.dim, sizes.n_items
        self.pad = pad
        # ---- shared
        self.item_emb = nn.Embedding(sizes.n_items + 1, d, padding_idx=pad, sparse=True)
        nn.init.normal_(self.item_emb.weight, std=c.init_std)
        with torch.no_grad():
            self.item_emb.weight[pad].zero_()
        self.user_emb = nn.Embedding(sizes.n_users, d, sparse=True) if c.user_embedding else None
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=c.init_std)
        self.use_history = c.encoder != "none"
        self.hist_emb: nn.Embedding | None = None
        if self.use_history and c.history_items == "separate":
            self.hist_emb = nn.Embedding(sizes.n_items + 1, d, padding_idx=pad, sparse=True)
            nn.init.normal_(self.hist_emb.weight, std=c.history_init_std)
            with torch.no_grad():
                self.hist_emb.weight[pad].zero_()
        if self.use_history:
            self.query = nn.Parameter(torch.randn(n_cat, d) * 0.1)  # attention query per target category
            self.cat_affinity = nn.Parameter(torch.zeros(n_cat, n_cat + 1))  # [target c, history category]
            self.recency = nn.Parameter(torch.zeros(n_cat, c.history_len))  # [target c, slot]; last = most recent
            self.key = nn.Linear(d, d, bias=False)
            self.value = nn.Linear(d, d, bias=False)
            nn.init.eye_(self.value.weight)
            self.blocks = None
            if c.encoder == "transformer":
                self.cat_emb = nn.Embedding(n_cat + 1, d, padding_idx=n_cat)  # history items' category
                self.pos_emb = nn.Embedding(c.history_len, d)  # slot history_len-1 = most recent
                nn.init.normal_(self.cat_emb.weight, std=0.01)
                nn.init.normal_(self.pos_emb.weight, std=0.01)
                layer = nn.TransformerEncoderLayer(
                    d, c.n_heads, dim_feedforward=2 * d, dropout=c.dropout, batch_first=True, norm_first=True
                )
                self.blocks = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
            self.align = nn.Linear(d, d)  # projection head of L_transfer
        self.classifier = nn.Linear(d, n_cat) if c.adversarial > 0 else None
        # Content slot: [n_items, k] vectors + presence, projected into the item space (set in setup).
        self.register_buffer("content_", torch.zeros(0, 0))
        self.register_buffer("content_present_", torch.zeros(0, dtype=torch.bool))
        self.content_proj: nn.Linear | None = None
        # ---- category-specific
        self.user_cat_emb = nn.Embedding(sizes.n_users * n_cat, d, sparse=True) if c.category_user else None
        if self.user_cat_emb is not None:
            nn.init.normal_(self.user_cat_emb.weight, std=c.init_std)
        # ---- heads
        self.item_bias = nn.Parameter(torch.zeros(sizes.n_items))
        self.cat_gate = nn.Parameter(torch.ones(n_cat, d))
        self.log_var = nn.Parameter(torch.zeros(n_cat)) if c.category_weights == "learned" else None
        self.global_bias = nn.Parameter(torch.zeros(()))  # mse: the mean rating
        # ---- neighbourhood term: top-k co-occurrence neighbours of every item (setup), and learned
        # weights per (target category, history item's category) and per (target category, recency slot)
        k = c.neighbours
        self.register_buffer("nbr_", torch.full((sizes.n_items + 1, k), pad, dtype=torch.int64))  # pad row/entries
        self.register_buffer("nbr_co_", torch.zeros(sizes.n_items + 1, k))  # co-occurrence counts
        self.register_buffer("item_users_", torch.zeros(sizes.n_items + 1))  # training users per item
        self.register_buffer("train_keys_", torch.zeros(0, dtype=torch.int64), persistent=False)  # sorted u*n_items+i
        if k:
            self.nbr_weight = nn.Parameter(torch.ones(n_cat, n_cat + 1))
            self.nbr_recency = nn.Parameter(torch.zeros(n_cat, c.history_len))
        # ---- data-derived buffers (setup)
        self.register_buffer("history_", torch.full((sizes.n_users, c.history_len), pad, dtype=torch.int64))
        self.register_buffer("cat_weight_", torch.ones(n_cat))
        # history='causal': every training sequence, flat (training-only state, rebuilt by setup, not saved)
        for name in ("seq_items_", "seq_starts_", "seq_keys_", "seq_positions_"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64), persistent=False)
        # logQ correction of the softmax: log training count of each item (+1), log rows and items per category
        self.register_buffer("log_count_", torch.zeros(sizes.n_items))
        self.register_buffer("log_cat_rows_", torch.zeros(n_cat))
        self.register_buffer("log_cat_items_", torch.log(torch.bincount(torch.tensor(list(sizes.item_category)), minlength=n_cat).clamp_min(1).float()))
        self.register_buffer("bias_ready_", torch.zeros((), dtype=torch.bool))
        item_cat = torch.tensor(list(sizes.item_category) + [n_cat], dtype=torch.int64)
        self.register_buffer("item_category_", item_cat, persistent=False)  # [n_items + 1], pad -> n_cat
        local = torch.zeros(sizes.n_items, dtype=torch.int64)  # item's position within its category
        for k in range(n_cat):
            idx = torch.from_numpy(sizes.item_index(k))
            self.register_buffer(f"index_{k}", idx, persistent=False)
            local[idx] = torch.arange(len(idx))
        self.register_buffer("local_index_", local, persistent=False)

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Any, categories: Sequence[int] | None = None) -> None:
        """Store users' recent training histories (all categories) and category sizes.

        The history always spans every category, even when training is restricted to some of them
        (a source->target stage): reading the other categories is the point of the model.
        """
        dev = self.history_.device
        self.history_ = history_matrix(bundle, self.config.history_len).to(dev)
        if self.config.history == "causal":
            index = history_index(bundle)
            for key in ("items", "starts", "keys", "positions"):
                setattr(self, f"seq_{key}_", index[key].to(dev))
        counts = np.bincount(
            bundle.split("train")["category"].to_numpy().astype(np.int64), minlength=self.sizes.n_categories
        ).astype(np.float64)
        w = np.zeros_like(counts)
        nz = counts > 0
        # Every category contributes equally in expectation: w_c = n / (C_active * n_c).
        w[nz] = counts.sum() / (nz.sum() * counts[nz])
        self.cat_weight_ = torch.from_numpy(w.astype(np.float32)).to(dev)
        item_counts = np.bincount(bundle.split("train")["item"].to_numpy().astype(np.int64), minlength=self.sizes.n_items)
        self.log_count_ = torch.from_numpy(np.log(item_counts + 1.0).astype(np.float32)).to(dev)
        self.log_cat_rows_ = torch.from_numpy(np.log(counts + 1.0).astype(np.float32)).to(dev)
        if self.config.neighbours:
            self._setup_neighbours(bundle)
        if self.config.content == "image" and getattr(bundle, "image_vectors", None) is not None:
            self.set_content(torch.from_numpy(bundle.image_vectors), torch.from_numpy(bundle.image_present))

    def _setup_neighbours(self, bundle: Any) -> None:
        """Top-k cosine neighbours (all categories) of every item over the training co-occurrence."""
        train = bundle.split("train")
        users = train["user"].to_numpy().astype(np.int64)
        items = train["item"].to_numpy().astype(np.int64)
        n_i, k, shrink = self.sizes.n_items, self.config.neighbours, self.config.neighbour_shrink
        top, norms = cosine_top_k(binary_matrix(users, items, self.sizes.n_users, n_i), k, shrink)
        n = np.rint(norms**2)  # users per item
        rows = np.repeat(np.arange(n_i), np.diff(top.indptr))
        rank = np.arange(len(rows)) - top.indptr[rows]
        counts = np.rint(top.data * (norms[rows] * norms[top.indices] + shrink + 1e-8))  # users in common
        nbr = np.full((n_i + 1, k), n_i, dtype=np.int64)
        nbr_co = np.zeros((n_i + 1, k), dtype=np.float32)
        nbr[rows, rank] = top.indices
        nbr_co[rows, rank] = counts
        dev = self.item_bias.device
        self.nbr_ = torch.from_numpy(nbr).to(dev)
        self.nbr_co_ = torch.from_numpy(nbr_co).to(dev)
        self.item_users_ = torch.from_numpy(np.append(n, 0.0).astype(np.float32)).to(dev)
        self.train_keys_ = torch.from_numpy(np.unique(users * n_i + items)).to(dev)

    def _neighbour_scores(self, hist: Tensor, category: Tensor, users: Tensor, candidates: Tensor, leave_out: bool) -> Tensor:
        """[B, M] neighbourhood scores of candidate items [M] (distinct) for history rows [B, L].

        N(u, j) = sum_l w[c, cat(h_l)] * exp(r[c, l]) * cos(h_l, j) over the history items h_l whose
        top-k neighbours include j (Koren, "Factorization meets the neighborhood", KDD 2008, with
        fixed cosine similarities and learned weights per history category and recency slot).
        leave_out (training): when (u, j) is a training pair, cos(h, j) is recomputed without it,
        (co(h, j) - 1) / (sqrt(n_h (n_j - 1)) + shrink), as if j were the unseen held-out item.
        """
        n_i, shrink = self.sizes.n_items, self.config.neighbour_shrink
        col_of = torch.full((n_i + 1,), -1, dtype=torch.int64, device=hist.device)
        col_of[candidates] = torch.arange(len(candidates), device=hist.device)
        nb = self.nbr_[hist]  # [B, L, k] (pad history rows have only pad neighbours)
        col = col_of[nb]
        r, l, k = torch.nonzero(col >= 0, as_tuple=True)
        h, j = hist[r, l], nb[r, l, k]
        co, n_h, n_j = self.nbr_co_[h, k], self.item_users_[h], self.item_users_[j]
        if leave_out and len(self.train_keys_):
            key = users[r] * n_i + j
            at = torch.searchsorted(self.train_keys_, key).clamp_max(len(self.train_keys_) - 1)
            mine = (self.train_keys_[at] == key).float()
            co, n_j = co - mine, n_j - mine
        sim = co / (torch.sqrt(n_h * n_j) + shrink + 1e-8)
        # Per-entry weights by embedding lookups and the sum by index_add: both have deterministic
        # backward passes on CPU (advanced-indexing backward accumulates in a thread-dependent order).
        c, n_cat, hl = category[r], self.sizes.n_categories, self.config.history_len
        w = F.embedding(c * (n_cat + 1) + self.item_category_[h], self.nbr_weight.view(-1, 1)).squeeze(1)
        w = w * torch.exp(F.embedding(c * hl + l + hl - hist.shape[1], self.nbr_recency.view(-1, 1)).squeeze(1))
        m = len(candidates)
        out = torch.zeros(len(hist) * m, device=hist.device).index_add(0, r * m + col[r, l, k], w * sim)
        return out.view(len(hist), m)

    def _neighbours_at(self, hist: Tensor, category: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """Training-time neighbourhood scores (leave-one-out): items [M] -> [B, M] (every row scores the
        same columns), items [B, n] -> [B, n] (each row its own)."""
        uniq, inv = torch.unique(items, return_inverse=True)
        n = self._neighbour_scores(hist, category, users, uniq, leave_out=self.config.neighbour_leave_out)
        return n[:, inv] if items.dim() == 1 else n.gather(1, inv)

    def set_content(self, vectors: Tensor, present: Tensor | None = None) -> None:
        """Attach per-item content vectors [n_items, k] (rows in item-id order); absent rows are zero."""
        if vectors.shape[0] != self.sizes.n_items:
            raise ValueError(f"content vectors have {vectors.shape[0]} rows; expected n_items={self.sizes.n_items}")
        dev = self.item_bias.device
        vec = F.normalize(vectors.float(), dim=1).to(dev)
        self.content_ = vec
        self.content_present_ = (present if present is not None else vec.abs().sum(1) > 0).bool().to(dev)
        if self.content_proj is None or self.content_proj.in_features != vec.shape[1]:
            self.content_proj = nn.Linear(vec.shape[1], self.config.dim).to(dev)
            nn.init.zeros_(self.content_proj.weight)
            nn.init.zeros_(self.content_proj.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Content buffers have data-dependent shapes: adopt the stored ones (and build the projection).
        key = prefix + "content_"
        if key in state_dict and state_dict[key].numel() > 0:
            vec = state_dict[key]
            self._buffers["content_"] = torch.empty_like(vec, device=self.item_bias.device)
            self._buffers["content_present_"] = torch.empty(vec.shape[0], dtype=torch.bool, device=self.item_bias.device)
            if self.content_proj is None or self.content_proj.in_features != vec.shape[1]:
                self.content_proj = nn.Linear(vec.shape[1], self.config.dim).to(self.item_bias.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared', 'specific' and 'heads' parameters (see the module docstring)."""
        specific = list(self.user_cat_emb.parameters()) if self.user_cat_emb is not None else []
        heads = [self.item_bias, self.cat_gate, self.global_bias] + ([self.log_var] if self.log_var is not None else [])
        taken = {id(p) for p in specific + heads}
        shared = [p for p in self.parameters() if id(p) not in taken]
        return {"shared": shared, "specific": specific, "heads": heads}

    # ------------------------------------------------------------------ towers
    def _index(self, category: int) -> Tensor:
        return getattr(self, f"index_{category}")

    def _items(self, items: Tensor) -> Tensor:
        """Item tower: [...] global ids -> [..., d]."""
        v = self.item_emb(items)
        if self.content_proj is not None and self.content_.numel() > 0:
            safe = items.clamp_max(self.sizes.n_items - 1)
            content = self.content_proj(self.content_[safe]) * self.content_present_[safe].unsqueeze(-1)
            v = v + content * (items < self.pad).unsqueeze(-1)
        return v

    def _encode(self, hist: Tensor, category: Tensor) -> Tensor:
        """Attention pooling of history [B, L] (pad = n_items) for target categories [B] -> [B, d].

        attention: weights from (item . query_c) + affinity[c, item's category] + recency[c, slot],
        values are the items' embeddings (every [B, L, d] pass is a lookup or a batched matmul, which
        keeps a batch cheap). transformer: self-attention blocks over item + category + position
        embeddings first. mean: the plain mean of the history items.
        """
        c = self.config
        valid = hist != self.pad  # [B, L]
        hcat = self.item_category_[hist]  # [B, L]
        x = self._items(hist) if self.hist_emb is None else self.hist_emb(hist)  # [B, L, d]
        if c.encoder == "mean":
            w = valid.float()
            return (x * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1.0)
        if self.blocks is not None:
            x = x + self.cat_emb(hcat) + self.pos_emb.weight[-hist.shape[1]:].unsqueeze(0)
            mask = ~valid
            mask[:, -1] = False  # keep one key per row, so empty histories stay finite
            x = self.blocks(x, src_key_padding_mask=mask)
        q = self.key(self.query[category])  # [B, d]
        logits = torch.bmm(x, q.unsqueeze(-1)).squeeze(-1) / math.sqrt(c.dim)  # [B, L]
        logits = logits + self.cat_affinity[category.unsqueeze(1), hcat]
        logits = logits + self.recency[category][:, -hist.shape[1]:]
        logits = logits.masked_fill(~valid, float("-inf"))
        # A zero "nothing seen" slot: empty histories pool to 0 and attention can decline to attend.
        logits = torch.cat([logits, torch.zeros_like(logits[:, :1])], dim=1)
        att = torch.softmax(logits, dim=1)[:, :-1]  # [B, L]
        return self.value(torch.bmm(att.unsqueeze(1), x).squeeze(1))

    def _user(self, users: Tensor, category: Tensor, hist: Tensor | None, hide_specific: Tensor | None = None) -> Tensor:
        """User tower: [B] users, [B] target categories -> [B, d]."""
        u = torch.zeros(len(users), self.config.dim, device=users.device)
        if self.user_emb is not None:
            u = u + self.user_emb(users)
        if self.user_cat_emb is not None:
            s = self.user_cat_emb(users * self.sizes.n_categories + category)
            if hide_specific is not None:
                s = s * (~hide_specific).unsqueeze(1)
            u = u + s
        if self.use_history and hist is not None:
            u = u + self._encode(hist, category)
        return u * self.cat_gate[category]

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        cat = torch.full_like(users, category)
        return self._user(users, cat, self.history_[users] if self.use_history else None)  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        return self._items(self._index(category))  # [n_items(c), d]

    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self._index(category)
        s = self.user_vectors(users, category) @ self._items(idx).T + self.item_bias[idx]  # [B, n_items(c)]
        if self.config.neighbours:
            cat = torch.full_like(users, category)
            s = s + self._neighbour_scores(self.history_[users], cat, users, idx, leave_out=False)
        if self.config.loss == "mse":
            s = s + self.global_bias
        return s

    @property
    def predicts_ratings(self) -> bool:
        return self.config.loss == "mse"

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings of aligned (user, item) pairs (meaningful with loss='mse')."""
        cat = self.item_category_[items]
        u = self._user(users, cat, self.history_[users] if self.use_history else None)
        pred = (u * self._items(items)).sum(-1) + self.item_bias[items] + self.global_bias
        if self.config.neighbours:
            uniq, inv = torch.unique(items, return_inverse=True)
            n = self._neighbour_scores(self.history_[users], cat, users, uniq, leave_out=False)
            pred = pred + n.gather(1, inv.unsqueeze(1)).squeeze(1)
        return pred

    # ------------------------------------------------------------------ objective
    def _row_losses(self, pos: Tensor, neg: Tensor) -> Tensor:
        """[B] per-row in-category ranking loss."""
        name = self.config.loss
        if name == "bpr":
            return -F.logsigmoid(pos.unsqueeze(1) - neg).mean(1)
        if name == "bce":
            return F.softplus(-pos) + F.softplus(neg).mean(1)
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        return -F.log_softmax(logits, dim=1)[:, 0]

    def _mixed_softmax(self, u: Tensor, p: Tensor, batch: Batch, hist: Tensor | None = None) -> Tensor:
        """[B] softmax loss of each positive against the batch's other positives of the same category
        and the row's uniformly sampled negatives (mixed negative sampling, Yang et al., WWW 2020).

        Every logit is corrected by -log(expected draws of that item) (the logQ correction of
        sampled softmax, Yi et al., RecSys 2019): in-batch items are drawn by popularity within the
        category (B_c * n_j / N_c), sampled ones uniformly (n_neg / n_items(c)). Sparse categories,
        with few rows in a batch, still get n_neg real negatives per row.
        """
        items, cat = batch.pos_items, batch.category
        n_cat = self.sizes.n_categories
        rows_per_cat = torch.bincount(cat, minlength=n_cat).clamp_min(1).float()
        row_log = rows_per_cat.log()[cat] - self.log_cat_rows_[cat]  # [B]: log(B_c / N_c)
        logits = u @ p.T + (self.item_bias[items] - self.log_count_[items]).unsqueeze(0) - row_log.unsqueeze(1)
        if hist is not None:
            logits = logits + self._neighbours_at(hist, cat, batch.users, items)
        same_cat = cat.unsqueeze(1) == cat.unsqueeze(0)
        dup = items.unsqueeze(1) == items.unsqueeze(0)  # the row's own positive, wherever it repeats
        eye = torch.eye(len(items), dtype=torch.bool, device=items.device)
        logits = logits.masked_fill(~same_cat | (dup & ~eye), float("-inf"))  # [B, B]
        parts = [logits]
        if self.config.mixed_negatives:
            neg_items = batch.neg_items
            n = self._items(neg_items)  # [B, n_neg, d]
            neg = (u.unsqueeze(1) * n).sum(-1) + self.item_bias[neg_items]
            if hist is not None:
                neg = neg + self._neighbours_at(hist, cat, batch.users, neg_items)
            neg = neg - (math.log(neg_items.shape[1]) - self.log_cat_items_[cat]).unsqueeze(1)
            neg = neg.masked_fill(neg_items == items.unsqueeze(1), float("-inf"))
            parts.append(neg)
        full = torch.cat(parts, dim=1)
        return torch.logsumexp(full, dim=1) - torch.diagonal(logits)

    def _full_softmax(self, u: Tensor, batch: Batch, hist: Tensor | None = None) -> Tensor:
        """[B] exact softmax loss of each positive against every item of its category."""
        items, cat = batch.pos_items, batch.category
        out = torch.zeros(len(items), device=u.device)
        for k in torch.unique(cat).tolist():
            rows = torch.nonzero(cat == k).squeeze(1)
            idx = self._index(int(k))
            logits = u[rows] @ self._items(idx).T + self.item_bias[idx]  # [B_k, n_items(k)]
            if hist is not None:
                logits = logits + self._neighbour_scores(
                    hist[rows], cat[rows], batch.users[rows], idx, leave_out=self.config.neighbour_leave_out
                )
            out = out.index_put((rows,), F.cross_entropy(logits, self.local_index_[items[rows]], reduction="none"))
        return out

    def _weighted(self, row_loss: Tensor, category: Tensor) -> Tensor:
        """sum_c w_c L_c from per-row losses."""
        mode = self.config.category_weights
        if mode == "uniform":
            return row_loss.mean()
        if mode == "inverse_frequency":
            return (self.cat_weight_[category] * row_loss).mean()
        n_cat = self.sizes.n_categories
        sums = torch.zeros(n_cat, device=row_loss.device).index_add(0, category, row_loss)
        counts = torch.zeros(n_cat, device=row_loss.device).index_add(0, category, torch.ones_like(row_loss))
        present = counts > 0
        per_cat = sums[present] / counts[present]
        s = self.log_var[present]  # type: ignore[index]
        return (torch.exp(-s) * per_cat + s).sum() / max(int(present.sum()), 1)

    def _training_history(self, users: Tensor, pos_items: Tensor, cat: Tensor) -> tuple[Tensor, Tensor | None]:
        """[B, L] the history a training row reads (never its target; dropout and category dropout in
        training mode) and [B] which rows had their in-category history hidden (or None)."""
        c = self.config
        hide = None
        if c.history == "causal" and self.training and len(self.seq_starts_):
            index = {"items": self.seq_items_, "starts": self.seq_starts_, "keys": self.seq_keys_, "positions": self.seq_positions_}
            hist = causal_history(index, users, pos_items, c.history_len, self.pad, self.sizes.n_items)
        else:
            hist = self.history_[users].clone()  # [B, L]
        hist[hist == pos_items.unsqueeze(1)] = self.pad  # never read the target itself
        if self.training and c.dropout > 0:  # drop whole history items
            hist[torch.rand(hist.shape, device=hist.device) < c.dropout] = self.pad
        if self.training and c.category_dropout > 0:
            hide = torch.rand(len(users), device=users.device) < c.category_dropout
            in_cat = self.item_category_[hist] == cat.unsqueeze(1)
            hist[in_cat & hide.unsqueeze(1)] = self.pad
        return hist, hide

    def loss(self, batch: Batch) -> Tensor:
        c = self.config
        users, cat = batch.users, batch.category
        hist = hide = None
        if self.use_history or c.neighbours:
            hist, hide = self._training_history(users, batch.pos_items, cat)
        u = self._user(users, cat, hist if self.use_history else None, hide)  # [B, d]
        p = self._items(batch.pos_items)  # [B, d]
        nhist = hist if c.neighbours else None  # the neighbourhood term reads the same history
        reg = l2_penalty(u, p)
        if c.loss == "mse":
            if batch.ratings is None:
                raise ValueError("crossrec.loss='mse' needs explicit ratings in the data")
            if not bool(self.bias_ready_):
                rated = batch.ratings[torch.isfinite(batch.ratings)]
                if len(rated):
                    with torch.no_grad():
                        self.global_bias.fill_(float(rated.mean()))
                        self.bias_ready_.fill_(True)
            pred = (u * p).sum(-1) + self.item_bias[batch.pos_items] + self.global_bias
            if nhist is not None:
                pred = pred + self._neighbours_at(nhist, cat, users, batch.pos_items.unsqueeze(1)).squeeze(1)
            ok = torch.isfinite(batch.ratings)
            row = torch.zeros_like(pred)
            row[ok] = (pred[ok] - batch.ratings[ok]) ** 2
            main = self._weighted(row, cat) if bool(ok.any()) else mse_loss(pred, batch.ratings)
        else:
            if c.loss == "softmax" and c.full_softmax:
                main = self._weighted(self._full_softmax(u, batch, nhist), cat)
            elif c.loss == "softmax" and c.in_batch:
                main = self._weighted(self._mixed_softmax(u, p, batch, nhist), cat)
            else:
                n = self._items(batch.neg_items)  # [B, n_neg, d]
                pos = (u * p).sum(-1) + self.item_bias[batch.pos_items]
                neg = (u.unsqueeze(1) * n).sum(-1) + self.item_bias[batch.neg_items]
                if nhist is not None:
                    pos = pos + self._neighbours_at(nhist, cat, users, batch.pos_items.unsqueeze(1)).squeeze(1)
                    neg = neg + self._neighbours_at(nhist, cat, users, batch.neg_items)
                main = self._weighted(self._row_losses(pos, neg), cat)
                reg = reg + l2_penalty(n)
        total = main + c.reg * reg
        if self.use_history and c.alpha > 0 and hist is not None:
            total = total + c.alpha * self._transfer_loss(users, cat)
        if self.classifier is not None:
            total = total + c.adversarial * self._adversarial_loss(users, cat)
        return total

    def _first_rows(self, users: Tensor, cat: Tensor, limit: int = 256) -> Tensor:
        """Row indices of the first occurrence of each (user, category) in the batch (at most `limit`)."""
        key = users * self.sizes.n_categories + cat
        uniq, inv = torch.unique(key, return_inverse=True)
        first = torch.full((len(uniq),), len(key), dtype=torch.int64, device=key.device)
        first = first.scatter_reduce(0, inv, torch.arange(len(key), device=key.device), reduce="amin")
        return first[:limit]

    def _transfer_loss(self, users: Tensor, cat: Tensor) -> Tensor:
        """InfoNCE between the encodings of a user's history inside and outside the target category."""
        rows = self._first_rows(users, cat)
        u, c = users[rows], cat[rows]
        hist = self.history_[u]
        in_cat = (self.item_category_[hist] == c.unsqueeze(1)) & (hist != self.pad)
        out_cat = (self.item_category_[hist] != c.unsqueeze(1)) & (hist != self.pad)
        ok = in_cat.any(1) & out_cat.any(1)
        if int(ok.sum()) < 2:
            return torch.zeros((), device=users.device)
        hist, in_cat, out_cat, c = hist[ok], in_cat[ok], out_cat[ok], c[ok]
        pad = torch.full_like(hist, self.pad)
        a = F.normalize(self.align(self._encode(torch.where(in_cat, hist, pad), c)), dim=1)
        b = F.normalize(self.align(self._encode(torch.where(out_cat, hist, pad), c)), dim=1)
        logits = a @ b.T / self.config.tau  # [n, n]
        target = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def _adversarial_loss(self, users: Tensor, cat: Tensor) -> Tensor:
        """Category classifier behind gradient reversal, on the user's mean item embedding in c."""
        rows = self._first_rows(users, cat)
        u, c = users[rows], cat[rows]
        hist = self.history_[u]
        in_cat = ((self.item_category_[hist] == c.unsqueeze(1)) & (hist != self.pad)).float()
        ok = in_cat.sum(1) > 0
        if int(ok.sum()) < 2:
            return torch.zeros((), device=users.device)
        view = (self._items(hist[ok]) * in_cat[ok].unsqueeze(-1)).sum(1) / in_cat[ok].sum(1, keepdim=True)
        logits = self.classifier(_GradReverse.apply(view, 1.0))  # type: ignore[misc]
        return F.cross_entropy(logits, c[ok])
