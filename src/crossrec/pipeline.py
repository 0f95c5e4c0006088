"""Typed entry points behind the CLI: prepare, train, evaluate, recommend, demo.

Each is a plain function over a `RunConfig` (or explicit arguments), so tests and notebooks call
them directly; `cli.py` only parses arguments into these calls.

Example:
    >>> cfg = load_config("configs/quickstart.yaml")   # doctest: +SKIP
    >>> bundle = prepare_data(cfg)                     # doctest: +SKIP
    >>> art = train(cfg, bundle)                       # doctest: +SKIP
    >>> print(evaluate(art.root, bundle, cfg.eval).to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import torch

from crossrec import distributed
from crossrec.artifact import (
    Artifact,
    bundle_provenance,
    check_bundle,
    load_artifact,
    save_artifact,
)
from crossrec.config import RunConfig, to_dict
from crossrec.data.batch import Sizes
from crossrec.data.bundle import Bundle
from crossrec.data.prepare import prepare
from crossrec.data.schema import ColumnMap, ItemColumnMap
from crossrec.encoders.image import attach_images
from crossrec.encoders.text import attach_text
from crossrec.errors import ConfigError, NumericError
from crossrec.evaluation.evaluator import EvalConfig, EvalResult, Evaluator
from crossrec.io import TMP_TAG, OutputError, claim_output, name_slug, read_json, write_marker
from crossrec.models.base import Recommender, Trainable, TrainsEncoder, reads_images, reads_text
from crossrec.models.per_category import PerCategory, build
from crossrec.training.trainer import Trainer
from crossrec.training.transfer import plan, run_stages, stage_summary
from crossrec.typed import from_dict

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Set the global seeds once (the CLI does this; library code takes explicit seeds)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class RawData:
    """Canonical raw tables plus the files they came from."""

    interactions: pl.DataFrame | pl.LazyFrame  # lazy: `load_raw(..., lazy)` on a file
    items: pl.DataFrame | None
    sources: tuple[Path, ...]
    image_vectors: tuple[list[str], np.ndarray] | None = None


def load_raw(cfg: RunConfig, lazy: ExitStack | None = None) -> RawData:
    """Read the configured source: a built-in dataset, or interaction (+ item) files. With `lazy`
    (`prepare.streaming`), an interaction file is checked in one pass and read as a LazyFrame
    (data/scan.py) whose temporary files last until `lazy` closes."""
    from crossrec.data import readers

    d = cfg.data
    raw = _load_tables(cfg, readers, lazy)
    if d.image_vectors is None:
        return raw
    vectors = readers.read_image_vectors(d.image_vectors, limits=d.limits())
    return RawData(raw.interactions, raw.items, raw.sources + (Path(d.image_vectors),), vectors)


def _load_tables(cfg: RunConfig, readers: Any, lazy: ExitStack | None = None) -> RawData:
    d = cfg.data
    if d.dataset == "synthetic":
        from crossrec.data.synthetic import SyntheticConfig, generate

        synthetic = generate(SyntheticConfig(seed=cfg.seed))
        return RawData(*synthetic, ())
    if d.dataset is not None:
        if d.root is None:
            raise ConfigError(f"data.dataset={d.dataset!r} needs data.root (the dataset's folder)")
        from crossrec.data.datasets import read_dataset

        raw = read_dataset(d.dataset, d.root, limits=d.limits())
        return RawData(raw.interactions, raw.items, tuple(raw.sources))
    if d.interactions is None:
        raise ConfigError("set data.dataset (+ data.root) or data.interactions (+ data.items)")
    columns = from_dict(ColumnMap, d.columns, "data.columns.")
    if cfg.prepare.item_reviews == 0:  # review text is long: read only for prepare.item_reviews
        columns = replace(columns, text=None)
    if lazy is not None:
        from crossrec.data.scan import scan_interactions

        inter = lazy.enter_context(scan_interactions(d.interactions, columns, d.format, d.sep, d.limits()))
    else:
        inter = readers.read_interactions(d.interactions, columns, d.format, d.sep, limits=d.limits())
    items = (
        readers.read_items(
            d.items, from_dict(ItemColumnMap, d.item_columns, "data.item_columns."), d.format, d.sep, limits=d.limits()
        )
        if d.items
        else None
    )
    sources = (Path(d.interactions),) + ((Path(d.items),) if d.items else ())
    return RawData(inter, items, sources)


def prepare_data(cfg: RunConfig) -> Bundle:
    """Read the raw data, prepare it, and write the Bundle to `cfg.data.bundle`.

    `data.bundle` must be missing, empty, or a Bundle directory (else `OutputError`, nothing
    touched); it is locked for the whole run, so a second prepare on it fails as busy.
    """
    cfg.prepare.validate()
    with claim_output(cfg.data.bundle, "bundle", "data.bundle") as root, ExitStack() as lazy:
        _check_not_inside(root, cfg)
        raw = load_raw(cfg, lazy if cfg.prepare.streaming else None)
        bundle = prepare(raw.interactions, raw.items, cfg.prepare, None, raw.sources, raw.image_vectors)
        bundle.save(root, "data.bundle")
    return bundle


def _check_not_inside(root: Path, cfg: RunConfig) -> None:
    """An input file inside the output directory would be replaced with it: refuse."""
    d = cfg.data
    for key in ("interactions", "items", "image_vectors", "root"):
        src = getattr(d, key)
        if src is None:
            continue
        src_path, out = Path(src).resolve(), root.resolve()
        if src_path == out or out in src_path.parents:
            raise OutputError(
                f"data.bundle={str(root)!r} contains the input data.{key}={src!r}; write the bundle somewhere else"
            )


def train(
    cfg: RunConfig, bundle: Bundle | None = None, out: str | Path | None = None, resume: bool = False
) -> Artifact:
    """Build, train and save the configured model; returns the loaded-in-memory Artifact.

    In `single` mode every category gets its own model, trained (with its own early stopping) on
    that category's data only; `transfer` does not apply there. A pooled trainable model is trained
    through the stages of `cfg.transfer` (training/transfer.py): `joint` is one Trainer over all
    categories (checkpoints in `out/checkpoint`), the other paradigms write one directory per stage
    (`out/stage-<i>-<name>`). With `resume`, training continues from the checkpoints in `out`.

    The global seed is set once, by the entry point (`seed_everything(cfg.seed)`: the CLI and the
    experiment runner do it); the trainer's shuffling and negatives use `train.seed`.
    """
    out = Path(out if out is not None else cfg.out)
    bundle = bundle if bundle is not None else Bundle.load(cfg.data.bundle)
    cfg.transfer.validate(bundle.categories if cfg.model.mode == "pooled" else None)  # before any write
    distributed.init_from_env(cfg.train.device)  # one of several processes under torchrun
    if not distributed.is_main():  # rank 0 owns `out`: lock, marker, checkpoints, artifact
        distributed.barrier()  # until rank 0 has claimed it
        return _train(cfg, bundle, out, resume)
    with claim_output(out, "artifact", "out"):
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "artifact")  # checkpoints land here before the artifact does
        distributed.barrier()
        return _train(cfg, bundle, out, resume)


def _train(cfg: RunConfig, bundle: Bundle, out: Path, resume: bool) -> Artifact:
    sizes = Sizes.from_bundle(bundle)
    spec = cfg.model
    transfer = cfg.transfer
    transfer.validate(bundle.categories if spec.mode == "pooled" else None)
    model = build(spec.name, spec.mode, spec.params, sizes)
    if reads_text(model):
        attach_text(bundle, cfg.encoder, progress=cfg.train.progress)
    if cfg.encoder.image_model and reads_images(model) and bundle.image_vectors is None:
        attach_images(
            bundle,
            cfg.encoder,
            Path(cfg.data.items).parent if cfg.data.items else Path("."),
            progress=cfg.train.progress,
        )
    if cfg.encoder.finetune != "frozen":
        _attach_live_encoder(model, bundle, cfg)
    # What a checkpoint must match to be resumed (the train options are compared separately).
    identity = {
        "model": {"name": spec.name, "mode": spec.mode, "params": dict(spec.params)},
        "bundle": bundle_provenance(bundle)["fingerprint"].get("bundle"),
        "seed": cfg.seed,
        "transfer": to_dict(transfer),
    }
    results: dict[str, Any] = {}
    if isinstance(model, PerCategory):
        if transfer.paradigm != "joint":
            log.info(
                "model.mode=single trains independent per-category models: transfer.paradigm=%s is ignored",
                transfer.paradigm,
            )
        for c, sub in enumerate(model.models):
            if bundle.split("train", c).height == 0:
                log.warning("category %s has no training data; its model stays untrained", bundle.categories[c])
                continue
            # The directory is a name crossrec makes (index + slug), never the raw name from the data.
            trainer = Trainer(
                cfg.train, out / "categories" / name_slug(c, bundle.categories[c]), categories=[c], identity=identity
            )
            results[bundle.categories[c]] = trainer.fit(sub, bundle, resume=resume).to_json()
    elif transfer.paradigm == "joint" or not isinstance(model, Trainable):
        if transfer.paradigm != "joint":
            log.info(
                "%s is fitted, not trained by the loop: transfer.paradigm=%s is ignored", spec.name, transfer.paradigm
            )
        results["all"] = Trainer(cfg.train, out, identity=identity).fit(model, bundle, resume=resume).to_json()
    else:
        counts = np.bincount(bundle.split("train")["category"].to_numpy(), minlength=bundle.n_categories)
        stages = plan(transfer, bundle.categories, counts.tolist())
        stage_results = run_stages(model, bundle, cfg.train, stages, out, resume=resume, identity=identity)
        results["stages"] = stage_summary(stages, stage_results, bundle.categories, cfg.train)
    extra = {"run_config": to_dict(cfg), "train_result": results, "distributed": distributed.describe()}
    if isinstance(model, PerCategory):  # where each category's checkpoints and logs are, by name
        extra["category_dirs"] = {name: f"categories/{name_slug(c, name)}" for c, name in enumerate(bundle.categories)}
    if not distributed.is_main():  # the replicas are identical; rank 0 writes the one artifact
        return Artifact(model, spec.name, spec.mode, dict(spec.params), sizes, extra, out)
    save_artifact(out, model, spec.name, spec.mode, spec.params, sizes, extra, bundle=bundle)
    _drop_stale_versions(out)
    meta = read_json(out / "config.json", "artifact config")
    return Artifact(model, spec.name, spec.mode, dict(spec.params), sizes, meta, out)


def _drop_stale_versions(out: Path) -> None:
    """`crossrec update` fine-tunes the model in `out` into out/versions/vNNNN, and `serve` serves
    the newest version. A model trained anew into `out` replaces what those versions came from, so
    they go with it (renamed out of the way first, so a reload sees them whole or not at all); the
    feedback store stays, and the next `update` learns from it again on the new model."""
    versions = out / "versions"
    if not versions.is_dir():
        return
    n = sum(1 for _ in versions.iterdir())
    gone = out / f".versions{TMP_TAG}stale"
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(versions, gone)
    shutil.rmtree(gone, ignore_errors=True)
    log.warning("removed %d served version(s) under %s: they were updates of the model this run replaced", n, versions)


def _attach_live_encoder(model: Any, bundle: Bundle, cfg: RunConfig) -> None:
    """encoder.finetune: the model trains the language model too (set up first: it needs the cache)."""
    trains = isinstance(model, TrainsEncoder) and not isinstance(
        model, PerCategory
    )  # (model stays Any: it has setup too)
    if not trains or not reads_text(model):
        raise ConfigError(
            f"encoder.finetune={cfg.encoder.finetune!r}: model {cfg.model.name!r} ({cfg.model.mode}) "
            "does not train a text encoder; the pooled crossrec with a text item_tower does"
        )
    from crossrec.encoders.finetune import LiveTextEncoder
    from crossrec.encoders.text import bundle_texts

    model.setup(bundle, None)  # the trainer's setup repeats this; the text slot must exist first
    model.attach_encoder(
        LiveTextEncoder(cfg.encoder, bundle_texts(bundle, cfg.encoder)), cfg.encoder.lr, cfg.encoder.train_items
    )


def evaluate(
    artifact: Artifact | str | Path, bundle: Bundle, cfg: EvalConfig = EvalConfig(), split: str = "test"
) -> EvalResult:
    """Evaluate an artifact (or its directory) on a bundle split."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    check_bundle(art, bundle)
    return Evaluator(bundle, cfg, split=split).evaluate(art.model)


