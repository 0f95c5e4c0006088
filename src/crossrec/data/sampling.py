"""Vectorised in-category negative sampling over a Bundle's training split.

A negative for a positive (user, item, category) is drawn uniformly from that category's items;
draws that hit an item the user has in training are redrawn (a few vectorised rounds, then kept:
with realistic densities almost none remain).

Example:
    >>> sampler = TrainSampler(bundle, batch_size=1024, n_negatives=4, seed=0)  # doctest: +SKIP
    >>> batch = next(iter(sampler)); batch.neg_items.shape                      # doctest: +SKIP
    torch.Size([1024, 4])
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from crossrec.data.batch import Batch
from crossrec.data.bundle import Bundle


class TrainSampler:
    """Yields shuffled training Batches with in-category negatives.

    Args:
        bundle: the prepared data; its train split is sampled.
        batch_size: positives per batch.
        n_negatives: negatives per positive.
        categories: restrict to these category indices (None = all).
        seed: seed of the shuffling and negative draws.
        resample_rounds: redraw rounds for negatives that are training positives.
        rank, world: multi-process training: every process draws the same global batches (same
            seed) and yields rows `rank::world` of each (all of a batch smaller than `world`).

    The negatives are drawn for CHUNK_BATCHES batches at a time (one vectorised call instead of
    one per batch); iterating and `epoch_chunks` give the same rows, negatives and batches.
    """

    CHUNK_BATCHES = 64

    def __init__(
        self,
        bundle: Bundle,
        batch_size: int = 2048,
        n_negatives: int = 1,
        categories: Sequence[int] | None = None,
        seed: int = 0,
        resample_rounds: int = 3,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch_size < 1 or n_negatives < 1:
            raise ValueError("batch_size and n_negatives must be >= 1")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world {world}")
        self.rank, self.world = rank, world
        rows = bundle.rows("train", categories)
        self.users = torch.from_numpy(rows["user"].to_numpy().astype(np.int64))
        self.items = torch.from_numpy(rows["item"].to_numpy().astype(np.int64))
        self.category = torch.from_numpy(rows["category"].to_numpy().astype(np.int64))
        self.ratings = (
            torch.from_numpy(rows["rating"].fill_null(float("nan")).to_numpy().astype(np.float32))
            if bundle.has_ratings
            else None
        )
        # All items of all categories laid end to end; category c owns [start[c], start[c]+size[c]).
        order, offsets = bundle.items_by_category()
        self.cat_items = torch.from_numpy(order.astype(np.int64))
        self.cat_start = torch.from_numpy(offsets[:-1].astype(np.int64))
        self.cat_size = torch.from_numpy(np.diff(offsets).astype(np.int64))
        self.n_items = bundle.n_items
        # Sorted (user * n_items + item) keys of all training pairs, for membership tests.
        self.seen = KeySet(self.users * self.n_items + self.items)
        self.batch_size = batch_size
        self.n_negatives = n_negatives
        self.resample_rounds = resample_rounds
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.users) + self.batch_size - 1) // self.batch_size

    @property
    def n_rows(self) -> int:
        return int(len(self.users))

    def _is_seen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.seen.contains(users * self.n_items + items)

    def sample_negatives(self, users: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """[B, n_negatives] global item ids drawn from each row's category."""
        shape = (len(users), self.n_negatives)
        # 1-D gathers are index_select: advanced indexing costs several times more on CPU.
        size = self.cat_size.index_select(0, category).unsqueeze(1).expand(shape)
        start = self.cat_start.index_select(0, category).unsqueeze(1).expand(shape)
        u = users.unsqueeze(1).expand(shape)

        def draw(n: int, sz: torch.Tensor, st: torch.Tensor) -> torch.Tensor:
            r = torch.rand(n, generator=self.generator)
            return self.cat_items.index_select(0, st + (r * sz).long().clamp_max(sz - 1))

        size, start, u = size.reshape(-1), start.reshape(-1), u.reshape(-1)
        neg = draw(size.numel(), size, start)
        # Each round checks only the draws made in the round before it (all of them at first).
        todo = torch.nonzero(self._is_seen(u, neg)).squeeze(1)
        for _ in range(self.resample_rounds):
            if len(todo) == 0:
                break
            neg[todo] = draw(len(todo), size.index_select(0, todo), start.index_select(0, todo))
            todo = todo[self._is_seen(u.index_select(0, todo), neg.index_select(0, todo))]
        return neg.view(shape)

    def _chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The shuffled epoch in chunks of CHUNK_BATCHES whole batches: (row indices, users,
        categories, negatives), the negatives of a chunk drawn in one vectorised call."""
        perm = torch.randperm(len(self.users), generator=self.generator)
        step = self.batch_size * self.CHUNK_BATCHES
        for i in range(0, len(perm), step):
            idx = perm[i : i + step]
            users, cats = self.users.index_select(0, idx), self.category.index_select(0, idx)
            yield idx, users, cats, self.sample_negatives(users, cats).contiguous()

    def epoch_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch as (users, positives, negatives [n, n_negatives]) chunks of CHUNK_BATCHES
        whole batches: exactly the rows, negatives and batch boundaries that iterating yields, for
        a step that takes many batches per call (training/fused.py). One process only."""
        if self.world > 1:
            raise ValueError("epoch_chunks draws for one process (world 1)")
        for idx, users, _, neg in self._chunks():
            yield users, self.items.index_select(0, idx), neg

    def __iter__(self) -> Iterator[Batch]:
        for idx, users, cats, neg in self._chunks():
            pos = self.items.index_select(0, idx)
            ratings = None if self.ratings is None else self.ratings.index_select(0, idx)
            for i in range(0, len(idx), self.batch_size):
                end = min(i + self.batch_size, len(idx))
                rows: slice | torch.Tensor = slice(i, end)
                if self.world > 1 and end - i >= self.world:  # this process's share of the global batch
                    rows = torch.arange(i + self.rank, end, self.world)
                yield Batch(
                    users=users[rows],
                    pos_items=pos[rows],
                    neg_items=neg[rows],
                    category=cats[rows],
                    ratings=None if ratings is None else ratings[rows],
                )


