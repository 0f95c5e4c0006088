"""The flagship's item tower: items -> vectors from their ID, their text and their image.

Modes (`item_tower`): `id` (an ID embedding), `id+image` (plus a projection of the Bundle's
image vectors), `text` (inductive: a vector from the item's text alone, so any item with text has
one, including items added after training), `text+id`, `text+id+image`.

Text enters as frozen language-model vectors (encoders/text.py) through UniSRec's adapter
(Hou et al., KDD 2022): K parametric-whitening experts `(x - b_k) W_k`, mixed by a softmax gate on
x. With text, the sources are fused by a learned gate, `v = sum_s g_s(sources) * s` (per item and
dimension, `g = 2 sigmoid(.)`, starting at 1 = a plain sum), and a text bias joins the ID bias.
`text.id_dropout` hides an item's ID part (embedding and bias) on a share of training
occurrences, so the tower learns to score an item from its text alone, as it must for cold items;
`text.text_dropout` hides the text part of a share of occurrences (text+id), so the ID part must
score alone and the text part learns what adds to it (on validation it kept the text tower from
overfitting sooner than the ID one: docs/DESIGN.md). After training, `text_weight_` ([n_items],
set by the text-trust step, trust.py; empty = 1 everywhere) scales each item's text part and text
bias at scoring time (eval mode): an item whose interactions say more than its text leans on its ID.

`text.residual` trains the two parts apart: in the ID stage (`text_stage_` false) the tower is the
ID flagship's (`emb`, `bias`; the history encoder reads no text), so that stage is the ID
flagship's training; in the text stage (loss.py holds every other parameter) an item's vector is
`e + w (fused(e, text) - e)` and its bias `b + w tb`, w its text weight (1 in training), so w = 0
is the ID flagship's item exactly.

Example:
    >>> tower = ItemTower(n_items=100, dim=16, init_std=0.01)   # doctest: +SKIP
    >>> tower(torch.tensor([3, 100])).shape                     # 100 = the padding id  # doctest: +SKIP
    torch.Size([2, 16])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TextAdapter(nn.Module):
    """Mixture of parametric-whitening experts over frozen text vectors (UniSRec): [..., k] -> [..., d]."""

    def __init__(self, in_dim: int, dim: int, experts: int) -> None:
        super().__init__()
        self.center = nn.Parameter(torch.zeros(experts, in_dim))  # b_k
        self.proj = nn.Parameter(torch.randn(experts, in_dim, dim) * math.sqrt(2.0 / (in_dim + dim)))  # W_k
        self.gate = nn.Linear(in_dim, experts, bias=False)
        nn.init.zeros_(self.gate.weight)  # uniform mixture at the start

    def forward(self, x: Tensor) -> Tensor:
        g = torch.softmax(self.gate(x), dim=-1)  # [N, K]
        # (x - b_k) W_k = x W_k - b_k W_k, for all experts at once: one [N, k] x [k, K d] matmul
        # (einsum over the experts ran as a batched matmul of x repeated K times: slower)
        n_exp, k, d = self.proj.shape
        e = (x @ self.proj.permute(1, 0, 2).reshape(k, n_exp * d)).view(-1, n_exp, d)
        e = e - torch.bmm(self.center.unsqueeze(1), self.proj).squeeze(1)  # [N, K, d]
        return (g.unsqueeze(-1) * e).sum(1)  # [N, d]


class FusedVectors(nn.Identity):
    """The item tower's output with text: marked as a point APR perturbs (training/adversarial.py)."""

    apr_point = True


