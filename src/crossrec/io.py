"""Atomic file writes and safetensors + JSON state I/O (never pickle: a model file is untrusted).

Example:
    >>> save_tensors("m.safetensors", {"w": torch.zeros(2)}, {"name": "mf"})  # doctest: +SKIP
    >>> tensors, meta = load_tensors("m.safetensors")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Save contiguous CPU copies of `tensors` as safetensors, atomically."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_tensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (no code execution is possible from its content)."""
    return load_file(str(path), device=device)


def optimizer_state_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (for safetensors) and JSON (param groups, scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, per_param in state["state"].items():
        for name, value in per_param.items():
            key = f"state.{idx}.{name}"
            if torch.is_tensor(value):
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
