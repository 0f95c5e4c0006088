"""The flagship cross-category model (docs/DESIGN.md; References: DIN, SASRec, DTCDR, CDRIB, Koren 2008, DropoutNet):

    u_c = g_c * (p_u + s_{u,c} + Enc(history_u, c))    shared + category-specific user embedding + encoder
                                                       over u's recent items in *all* categories
    score(u, i) = <u_c, v_i> + b_i + P_c(u, i) + N_c(u, i) + T_c(u, i)

A user with no history in c is served from the other categories; training teaches that case (with
probability `category_dropout` a row's in-category history and specific embedding are hidden).
`extra_scores`: item bias, the prior P_c of users new to c, neighbourhood N_c, content T_c, and the
global bias of rating prediction. Loss: sum_c w_c L_c + alpha L_transfer + beta L_adv + lambda L2.

Parts (plain objects holding the model, as torchrec's DLRM holds its arches; the tensors they read
stay registered on the model, so state-dict keys are the ones artifacts store): `user_tower`, `side`
(N_c, T_c), `pairs`, `objective`, `softmax`, `aux`, `prior`, `borrow`, `shrink`, `trust`, `cold`,
`text_encoder`.
`steps`: what `calibrate` runs, in order. Buffers: state.py. With a text item tower the registry
builds `TextCrossRec` (text_model.py). The serving adapters live in serving/flagship.py.

    >>> m = CrossRec(CrossRecConfig(dim=64), sizes); m.setup(bundle)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from crossrec.data.batch import Batch, Sizes
from crossrec.errors import ConfigError
from crossrec.models.base import Calibrates
from crossrec.models.category_index import CategoryIndex
from crossrec.models.crossrec.borrow import Borrowing
from crossrec.models.crossrec.calibration import ColdOffset
from crossrec.models.crossrec.config import CrossRecConfig
from crossrec.models.crossrec.content import ContentTerm
from crossrec.models.crossrec.encoder import HistoryEncoder
from crossrec.models.crossrec.live_text import LiveTextEncoder
from crossrec.models.crossrec.loss import AuxiliaryLosses, Objective
from crossrec.models.crossrec.neighbourhood import NeighbourhoodTerm
from crossrec.models.crossrec.objective import CategoryWeighting
from crossrec.models.crossrec.pairs import UserCategoryPairs
from crossrec.models.crossrec.prior import NewUserPrior
from crossrec.models.crossrec.shrink import TextShrinkage
from crossrec.models.crossrec.side import HistoryTerms
from crossrec.models.crossrec.softmax import SoftmaxLosses
from crossrec.models.crossrec.state import register_state, stored_defaults
from crossrec.models.crossrec.towers import ItemTower
from crossrec.models.crossrec.trust import TextTrust
from crossrec.models.crossrec.user_tower import UserTower
from crossrec.models.crossrec.warm import warm_start
from crossrec.models.history import history_index, history_matrix
from crossrec.models.scoring import dot_scores

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.base import PickTools


class CrossRec(nn.Module):
    """Shared + category-specific + cross-category-history user tower; ID (+ content) item tower.
    Call `setup(bundle, categories)` before `loss`/`score` (the trainer does): it stores users'
    recent training histories (all categories) and the data-derived parts' state as buffers."""

    # buffers (registered in __init__, read by the parts): histories, logQ counts, prior, text+id calibration
    history_: Tensor
    seq_items_: Tensor
    seq_starts_: Tensor
    seq_keys_: Tensor
    seq_positions_: Tensor
    log_count_: Tensor
    log_cat_rows_: Tensor
    log_cat_items_: Tensor
    bias_ready_: Tensor
    pair_keys_: Tensor
    cold_offset_: Tensor
    shrink_kappa_: Tensor
    text_kappa_: Tensor
    borrow_row_: Tensor
    borrow_nbr_: Tensor
    borrow_w_: Tensor
    item_category_: Tensor

    def __init__(self, config: CrossRecConfig, sizes: Sizes) -> None:
        super().__init__()
        c = config  # value ranges are declared on the config's fields (typed.Bounds)
        self.config, self.sizes, self.pad = c, sizes, sizes.n_items
        n_cat, d = sizes.n_categories, c.dim
        # Built in a fixed order: it is the order the parameters draw their initial values in.
        self.items = ItemTower(sizes.n_items, d, c.init_std, c.item_tower, c.text)
        self.user_emb = nn.Embedding(sizes.n_users, d, sparse=True) if c.user_embedding else None
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=c.init_std)
        self.encoder = HistoryEncoder(c.history, d, n_cat, sizes.n_items) if c.history.encoder != "none" else None
        self.align = nn.Linear(d, d) if self.encoder is not None else None  # projection head of L_transfer
        self.classifier = nn.Linear(d, n_cat) if c.objective.adversarial > 0 else None
        # one row per (user, category) pair with training rows, filled by setup (pairs.py)
        self.user_cat_emb = nn.Embedding(0, d, sparse=True) if c.category_user else None
        self.cat_gate = nn.Parameter(torch.ones(n_cat, d))
        self.weighting = CategoryWeighting(c.objective.category_weights, n_cat)
        self.global_bias = nn.Parameter(torch.zeros(()))  # mse: the mean rating
        self.new_prior = nn.Parameter(torch.zeros(n_cat)) if c.new_user_prior and c.loss != "mse" else None  # prior.py
        nb = c.neighbourhood
        self.neighbours = NeighbourhoodTerm(sizes, nb.k, nb.shrink, c.history.length) if nb.k else None
        self.content_term = (
            ContentTerm(n_cat, sizes.n_items) if "text" in c.item_tower and c.text.content_term else None
        )
        self.index = CategoryIndex(sizes)
        self.warmed = False  # warm_start (warm.py) runs at the first setup only
        self.compiled = True  # on CPU, the in-batch softmax by compiled kernels (models/crossrec/softmax.py)
        register_state(self, sizes, c.history.length)  # data-derived buffers (state.py), filled by setup
        # ---- owned parts (plain objects, not modules: no parameters, no state-dict keys of their own)
        self.user_tower, self.side, self.pairs = UserTower(self), HistoryTerms(self), UserCategoryPairs(self)
        self.objective, self.softmax, self.aux = Objective(self), SoftmaxLosses(self), AuxiliaryLosses(self)
        self.prior, self.borrow, self.shrink, self.cold = (
            NewUserPrior(self),
            Borrowing(self),
            TextShrinkage(self),
            ColdOffset(self),
        )
        self.trust = TextTrust(self)
        self.text_encoder = LiveTextEncoder(self)
        # text.residual: trust before shrinkage, so its kappa 0 is the ID flagship as trained
        ordered = (self.trust, self.shrink) if self.items.residual else (self.shrink, self.trust)
        self.steps: tuple[Calibrates, ...] = (self.borrow, *ordered, self.prior, self.cold)

    # ------------------------------------------------------------------ data-derived state
    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """Store users' recent training histories (all categories, even when training is restricted to
        some: reading the other categories is the point of the model), category sizes, neighbours."""
        dev = self.history_.device
        self.history_ = history_matrix(bundle, self.config.history.length).to(dev)
        if self.config.history.rows == "causal":
            index = history_index(bundle)
            for key in ("items", "starts", "keys", "positions"):
                setattr(self, f"seq_{key}_", index[key].to(dev))
        self.objective.setup(bundle)  # training counts: the weighting, logQ (objective.py)
        self.pairs.setup(bundle)  # the (user, category) pairs trained, and their table (pairs.py)
        if self.neighbours is not None:
            self.neighbours.setup(bundle)
        if "image" in self.config.item_tower and getattr(bundle, "image_vectors", None) is not None:
            self.set_content(torch.from_numpy(bundle.image_vectors), torch.from_numpy(bundle.image_present))
        if self.uses_text:
            text = getattr(bundle, "text_vectors", None)
            if text is None:
                raise ConfigError(
                    f"crossrec.item_tower={self.config.item_tower!r} needs item text vectors: train through "
                    "the pipeline (it encodes them with the `encoder:` section) or set bundle.text_vectors"
                )
            self.items.set_text(torch.from_numpy(text))
        if not self.warmed:  # last: it reads the text adapter built above
            self.warmed = True
            warm_start(self, bundle, categories)

    def calibrate(self, bundle: Bundle, categories: Sequence[int] | None, tools: PickTools) -> None:
        """After training (the trainer calls it), in eval mode: the post-training `steps` in order,
        borrow (borrow.py) -> shrink (shrink.py) -> text trust (trust.py; before shrink under
        `text.residual`) -> prior pick (prior.py) ->
        cold offset (calibration.py); each is a no-op where its option is off or validation lacks what it needs."""
        was = self.training
        self.eval()
        for step in self.steps:
            step.calibrate(bundle, categories, tools)
        self.train(was)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        self.warmed = True  # loaded weights are trained ones: a later setup (`crossrec update`) must keep them
        stored_defaults(
            self, self.user_cat_emb, state_dict, prefix
        )  # artifacts written before a buffer existed (state.py)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    uses_text = property(
        lambda self: "text" in self.config.item_tower, doc="The item tower reads the items' text vectors."
    )
    uses_images = property(
        lambda self: "image" in self.config.item_tower, doc="The item tower reads image vectors (`ReadsImages`)."
    )
    image_dim = property(lambda self: self.items.image_dim, doc="Width of the image vectors the tower reads, or None.")

    def set_content(self, vectors: Tensor, present: Tensor | None = None) -> None:
        """Attach per-item content vectors [n_items, k] to the item tower (see ItemTower.set_content)."""
        self.items.set_content(vectors, present)

    def shardable_tables(self) -> list[str]:
        """The user tables `train.sharding` may move onto TorchRec (training/sharding.py): they grow
        with users and (user, category) pairs, and training reads them only by lookup. The item
        tower stays whole on every process: the history kernels and full-ranking scoring read it
        as one table."""
        return [n for n in ("user_emb", "user_cat_emb") if getattr(self, n) is not None]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """'shared', 'specific' and 'heads' parameters (see the module docstring)."""
        specific = list(self.user_cat_emb.parameters()) if self.user_cat_emb is not None else []
        heads = [self.items.bias, self.cat_gate, self.global_bias] + list(self.weighting.parameters())
        if self.items.text_bias is not None:
            heads += list(self.items.text_bias.parameters())
        taken = {id(p) for p in specific + heads}
        shared = [p for p in self.parameters() if id(p) not in taken]
        return {"shared": shared, "specific": specific, "heads": heads}

    # ------------------------------------------------------------------ the parts, as protocols (models/base.py)
    def loss(self, batch: Batch) -> Tensor:
        return self.objective.loss(batch)

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        return self.objective.predict_rating(users, items)

    # ------------------------------------------------------------------ towers
    def _encode(self, hist: Tensor, category: Tensor) -> Tensor:
        assert self.encoder is not None
        tower = self.items
        if tower.residual:  # the ID flagship's encoder: history without text
            return self.encoder(hist, self.item_category_[hist], category, tower.emb, None)
        return self.encoder(hist, self.item_category_[hist], category, tower, tower.content if tower.has_text else None)

    def user_vectors(self, users: Tensor, category: int) -> Tensor:
        cat = torch.full_like(users, category)
        return self.user_tower(users, cat, self.history_[users] if self.encoder is not None else None)  # [B, d]

    def item_vectors(self, category: int) -> Tensor:
        idx = self.index[category]
        return self.items(idx, self.cold.seen(idx))  # [n_items(c), d]

    def extra_scores(self, users: Tensor, category: int, into: Tensor | None = None) -> Tensor:
        """[B, n_items(c)] what `score` adds to the towers' dot product: item bias, the prior of
        users new to c (prior.py), neighbourhood term, and the global bias of rating prediction.
        `into` [B, n_items(c)] (autograd off): added into that block in place, which is returned."""
        idx = self.index[category]
        bias = self.cold.bias(idx, self.cold.seen(idx), category)
        s = bias.unsqueeze(0).expand(len(users), -1) if into is None else into.add_(bias)
        if self.new_prior is not None:
            w = self.prior.weight(users, category)
            s = s + self.prior.scores(w, idx) if into is None else s.addr_(w, self.log_count_.index_select(0, idx))
        if self.side.reads:
            cat = torch.full_like(users, category)
            if into is None:
                s = s + self.side(self.history_[users], cat, users, idx, leave_out=False)
            else:
                self.side(self.history_[users], cat, users, idx, leave_out=False, into=s)
        if self.config.loss == "mse":
            s = s + self.global_bias if into is None else s.add_(self.global_bias)
        return s

    def score(self, users: Tensor, category: int) -> Tensor:
        u, v = self.user_vectors(users, category), self.item_vectors(category)
        if torch.is_grad_enabled():
            s = u @ v.T + self.extra_scores(users, category)
        else:  # inference: one [B, n] block (reused memory inside the evaluator), the other terms added into it
            s = self.extra_scores(users, category, into=dot_scores(u, v))
        return self.borrow.zero_shot(
            users, category, self.index[category], s
        )  # a category nobody trained on (borrow.py)

    predicts_ratings = property(lambda self: self.config.loss == "mse")
