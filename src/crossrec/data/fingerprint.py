"""What identifies a prepared dataset: the Bundle fingerprint, and how two of them differ.

An artifact records the fingerprint of the Bundle it was trained on; evaluate / recommend compare
it with the Bundle they are given (`serving.artifact.check_bundle`), and the experiment runner
with the one its stored runs used.

Example:
    >>> parts = fingerprint(b.interactions, b.items, b.users, b.manifest)   # doctest: +SKIP
    >>> fingerprint_differences(parts, other)                               # doctest: +SKIP
    ['the interactions or their train/valid/test split']
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import polars as pl


def _hash_strings(h: hashlib._Hash, values: list[Any]) -> None:
    h.update(str(len(values)).encode())
    h.update("\x00".join("" if v is None else str(v) for v in values).encode("utf-8", "surrogatepass"))


def fingerprint(
    interactions: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame, manifest: dict[str, Any]
) -> dict[str, str]:
    """The fingerprint parts of a prepared dataset (see `Bundle.fingerprint`)."""
    ids = hashlib.sha256()
    _hash_strings(ids, list(manifest.get("categories", [])))
    _hash_strings(ids, users["raw_user"].to_list())
    _hash_strings(ids, items["raw_item"].to_list())
    ids.update(np.ascontiguousarray(items["category"].to_numpy(), dtype=np.int64).tobytes())
    inter = hashlib.sha256()
    for name in sorted(interactions.columns):
        col = interactions[name]
        inter.update(f"{name}:{col.dtype}:{col.len()}".encode())
        arr = col.to_numpy()
        if arr.dtype == object:
            _hash_strings(inter, col.to_list())
        else:
            inter.update(np.ascontiguousarray(arr).tobytes())
    settings = hashlib.sha256(json.dumps(manifest.get("settings", {}), sort_keys=True, default=str).encode())
    sources = hashlib.sha256(json.dumps(sorted(s.get("sha256", "") for s in manifest.get("sources", []))).encode())
    parts = {
        "ids": ids.hexdigest(),
        "interactions": inter.hexdigest(),
        "settings": settings.hexdigest(),
        "sources": sources.hexdigest(),
    }
    parts["bundle"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


FINGERPRINT_PARTS = {
    "ids": "the user / item id maps (other data, or other filtering)",
    "interactions": "the interactions or their train/valid/test split",
    "settings": "the prepare settings",
    "sources": "the source files' checksums",
}


def fingerprint_differences(
    trained: dict[str, Any],
    current: dict[str, Any],
    trained_settings: dict[str, Any] | None = None,
    current_settings: dict[str, Any] | None = None,
) -> list[str]:
    """Readable list of what differs between two Bundle fingerprints (empty when they match)."""
    out = []
    for part, words in FINGERPRINT_PARTS.items():
        if trained.get(part) != current.get(part):
            if part == "settings" and trained_settings is not None and current_settings is not None:
                keys = sorted(
                    k
                    for k in set(trained_settings) | set(current_settings)
                    if trained_settings.get(k) != current_settings.get(k)
                )
                words = (
                    "the prepare settings ("
                    + ", ".join(f"{k}: {trained_settings.get(k)!r} -> {current_settings.get(k)!r}" for k in keys)
                    + ")"
                )
            out.append(words)
    return out
