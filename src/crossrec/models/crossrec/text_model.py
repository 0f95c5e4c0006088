"""The flagship with a text item tower (`item_tower` naming `text`): what the ID flagship is, plus
what only a text tower can do, declared by the methods it adds: train its language model inside
the loop (`TrainsEncoder`, models/base.py), train in stages under `text.residual` (`Staged`: the
ID part, then the text part), and, served, score and embed items known only by
their text (serving/flagship.py gives it `TextFlagshipServing`). The registry builds this class
for such configs (`variant` in models/crossrec/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from crossrec.models.crossrec.model import CrossRec

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle


class TextCrossRec(CrossRec):
    """`CrossRec` whose item tower reads the items' text vectors (see the module docstring)."""

    def attach_encoder(self, live: nn.Module, lr: float, train_items: int) -> None:
        self.text_encoder.attach(live, lr, train_items)

    def own_lr(self) -> list[tuple[list[nn.Parameter], float]]:
        return self.text_encoder.own_lr()

    def epoch_end(self) -> None:
        self.text_encoder.epoch_end()

    def fit_end(self) -> None:
        self.text_encoder.fit_end()

    def setup(self, bundle: Bundle, categories: Sequence[int] | None = None) -> None:
        """`CrossRec.setup`; under `text.residual` every fit (each stage of a transfer paradigm,
        an update) starts at the ID stage (a resumed fit gets its stage back from the checkpoint)."""
        super().setup(bundle, categories)
        if self.items.residual:
            self.items.set_text_stage(False)

    def next_stage(self) -> bool:
        """`text.residual`: after the ID stage (the ID flagship's training, early-stopped on its own
        validation), the text stage trains the text part on top (towers.py); False once there."""
        tower = self.items
        if not tower.residual or tower.text_stage:
            return False
        tower.set_text_stage(True)
        return True
