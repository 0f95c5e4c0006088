"""`crossrec update`: fine-tune the served model on the feedback it has collected, into a new
versioned artifact, never touching the one being served.

Versions live beside the original artifact:

    <out>/                      the artifact `crossrec train` wrote (version 0)
    <out>/versions/v0001/       bundle/ (the data it was trained on) + model/ (the artifact)
    <out>/versions/v0002/       ...

`newest_version(out)` is the highest complete version (its `model/config.json` exists; the model
directory is written atomically after the bundle), else `out` itself; `crossrec serve` loads it
and `POST /admin/reload` swaps it in.

An update appends the store's feedback events, and the rows of any new interaction files
(`crossrec update CONFIG --interactions FILE ...`: CSV/TSV/Parquet/JSONL, gzip ok, read with the
`data.columns` map, `data.format` and `data.sep` like `data.interactions`; each row an event named
`interaction`), as training interactions of the newest version's Bundle (each (user, item) once;
events named in `NEGATIVE_EVENTS` are left out), keeps the
validation and test splits as they are, and continues training the current weights with the
`train:` section (its early stopping on the validation split included). Feedback on users or items
the model has no row for is counted and skipped: a model's sizes are fixed when it is built, and
new users and items reach it through the service's fallbacks until the next full `crossrec train`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from crossrec.data.bundle import Bundle

if TYPE_CHECKING:
    from crossrec.config import RunConfig

log = logging.getLogger(__name__)

NEGATIVE_EVENTS = frozenset({"dislike", "skip", "hide", "dismiss", "remove", "return"})


def _versions(out: Path) -> list[Path]:
    root = out / "versions"
    if not root.is_dir():
        return []
    done = [
        p
        for p in root.iterdir()
        if p.name.startswith("v") and p.name[1:].isdigit() and (p / "model" / "config.json").is_file()
    ]
    return sorted(done, key=lambda p: int(p.name[1:]))


def newest_version(out: str | Path, bundle: str | Path) -> tuple[Path, Path, str]:
    """(artifact dir, bundle dir, version name) of the newest complete version under `out`;
    version 0 is `out` itself with the run config's `bundle`."""
    out = Path(out)
    done = _versions(out)
    if not done:
        return out, Path(bundle), "v0000"
    return done[-1] / "model", done[-1] / "bundle", done[-1].name


EVENT_SCHEMA = {"user": pl.Utf8, "item": pl.Utf8, "event": pl.Utf8, "timestamp": pl.Float64}


def events_frame(events: list[tuple[str, str, str, float]] | pl.DataFrame) -> pl.DataFrame:
    """(user, item, event, timestamp) events as a frame of `EVENT_SCHEMA`, in their order."""
    if isinstance(events, pl.DataFrame):
        return events.select([pl.col(k).cast(t) for k, t in EVENT_SCHEMA.items()])
    return pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row")


def feedback_rows(
    bundle: Bundle, feedback: list[tuple[str, str, str, float]] | pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, int]]:
    """New training rows (the Bundle's interaction schema) from (user, item, event, ts) events,
    and counts of what was used and skipped. A (user, item) pair counts once, at its first event's
    time; pairs the Bundle already has are skipped. Vectorised (joins), so millions of rows from
    interaction files cost seconds."""
    ev = events_frame(feedback).with_row_index("_n")
    users = pl.DataFrame({"user": [str(u) for u in bundle.raw_user_ids()]}).with_row_index("u")
    items = pl.DataFrame({"item": [str(i) for i in bundle.raw_item_ids()]}).with_row_index("i")
    negative = ev["event"].is_in(sorted(NEGATIVE_EVENTS))
    pos = ev.filter(~negative).join(users, on="user", how="left").join(items, on="item", how="left")
    known = pos.filter(pl.col("u").is_not_null() & pl.col("i").is_not_null())
    pairs = known.sort("_n").unique(["u", "i"], keep="first", maintain_order=True)
    have = bundle.interactions.select(
        pl.col("user").cast(pl.UInt32).alias("u"), pl.col("item").cast(pl.UInt32).alias("i")
    ).unique()
    new = pairs.join(have, on=["u", "i"], how="anti").sort(["timestamp", "_n"])
    stats = {
        "events": ev.height,
        "negative": int(negative.sum()),
        "unknown_user": int(pos["u"].is_null().sum()),
        "unknown_item": int((pos["u"].is_not_null() & pos["i"].is_null()).sum()),
        "known_pair": pairs.height - new.height,
        "added": new.height,
    }
    schema = bundle.interactions.schema
    start = int(cast(int, bundle.interactions["order"].max()) or 0) + 1 if bundle.interactions.height else 0
    u, i = new["u"].to_numpy().astype(np.int64), new["i"].to_numpy().astype(np.int64)
    cols: dict[str, Any] = {
        "user": u,
        "item": i,
        "category": bundle.item_category[i] if len(i) else np.zeros(0, np.int64),
        "order": np.arange(start, start + len(i)),
        "split": np.zeros(len(i), np.int64),
    }
    frame = pl.DataFrame({name: cols[name] if name in cols else pl.Series(name, [None] * len(i)) for name in schema})
    frame = frame.with_columns([pl.lit(False).alias(c) for c in ("new_to_category", "cold_item") if c in schema])
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()]), stats


