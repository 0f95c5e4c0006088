"""Reading a Bundle's stored files (data/bundle.py, `Bundle.load`): each missing or damaged file is
a one-line error naming it (`MissingArtifactError`, `CorruptFileError`, `DataError`), and the
content is checked against the fingerprint prepare recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from crossrec.data.schema import DataError
from crossrec.errors import MissingArtifactError
from crossrec.io import CorruptFileError

IMAGE_FILE = "image_vectors.safetensors"


def read_parquet(path: Path, need: tuple[str, ...]) -> pl.DataFrame:
    if not path.is_file():
        raise MissingArtifactError(f"{str(path)!r} not found; the bundle is incomplete: prepare it again")
    try:
        df = pl.read_parquet(path)
    except Exception as e:  # polars raises several error types for a damaged file
        raise CorruptFileError(f"{path}: expected a readable Parquet file ({str(e)[:200]})") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise CorruptFileError(f"{path}: expected columns {missing}; have {df.columns}")
    return df


def read_safetensors_numpy(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise CorruptFileError(f"{path}: expected a readable safetensors file ({str(e)[:200]})") from None


def read_image_vectors(root: Path, manifest: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The Bundle's image vectors and their `present` flags, or (None, None) without the file."""
    if not (root / IMAGE_FILE).exists():
        return None, None
    arrays = read_safetensors_numpy(root / IMAGE_FILE)
    vectors, present = arrays.get("vectors"), arrays.get("present")
    if (
        vectors is None
        or present is None
        or vectors.ndim != 2
        or vectors.shape[0] != manifest.get("n_items")
        or present.shape != (vectors.shape[0],)
    ):
        shape = None if vectors is None else vectors.shape
        raise DataError(root / IMAGE_FILE, None, "vectors", f"{manifest.get('n_items')} rows", str(shape))
    return vectors, present.astype(bool)


def check_fingerprint(fingerprint: Callable[[], dict[str, Any]], root: Path, manifest: dict[str, Any]) -> None:
    """Refuse content that no longer matches the fingerprint prepare recorded (bundles prepared
    before fingerprints existed get one computed now); `fingerprint` computes the loaded one."""
    stored = manifest.get("fingerprint")
    if stored is None:
        manifest["fingerprint"] = fingerprint()
        return
    fresh = fingerprint()
    for part, file in (
        ("ids", "users.parquet / items.parquet"),
        ("interactions", "interactions.parquet"),
        ("settings", "manifest.json"),
        ("sources", "manifest.json"),
    ):
        if stored.get(part) != fresh[part]:
            raise CorruptFileError(
                f"{root}: {file} no longer matches the fingerprint prepare recorded in manifest.json "
                f"({part}); the bundle was edited or damaged: prepare it again"
            )


__all__ = ["IMAGE_FILE", "check_fingerprint", "read_image_vectors", "read_parquet", "read_safetensors_numpy"]
