"""The flagship's loss (models/crossrec/model.py): the parts `model.objective` (sum_c w_c L_c +
alpha * L_transfer + beta * L_adv + lambda * L2, with the in-category loss from `model.softmax`,
softmax.py, or a pairwise / pointwise loss) and `model.aux` (L_transfer, L_adv).

Example:
    >>> loss = model.objective.loss(batch)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossrec.data.batch import Batch
from crossrec.errors import ConfigError
from crossrec.models.crossrec.objective import GradReverse, first_views
from crossrec.models.history import causal_history
from crossrec.models.losses import l2_penalty, mse_loss, pair_loss, warm_start_bias

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle
    from crossrec.models.crossrec.host import Flagship


class AuxiliaryLosses:
    """The flagship's optional terms besides the in-category loss: a part `CrossRec` owns
    (`model.aux`; the model owns the tables and heads they read): L_transfer (InfoNCE between the
    encodings of a user's history inside and outside the target category) and the adversarial
    category classifier."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def transfer(self, users: Tensor, cat: Tensor) -> Tensor:
        """InfoNCE between the encodings of a user's history inside and outside the target category."""
        m = self.model
        assert m.align is not None
        hist, c, in_cat, out_cat = first_views(m.history_, users, cat, m.item_category_, m.pad)
        ok = in_cat.any(1) & out_cat.any(1)
        if int(ok.sum()) < 2:
            return torch.zeros((), device=users.device)
        hist, in_cat, out_cat, c = hist[ok], in_cat[ok], out_cat[ok], c[ok]
        pad = torch.full_like(hist, m.pad)
        a = F.normalize(m.align(m._encode(torch.where(in_cat, hist, pad), c)), dim=1)
        b = F.normalize(m.align(m._encode(torch.where(out_cat, hist, pad), c)), dim=1)
        logits = a @ b.T / m.config.objective.tau  # [n, n]
        target = torch.arange(len(a), device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    def adversarial(self, users: Tensor, cat: Tensor) -> Tensor:
        """Category classifier behind gradient reversal, on the user's mean item embedding in c."""
        m = self.model
        assert m.classifier is not None
        hist, c, in_cat, _ = first_views(m.history_, users, cat, m.item_category_, m.pad)
        w = in_cat.float()
        ok = w.sum(1) > 0
        if int(ok.sum()) < 2:
            return torch.zeros((), device=users.device)
        view = (m.items(hist[ok]) * w[ok].unsqueeze(-1)).sum(1) / w[ok].sum(1, keepdim=True)
        logits = m.classifier(GradReverse.apply(view, 1.0))
        return F.cross_entropy(logits, c[ok])


class Objective:
    """The flagship's training loss (the module docstring of models/crossrec/model.py): a part
    `CrossRec` owns (`model.objective`), composing the in-category loss (its softmax part,
    `model.softmax`, or a pairwise / pointwise loss) with the auxiliary terms (`model.aux`)."""

    def __init__(self, model: Flagship) -> None:
        self.model = model

    def setup(self, bundle: Bundle) -> None:
        """The training counts the objective reads: rows per category (the weighting, the logQ
        correction) and each item's (logQ; the prior and the cold items read them too)."""
        m = self.model
        train = bundle.split("train")
        counts = np.bincount(train["category"].to_numpy().astype(np.int64), minlength=m.sizes.n_categories).astype(
            np.float64
        )
        m.weighting.setup(counts)
        item_counts = np.bincount(train["item"].to_numpy().astype(np.int64), minlength=m.sizes.n_items)
        m.log_count_ = torch.from_numpy(np.log(item_counts + 1.0).astype(np.float32)).to(m.history_.device)
        m.log_cat_rows_ = torch.from_numpy(np.log(counts + 1.0).astype(np.float32)).to(m.history_.device)

    def items(self, items: Tensor, fresh: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """Training-time item vectors [..., d], biases [...] and the ID-dropout mask [...] (None
        without text): one draw hides an occurrence's ID embedding, ID bias and neighbourhood
        score together, as a cold item has none of them (DropoutNet's idea)."""
        tower = self.model.items
        keep = tower._id_keep(items)
        return tower(items, keep, fresh), tower.bias_of(items, keep), keep

    def training_history(self, users: Tensor, pos_items: Tensor, cat: Tensor) -> tuple[Tensor, Tensor | None]:
        """[B, L] the history a training row reads (never its target; dropout and category dropout in
        training mode) and [B] which rows had their in-category history hidden (or None)."""
        m = self.model
        c = m.config.history
        hide = None
        if c.rows == "causal" and m.training and len(m.seq_starts_):
            index = {"items": m.seq_items_, "starts": m.seq_starts_, "keys": m.seq_keys_, "positions": m.seq_positions_}
            hist = causal_history(index, users, pos_items, c.length, m.pad, m.sizes.n_items)
        else:
            hist = m.history_[users]  # [B, L], a copy
        # masked_fill_, not hist[mask] = pad: a boolean index is a nonzero + scatter, several times slower
        hist.masked_fill_(hist == pos_items.unsqueeze(1), m.pad)  # never read the target itself
        if m.training and c.dropout > 0:  # drop whole history items
            hist.masked_fill_(torch.rand(hist.shape, device=hist.device) < c.dropout, m.pad)
        if m.training and c.category_dropout > 0:
            hide = torch.rand(len(users), device=users.device) < c.category_dropout
            in_cat = m.item_category_[hist] == cat.unsqueeze(1)
            hist.masked_fill_(in_cat & hide.unsqueeze(1), m.pad)
        return hist, hide

    def predict_rating(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] predicted ratings of aligned (user, item) pairs (meaningful with loss='mse')."""
        m = self.model
        cat = m.item_category_[items]
        u = m.user_tower(users, cat, m.history_[users] if m.encoder is not None else None)
        seen = m.cold.seen(items)
        pred = (u * m.items(items, seen)).sum(-1) + m.items.bias_of(items, seen) + m.global_bias
        if m.side.reads:
            pred = pred + m.side(m.history_[users], cat, users, items.unsqueeze(1), leave_out=False).squeeze(1)
        return pred

    def loss(self, batch: Batch) -> Tensor:
        """The training loss. With `text.residual` (towers.py) it is the ID flagship's loss in the
        ID stage (the tower is the ID part alone), and in the text stage the same loss with only
        the text parameters trained: everything else is held as the ID stage left it."""
        tower = self.model.items
        if not (tower.has_text and tower.text_stage):
            return self._loss(batch)
        text = {id(p) for p in tower.text_parameters()}
        model = cast(nn.Module, self.model)  # the host protocol names the parts, not nn.Module's methods
        held = [p for p in model.parameters() if p.requires_grad and id(p) not in text]
        for p in held:
            p.requires_grad_(False)
        try:
            return self._loss(batch)
        finally:
            for p in held:
                p.requires_grad_(True)

    def _loss(self, batch: Batch) -> Tensor:
        m = self.model
        c, obj = m.config, m.config.objective
        users, cat, pos_items = batch.users, batch.category, batch.pos_items
        hist = hide = None
        if m.encoder is not None or m.side.reads:
            hist, hide = self.training_history(users, pos_items, cat)
        u = m.user_tower(users, cat, hist if m.encoder is not None else None, hide)  # [B, d]
        p, pb, pk = self.items(pos_items, fresh=True)  # [B, d], [B]; a live text encoder reads the positives
        nhist = hist if m.side.reads else None  # the neighbourhood and content terms read the same history
        reg = l2_penalty(u, p)
        pw = m.prior.rows(cat, hide)  # [B] or None: the prior of rows read as new to their category (prior.py)
        if c.loss == "mse":
            if batch.ratings is None:
                raise ConfigError("crossrec.loss='mse' needs explicit ratings in the data")
            warm_start_bias(m.global_bias, m.bias_ready_, batch.ratings)
            pred = (u * p).sum(-1) + pb + m.global_bias
            if nhist is not None:
                pred = pred + m.side(
                    nhist, cat, users, pos_items.unsqueeze(1), None if pk is None else pk.unsqueeze(1)
                ).squeeze(1)
            ok = torch.isfinite(batch.ratings)
            row = torch.zeros_like(pred)
            row[ok] = (pred[ok] - batch.ratings[ok]) ** 2
            main = m.weighting(row, cat) if bool(ok.any()) else mse_loss(pred, batch.ratings)
        elif c.loss == "softmax" and obj.full_softmax:
            main = m.weighting(m.softmax.full(u, batch, nhist, pw), cat)
        elif c.loss == "softmax" and obj.in_batch:
            main = m.weighting(m.softmax.mixed(u, p, pb, batch, nhist, pk, pw), cat)
        else:
            n, nb, nk = self.items(batch.neg_items)  # [B, n_neg, d], [B, n_neg]
            pos = (u * p).sum(-1) + pb
            neg = (u.unsqueeze(1) * n).sum(-1) + nb
            if nhist is not None:
                pos = pos + m.side(
                    nhist, cat, users, pos_items.unsqueeze(1), None if pk is None else pk.unsqueeze(1)
                ).squeeze(1)
                neg = neg + m.side(nhist, cat, users, batch.neg_items, nk)
            if pw is not None:
                pos, neg = (
                    pos + m.prior.scores(pw, pos_items.unsqueeze(1)).squeeze(1),
                    neg + m.prior.scores(pw, batch.neg_items),
                )
            main = m.weighting(pair_loss(c.loss, pos, neg, reduction="none"), cat)
            reg = reg + l2_penalty(n)
        total = main + c.reg * reg
        if m.encoder is not None and obj.alpha > 0 and hist is not None:
            total = total + obj.alpha * m.aux.transfer(users, cat)
        if m.classifier is not None:
            total = total + obj.adversarial * m.aux.adversarial(users, cat)
        return total


__all__ = ["Objective", "AuxiliaryLosses"]
