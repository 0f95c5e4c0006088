"""The flagship cross-category model, composed of an item tower, a user tower with a history
encoder, a neighbourhood term and a category weighting.

User tower, for user u and target category c:

    u_c = g_c * ( p_u                      shared user embedding (all categories train it)
                + s_{u,c}                  category-specific user embedding
                + Enc(history_u, c) )      encoder over u's most recent items in *all* categories

A user with no history in c is served from the other categories (the attention finds no
in-category items), and training teaches that case: with probability `category_dropout` a row's
in-category history and its category-specific embedding are hidden.

score(u, i) = <u_c, v_i> + b_i + P_c(u, i) + N_c(u, i) + T_c(u, i): the two towers (`user_vectors`,
`item_vectors`) plus `extra_scores` (item bias, the popularity prior P_c of users new to c
(prior.py), the neighbourhood term N_c, the content term T_c with a text item tower, and the
global bias of rating prediction).

Objective (per batch): sum_c w_c L_c + alpha * L_transfer + beta * L_adv + lambda * L2, where L_c
is the in-category loss (sampled softmax with in-batch negatives and logQ correction, full
softmax, BPR, BCE, or MSE on ratings); L_transfer pulls the encodings of a user's history inside
and outside c together (InfoNCE over the batch's users); L_adv is a category classifier behind
gradient reversal on the user's mean item embedding in c.

Parameter groups (freezing policies): "shared" (embeddings, encoder, content projection, alignment
and adversarial heads), "specific" (category-specific user embeddings), "heads" (item biases,
per-category gates, learned loss weights).

References: DIN (KDD 2018), SASRec (ICDM 2018) for attention over a history; DTCDR (CIKM 2019) for
shared + domain-specific users; CDRIB-style alignment (SIGIR 2022); Kendall et al. (CVPR 2018);
Koren (KDD 2008); DropoutNet (NeurIPS 2017) for cold items; docs/DESIGN.md.

Example:
    >>> m = CrossRec(CrossRecConfig(dim=64), sizes); m.setup(bundle)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import register
from crossrec.models.category_index import CategoryIndex
from crossrec.models.crossrec.borrow import Borrowing
from crossrec.models.crossrec.config import CrossRecConfig
from crossrec.models.crossrec.content import ContentTerm
from crossrec.models.crossrec.encoder import HistoryEncoder
from crossrec.models.crossrec.inference import FlagshipInference
from crossrec.models.crossrec.neighbourhood import NeighbourhoodTerm
from crossrec.models.crossrec.objective import AuxiliaryLosses, CategoryWeighting
from crossrec.models.crossrec.prior import NewUserPrior
from crossrec.models.crossrec.shrink import TextShrinkage
from crossrec.models.crossrec.softmax import SoftmaxLosses
from crossrec.models.crossrec.towers import ItemTower, TrainsTextEncoder
from crossrec.models.crossrec.warm import warm_start
from crossrec.models.history import causal_history, history_index, history_matrix
from crossrec.models.losses import l2_penalty, mse_loss, pair_loss, warm_start_bias
from crossrec.models.scoring import dot_scores

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools


@register("crossrec", CrossRecConfig, paper="crossrec flagship (docs/DESIGN.md); DIN/SASRec history attention, DTCDR shared+specific users")
class CrossRec(FlagshipInference, Borrowing, TextShrinkage, NewUserPrior, TrainsTextEncoder, AuxiliaryLosses, SoftmaxLosses, nn.Module):
    """Shared + category-specific + cross-category-history user tower; ID (+ content) item tower.

    Call `setup(bundle, categories)` before `loss`/`score` (the trainer does): it stores every
    user's recent training history (all categories) and the data-derived parts' state as buffers.
    """

    def __init__(self, config: CrossRecConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config
        if not 0.0 <= c.history.category_dropout < 1.0:
            raise ConfigError("crossrec.history.category_dropout must be in [0, 1)")
        self.config, self.sizes, self.pad = c, sizes, sizes.n_items
        n_cat, d, pad = sizes.n_categories, c.dim, sizes.n_items
        # Built in a fixed order: it is the order the parameters draw their initial values in.
        self.items = ItemTower(sizes.n_items, d, c.init_std, c.item_tower, c.text)
        self.user_emb = nn.Embedding(sizes.n_users, d, sparse=True) if c.user_embedding else None
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=c.init_std)
        self.encoder = HistoryEncoder(c.history, d, n_cat, sizes.n_items) if c.history.encoder != "none" else None
        self.align = nn.Linear(d, d) if self.encoder is not None else None  # projection head of L_transfer
        self.classifier = nn.Linear(d, n_cat) if c.objective.adversarial > 0 else None
        self.user_cat_emb = nn.Embedding(sizes.n_users * n_cat, d, sparse=True) if c.category_user else None
        if self.user_cat_emb is not None:
            nn.init.normal_(self.user_cat_emb.weight, std=c.init_std)
        self.cat_gate = nn.Parameter(torch.ones(n_cat, d))
        self.weighting = CategoryWeighting(c.objective.category_weights, n_cat)
        self.global_bias = nn.Parameter(torch.zeros(()))  # mse: the mean rating
        self.new_prior = nn.Parameter(torch.zeros(n_cat)) if c.new_user_prior and c.loss != "mse" else None  # prior.py
        nb = c.neighbourhood
        self.neighbours = NeighbourhoodTerm(sizes, nb.k, nb.shrink, c.history.length) if nb.k else None
        self.content_term = ContentTerm(n_cat, sizes.n_items) if "text" in c.item_tower and c.text.content_term else None
        self.index = CategoryIndex(sizes)
        self.warmed = False  # warm_start (warm.py) runs at the first setup only
        self.compiled = True  # on CPU, the in-batch softmax by compiled kernels (models/crossrec/softmax.py)
        # ---- data-derived buffers (setup)
        self.register_buffer("history_", torch.full((sizes.n_users, c.history.length), pad, dtype=torch.int64))
        # history='causal': every training sequence, flat (training-only state, rebuilt by setup, not saved)
        for name in ("seq_items_", "seq_starts_", "seq_keys_", "seq_positions_"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64), persistent=False)
        # logQ correction of the softmax: log training count of each item (+1), log rows and items per category
        self.register_buffer("log_count_", torch.zeros(sizes.n_items))
        self.register_buffer("log_cat_rows_", torch.zeros(n_cat))
        self.register_buffer("log_cat_items_", torch.log(torch.bincount(torch.tensor(list(sizes.item_category)), minlength=n_cat).clamp_min(1).float()))
        self.register_buffer("bias_ready_", torch.zeros((), dtype=torch.bool))
        self.register_buffer("user_cats_", torch.ones(sizes.n_users, n_cat, dtype=torch.bool))  # training rows in c (prior.py)
        # text+id: per category, what items without training interactions get added (calibrate)
        self.register_buffer("cold_offset_", torch.zeros(n_cat))
        self.register_buffer("shrink_kappa_", torch.zeros(n_cat))  # text shrinkage picked per category (shrink.py)
        # text+id: ID parts lent to untrained items by their text neighbours (borrow.py; calibrate)
        self.register_buffer("borrow_row_", torch.full((sizes.n_items,), -1, dtype=torch.int64))
        self.register_buffer("borrow_nbr_", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("borrow_w_", torch.zeros(0, 0))
        item_cat = torch.tensor(list(sizes.item_category) + [n_cat], dtype=torch.int64)
        self.register_buffer("item_category_", item_cat, persistent=False)  # [n_items + 1], pad -> n_cat

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Store users' recent training histories (all categories), category sizes, neighbours.

        The history always spans every category, even when training is restricted to some of them
        (a source->target stage): reading the other categories is the point of the model.
        """
        dev = self.history_.device
        self.history_ = history_matrix(bundle, self.config.history.length).to(dev)
        if self.config.history.rows == "causal":
            index = history_index(bundle)
            for key in ("items", "starts", "keys", "positions"):
                setattr(self, f"seq_{key}_", index[key].to(dev))
        counts = np.bincount(
            bundle.split("train")["category"].to_numpy().astype(np.int64), minlength=self.sizes.n_categories
        ).astype(np.float64)
        self.weighting.setup(counts)
        item_counts = np.bincount(bundle.split("train")["item"].to_numpy().astype(np.int64), minlength=self.sizes.n_items)
        self.log_count_ = torch.from_numpy(np.log(item_counts + 1.0).astype(np.float32)).to(dev)
        self.log_cat_rows_ = torch.from_numpy(np.log(counts + 1.0).astype(np.float32)).to(dev)
        self._setup_prior(bundle)
        if self.neighbours is not None:
            self.neighbours.setup(bundle)
        if "image" in self.config.item_tower and getattr(bundle, "image_vectors", None) is not None:
            self.set_content(torch.from_numpy(bundle.image_vectors), torch.from_numpy(bundle.image_present))
        if self.uses_text:
            text = getattr(bundle, "text_vectors", None)
            if text is None:
                raise ConfigError(f"crossrec.item_tower={self.config.item_tower!r} needs item text vectors: train through "
                                 "the pipeline (it encodes them with the `encoder:` section) or set bundle.text_vectors")
            self.items.set_text(torch.from_numpy(text))
        if not self.warmed:  # last: it reads the text adapter built above
            self.warmed = True
            warm_start(self, bundle, categories)

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """After training (the trainer calls it): lend untrained items their text neighbours' ID
        parts (borrow.py, `text.borrow`), shrink trained items' ID parts toward their text
        neighbours' (shrink.py, `text.shrink`), pick the new-user prior again on validation's users new
        to a category (prior.py, `prior_fit`, where validation has them), then fit `cold_offset_`
        on the validation split (models/crossrec/calibration.py; `text.calibrate_cold`, where
        validation has positives on untrained items)."""
        self.borrow()  # first: the offset is fitted on the scores with the borrowed parts
        was = self.training
        self.eval()
        self.shrink_to_text(bundle, categories, tools)  # trained items' ID parts toward their text neighbours' (shrink.py)
        if self.config.prior_fit:  # before the offset, which is fitted on the final scores (prior.py)
            self.fit_prior(bundle, categories, tools)
        if self.items.use_text and self.items.use_id and self.config.text.calibrate_cold and self.config.loss != "mse":
            from crossrec.models.crossrec.calibration import fit_cold_offsets

            self.cold_offset_.zero_()
            self.cold_offset_.copy_(fit_cold_offsets(self, bundle, categories).to(self.cold_offset_.device))
        self.train(was)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:  # type: ignore[override]
        self.warmed = True  # loaded weights are trained ones: a later setup (`crossrec update`) must keep them
        # artifacts written before the cold offset existed load with none
        state_dict.setdefault(prefix + "cold_offset_", torch.zeros_like(self.cold_offset_))
        state_dict.setdefault(prefix + "shrink_kappa_", torch.zeros_like(self.shrink_kappa_))
        state_dict.setdefault(prefix + "user_cats_", torch.ones_like(self.user_cats_))  # before the prior: nobody is new
        if self.new_prior is not None:
            state_dict.setdefault(prefix + "new_prior", torch.zeros_like(self.new_prior))
        state_dict.setdefault(prefix + "borrow_row_", torch.full_like(self.borrow_row_, -1))
        for name in ("borrow_nbr_", "borrow_w_"):  # data-dependent shapes: adopt the stored ones
            stored = state_dict.setdefault(prefix + name, getattr(self, name)[:0])
            self._buffers[name] = torch.empty_like(stored, device=self.borrow_row_.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def uses_text(self) -> bool:
        """The item tower reads language-model vectors of the items' text (set up from the Bundle)."""
        return "text" in self.config.item_tower

    @property
    def uses_images(self) -> bool:
        """The item tower reads image vectors (`item_tower` naming `image`; `ReadsImages`)."""
        return "image" in self.config.item_tower

    @property
    def image_dim(self) -> int | None:
        """Width of the image vectors the item tower reads, or None (none attached)."""
        return self.items.image_dim

    def set_content(self, vectors: Tensor, present: Tensor | None = None) -> None:
        """Attach per-item content vectors [n_items, k] to the item tower (see ItemTower.set_content)."""
        self.items.set_content(vectors, present)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared', 'specific' and 'heads' parameters (see the module docstring)."""
        specific = list(self.user_cat_emb.parameters()) if self.user_cat_emb is not None else []
        heads = [self.items.bias, self.cat_gate, self.global_bias] + list(self.weighting.parameters())
        if self.items.text_bias is not None:
            heads += list(self.items.text_bias.parameters())
        taken = {id(p) for p in specific + heads}
        shared = [p for p in self.parameters() if id(p) not in taken]
        return {"shared": shared, "specific": specific, "heads": heads}

    # ------------------------------------------------------------------ towers
    def _encode(self, hist: Tensor, category: Tensor) -> Tensor:
        assert self.encoder is not None
        return self.encoder(hist, self.item_category_[hist], category, self.items, self.items.content if self.items.has_text else None)

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
        if self.encoder is not None and hist is not None:
            u = u + self._encode(hist, category)
        return u * self.cat_gate.index_select(0, category)  # index_select: its backward is an index_add_

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        cat = torch.full_like(users, category)
        return self._user(users, cat, self.history_[users] if self.encoder is not None else None)  # [B, d]

    def _untrained(self, items: Tensor) -> Tensor:
        """[...] True for items without training interactions."""
        return self.log_count_[items.clamp_max(self.sizes.n_items - 1)] == 0

    def _seen(self, items: Tensor) -> Tensor | None:
        """[...] 1 where an item's ID part is read: it has training interactions, or its text
        neighbours lent it theirs (borrow.py); else 0, and it is scored from its text alone, ID
        hidden, as ID dropout trained the tower to. None without text+id."""
        if not (self.items.use_text and self.items.use_id):
            return None
        return (~self._untrained(items) | self._borrowed(items)).float()

    def item_vectors(self, category: int) -> Tensor:
        idx = self.index[category]
        return self.items(idx, self._seen(idx))  # [n_items(c), d]

    def _item_bias(self, items: Tensor, seen: Tensor | None, category: Tensor | int) -> Tensor:
        """[...] the items' biases at scoring time: the tower's, plus the category's cold offset
        for items without training interactions."""
        b = self.items.bias_of(items, seen)
        if seen is None:
            return b
        off = self.cold_offset_[category] if isinstance(category, int) else self.cold_offset_.index_select(0, category.reshape(-1)).view(category.shape)
        return b + self._untrained(items).float() * off

    def extra_scores(self, users: Tensor, category: int, into: Tensor | None = None) -> Tensor:
        """[B, n_items(c)] what `score` adds to the towers' dot product: item bias, the prior of
        users new to c (prior.py), neighbourhood term, and the global bias of rating prediction.
        `into` [B, n_items(c)] (autograd off): added into that block in place, which is returned."""
        idx = self.index[category]
        bias = self._item_bias(idx, self._seen(idx), category)
        s = bias.unsqueeze(0).expand(len(users), -1) if into is None else into.add_(bias)
        if self.new_prior is not None:
            w = self.prior_weight(users, category)
            s = s + self.prior_scores(w, idx) if into is None else s.addr_(w, self.log_count_.index_select(0, idx))
        if self._reads_side:
            cat = torch.full_like(users, category)
            if into is None:
                s = s + self._side(self.history_[users], cat, users, idx, leave_out=False)
            else:
                self._side(self.history_[users], cat, users, idx, leave_out=False, into=s)
        if self.config.loss == "mse":
            s = s + self.global_bias if into is None else s.add_(self.global_bias)
        return s

    def score(self, users: Tensor, category: int) -> Tensor:
        u, v = self.user_vectors(users, category), self.item_vectors(category)
        if torch.is_grad_enabled():
            s = u @ v.T + self.extra_scores(users, category)
        else:  # inference: one [B, n] block (reused memory inside the evaluator), the other terms added into it
            s = self.extra_scores(users, category, into=dot_scores(u, v))
        return self._zero_shot(users, category, self.index[category], s)  # a category nobody trained on (borrow.py)

    predicts_ratings = property(lambda self: self.config.loss == "mse")

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings of aligned (user, item) pairs (meaningful with loss='mse')."""
        cat = self.item_category_[items]
        u = self._user(users, cat, self.history_[users] if self.encoder is not None else None)
        seen = self._seen(items)
        pred = (u * self.items(items, seen)).sum(-1) + self.items.bias_of(items, seen) + self.global_bias
        if self._reads_side:
            pred = pred + self._side(self.history_[users], cat, users, items.unsqueeze(1), leave_out=False).squeeze(1)
        return pred

    # ------------------------------------------------------------------ history-based terms
    @property
    def _reads_side(self) -> bool:  # a term scored from the user's history besides the encoder
        return self.neighbours is not None or self.content_term is not None

    def _side(self, hist: Tensor, category: Tensor, users: Tensor, items: Tensor, keep: Tensor | None = None,
              leave_out: bool | None = None, into: Tensor | None = None) -> Tensor:
        """The terms scored from the user's history: the neighbourhood term (co-occurrence; the
        row's own pair left out in training unless ablated; zero where `keep` drops the item's
        ID signals) plus the content term (text). items [M] -> [B, M]; items [B, n] -> [B, n].
        `into` (autograd off, no `keep`): added into that block in place, which is returned."""
        out: Tensor | None = into
        if self.neighbours is not None:
            lo = self.config.neighbourhood.leave_out if leave_out is None else leave_out
            if into is not None and keep is None:
                self.neighbours.at(hist, category, users, items, leave_out=lo, out=into)
            else:
                n = self.neighbours.at(hist, category, users, items, leave_out=lo)
                n = n if keep is None else n * keep
                out = n if out is None else out.add_(n)
        if self.content_term is not None:
            prof = self.content_term.profile(hist, category, self.item_category_[hist], self.items.text_)
            t = self.items.text_[items]
            c = prof @ t.T if items.dim() == 1 else (prof.unsqueeze(1) * t).sum(-1)
            out = c if out is None else (out.add_(c) if out is into else out + c)
        assert out is not None
        return self._borrowed_side(hist, users, items, out)

    def _items(self, items: Tensor, fresh: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Training-time item vectors [..., d], biases [...] and the ID-dropout mask [...] (None
        without text): one draw hides an occurrence's ID embedding, ID bias and neighbourhood
        score together, as a cold item has none of them (DropoutNet's idea)."""
        keep = self.items._id_keep(items)
        return self.items(items, keep, fresh), self.items.bias_of(items, keep), keep

    def _training_history(self, users: Tensor, pos_items: Tensor, cat: Tensor) -> tuple[Tensor, Tensor | None]:
        """[B, L] the history a training row reads (never its target; dropout and category dropout in
        training mode) and [B] which rows had their in-category history hidden (or None)."""
        c = self.config.history
        hide = None
        if c.rows == "causal" and self.training and len(self.seq_starts_):
            index = {"items": self.seq_items_, "starts": self.seq_starts_, "keys": self.seq_keys_, "positions": self.seq_positions_}
            hist = causal_history(index, users, pos_items, c.length, self.pad, self.sizes.n_items)
        else:
            hist = self.history_[users]  # [B, L], a copy
        # masked_fill_, not hist[mask] = pad: a boolean index is a nonzero + scatter, several times slower
        hist.masked_fill_(hist == pos_items.unsqueeze(1), self.pad)  # never read the target itself
        if self.training and c.dropout > 0:  # drop whole history items
            hist.masked_fill_(torch.rand(hist.shape, device=hist.device) < c.dropout, self.pad)
        if self.training and c.category_dropout > 0:
            hide = torch.rand(len(users), device=users.device) < c.category_dropout
            in_cat = self.item_category_[hist] == cat.unsqueeze(1)
            hist.masked_fill_(in_cat & hide.unsqueeze(1), self.pad)
        return hist, hide

    def loss(self, batch: Batch) -> Tensor:
        c, obj = self.config, self.config.objective
        users, cat, pos_items = batch.users, batch.category, batch.pos_items
        hist = hide = None
        if self.encoder is not None or self._reads_side:
            hist, hide = self._training_history(users, pos_items, cat)
        u = self._user(users, cat, hist if self.encoder is not None else None, hide)  # [B, d]
        p, pb, pk = self._items(pos_items, fresh=True)  # [B, d], [B]; a live text encoder reads the positives
        nhist = hist if self._reads_side else None  # the neighbourhood and content terms read the same history
        reg = l2_penalty(u, p)
        pw = self.row_prior(cat, hide)  # [B] or None: the prior of rows read as new to their category (prior.py)
        if c.loss == "mse":
            if batch.ratings is None:
                raise ConfigError("crossrec.loss='mse' needs explicit ratings in the data")
            warm_start_bias(self.global_bias, self.bias_ready_, batch.ratings)
            pred = (u * p).sum(-1) + pb + self.global_bias
            if nhist is not None:
                pred = pred + self._side(nhist, cat, users, pos_items.unsqueeze(1), None if pk is None else pk.unsqueeze(1)).squeeze(1)
            ok = torch.isfinite(batch.ratings)
            row = torch.zeros_like(pred)
            row[ok] = (pred[ok] - batch.ratings[ok]) ** 2
            main = self.weighting(row, cat) if bool(ok.any()) else mse_loss(pred, batch.ratings)
        elif c.loss == "softmax" and obj.full_softmax:
            main = self.weighting(self._full_softmax(u, batch, nhist, pw), cat)
        elif c.loss == "softmax" and obj.in_batch:
            main = self.weighting(self._mixed_softmax(u, p, pb, batch, nhist, pk, pw), cat)
        else:
            n, nb, nk = self._items(batch.neg_items)  # [B, n_neg, d], [B, n_neg]
            pos = (u * p).sum(-1) + pb
            neg = (u.unsqueeze(1) * n).sum(-1) + nb
            if nhist is not None:
                pos = pos + self._side(nhist, cat, users, pos_items.unsqueeze(1), None if pk is None else pk.unsqueeze(1)).squeeze(1)
                neg = neg + self._side(nhist, cat, users, batch.neg_items, nk)
            if pw is not None:
                pos, neg = pos + self.prior_scores(pw, pos_items.unsqueeze(1)).squeeze(1), neg + self.prior_scores(pw, batch.neg_items)
            main = self.weighting(pair_loss(c.loss, pos, neg, reduction="none"), cat)
            reg = reg + l2_penalty(n)
        total = main + c.reg * reg
        if self.encoder is not None and obj.alpha > 0 and hist is not None:
            total = total + obj.alpha * self._transfer_loss(users, cat)
        if self.classifier is not None:
            total = total + obj.adversarial * self._adversarial_loss(users, cat)
        return total
