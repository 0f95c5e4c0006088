"""What the service is told while it runs: items added (live at once from their text), feedback
events, and the store that keeps them and carries them between server processes.

With a store, items and feedback reach the service's memory only through it (`sync`): a write is
stored, then every row stored after the last applied one is applied, this process's and other
processes' alike, once each and in the order stored. Server processes sharing the store
(`serve.workers`) call `sync` every `serve.follow_ms`, so what one of them is told, the others
serve within that time. Without a store, writes go straight to memory.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from crossrec.encoders.config import EncoderConfig
from crossrec.models.base import EmbedsText
from crossrec.serving.errors import ServingError
from crossrec.serving.store import Store, StoreError

EVENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
log = logging.getLogger(__name__)


class LiveHost(Protocol):
    """What the writes read and change of the `Service` they are mixed into (serving/service.py)."""

    store: Store | None
    encoder: EncoderConfig
    view: Any  # the model's serving view: its declared capabilities are checked with isinstance
    categories: list[str]
    reads_text: bool
    image_dim: int | None
    _text_model: Any
    _lock: threading.Lock
    _sync_lock: threading.Lock
    _applied: tuple[int, int]
    _cat: dict[str, int]
    _items: dict[str, int]
    _raw_items: list[str]
    _titles: list[str]
    _item_cat: list[int]
    _feedback: dict[str, list[int]]
    _new: dict[int, list[int]]
    _new_text: dict[int, torch.Tensor]
    _new_image: dict[int, torch.Tensor]
    _pad: int
    _vectors: torch.Tensor | None

    def _key(self, raw: str) -> str: ...
    def _item(self, raw: str, field: str = "item") -> int: ...
    def _category(self, name: str | None, field: str = "category") -> int: ...
    def _text(self, value: str, field: str) -> str: ...
    def sync(self, at_start: bool = False) -> int: ...
    def _insert_item(
        self, item: str, c: int, title: str, description: str | None, image: list[float] | None
    ) -> None: ...
    def _new_content(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class LiveWrites:
    """Mixed into `Service` (serving/service.py): its writes, the store's rows, new items' vectors."""

    def warm(self: LiveHost) -> None:
        """Load the text encoder now (a model that reads item text), so that the first item added
        or followed from the store does not wait for it."""
        if self.reads_text and self._text_model is None:
            from crossrec.encoders.text import load_text_model

            self._text_model = load_text_model(self.encoder)

    @property
    def encoder_ready(self: LiveHost) -> bool:
        """True once items can be added or followed without loading the text encoder first (always
        for a model that does not read text)."""
        return not self.reads_text or self._text_model is not None

    def sync(self: LiveHost, at_start: bool = False) -> int:
        """Apply what the store holds beyond what this service has applied: the items added and
        the feedback given, by this process or by any other sharing the store (`serve.workers`;
        each applies the others' writes every `serve.follow_ms`). At start that is everything
        stored while serving earlier. Returns the rows applied (0 without a store)."""
        if self.store is None:
            return 0
        with self._sync_lock:
            items, feedback = self.store.changes_after(*self._applied)
            for row_id, row in items:
                if row["category"] in self._cat:
                    self._insert_item(
                        row["item"], self._cat[row["category"]], row["title"], row["description"], row["image"]
                    )
                else:  # a store shared with, or kept from, other data
                    problem = (
                        f"{getattr(self.store, 'path', 'the store')}: item {str(row['item'])[:60]!r} is in category "
                        f"{str(row['category'])[:60]!r}, which the served model does not have; "
                        "serve with the store of this model (serve.store)"
                    )
                    if at_start:
                        raise StoreError(problem)
                    log.warning(problem)
                self._applied = (row_id, self._applied[1])
            with self._lock:
                for fid, user, item in feedback:
                    if item in self._items:
                        self._feedback[user].append(self._items[item])
                    self._applied = (self._applied[0], fid)
            return len(items) + len(feedback)

    def feedback(self: LiveHost, user: str, item: str, event: str, timestamp: float) -> dict[str, Any]:
        """Record an event (durable when this returns, with a store); the item must be known."""
        i = self._item(item)
        user = self._text(user, "user")
        if not EVENT.match(event):
            raise ServingError(f"event={event!r}; expected a lower-case word like click, purchase or view", "event")
        if not np.isfinite(timestamp) or timestamp < 0:
            raise ServingError(f"timestamp={timestamp}; expected seconds since the epoch", "timestamp")
        key = self._key(user)
        if self.store is None:
            with self._lock:
                self._feedback[key].append(i)
            return {"id": 0, "stored": False}
        fid = self.store.add_feedback(key, item, event, float(timestamp))
        self.sync()  # applied through the store, as another process's feedback is: once, in order
        return {"id": fid, "stored": True}

    def add_item(
        self: LiveHost,
        item: str,
        category: str,
        title: str,
        description: str | None = None,
        image_vector: list[float] | None = None,
    ) -> dict[str, Any]:
        """Add an item, recommendable at once from its text (a model that reads item text only)."""
        c = self._category(category)
        item, title = self._text(item, "item"), self._text(title, "title")
        description = None if description is None else self._text(description, "description")
        if item in self._items:
            raise ServingError(f"item {item!r} exists already", "item", 409)
        if not self.reads_text:
            raise ServingError(
                "the served model cannot score items from their text: train one with a text "
                "item_tower (crossrec) or textknn",
                "title",
                409,
            )
        if not title.strip():
            raise ServingError("title is empty", "title")
        if image_vector is not None and (
            not np.all(np.isfinite(image_vector))
            or (self.image_dim is not None and len(image_vector) != self.image_dim)
        ):
            raise ServingError(
                f"image_vector: expected {self.image_dim or 'some'} finite numbers, got {len(image_vector)}",
                "image_vector",
            )
        if self.store is not None:
            self.store.add_item(item, category, title, description, image_vector)
            self.sync()  # applied through the store, as another process's item is
        else:
            self._insert_item(item, c, title, description, image_vector)
        return {"item": item, "category": category, "live": True}

    def _insert_item(
        self: LiveHost, item: str, c: int, title: str, description: str | None, image: list[float] | None
    ) -> None:
        """Make an item recommendable from its text (an id already known is left as it is: two
        processes sharing a store may both have added it)."""
        from crossrec.encoders.text import encode_texts, item_texts, load_text_model

        if item in self._items:
            return
        if self._text_model is None:
            self._text_model = load_text_model(self.encoder)
        row = pl.DataFrame({"item": [0], "category": [c], "title": [title], "description": [description or ""]})
        text = item_texts(row, self.categories, self.encoder.template)
        vec = torch.from_numpy(
            np.asarray(encode_texts(text, self.encoder, progress=False, model=self._text_model).vectors[0])
        )
        with self._lock:
            if item in self._items:
                return
            i = len(self._raw_items)
            self._raw_items.append(item)
            self._titles.append(title)
            self._item_cat.append(c)
            self._new_text[i] = vec.float()
            if image is not None and self.image_dim is not None and len(image) == self.image_dim:
                self._new_image[i] = torch.tensor(image, dtype=torch.float32)
            self._items[item] = i
            self._new[c] = self._new[c] + [i]  # a new list: readers keep a consistent snapshot

    def _new_content(self: LiveHost, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text vectors [n, k] of items added while serving, and their image vectors [n, k'] (zero
        rows: none) where the served model reads images."""
        text = torch.stack([self._new_text[i] for i in ids])
        if self.image_dim is None:
            return text, None
        return text, torch.stack([self._new_image.get(i, torch.zeros(self.image_dim)) for i in ids])

    def _vector(self: LiveHost, i: int) -> torch.Tensor:
        """The normalised vector of a Bundle item or of an item added while serving."""
        assert self._vectors is not None
        if i < self._pad:
            return self._vectors[i]
        text, image = self._new_content([i])
        if not isinstance(self.view, EmbedsText):  # text-kNN: the text vector itself
            return F.normalize(text[0].float(), dim=0)
        v = self.view.text_item_vectors(text, image)  # the flagship's: with its borrowed ID part
        return F.normalize(v[0].float(), dim=0)
