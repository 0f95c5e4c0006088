"""Checksummed files: safetensors I/O, SHA-256 of files, and the `checksums.json` of a directory.

Every directory crossrec writes and later reads back (a Bundle, an artifact, a checkpoint set, a
finished transfer stage) records the SHA-256 of each of its files in `checksums.json`, written
last (`write_checksums`), and verifies them before it parses anything (`verify_checksums`): one
flipped byte anywhere is an error that names the file. `checksums.json` also records the SHA-256
of its own `files` map (canonical JSON), so damage inside it is reported as checksums.json being
damaged. Tensors are stored as safetensors (never pickle: a model file is untrusted input), written
atomically (`save_tensors`) and read back with an optional recorded checksum (`load_tensors`);
optimizer state is split into tensors and JSON for that (`optimizer_state_to_tensors`).

Writes go through `crossrec.io` (`atomic_path`, `write_json`); this module imports no torch at
import time, so data code can use it.

Example:
    >>> save_tensors("m.safetensors", {"w": torch.zeros(2)}, {"name": "mf"})  # doctest: +SKIP
    >>> tensors = load_tensors("m.safetensors", sha256=file_sha256("m.safetensors"))  # doctest: +SKIP
    >>> write_checksums("runs/model", ["model.safetensors", "config.json"])  # doctest: +SKIP
    >>> verify_checksums("runs/model", "artifact", remedy="train it again")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossrec.errors import MissingArtifactError
from crossrec.io import CorruptFileError, atomic_path, read_json, write_json

if TYPE_CHECKING:  # torch is imported where tensors are handled, so data code can use this module
    import torch

__all__ = [
    "CHECKSUMS",
    "file_sha256",
    "load_tensors",
    "optimizer_state_from_tensors",
    "optimizer_state_to_tensors",
    "save_tensors",
    "verify_checksums",
    "write_checksums",
]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Streamed SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Save contiguous CPU copies of `tensors` as safetensors, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_tensors(path: str | Path, device: str = "cpu", sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file (no code execution is possible from its content).

    Args:
        path: the file.
        device: where to put the tensors.
        sha256: the checksum recorded when it was written; a different file is `CorruptFileError`.

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: a truncated or damaged file, or a checksum that differs.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"{str(path)!r} not found")
    if sha256 is not None:
        got = file_sha256(path)
        if got != sha256:
            raise CorruptFileError(
                f"{path}: checksum differs from the one recorded when it was written "
                f"(sha256 {got[:12]}... vs {sha256[:12]}...): the file was changed or damaged"
            )
    try:
        return load_file(str(path), device=device)
    except Exception as e:  # safetensors raises SafetensorError / OSError for damaged files
        raise CorruptFileError(f"{path}: expected a readable safetensors file ({str(e)[:200]})") from None


def optimizer_state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON (param groups, scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            key = f"state.{idx}.{name}"
            if hasattr(value, "dtype") and hasattr(value, "shape"):  # a tensor
                tensors[key] = value
            else:
                scalars[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_state_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    items = list(tensors.items()) + list(meta.get("scalars", {}).items())
    for key, value in items:
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


CHECKSUMS = "checksums.json"  # in every directory crossrec reads back; written last


def _files_sha256(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_checksums(root: str | Path, names: list[str], known: dict[str, str] | None = None) -> dict[str, str]:
    """Record the SHA-256 of the files `names` in `root` (plus `known`: name -> SHA-256 of files
    written after this) in `root/checksums.json`, atomically; returns the recorded map."""
    root = Path(root)
    files = {name: file_sha256(root / name) for name in names} | dict(known or {})
    write_json(root / CHECKSUMS, {"files": dict(sorted(files.items())), "sha256": _files_sha256(files)})
    return files


def verify_checksums(root: str | Path, what: str, required: bool = True, remedy: str = "") -> dict[str, str] | None:
    """Check every file recorded in `root/checksums.json` (streamed hashes; other files are ignored).

    Args:
        root: the directory.
        what: what it is, for the messages ("artifact", "checkpoint set", ...).
        required: a missing checksums.json is an error (else None is returned: written by an
            older crossrec, the caller checks what it can).
        remedy: what to do about damage, appended to the messages ("prepare it again").

    Returns:
        The recorded map (file name -> SHA-256), or None when there is no checksums.json.

    Raises:
        FileNotFoundError: a recorded file is missing.
        CorruptFileError: a file differs from its recorded checksum, checksums.json is damaged, or
            (`required`) there is no checksums.json.
    """
    root = Path(root)
    path = root / CHECKSUMS
    tail = f"; {remedy}" if remedy else ""
    if not path.is_file():
        if not required:
            return None
        raise CorruptFileError(f"{path} not found: the {what} was written by an older crossrec (or damaged){tail}")
    record = read_json(path, "checksum list")
    files = record.get("files") if isinstance(record, dict) else None
    if (
        not isinstance(files, dict)
        or not all(
            isinstance(k, str) and k and "/" not in k and k not in (".", "..") and isinstance(v, str)
            for k, v in files.items()
        )
        or record.get("sha256") != _files_sha256(files)
    ):
        raise CorruptFileError(f"{path}: damaged (its own checksum does not match its content){tail}")
    for name, sha in files.items():
        file = root / name
        if not file.is_file():
            raise MissingArtifactError(f"{file} not found; the {what} is incomplete{tail}")
        if file_sha256(file) != sha:
            where, why = str(file), ""
            if name.endswith(".json"):  # say where a damaged JSON file breaks, if it does
                try:
                    json.loads(file.read_bytes())
                except UnicodeDecodeError:
                    why = " (not UTF-8)"
                except json.JSONDecodeError as e:
                    where, why = f"{file}:{e.lineno}", f" (not JSON: {e.msg} at column {e.colno})"
            raise CorruptFileError(
                f"{where}: no longer matches the checksum in {CHECKSUMS}{why}: the {what} "
                f"was changed or damaged since it was written{tail}"
            )
    return files