class ItemTower(nn.Module):
    """Items -> vectors (`forward`) and biases (`bias_of`); row `n_items` is the padding id.

    Data-dependent inputs are attached after construction: `set_content` (image vectors) and
    `set_text` (text vectors); both are buffers, so an artifact carries them.
    """

    text_weight_: Tensor  # the text-trust weights (trust.py), a buffer
    text_stage_: Tensor  # text.residual: the text stage has begun (a bool buffer; residual towers only)

    def __init__(self, n_items: int, dim: int, init_std: float, mode: str = "id", text: Any = None) -> None:
        super().__init__()
        self.n_items, self.dim, self.pad, self.mode = n_items, dim, n_items, mode
        self.use_id, self.use_text = "id" in mode, "text" in mode
        self.id_dropout = float(getattr(text, "id_dropout", 0.0)) if self.use_text else 0.0
        self.text_dropout = float(getattr(text, "text_dropout", 0.0)) if self.use_text and self.use_id else 0.0
        self.residual = bool(getattr(text, "residual", False)) and mode == "text+id"
        if self.residual:  # the ID part trains alone in its own stage; the stage is state (checkpoints)
            self.text_dropout = 0.0
            self.register_buffer("text_stage_", torch.zeros((), dtype=torch.bool))
        self._text_stage = False  # the buffer's value on the host: read per forward without a device sync
        self.experts = int(getattr(text, "experts", 4))
        self.emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items, sparse=True)
        nn.init.normal_(self.emb.weight, std=init_std)
        with torch.no_grad():
            self.emb.weight[n_items].zero_()
        self.bias = nn.Parameter(torch.zeros(n_items))
        # Content slot: [n_items, k] vectors + presence, projected into the item space (set_content).
        self.register_buffer("content_", torch.zeros(0, 0))
        self.register_buffer("content_present_", torch.zeros(0, dtype=torch.bool))
        self.content_proj: nn.Linear | None = None
        # Text slot (set_text): frozen vectors, adapter, text bias, fusion gate.
        self.register_buffer("text_", torch.zeros(0, 0))
        self.register_buffer("text_weight_", torch.zeros(0))  # per item, at scoring time (trust.py); empty: 1
        self.adapter: TextAdapter | None = None
        self.text_bias: nn.Linear | None = None
        self.fuse: nn.Linear | None = None
        self.live: nn.Module | None = None  # a trainable text encoder (encoders/finetune.py), while training
        self.fused = FusedVectors()  # adversarial training perturbs the fused vectors here
        self.train_items = 256

    # ---------------------------------------------------------------- inputs
    def set_content(self, vectors: Tensor, present: Tensor | None = None) -> None:
        """Attach per-item content vectors [n_items, k] (rows in item-id order); absent rows are zero.

        The projection starts at zero, so attaching content does not move a trained model's scores
        until it is trained further.
        """
        if vectors.shape[0] != self.n_items:
            raise ValueError(f"content vectors have {vectors.shape[0]} rows; expected n_items={self.n_items}")
        dev = self.bias.device
        vec = F.normalize(vectors.float(), dim=1).to(dev)
        self.content_ = vec
        self.content_present_ = (present if present is not None else vec.abs().sum(1) > 0).bool().to(dev)
        self._build_content(vec.shape[1], zero=True)

    def set_text(self, vectors: Tensor) -> None:
        """Attach text vectors [n_items, k] (zeros where an item has no text) and build the adapter."""
        if vectors.shape[0] != self.n_items:
            raise ValueError(f"text vectors have {vectors.shape[0]} rows; expected n_items={self.n_items}")
        self.text_ = vectors.float().to(self.bias.device)
        self._build_text(vectors.shape[1])

    def _build_content(self, k: int, zero: bool) -> None:
        if self.content_proj is None or self.content_proj.in_features != k:
            self.content_proj = nn.Linear(k, self.dim).to(self.bias.device)
            if zero:
                nn.init.zeros_(self.content_proj.weight)
                nn.init.zeros_(self.content_proj.bias)
        self._build_fuse()

    def _build_text(self, k: int) -> None:
        if self.adapter is None or self.adapter.proj.shape[1] != k:
            dev = self.bias.device
            self.adapter = TextAdapter(k, self.dim, self.experts).to(dev)
            self.text_bias = nn.Linear(k, 1, bias=False).to(dev)
            nn.init.zeros_(self.text_bias.weight)
        self._build_fuse()

    def _build_fuse(self) -> None:
        n = int(self.use_id) + int(self.adapter is not None) + int(self.content_proj is not None)
        if self.use_text and n > 1 and (self.fuse is None or self.fuse.out_features != n * self.dim):
            self.fuse = nn.Linear(n * self.dim, n * self.dim).to(self.bias.device)
            nn.init.zeros_(self.fuse.weight)
            nn.init.zeros_(self.fuse.bias)

    @property
    def has_text(self) -> bool:
        return self.adapter is not None and self.text_.numel() > 0

    @property
    def image_dim(self) -> int | None:
        """Width of the image vectors this tower reads, or None."""
        return int(self.content_.shape[1]) if self.content_proj is not None and self.content_.numel() > 0 else None

    # ---------------------------------------------------------------- outputs
    @property
    def id_only(self) -> bool:
        """The residual mode's ID stage: the tower is the ID flagship's (vectors `emb`, biases
        `bias`), in training and validation alike."""
        return self.residual and not self._text_stage

    @property
    def text_stage(self) -> bool:
        """The residual mode's text stage has begun (the `text_stage_` buffer, kept on the host)."""
        return self.residual and self._text_stage

    def set_text_stage(self, on: bool) -> None:
        """Enter (True) or leave the residual mode's text stage."""
        self.text_stage_.fill_(on)
        self._text_stage = on

    def text_parameters(self) -> list[nn.Parameter]:
        """What the residual mode's text pass trains: the adapter, the fusion gate, the text bias
        and a live encoder's parameters."""
        mods = [self.adapter, self.fuse, self.text_bias, self.live]
        return [p for mod in mods if mod is not None for p in mod.parameters()]

    def _id_keep(self, items: Tensor) -> Tensor | None:
        """[...] 1.0 where an item's ID part is used, 0.0 where dropped (training only)."""
        if self.id_only or not (self.training and self.id_dropout > 0):
            return None
        return (torch.rand(items.shape, device=items.device) >= self.id_dropout).float()

    def content(self, items: Tensor) -> Tensor | None:
        """[..., d] the non-ID part of the items' vectors (text adapter, image projection), or None."""
        parts = self._content_parts(items)
        return sum(parts) if parts else None  # type: ignore[return-value]

    def _text(self, uniq: Tensor, fresh: bool) -> Tensor:
        """Text vectors of distinct items: the cache, with up to `train_items` of them encoded
        afresh (with gradients) when a live encoder trains."""
        x = self.text_[uniq]
        if fresh and self.live is not None and self.training:
            sel = torch.randperm(len(uniq), device=uniq.device)[: self.train_items]
            x = x.index_put((sel,), self.live(uniq[sel]))
        return x

    def trust(self, safe: Tensor) -> Tensor | None:
        """[...] the weight of the text part of items `safe` (valid ids) at scoring time, or None
        (1): `text_weight_` in eval mode once the text-trust step has set it (trust.py)."""
        if self.training or self.text_weight_.numel() == 0:
            return None
        return self.text_weight_.index_select(0, safe.reshape(-1)).view(safe.shape)

    def _content_parts(self, items: Tensor, fresh: bool = False, weigh: bool = False) -> list[Tensor]:
        """The non-ID parts; `weigh`: the text part scaled by `trust` (candidates, not history items)."""
        parts = []
        safe = items.clamp_max(self.n_items - 1)
        real = (items < self.pad).unsqueeze(-1)
        if self.has_text:
            uniq, inv = torch.unique(safe, return_inverse=True)  # each distinct item through the adapter once
            # index_select, not [inv]: advanced indexing's backward (index_put_ with accumulate) is far slower
            vec = self.adapter(self._text(uniq, fresh))  # type: ignore[misc]
            w = self.trust(safe) if weigh else None
            mask = real if w is None else real * w.unsqueeze(-1)
            parts.append(vec.index_select(0, inv.reshape(-1)).view(*items.shape, -1) * mask)
        if self.content_proj is not None and self.content_.numel() > 0:
            parts.append(self.content_proj(self.content_[safe]) * self.content_present_[safe].unsqueeze(-1) * real)
        return parts

    def forward(self, items: Tensor, keep: Tensor | None = None, fresh: bool = False) -> Tensor:
        """[...] global ids (pad allowed) -> [..., d]. `keep` ([...] 0/1) masks the ID part; `fresh`
        encodes (some of) the items' text with the live encoder, if one trains."""
        if self.id_only:
            e = self.emb(items)
            return e if keep is None else e * keep.unsqueeze(-1)
        if not self.use_text:  # id, id+image: the ID embedding plus the projected content
            v = self.emb(items)
            extra = self.content(items)
            return v if extra is None else v + extra
        keep = keep if keep is not None else self._id_keep(items)
        if self.residual:
            return self._residual(items, keep, fresh)
        parts = self._content_parts(items, fresh, weigh=True)
        if self.training and self.text_dropout > 0 and self.has_text:  # hide the text part of some occurrences
            parts[0] = parts[0] * (torch.rand(items.shape, device=items.device) >= self.text_dropout).unsqueeze(-1)
        if self.use_id:
            e = self.emb(items)
            parts.insert(0, e if keep is None else e * keep.unsqueeze(-1))
        if not parts:
            raise RuntimeError("the text item tower has no text vectors: call set_text (the model's setup does)")
        if self.fuse is None or len(parts) == 1:
            return self.fused(parts[0])
        return self.fused(self._gated(parts))

    def _gated(self, parts: list[Tensor]) -> Tensor:
        """The fusion of the sources [..., d] each: sum_s g_s * s with g = 2 sigmoid(fuse(all of them))."""
        stacked = torch.stack(parts, dim=-2)  # [..., n, d]
        gate = 2.0 * torch.sigmoid(self.fuse(stacked.flatten(-2))).view_as(stacked)  # type: ignore[misc]
        return (gate * stacked).sum(-2)

    def _residual(self, items: Tensor, keep: Tensor | None, fresh: bool) -> Tensor:
        """The residual mode's vectors: e + w (fused(e, text) - e), w the text trust (1 in
        training and before the trust step), so w = 0 is the ID part alone."""
        e = self.emb(items)
        if keep is not None:
            e = e * keep.unsqueeze(-1)
        full = self.fused(self._gated([e, self._content_parts(items, fresh)[0]]))
        w = self.trust(items.clamp_max(self.n_items - 1))
        return full if w is None else e + w.unsqueeze(-1) * (full - e)

    def from_text(self, x: Tensor, image: Tensor | None = None, id_part: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Vectors [n, d] and biases [n] of items known by their text vectors [n, k] alone (items
        added after training): the tower's output for an item whose ID part is hidden, or is
        `id_part` [n, d] (one borrowed from its text neighbours: models/crossrec/borrow.py). `image`
        [n, k'] (all-zero rows: none) joins through the image projection of a `text+id+image`
        tower, as a Bundle item's image vector does."""
        if not self.has_text:
            raise ValueError("this item tower does not read text")
        x = x.float().to(self.bias.device)
        parts = [self.adapter(x)]  # type: ignore[misc]
        if self.use_id:
            parts.insert(0, torch.zeros_like(parts[0]) if id_part is None else id_part.to(parts[0]))
        if self.content_proj is not None and self.content_.numel() > 0:
            if image is None:
                parts.append(torch.zeros_like(parts[0]))  # no image vector
            else:
                img = F.normalize(image.float().to(self.bias.device), dim=1)
                parts.append(self.content_proj(img) * (img.abs().sum(1, keepdim=True) > 0))
        if self.fuse is None or len(parts) == 1:
            v = parts[0]
        else:
            v = self._gated(parts)
        return v, self.text_bias(x).squeeze(-1)  # type: ignore[misc]

    def bias_of(self, items: Tensor, keep: Tensor | None = None) -> Tensor:
        """[...] item biases: the ID bias (masked like the ID part) plus the text bias."""
        safe = items.clamp_max(self.n_items - 1)
        b = (
            self.bias.index_select(0, safe.reshape(-1)).view(items.shape)
            if self.use_id
            else torch.zeros(items.shape, device=items.device)
        )
        if keep is not None and self.use_id:
            b = b * keep
        if self.has_text and not self.id_only:
            tb = self.text_bias(self.text_[safe]).squeeze(-1)  # type: ignore[misc]
            w = self.trust(safe)
            b = b + (tb if w is None else tb * w)
        return b

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Content and text buffers have data-dependent shapes: adopt the stored ones (and build their layers).
        dev = self.bias.device
        vec = state_dict.get(prefix + "content_")
        if vec is not None and vec.numel() > 0:
            self._buffers["content_"] = torch.empty_like(vec, device=dev)
            self._buffers["content_present_"] = torch.empty(vec.shape[0], dtype=torch.bool, device=dev)
            self._build_content(vec.shape[1], zero=False)
        text = state_dict.get(prefix + "text_")
        if text is not None and text.numel() > 0:
            self._buffers["text_"] = torch.empty_like(text, device=dev)
            self._build_text(text.shape[1])
        weight = state_dict.setdefault(prefix + "text_weight_", torch.zeros(0))  # before the text-trust step: 1
        self._buffers["text_weight_"] = torch.empty_like(weight, device=dev)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.residual and prefix + "text_stage_" in state_dict:  # an artifact or a checkpoint
            self._text_stage = bool(state_dict[prefix + "text_stage_"])