def file_events(cfg: RunConfig, paths: Sequence[str | Path]) -> pl.DataFrame:
    """Events (`EVENT_SCHEMA`, event `interaction`) from interaction files, read like
    `data.interactions` (a bad file raises the readers' `DataError`, naming file, line and column)."""
    from crossrec.data.readers import read_interactions
    from crossrec.data.schema import ColumnMap
    from crossrec.typed import from_dict

    columns = replace(from_dict(ColumnMap, cfg.data.columns, "data.columns."), text=None)  # not needed here
    frames = [events_frame([])]
    for path in paths:
        df = read_interactions(path, columns, cfg.data.format, cfg.data.sep, limits=cfg.data.limits())
        ts = pl.col("timestamp").fill_null(0) if "timestamp" in df.columns else pl.lit(0.0)
        frames.append(
            events_frame(df.select("user", "item", pl.lit("interaction").alias("event"), ts.alias("timestamp")))
        )
    return pl.concat(frames)


def update(
    cfg: RunConfig,
    interactions: Sequence[str | Path] = (),
    feedback: Sequence[tuple[str, str, str, float]] | pl.DataFrame = (),
) -> dict[str, Any]:
    """Train the next version on `feedback` (the store's events: `serving.store`'s
    `all_feedback()`, which the CLI reads) and the rows of the `interactions` files; returns what
    was done (see the module docstring)."""
    from crossrec.artifact import check_bundle, load_artifact, save_artifact
    from crossrec.models.base import reads_text
    from crossrec.training.trainer import Trainer

    out = Path(cfg.out)
    art_dir, bundle_dir, version = newest_version(out, cfg.data.bundle)
    art, bundle = load_artifact(art_dir), Bundle.load(bundle_dir)
    check_bundle(art, bundle)
    from_files = file_events(cfg, list(interactions))  # read (and checked) before anything is written
    if bundle.pseudonymised and from_files.height:  # files carry raw ids; the Bundle and store, pseudonyms
        keys = {u: bundle.user_key(u) for u in from_files["user"].unique().to_list()}
        from_files = from_files.with_columns(pl.col("user").replace_strict(keys, return_dtype=pl.Utf8))
    rows, stats = feedback_rows(
        bundle,
        pl.concat([events_frame(feedback if isinstance(feedback, pl.DataFrame) else list(feedback)), from_files]),
    )
    stats["file_rows"] = from_files.height
    if stats["added"] == 0:
        return {"version": version, "updated": False, **stats}
    nxt = out / "versions" / f"v{int(version[1:]) + 1:04d}"
    nxt.mkdir(parents=True, exist_ok=True)
    manifest = {k: v for k, v in bundle.manifest.items() if k != "fingerprint"}
    manifest["updated_from"] = {"version": version, "feedback_rows": stats["added"]}
    new = Bundle(pl.concat([bundle.interactions, rows]), bundle.items, bundle.users, manifest)
    new.image_vectors, new.image_present = bundle.image_vectors, bundle.image_present
    new.save(nxt / "bundle", "the update's bundle")
    new = Bundle.load(nxt / "bundle")
    model = art.model
    if reads_text(model):
        from crossrec.encoders.text import attach_text

        attach_text(new, cfg.encoder, progress=False)
    result = Trainer(cfg.train, nxt / "train").fit(model, new)
    save_artifact(
        nxt / "model",
        model,
        art.name,
        art.mode,
        art.params,
        art.sizes,
        {
            "run_config": art.meta.get("run_config"),
            "train_result": result.to_json(),
            "updated_from": {"version": version, **stats},
        },
        bundle=new,
    )
    log.info("update: %s -> %s with %d feedback rows", version, nxt.name, stats["added"])
    return {"version": nxt.name, "updated": True, **stats}


__all__ = [
    "EVENT_SCHEMA",
    "NEGATIVE_EVENTS",
    "events_frame",
    "feedback_rows",
    "file_events",
    "newest_version",
    "update",
]
