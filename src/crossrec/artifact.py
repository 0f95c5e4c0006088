"""A trained model on disk: `model.safetensors` + `config.json` + `ids.json`, atomic, versioned.

`config.json` holds the format version, the registry name, mode and options of the model, the data
sizes it was built for, the SHA-256 of `model.safetensors`, the **provenance** of the Bundle it was
trained on (its fingerprint and prepare settings), the resolved run config and the training
result. `ids.json` holds the raw user and item ids in the model's index order. `checksums.json`,
written last, holds the SHA-256 of each of those files; loading verifies them all before it parses
anything (an artifact written before it existed: only `tensors_sha256`). Loading rebuilds the
model from the registry and reads tensors with safetensors after checking their checksum: nothing
in the files can execute code, and a damaged or edited file is a clear error.

Example:
    >>> save_artifact("runs/mf", model, "mf", "pooled", {}, sizes, bundle=bundle)  # doctest: +SKIP
    >>> art = load_artifact("runs/mf"); check_bundle(art, bundle)                  # doctest: +SKIP
    >>> art.model.score(users, 0)                                                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from crossrec.data.batch import Sizes
from crossrec.errors import ArtifactError, MissingArtifactError
from crossrec.integrity import file_sha256, load_tensors, save_tensors, verify_checksums, write_checksums
from crossrec.io import CorruptFileError, atomic_dir, check_output, read_json, write_json, write_marker
from crossrec.models.base import config_from_dict
from crossrec.models.per_category import build

if TYPE_CHECKING:
    from crossrec.data.bundle import Bundle

ARTIFACT_FORMAT = 2


class ProvenanceError(ArtifactError):
    """An artifact used with a Bundle other than the one it was trained on."""


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


def bundle_provenance(bundle: Bundle) -> dict[str, Any]:
    """What an artifact records of the Bundle it was trained on."""
    return {
        "fingerprint": bundle.manifest.get("fingerprint") or bundle.fingerprint(),
        "settings": bundle.manifest.get("settings", {}),
        "path": str(bundle.root) if bundle.root else None,
        "created": bundle.manifest.get("created"),
    }


def save_artifact(
    root: str | Path,
    model: nn.Module,
    name: str,
    mode: str,
    params: dict[str, Any],
    sizes: Sizes,
    extra: dict[str, Any] | None = None,
    bundle: Bundle | None = None,
    what: str = "out",
) -> Path:
    """Write the artifact files atomically (temp sibling directory, then rename into place).

    Args:
        root: the artifact directory: missing, empty, or an artifact directory (else OutputError).
        model, name, mode, params, sizes: the model and how to rebuild it.
        extra: more JSON for config.json (run config, training result).
        bundle: the Bundle it was trained on: its fingerprint and raw ids are recorded, so the
            artifact is only ever used with that data.
        what: the setting that named `root`, for error messages.
    """
    root = Path(root)
    check_output(root, "artifact", what)
    # merge: keep what else is in the directory (checkpoints, per-category logs).
    with atomic_dir(root, merge=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict(), {"format": str(ARTIFACT_FORMAT)})
        meta = {
            "format": ARTIFACT_FORMAT,
            "model": {"name": name, "mode": mode, "params": asdict(config_from_dict(name, params))},
            "sizes": sizes.to_json(),
            "tensors_sha256": file_sha256(tmp / "model.safetensors"),
            "bundle": bundle_provenance(bundle) if bundle is not None else None,
            **(extra or {}),
        }
        write_json(tmp / "config.json", meta)
        if bundle is not None:
            write_json(
                tmp / "ids.json",
                {
                    "categories": bundle.categories,
                    "users": [str(u) for u in bundle.raw_user_ids()],
                    "items": [str(i) for i in bundle.raw_item_ids()],
                },
            )
        # last: the SHA-256 of every file above, verified by load_artifact before it parses them
        write_checksums(tmp, [n for n in ("model.safetensors", "config.json", "ids.json") if (tmp / n).is_file()])
        if not (root / ".crossrec.json").exists():
            write_marker(tmp, "artifact")
    return root


def load_artifact(root: str | Path, device: str = "cpu") -> Artifact:
    """Rebuild a model from its artifact directory.

    Raises:
        FileNotFoundError: `root` is not an artifact directory, or a file of it is missing.
        CorruptFileError: a file of it (model.safetensors, config.json, ids.json, checksums.json)
            differs from the SHA-256 recorded in checksums.json, is damaged, or does not fit.
            An artifact written before checksums.json existed has only its recorded
            `tensors_sha256` of model.safetensors checked.
    """
    root = Path(root)
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise MissingArtifactError(
            f"{str(root)!r} is not a crossrec artifact (no config.json); train one with `crossrec train`"
        )
    checked = verify_checksums(root, "artifact", required=False, remedy="train it again") or {}
    meta = read_json(cfg_path, "artifact config")
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CorruptFileError(
            f"{cfg_path}: artifact format {got!r}; expected {ARTIFACT_FORMAT} (written by another crossrec "
            "version: train it again)"
        )
    try:
        spec = meta["model"]
        sizes = Sizes.from_json(meta["sizes"])
        model = build(spec["name"], spec["mode"], spec["params"], sizes)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(f"{cfg_path}: expected a model spec and sizes crossrec can rebuild ({e})") from None
    sha = None if "model.safetensors" in checked else meta.get("tensors_sha256")  # verified above: hash once
    tensors = load_tensors(root / "model.safetensors", device, sha256=sha)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise CorruptFileError(
            f"{root / 'model.safetensors'}: tensors do not fit the model in config.json ({str(e)[:300]})"
        ) from None
    except CorruptFileError as e:  # a model's own check of its stored layout (e.g. an old pair table)
        raise CorruptFileError(f"{root / 'model.safetensors'}: {e}") from None
    model.to(device).eval()
    return Artifact(model, spec["name"], spec["mode"], spec["params"], sizes, meta, root)


def check_bundle(art: Artifact, bundle: Bundle) -> None:
    """Refuse a Bundle other than the one the artifact was trained on, saying what differs.

    Raises:
        ProvenanceError: the fingerprints differ (or the artifact recorded none).
    """
    from crossrec.data.fingerprint import fingerprint_differences

    where = f"the artifact in {art.root}"
    record = art.meta.get("bundle")
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), dict):
        raise ProvenanceError(f"{where} records no training bundle fingerprint; train it again with this crossrec")
    current = bundle.manifest.get("fingerprint") or bundle.fingerprint()
    diffs = fingerprint_differences(
        record["fingerprint"], current, record.get("settings"), bundle.manifest.get("settings")
    )
    if diffs or record["fingerprint"].get("bundle") != current.get("bundle"):
        trained_on = record.get("path") or "another bundle"
        raise ProvenanceError(  # what differs first: a one-line error is cut at 300 characters
            f"{where} was trained on another bundle: they differ in "
            + "; ".join(diffs or ["their fingerprint"])
            + f". It was trained on {trained_on} (prepared {record.get('created')}), not "
            f"{bundle.root or 'the given one'}: evaluate and recommend with that bundle, or train on this one"
        )
