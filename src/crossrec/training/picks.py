"""What post-training picks measure with: `pick_tools()` hands a model the Evaluator and its
ranking kernels (`models.base.PickTools`), so a model's `calibrate` picks options on validation
without importing evaluation, which sits on a higher floor than models."""

from __future__ import annotations

from typing import Any

from crossrec.data.bundle import Bundle
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.evaluator import Evaluator
from crossrec.evaluation.metrics import ndcg_at_k, pad_positives, rank_items_top
from crossrec.models.base import PickTools


def _evaluator(bundle: Bundle, k: int, split: str) -> Any:
    return Evaluator(bundle, EvalConfig(ks=(k,), slices=False, auc=False, beyond=False), split=split)


def pick_tools() -> PickTools:
    """The tools the trainer passes to `model.calibrate` (`models.base.Calibrates`)."""
    return PickTools(
        evaluator=_evaluator, pad_positives=pad_positives, rank_items_top=rank_items_top, ndcg_at_k=ndcg_at_k
    )
