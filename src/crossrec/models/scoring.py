"""Dot-product score blocks that reuse their memory inside the evaluator's loop.

A full-ranking block of 1,024 users x 50,000 items is 205 MB. Allocating a fresh one per batch
costs more than computing it: blocks that large come straight from the kernel as new pages, and
writing to fresh pages faults on every one of them (docs/DESIGN.md, `evaluation`).
`ScoreMemory` lends one buffer to
one score block at a time; the evaluator gives it back when it is done with the block, and the
next `dot_scores` writes into it. Outside `ScoreMemory.active()` (training, serving) or with
autograd on, `dot_scores` is a plain matmul, so nothing else changes.

Example:
    >>> with ScoreMemory.active() as mem:                      # doctest: +SKIP
    ...     s = dot_scores(u, item_table)   # [B, n]
    ...     ...                             # use s, then:
    ...     mem.give_back(s)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

_ACTIVE: contextvars.ContextVar[ScoreMemory | None] = contextvars.ContextVar("crossrec_score_memory", default=None)


class ScoreMemory:
    """One reusable flat buffer, lent to one score block at a time."""

    def __init__(self) -> None:
        self._free: Tensor | None = None  # the buffer, when nobody holds it
        self._lent: Tensor | None = None  # the buffer, while a block holds it

    @classmethod
    @contextlib.contextmanager
    def active(cls) -> Iterator[ScoreMemory]:
        mem = cls()
        token = _ACTIVE.set(mem)
        try:
            yield mem
        finally:
            _ACTIVE.reset(token)
            mem._free = mem._lent = None

    def borrow(self, rows: int, cols: int, like: Tensor) -> Tensor:
        """A [rows, cols] block of the buffer (grown when too small); the buffer is lent until
        `give_back`. While it is lent, a second borrower gets fresh memory."""
        n = rows * cols
        buf = self._free
        if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
            if self._lent is not None:  # still held by another block: do not take it away
                return torch.empty((rows, cols), dtype=like.dtype, device=like.device)
            buf = torch.empty(n, dtype=like.dtype, device=like.device)
        self._free, self._lent = None, buf
        return buf[:n].view(rows, cols)

    def lent(self, block: Tensor) -> bool:
        """Whether `block` is cut from this memory's lent buffer (the caller's to write into)."""
        return self._lent is not None and block.data_ptr() == self._lent.data_ptr()

    def give_back(self, block: Tensor) -> None:
        """Return the buffer `block` was cut from (anything else is ignored)."""
        if self.lent(block):
            self._free, self._lent = self._lent, None


def lent_block(block: Tensor) -> bool:
    """Whether `block` is a score block lent by the active `ScoreMemory` (not a model's storage)."""
    mem = _ACTIVE.get()
    return mem is not None and mem.lent(block)


def dot_scores(u: Tensor, items: Tensor) -> Tensor:
    """`u @ items.T` ([B, d] x [n, d] -> [B, n]), written into the active `ScoreMemory`'s buffer
    when there is one and autograd is off."""
    mem = _ACTIVE.get()
    if mem is None or torch.is_grad_enabled() or u.dtype != items.dtype:
        return u @ items.T
    return torch.mm(u, items.T, out=mem.borrow(u.shape[0], items.shape[0], u))
