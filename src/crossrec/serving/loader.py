"""What `crossrec serve` and `crossrec update` read from a run's `out`: the Service of its newest
version, and the feedback events in its store.

The store is `serve.store`, default `<out>/serving/store.sqlite`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crossrec.artifact import load_artifact
from crossrec.config import RunConfig
from crossrec.data.bundle import Bundle
from crossrec.encoders.text import attach_text
from crossrec.models.base import reads_text
from crossrec.serving.service import Service
from crossrec.serving.store import SQLiteStore
from crossrec.update import newest_version


def store_path(cfg: RunConfig) -> Path:
    return Path(cfg.serve.store) if cfg.serve.store else Path(cfg.out) / "serving" / "store.sqlite"


def service_loader(cfg: RunConfig) -> Callable[[], Service]:
    """A function that builds the Service of `cfg.out` (called at start and on reload): the newest
    version there (`crossrec update` writes them; update.py), its Bundle (with item text vectors
    when the model reads text), and the store, opened once and shared across reloads."""
    stores: list[SQLiteStore] = []

    def load() -> Service:
        art_dir, bundle_dir, _ = newest_version(cfg.out, cfg.data.bundle)
        art = load_artifact(art_dir)  # first: a wrong `out` must not get a store directory
        bundle = Bundle.load(bundle_dir)
        if not stores:
            stores.append(SQLiteStore(store_path(cfg)))
        if reads_text(art.model):
            attach_text(bundle, cfg.encoder, progress=False)
        return Service(art, bundle, cfg.serve, stores[0], cfg.encoder)

    return load


def stored_feedback(cfg: RunConfig) -> list[tuple[str, str, str, float]]:
    """Every feedback event in the run's store (user, item, event, timestamp), for `update`."""
    store = SQLiteStore(store_path(cfg))
    try:
        return store.all_feedback()
    finally:
        store.close()