def recommend(
    artifact: Artifact | str | Path,
    bundle: Bundle,
    user: str,
    category: str | int,
    k: int = 10,
    exclude_seen: bool = True,
) -> pl.DataFrame:
    """Top-k items of one category for one raw user id, with titles and scores."""
    if k < 1:
        raise ConfigError(f"-k {k}: expected at least 1 item")
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    check_bundle(art, bundle)
    c = bundle.category_id(category)
    u = bundle.user_id(user)
    with torch.no_grad():
        scores = cast(Recommender, art.model).score(torch.tensor([u]), c)[0].float().clone()  # [n_items(c)]
    bad = int((torch.isnan(scores) | (scores == torch.inf)).sum())  # -inf is a model's mask; NaN, +inf are broken
    if bad:
        raise NumericError(
            f"model {art.name!r} in {str(art.root)!r} gave {bad} non-finite scores for user "
            f"{user[:60]!r} in category {str(category)[:60]!r}; the artifact is damaged or its "
            "training diverged: train it again"
        )
    if exclude_seen:
        seen = bundle.csr(("train", "valid", "test"), c)
        scores[torch.from_numpy(seen[u].indices.astype(np.int64))] = -torch.inf
    k = min(k, int(torch.isfinite(scores).sum()))
    top = torch.topk(scores, k)
    ids = bundle.item_index(c)[top.indices.numpy()]
    titles = bundle.items["title"].to_numpy()[ids] if "title" in bundle.items.columns else [""] * len(ids)
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(ids) + 1),
            "item": bundle.items["raw_item"].to_numpy()[ids],
            "title": titles,
            "score": top.values.numpy(),
        }
    )
