"""A language model trained with the flagship (encoders/finetune.py): the part `model.text_encoder`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from crossrec.models.crossrec.host import Flagship


class LiveTextEncoder:
    """A language model trained with the rest (encoders/finetune.py): a part `CrossRec` owns
    (`model.text_encoder`) behind the trainer's `TrainsEncoder` protocol (models/base.py), which
    the model implements by calling it. The language model itself rides on the item tower (`live`)."""

    def __init__(self, model: Flagship) -> None:
        self.model, self.lr = model, 0.0

    def attach(self, live: nn.Module, lr: float, train_items: int) -> None:
        """Train the language model with the rest: positives encoded afresh each batch, the
        catalogue re-encoded each epoch (`epoch_end`), the model dropped at `fit_end`."""
        tower = self.model.items
        if not tower.has_text:
            raise ValueError("crossrec: attach a text encoder after setup, to a text item_tower")
        tower.live, tower.train_items, self.lr = live.to(tower.bias.device), train_items, lr

    def own_lr(self) -> list[tuple[list[nn.Parameter], float]]:
        live = self.model.items.live
        return [([p for p in live.parameters() if p.requires_grad], self.lr)] if live is not None else []

    def epoch_end(self) -> None:
        tower = self.model.items
        if tower.live is not None:
            tower.text_ = tower.live.encode_all().detach()  # type: ignore[operator]  # an encoders/finetune.py encoder

    def fit_end(self) -> None:
        self.model.items.live = None  # the artifact keeps the final vectors (text_), not the language model


__all__ = ["LiveTextEncoder"]
