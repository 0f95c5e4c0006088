"""Item images -> vectors, beside the text encoder (encoders/text.py): the image side of the
flagship's `text+id+image` item tower.

Where an item's image vector comes from, first match wins:
1. `data.image_vectors`: precomputed vectors keyed by item id, aligned into the Bundle by
   `crossrec prepare` (no model needed).
2. `encoder.image_model`: a local sentence-transformers model that reads images (a CLIP checkpoint
   saved with `SentenceTransformer.save`), applied to the image files the item table names
   (`data.item_columns.image`; paths relative to `encoder.image_root`, default the item table's
   folder). Loaded from local files only (`HF_HUB_OFFLINE=1`, `local_files_only`); batched;
   L2-normalised; cached in safetensors keyed by the model id, each row by the SHA-256 of the
   file's bytes, so a changed image re-encodes that image only.

An item whose image is missing or unreadable gets a zero vector and `present=False` (the tower
leaves its image part out); how many are counted, and the first is named in the log.

`ImageEncoder` is the interface (`model_id`, `encode(images) -> [n, d]`); `SentenceTransformerImages`
is the implementation shipped.

Example:
    >>> iv = attach_images(bundle, EncoderConfig(image_model="models/clip"), root="data/")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from crossrec.encoders.config import EncoderConfig
from crossrec.encoders.text import (
    EncoderError,
    cache_dir,
    lookup_rows,
    read_cache,
    resolve_model,
    write_cache,
)
from crossrec.extras import require

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle

log = logging.getLogger(__name__)


@runtime_checkable
class ImageEncoder(Protocol):
    """Images -> L2-normalised vectors."""

    model_id: str

    def encode(self, images: list[Any], progress: bool = False) -> np.ndarray:
        """[n, d] float32 vectors of PIL images."""
        ...


class SentenceTransformerImages:
    """A local sentence-transformers model that reads images (e.g. CLIP), loaded offline."""

    def __init__(self, cfg: EncoderConfig) -> None:
        if not cfg.image_model:
            raise EncoderError(
                "encoder.image_model is not set: point it at a local sentence-transformers "
                "directory that reads images (e.g. a CLIP model saved with SentenceTransformer.save)"
            )
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            path, self.model_id = resolve_model(cfg.image_model)
        except EncoderError as e:
            raise EncoderError(str(e).replace("encoder.model=", "encoder.image_model=")) from None
        require("text", "encoder.image_model (encoding images)", "sentence_transformers", "transformers")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device=cfg.device, local_files_only=True)
        self.batch_size = cfg.image_batch_size

    def encode(self, images: list[Any], progress: bool = False) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                images,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            ),
            dtype=np.float32,
        )


@dataclass
class ImageVectors:
    vectors: np.ndarray  # [n, d] float32, zero rows where absent
    present: np.ndarray  # [n] bool
    model_id: str
    encoded: int  # images run through the model this time
    cached: int  # images found in the cache
    missing: int  # paths given but the file is missing or unreadable
    seconds: float


def _cache_file(cfg: EncoderConfig, model_id: str) -> Path:
    key = hashlib.sha256(f"image|{model_id}".encode()).hexdigest()[:20]
    return cache_dir(cfg).parent / "image" / f"{key}.safetensors"


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def encode_images(
    paths: Sequence[Path | None], cfg: EncoderConfig, progress: bool = True, encoder: ImageEncoder | None = None
) -> ImageVectors:
    """Vectors of the image files `paths` (rows aligned; None = no image), from the cache where
    possible; only images whose bytes are not cached go through the model."""
    t0 = time.perf_counter()
    keys = np.zeros((len(paths), 32), np.uint8)
    present = np.zeros(len(paths), bool)
    missing: list[str] = []
    for n, p in enumerate(paths):
        if p is None:
            continue
        try:
            keys[n] = np.frombuffer(hashlib.sha256(Path(p).read_bytes()).digest(), np.uint8)
            present[n] = True
        except OSError:
            missing.append(str(p))
    encoder = encoder if encoder is not None else SentenceTransformerImages(cfg)
    path = _cache_file(cfg, encoder.model_id)
    stored_keys, stored_vecs = read_cache(path)
    rows = lookup_rows(keys, stored_keys)
    todo = np.flatnonzero(present & (rows < 0))
    encoded = 0
    if len(todo):
        _, first = np.unique(np.ascontiguousarray(keys[todo]).view("V32").ravel(), return_index=True)
        todo = todo[np.sort(first)]
        images, ok = [], []
        for n in todo.tolist():
            try:
                images.append(_open(Path(paths[n])))  # type: ignore[arg-type]
                ok.append(n)
            except Exception:  # noqa: BLE001  (not an image PIL can read: counted as missing)
                present[n] = False
                missing.append(str(paths[n]))
        if images:
            new = encoder.encode(images, progress=progress)
            stored_keys = np.concatenate([stored_keys, keys[ok]])
            stored_vecs = new if stored_vecs is None else np.concatenate([stored_vecs, new])
            write_cache(path, stored_keys, stored_vecs, {"model_id": encoder.model_id})
            encoded = len(images)
        rows = lookup_rows(keys, stored_keys)
    dim = stored_vecs.shape[1] if stored_vecs is not None else 0
    out = np.zeros((len(paths), dim), np.float32)
    ok_rows = present & (rows >= 0)
    if stored_vecs is not None:
        out[ok_rows] = stored_vecs[rows[ok_rows]]
    if missing:
        log.warning(
            "item images: %d missing or unreadable (first: %s); those items have no image vector",
            len(missing),
            missing[0],
        )
    return ImageVectors(
        out, ok_rows, encoder.model_id, encoded, int(ok_rows.sum()) - encoded, len(missing), time.perf_counter() - t0
    )


def bundle_image_paths(bundle: Bundle, root: str | Path) -> list[Path | None]:
    """Each Bundle item's image file (item-id order), or None where the item table names none."""
    if "image" not in bundle.items.columns:
        raise EncoderError(
            "encoder.image_model is set but the item table has no image column: map one with data.item_columns.image"
        )
    base = Path(root)
    return [
        None if not p else (Path(p) if Path(p).is_absolute() else base / p) for p in bundle.items["image"].to_list()
    ]


def attach_images(bundle: Bundle, cfg: EncoderConfig, root: str | Path, progress: bool = True) -> ImageVectors:
    """Encode every item's image (or take it from the cache) into `bundle.image_vectors` /
    `bundle.image_present`."""
    iv = encode_images(bundle_image_paths(bundle, cfg.image_root or root), cfg, progress=progress)
    bundle.image_vectors, bundle.image_present = iv.vectors, iv.present
    log.info(
        "item images: %d items, %d from the cache, %d encoded (%s) in %.1fs; %d without an image",
        len(iv.vectors),
        iv.cached,
        iv.encoded,
        iv.model_id,
        iv.seconds,
        int((~iv.present).sum()),
    )
    return iv


__all__ = [
    "ImageEncoder",
    "ImageVectors",
    "SentenceTransformerImages",
    "attach_images",
    "bundle_image_paths",
    "encode_images",
]
