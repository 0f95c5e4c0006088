"""`crossrec update`: stored feedback becomes training rows of a new version; the served artifact
is never touched; the loader serves the newest complete version."""

from __future__ import annotations

import torch

from crossrec.config import load_config
from crossrec.data.bundle import Bundle
from crossrec.serving.loader import service_loader, stored_feedback
from crossrec.serving.store import SQLiteStore
from crossrec.update import feedback_rows, newest_version, update
from tests.unit.serving.test_service import trained


def test_feedback_rows_take_known_new_positive_pairs(tiny_bundle):
    raw_u, raw_i = tiny_bundle.raw_user_ids(), tiny_bundle.raw_item_ids()
    have = set(zip(tiny_bundle.interactions["user"].to_list(), tiny_bundle.interactions["item"].to_list()))
    new_item = next(j for j in range(tiny_bundle.n_items) if (0, j) not in have)
    old_item = next(j for j in range(tiny_bundle.n_items) if (0, j) in have)
    events = [
        (str(raw_u[0]), str(raw_i[new_item]), "purchase", 3.0),
        (str(raw_u[0]), str(raw_i[new_item]), "click", 4.0),  # the same pair again
        (str(raw_u[0]), str(raw_i[old_item]), "click", 5.0),  # already in the data
        (str(raw_u[1]), str(raw_i[new_item]), "dislike", 6.0),  # negative
        ("stranger", str(raw_i[new_item]), "click", 7.0),
        (str(raw_u[0]), "no-such-item", "click", 8.0),
    ]
    rows, stats = feedback_rows(tiny_bundle, events)
    assert stats == {"events": 6, "negative": 1, "unknown_user": 1, "unknown_item": 1, "known_pair": 1, "added": 1}
    assert rows.schema == tiny_bundle.interactions.schema
    assert rows["user"].to_list() == [0] and rows["item"].to_list() == [new_item] and rows["split"].to_list() == [0]
    assert rows["category"].to_list() == [int(tiny_bundle.item_category[new_item])]
    assert rows["order"][0] > tiny_bundle.interactions["order"].max()


def test_update_writes_a_new_version_and_the_loader_serves_it(tiny_bundle, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "model"
    trained(tiny_bundle, out, "mf", {"dim": 8})
    before = (out / "model.safetensors").read_bytes()
    cfg = load_config(
        None,
        [
            f"--out={out}",
            f"--data.bundle={tiny_bundle.root}",
            "--model.name=mf",
            "--model.dim=8",
            "--train.epochs=1",
            "--train.progress=false",
            "--train.checkpoint=false",
        ],
    )
    assert update(cfg)["updated"] is False  # no feedback yet
    store = SQLiteStore(out / "serving" / "store.sqlite")
    have = set(zip(tiny_bundle.interactions["user"].to_list(), tiny_bundle.interactions["item"].to_list()))
    pairs = [(u, j) for u in range(20) for j in range(0, tiny_bundle.n_items, 7) if (u, j) not in have][:60]
    for n, (u, j) in enumerate(pairs):
        store.add_feedback(str(tiny_bundle.raw_user_ids()[u]), str(tiny_bundle.raw_item_ids()[j]), "click", float(n))
    done = update(cfg, feedback=stored_feedback(cfg))  # what `crossrec update` reads and passes
    assert done["updated"] and done["version"] == "v0001" and done["added"] == len(pairs)
    assert (out / "model.safetensors").read_bytes() == before  # the served artifact is untouched
    art_dir, bundle_dir, version = newest_version(out, tiny_bundle.root)
    assert (version, art_dir, bundle_dir) == (
        "v0001",
        out / "versions" / "v0001" / "model",
        out / "versions" / "v0001" / "bundle",
    )
    new = Bundle.load(bundle_dir)
    assert new.split("train").height == tiny_bundle.split("train").height + len(pairs)
    assert new.split("test").height == tiny_bundle.split("test").height
    svc = service_loader(cfg)()
    assert (
        svc.version != "" and svc.recommend(str(tiny_bundle.raw_user_ids()[0]), tiny_bundle.categories[0], 5)["items"]
    )


def test_update_reads_new_interaction_files_and_refuses_a_bad_one(tiny_bundle, tmp_path):
    import gzip

    import polars as pl
    import pytest

    from crossrec.data.schema import DataError

    torch.set_num_threads(1)
    out = tmp_path / "model"
    trained(tiny_bundle, out, "mf", {"dim": 8})
    cfg = load_config(
        None,
        [
            f"--out={out}",
            f"--data.bundle={tiny_bundle.root}",
            "--model.name=mf",
            "--model.dim=8",
            "--train.epochs=1",
            "--train.progress=false",
            "--train.checkpoint=false",
        ],
    )
    have = set(zip(tiny_bundle.interactions["user"].to_list(), tiny_bundle.interactions["item"].to_list()))
    pairs = [(u, j) for u in range(10) for j in range(0, tiny_bundle.n_items, 11) if (u, j) not in have][:25]
    raw_u, raw_i = tiny_bundle.raw_user_ids(), tiny_bundle.raw_item_ids()
    rows = [
        (str(raw_u[u]), str(raw_i[j]), tiny_bundle.categories[int(tiny_bundle.item_category[j])], 1_700_000_000 + n)
        for n, (u, j) in enumerate(pairs)
    ] + [("someone-new", str(raw_i[0]), tiny_bundle.categories[0], 1)]
    good = tmp_path / "new.csv.gz"
    pl.DataFrame(rows, schema=["user_id", "item_id", "category", "timestamp"], orient="row").write_csv(
        tmp_path / "new.csv"
    )
    good.write_bytes(gzip.compress((tmp_path / "new.csv").read_bytes()))
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,category\nu1,books\n")  # no item column
    with pytest.raises(DataError, match="bad.csv"):
        update(cfg, [good, bad])
    assert not (out / "versions").exists()  # nothing half-written
    done = update(cfg, [good])
    assert done["updated"] and done["file_rows"] == len(rows) and done["added"] == len(pairs)
    assert done["unknown_user"] == 1
    new = Bundle.load(newest_version(out, tiny_bundle.root)[1])
    assert new.split("train").height == tiny_bundle.split("train").height + len(pairs)
