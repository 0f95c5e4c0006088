"""What the flagship's parts read from the model that owns them (`Flagship`), typed once here: each
part holds the model and calls it, but imports only this module, never model.py (no two files
import each other: tests/unit/test_floors.py). `CrossRec` (model.py) satisfies the protocol.

Example:
    >>> class Part:                                            # doctest: +SKIP
    ...     def __init__(self, model: Flagship) -> None: self.model = model
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from torch import Tensor, nn

if TYPE_CHECKING:
    from crossrec.data.batch import Batch, Sizes
    from crossrec.models.category_index import CategoryIndex
    from crossrec.models.crossrec.config import CrossRecConfig
    from crossrec.models.crossrec.content import ContentTerm
    from crossrec.models.crossrec.encoder import HistoryEncoder
    from crossrec.models.crossrec.neighbourhood import NeighbourhoodTerm
    from crossrec.models.crossrec.objective import CategoryWeighting
    from crossrec.models.crossrec.towers import ItemTower


class UserTowerPart(Protocol):
    def __call__(
        self, users: Tensor, category: Tensor, hist: Tensor | None, hide_specific: Tensor | None = None
    ) -> Tensor: ...


class SidePart(Protocol):
    @property
    def reads(self) -> bool: ...
    def __call__(
        self,
        hist: Tensor,
        category: Tensor,
        users: Tensor,
        items: Tensor,
        keep: Tensor | None = None,
        leave_out: bool | None = None,
        into: Tensor | None = None,
    ) -> Tensor: ...


class PriorPart(Protocol):
    def weight(self, users: Tensor, category: int) -> Tensor: ...
    def rows(self, category: Tensor, hide: Tensor | None) -> Tensor | None: ...
    def scores(self, weight: Tensor, items: Tensor) -> Tensor: ...


class PairsPart(Protocol):
    def rows(self, users: Tensor, category: Tensor) -> tuple[Tensor, Tensor]: ...
    def has(self, users: Tensor, category: int) -> Tensor: ...


class BorrowPart(Protocol):
    def __call__(self) -> None: ...
    def lending(self) -> Tensor: ...
    def borrowed(self, items: Tensor) -> Tensor: ...
    def side(self, hist: Tensor, users: Tensor, items: Tensor, out: Tensor) -> Tensor: ...
    def lender_scores(self, users: Tensor, nbr: Tensor, w: Tensor) -> Tensor: ...
    def untrained_category(self, category: int) -> bool: ...
    def zero_shot(self, users: Tensor, category: int, items: Tensor, s: Tensor) -> Tensor: ...


class ColdPart(Protocol):
    def untrained(self, items: Tensor) -> Tensor: ...
    def seen(self, items: Tensor) -> Tensor | None: ...
    def bias(self, items: Tensor, seen: Tensor | None, category: Tensor | int) -> Tensor: ...


class ObjectivePart(Protocol):
    def items(self, items: Tensor, fresh: bool = False) -> tuple[Tensor, Tensor, Tensor | None]: ...
    def training_history(self, users: Tensor, pos_items: Tensor, cat: Tensor) -> tuple[Tensor, Tensor | None]: ...


class SoftmaxPart(Protocol):
    def mixed(
        self,
        u: Tensor,
        p: Tensor,
        pb: Tensor,
        batch: Batch,
        hist: Tensor | None = None,
        pk: Tensor | None = None,
        prior: Tensor | None = None,
    ) -> Tensor: ...
    def full(self, u: Tensor, batch: Batch, hist: Tensor | None = None, prior: Tensor | None = None) -> Tensor: ...


class AuxPart(Protocol):
    def transfer(self, users: Tensor, cat: Tensor) -> Tensor: ...
    def adversarial(self, users: Tensor, cat: Tensor) -> Tensor: ...


class Flagship(Protocol):
    """The model as its parts see it: options, sizes, modules and tables, buffers, the other parts."""

    config: CrossRecConfig
    sizes: Sizes
    pad: int
    training: bool
    compiled: bool
    items: ItemTower
    user_emb: nn.Embedding | None
    user_cat_emb: nn.Embedding | None
    encoder: HistoryEncoder | None
    align: nn.Linear | None
    classifier: nn.Linear | None
    cat_gate: nn.Parameter
    weighting: CategoryWeighting
    global_bias: nn.Parameter
    new_prior: nn.Parameter | None
    neighbours: NeighbourhoodTerm | None
    content_term: ContentTerm | None
    index: CategoryIndex
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

    @property
    def user_tower(self) -> UserTowerPart: ...
    @property
    def side(self) -> SidePart: ...
    @property
    def prior(self) -> PriorPart: ...
    @property
    def pairs(self) -> PairsPart: ...
    @property
    def borrow(self) -> BorrowPart: ...
    @property
    def cold(self) -> ColdPart: ...
    @property
    def objective(self) -> ObjectivePart: ...
    @property
    def softmax(self) -> SoftmaxPart: ...
    @property
    def aux(self) -> AuxPart: ...
    def _encode(self, hist: Tensor, category: Tensor) -> Tensor: ...
    def user_vectors(self, users: Tensor, category: int) -> Tensor: ...
    def item_vectors(self, category: int) -> Tensor: ...
    def score(self, users: Tensor, category: int) -> Tensor: ...


__all__ = ["Flagship"]