class KeySet:
    """Exact membership in a fixed set of int64 keys (e.g. user * n_items + item training pairs):
    a one-probe bit filter rules out most keys, and only the keys it lets through (the members and
    about 1/16 of the rest) pay the binary search over the sorted keys. The tensors follow the
    queried keys' device on first use."""

    def __init__(self, keys: torch.Tensor) -> None:
        self.keys = torch.unique(keys)  # sorted
        self.bits, self.words = _bit_filter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, keys: torch.Tensor) -> torch.Tensor:
        """[n] bool: which of `keys` are in the set."""
        if self.words.device != keys.device:
            self.keys, self.words = self.keys.to(keys.device), self.words.to(keys.device)
        maybe = _bit_test(self.words, self.bits, keys)
        if len(self.keys) == 0:
            return maybe
        hit = torch.nonzero(maybe).squeeze(1)
        k = keys.index_select(0, hit)
        pos = torch.searchsorted(self.keys, k).clamp_max(len(self.keys) - 1)
        maybe[hit] = self.keys.index_select(0, pos) == k
        return maybe


_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64: Fibonacci hashing


def _slot(keys: torch.Tensor, bits: int) -> torch.Tensor:
    """The top `bits` bits of a multiplicative hash of int64 keys (wrap-around multiply)."""
    return (keys * _GOLDEN >> (64 - bits)) & ((1 << bits) - 1)


def _bit_filter(keys: torch.Tensor, bits_per_key: int = 16, max_bits: int = 34) -> tuple[int, torch.Tensor]:
    """A one-hash bit set of `keys` (about `bits_per_key` bits per key, packed in int64 words):
    no false negatives; a key not in the set passes with probability ~1/bits_per_key."""
    bits = max(6, min(max_bits, int(np.ceil(np.log2(max(1, len(keys)) * bits_per_key)))))
    slots = torch.unique(_slot(keys, bits))  # distinct bits, so adding their words' values is an OR
    words = torch.zeros(1 << (bits - 6), dtype=torch.int64)
    words.scatter_add_(0, slots >> 6, torch.ones_like(slots) << (slots & 63))
    return bits, words


def _bit_test(words: torch.Tensor, bits: int, keys: torch.Tensor) -> torch.Tensor:
    slots = _slot(keys, bits)
    return ((words[slots >> 6] >> (slots & 63)) & 1).bool()


class Prefetch:
    """Iterate `batches` in a background thread, `depth` batches ahead of the consumer.

    Sampling (random draws, the seen-item check) then overlaps the training step: torch releases
    the GIL inside its ops. The sampler's generator is only touched by that thread, and one epoch's
    iteration ends before anything reads its state (checkpoints are written between epochs).
    Closing the iterator early (an exception in the loop) stops the thread.
    """

    _END = object()

    def __init__(self, batches: Iterable[Any], depth: int = 2) -> None:
        self.batches = batches
        self.depth = depth

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        q: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for item in self.batches:
                    if not put(item):
                        return
                put(self._END)
            except BaseException as e:  # handed to the consumer, raised there
                put(e)

        thread = threading.Thread(target=work, name="crossrec-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()
