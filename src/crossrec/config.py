"""Typed run configuration: YAML in, dotted CLI overrides on top, unknown keys are errors.

Each component owns its config dataclass (`PrepareConfig` in data/prepare.py, `TrainConfig` in
training/trainer.py, `TransferConfig` in training/transfer.py, `EvalConfig` in
evaluation/evaluator.py, each model's config beside the model); `RunConfig` nests them. Values are
type-checked; YAML is parsed safely (`typed.load_yaml`: no Python objects, no aliases, bounded
size), never with `eval`.

Example:
    >>> cfg = load_config("configs/quickstart.yaml", ["--train.lr=3e-4", "--model.dim=128"])  # doctest: +SKIP
    >>> cfg.train.lr                                                                         # doctest: +SKIP
    0.0003
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from crossrec.data.prepare import PrepareConfig
from crossrec.data.schema import Limits
from crossrec.encoders.config import EncoderConfig
from crossrec.evaluation.config import EvalConfig
from crossrec.training.config import TrainConfig, TransferConfig
from crossrec.typed import Bounds, Checked, ConfigError, Size, from_dict, load_yaml, read_config_file

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelSpec",
    "RunConfig",
    "load_config",
    "merge_dicts",
    "model_spec_hook",
    "parse_overrides",
    "to_dict",
    "validate_run_config",
]


@dataclass(frozen=True)
class ServeConfig(Checked):
    """The service, its index, its store and the HTTP server."""

    section = "serve"

    index: Literal["exact", "hnsw", "auto"] = (
        "exact"  # (str) exact inner product (top-k equals score's) | hnsw | auto (hnsw above hnsw_above items)
    )
    hnsw_above: Size = 200_000  # (int) index=auto: categories with more items get an HNSW index
    rerank_pool: Size = 200  # (int) candidates the index returns for the exact re-rank of models with user-item terms (the flagship's neighbourhood)
    batch_max: Size = 64  # (int) most /recommend requests answered by one batched search (micro-batching)
    batch_wait_ms: Annotated[float, Bounds(ge=0.0, le=10_000.0)] = (
        0.0  # (float) how long a lone /recommend request waits for others to batch with, 0..10000 (0: answered at once; a burst batches by itself)
    )
    max_k: Size = 100  # (int) the largest k a request may ask for
    explain_top: Size = 3  # (int) history items named per explanation
    store: str | None = None  # (str|None) feedback / new-item database; None = <out>/serving/store.sqlite
    host: str = "127.0.0.1"  # (str) address to listen on
    port: Annotated[int, Bounds(ge=1, le=65535)] = 8000  # (int) port to listen on
    api_key_env: str = "CROSSREC_API_KEY"  # (str) environment variable holding the API key of the write and admin endpoints (unset: they refuse)
    max_body_bytes: Size = 65_536  # (int) largest request body accepted
    workers: Size = (
        1  # (int) server processes sharing the port and the store; each holds the model (its memory times n)
    )
    follow_ms: Annotated[float, Bounds(ge=0.0, le=60_000.0)] = (
        250.0  # (float) how often each server process applies the items and feedback that others stored, 0..60000 ms (0: never; then only one process sees its own writes)
    )

    def validate(self) -> None:
        """Nothing spans fields here: each field's range is declared beside it and checked when
        the config is built (a lone request never waits over 10 s; ports 1..65535)."""


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where the raw data comes from and where the prepared Bundle goes."""

    section = "data"

    dataset: str | None = None  # (str|None) built-in reader: amazon-arts-office | anime-mal | synthetic
    root: str | None = None  # (str|None) folder of a built-in dataset (e.g. ../shared/data/anime-mal)
    interactions: str | None = None  # (str|None) interaction file (CSV/TSV/Parquet/JSONL, .gz ok)
    items: str | None = None  # (str|None) item table with titles/descriptions
    image_vectors: str | None = None  # (str|None) per-item vectors keyed by item id (.npz/Parquet/CSV)
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = (
        None  # (str|None) reader format of those files: csv | tsv | parquet | jsonl; None = by extension
    )
    sep: str | None = None  # (str|None) CSV delimiter (one character); None = "," for csv, tab for tsv
    columns: dict[str, str] = field(default_factory=dict)  # (dict) ColumnMap overrides: user/item/...
    item_columns: dict[str, str] = field(default_factory=dict)  # (dict) ItemColumnMap overrides
    bundle: str = "runs/bundle"  # (str) directory of the prepared Bundle
    max_line_bytes: Size = 1 << 20  # (int) longest line a CSV/TSV/JSONL file may have, bytes (1 MiB); longer: refused
    max_header_bytes: Size = 64 << 10  # (int) longest CSV/TSV header line (Parquet: all column names), bytes (64 KiB)
    max_cell_bytes: Size = (
        64 << 10
    )  # (int) longest single value (CSV field, JSON string, Parquet string), bytes (64 KiB)

    def limits(self) -> Limits:
        """The readers' bounds (`crossrec.data.schema.Limits`) from this section, e.g.
        `read_interactions(path, columns, fmt, sep, limits=cfg.data.limits())`."""
        return Limits(self.max_line_bytes, self.max_header_bytes, self.max_cell_bytes)


