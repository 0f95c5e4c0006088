"""A trained model on disk: `model.safetensors` + `config.json`, written atomically, versioned.

`config.json` holds the format version, the registry name, mode and options of the model, the data
sizes it was built for, the resolved run config and the training result. Loading rebuilds the model
from the registry and reads tensors with safetensors: nothing in the files can execute code.

Example:
    >>> save_artifact("runs/mf", model, spec, sizes, run_config={...})  # doctest: +SKIP
    >>> art = load_artifact("runs/mf"); art.model.score(users, 0)      # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from crossrec.io import atomic_dir, load_tensors, save_tensors, write_json
from crossrec.models.base import Sizes, build_model, config_from_dict
from crossrec.models.per_category import PerCategory

ARTIFACT_FORMAT = 1


@dataclass
class Artifact:
    """A loaded model with everything needed to use it."""

    model: nn.Module
    name: str
    mode: str
    params: dict[str, Any]
    sizes: Sizes
    meta: dict[str, Any]
    root: Path


def build(name: str, mode: str, params: dict[str, Any], sizes: Sizes) -> nn.Module:
    """Build a registered model; mode 'single' gives one independent model per category."""
    if mode not in ("single", "pooled"):
        raise ValueError(f"model.mode={mode!r}; expected single or pooled")
    cfg = config_from_dict(name, params)
    if mode == "pooled":
        return build_model(name, cfg, sizes)
    return PerCategory([build_model(name, cfg, sizes) for _ in sizes.categories], sizes.item_category)


def save_artifact(
    root: str | Path,
    model: nn.Module,
    name: str,
    mode: str,
    params: dict[str, Any],
    sizes: Sizes,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact directory atomically (temp sibling directory, then rename)."""
    root = Path(root)
    # merge: keep what else is in the directory (checkpoints, per-category logs).
    with atomic_dir(root, merge=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict(), {"format": str(ARTIFACT_FORMAT)})
        write_json(
            tmp / "config.json",
            {
                "format": ARTIFACT_FORMAT,
                "model": {"name": name, "mode": mode, "params": asdict(config_from_dict(name, params))},
                "sizes": sizes.to_json(),
                **(extra or {}),
            },
        )
    return root


def load_artifact(root: str | Path, device: str = "cpu") -> Artifact:
    """Rebuild a model from its artifact directory."""
    root = Path(root)
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{root} is not a crossrec artifact (no config.json)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{cfg_path}: artifact format {meta.get('format')!r}; expected {ARTIFACT_FORMAT}")
    spec = meta["model"]
    sizes = Sizes.from_json(meta["sizes"])
    model = build(spec["name"], spec["mode"], spec["params"], sizes)
    model.load_state_dict(load_tensors(root / "model.safetensors", device))
    model.to(device).eval()
    return Artifact(model, spec["name"], spec["mode"], spec["params"], sizes, meta, root)