@dataclass(frozen=True)
class ModelSpec(Checked):
    """Which registered model to train, and how.

    Keys other than `name` and `mode` are the model's own options, checked against its config
    dataclass (e.g. `dim`, `reg` for `mf`).
    """

    section = "model"

    name: str = "mf"  # (str) registry key: pop | itemknn | mf | neumf | ...
    mode: Literal["single", "pooled"] = "pooled"  # (str) single: one model per category | pooled: one model over all
    params: dict[str, Any] = field(default_factory=dict)  # (dict) the model's own options


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written into every artifact and report."""

    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)  # pooled trainable models only
    eval: EvalConfig = field(default_factory=EvalConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # item text -> vectors (models that read text)
    serve: ServeConfig = field(default_factory=ServeConfig)  # `crossrec serve`: index, store, HTTP server
    out: str = "runs/model"  # (str) directory of the trained artifact
    seed: int = 0  # (int) global seed, set once by the CLI


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON dict of a (nested) config dataclass; ModelSpec params are flattened back."""
    out = dataclasses.asdict(cfg)
    if isinstance(cfg, RunConfig):
        spec = out["model"]
        out["model"] = {"name": spec["name"], "mode": spec["mode"], **spec["params"]}
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["--train.lr=3e-4", "--model.dim", "128"]` -> nested dict; values parsed as YAML."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"override {arg!r}: expected --section.key=value")
        body = arg[2:]
        if "=" in body:
            key, raw = body.split("=", 1)
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg!r} has no value")
            key, raw = body, args[i + 1]
            i += 1
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {arg!r}: expected --section.key=value")
        _set_dotted(out, key, _override_value(raw, key))
        i += 1
    return out


def _override_value(raw: str, key: str) -> Any:
    """An override's value parsed as YAML (`3e-4`, `[10, 20]`, `{user: uid}`); text that is not
    valid YAML on its own (`,,`) stays the plain string, and is then type-checked like any value."""
    if raw == "":
        return ""
    try:
        return load_yaml(raw, f"override --{key}")
    except ConfigError:
        return raw


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` updated with `over`, section by section: nested mappings merge, other values replace."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML preset (or start from defaults) and apply dotted overrides.

    When an override changes `model.name`, the preset's options for its own model are dropped
    (they belong to that model); options given as overrides still apply and are checked.
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = read_config_file(path)
    if overrides:
        over = parse_overrides(overrides)
        file_model = data.get("model") or {}
        new_name = (over.get("model") or {}).get("name")
        if isinstance(file_model, dict) and new_name is not None and new_name != file_model.get("name", "mf"):
            # The file's model options were written for another model: keep only name/mode.
            data = dict(data, model={k: v for k, v in file_model.items() if k in ("name", "mode")})
        data = merge_dicts(data, over)
    cfg = from_dict(RunConfig, data, hook=model_spec_hook)
    validate_run_config(cfg)
    return cfg


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from `to_dict`'s output (a server process gets its run's config this way)."""
    cfg = from_dict(RunConfig, data, hook=model_spec_hook)
    validate_run_config(cfg)
    return cfg


def validate_run_config(cfg: RunConfig) -> None:
    """Check every section's values now, before any file is read or written.

    Mapping options (`data.columns`, `data.item_columns`, the model's options) are checked like
    every other key: unknown keys, wrong types and impossible values are `ConfigError`s.
    """
    from crossrec.data.schema import ColumnMap, ItemColumnMap
    from crossrec.models.base import config_from_dict
    from crossrec.training.trainer import resolve_device

    try:
        from_dict(ColumnMap, cfg.data.columns, "data.columns.")
        from_dict(ItemColumnMap, cfg.data.item_columns, "data.item_columns.")
        if cfg.data.sep is not None and len(cfg.data.sep) != 1:
            raise ConfigError(f"data.sep={cfg.data.sep!r}; expected one character")
        cfg.data.limits()  # each bound an integer >= 1
        config_from_dict(cfg.model.name, cfg.model.params)
        cfg.prepare.validate()
        cfg.encoder.validate()
        cfg.train.validate()
        resolve_device(cfg.train.device)  # a CUDA device that is not there
        cfg.transfer.validate(None)
        cfg.serve.validate()  # every command: a config that could not be served fails before work
    except KeyError as e:  # an unknown model name
        raise ConfigError(str(e.args[0]) if e.args else str(e)) from None
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def model_spec_hook(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`from_dict` hook: in the `model` section, name/mode are spec keys; every other key is a model option."""
    if cls is not ModelSpec:
        return data
    params = dict(data.get("params", {}) or {})
    params.update({k: v for k, v in data.items() if k not in ("name", "mode", "params")})
    return {k: v for k, v in data.items() if k in ("name", "mode")} | {"params": params}
