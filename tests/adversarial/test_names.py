"""Names from the data are never paths (issue 33, class 1).

A category name is data: `../../../victim`, an absolute path, `.`, `..`, `con`, `/` and `\\`
inside, unicode -- each works end to end (prepare -> train single and pooled -> evaluate ->
recommend -> serve -> experiment -> report) and nothing is written outside the named outputs; a
name that cannot be one (`ALL`, control characters, over 200 characters, blank) is refused in one
line that names the file and line. A hypothesis property test draws arbitrary names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrec.data.schema import ALL_CATEGORIES, DataError, category_name_problem

HOSTILE_OK = ["../../../victim", ".", "..", "con", "a/b", "a\\b", "ünïcödé 書籍 🎧", "x" * 200, "all", "-rf"]
REFUSED = {"ALL": "ALL", "nul": "x\x00y", "newline": "x\ny", "300 chars": "y" * 300, "tab": "a\tb", "blank": "   "}


def tree(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file under `root` (outside `skip`) with its size and mtime."""
    out = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        if any(Path(dirpath) == s or s in Path(dirpath).parents for s in skip):
            continue
        for f in filenames:
            p = Path(dirpath) / f
            st_ = p.lstat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


def world(names: list[str], n_users: int = 120, items: int = 25, per_user: float = 4.0, seed: int = 0):
    from crossrec.data.synthetic import SyntheticConfig, generate

    inter, items_ = generate(
        SyntheticConfig(
            n_users=n_users,
            categories=tuple(names),
            items_per_category=(items,) * len(names),
            interactions_per_user=(per_user,) * len(names),
            seed=seed,
        )
    )
    # the generator spells item ids with the category name: ids of our own keep this about names
    ids = dict(zip(items_["item"].to_list(), [f"i{n}" for n in range(items_.height)]))
    return (
        inter.with_columns(pl.col("item").replace_strict(ids)),
        items_.with_columns(pl.col("item").replace_strict(ids)),
    )


def write_csvs(folder: Path, names: list[str], **kw) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    inter, items = world(names, **kw)
    inter.write_csv(folder / "interactions.csv")
    items.write_csv(folder / "items.csv")
    return folder / "interactions.csv", folder / "items.csv"


def run_config(inter: Path, items: Path, bundle: Path, out: Path, **model):
    from crossrec.config import load_config

    spec = {"name": "mf", "mode": "single", "dim": 8} | model
    return load_config(
        None,
        [
            f"--data.interactions={inter}",
            f"--data.items={items}",
            f"--data.bundle={bundle}",
            f"--out={out}",
            "--data.columns={user: user, item: item, category: category, timestamp: timestamp, rating: rating}",
            "--data.item_columns={item: item, category: category, title: title, description: description}",
            *[f"--model.{k}={v}" for k, v in spec.items()],
            "--train.epochs=2",
            "--train.batch_size=256",
            "--train.progress=false",
            "--eval.ks=[10]",
        ],
    )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One world whose categories are all the hostile-but-valid names (plus an absolute path),
    prepared and trained single and pooled, with a victim folder where `../../../victim` points."""
    from crossrec.pipeline import prepare_data, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("names")
    victim = root / "victim" / "checkpoint"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("mine")
    names = HOSTILE_OK + [str(root / "abs-victim")]
    inter, items = write_csvs(root / "raw", names)
    work = root / "w"
    work.mkdir()
    before = tree(root, skip=(work,))
    cfg = run_config(inter, items, work / "bundle", work / "single")
    bundle = prepare_data(cfg)
    single = train(cfg, bundle)
    pooled = train(run_config(inter, items, work / "bundle", work / "pooled", mode="pooled"), bundle)
    return root, work, names, bundle, single, pooled, cfg, before


def test_names_are_data_not_paths(hostile):
    root, work, names, bundle, single, pooled, _, before = hostile
    assert sorted(bundle.categories) == sorted(names)
    assert tree(root, skip=(work,)) == before  # nothing written or deleted outside the outputs
    assert (root / "victim" / "checkpoint" / "precious.txt").read_text() == "mine"
    assert not (root / "abs-victim").exists()
    dirs = single.meta["category_dirs"]  # crossrec's own names, mapped in the artifact JSON
    assert sorted(dirs) == sorted(names)
    for name, rel in dirs.items():
        path = (single.root / rel).resolve()
        assert path.parent == (single.root / "categories").resolve(), (name, rel)
        assert (path / "checkpoint" / "current.json").is_file()


@pytest.mark.parametrize("which", ["single", "pooled"])
def test_evaluate_and_recommend_every_hostile_category(hostile, which, tmp_path):
    from crossrec.pipeline import evaluate, recommend

    root, work, names, bundle, single, pooled, _, before = hostile
    art = single if which == "single" else pooled
    result = evaluate(art, bundle)
    cats = result.table.filter(pl.col("slice") == "all")["category"].to_list()
    assert sorted(c for c in cats if c != ALL_CATEGORIES) == sorted(names)
    assert cats.count(ALL_CATEGORIES) == 1  # one ALL row, never two
    user = str(bundle.raw_user_ids()[0])
    for name in names:
        top = recommend(art, bundle, user, name, k=3)
        assert top.height == 3 and top["score"].is_finite().all()
    assert tree(root, skip=(work,)) == before


def test_serve_every_hostile_category(hostile):
    from fastapi.testclient import TestClient

    from crossrec.serving.api import create_app
    from crossrec.serving.config import ServeConfig
    from crossrec.serving.service import Service
    from crossrec.serving.store import SQLiteStore

    root, work, names, bundle, single, pooled, _, before = hostile
    store = SQLiteStore(work / "serve-store.sqlite")
    client = TestClient(create_app(lambda: Service(pooled, bundle, store=store), ServeConfig()))
    assert sorted(client.get("/health").json()["categories"]) == sorted(names)
    user = str(bundle.raw_user_ids()[0])
    for name in names:
        r = client.get("/recommend", params={"user": user, "category": name, "k": 3})
        assert r.status_code == 200, (name, r.text)
        assert len(r.json()["items"]) == 3
    assert tree(root, skip=(work,)) == before


def test_experiment_and_report_with_hostile_categories(hostile, tmp_path):
    from crossrec.experiment import load_experiment, run_experiment
    from crossrec.experiment.html_report import write_report

    root, work, names, bundle, *_ = hostile
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "hostile",
                "seeds": [0],
                "metrics": ["ndcg@10"],
                "data": {
                    "interactions": str(root / "raw" / "interactions.csv"),
                    "bundle": str(work / "exp-bundle"),
                    "columns": {"user": "user", "item": "item", "category": "category", "timestamp": "timestamp"},
                },
                "train": {"epochs": 1, "batch_size": 256, "progress": False, "checkpoint": False},
                "eval": {"ks": [10]},
                "out": str(work / "exp"),
                "models": [
                    {"label": "pop", "name": "pop", "single_category": True},
                    {"label": "mf-pooled", "name": "mf", "dim": 8, "flagship": True},
                ],
            }
        )
    )
    before = tree(root, skip=(work,))
    result = run_experiment(load_experiment(spec, []))
    page = write_report(work / "exp").read_text()
    for name in names:
        assert name in result.summary_table("ndcg@10", "all") or name.replace("|", "\\|") in result.summary_table(
            "ndcg@10", "all"
        )
    import html

    assert html.escape("ünïcödé 書籍 🎧") in page
    assert tree(root, skip=(work,)) == before


@pytest.mark.parametrize("kind", list(REFUSED))
def test_an_impossible_category_name_is_refused_in_one_line(kind, tmp_path):
    """Through the CLI: exit 2, one `error:` line of at most 300 characters with file and line."""
    bad = REFUSED[kind]
    inter, items = write_csvs(tmp_path / "raw", ["books", "music"], n_users=30)
    frame = pl.read_csv(inter)
    frame = frame.with_columns(
        pl.when(pl.col("category") == "music").then(pl.lit(bad)).otherwise(pl.col("category")).alias("category")
    )  # a whole category renamed: items stay in one category
    frame.write_csv(inter)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        json.dumps(
            {
                "data": {
                    "interactions": str(inter),
                    "bundle": str(tmp_path / "bundle"),
                    "columns": {"user": "user", "item": "item", "category": "category"},
                }
            }
        )
    )
    if kind == "ALL":  # one name in a real process: the exit code and stderr a shell sees
        p = subprocess.run(
            [sys.executable, "-m", "crossrec.cli", "prepare", str(cfg)], capture_output=True, text=True, timeout=300
        )
        code, stderr = p.returncode, p.stderr
    else:  # the rest in this process (a fresh interpreter would mostly import)
        from typer.testing import CliRunner

        from crossrec.cli import app

        r = CliRunner().invoke(app, ["prepare", str(cfg)])
        code, stderr = r.exit_code, r.stderr
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 300, stderr
    assert lines[0].startswith("error: ") and "interactions.csv:" in lines[0] and "category" in lines[0]
    assert not (tmp_path / "bundle").exists()


def test_an_impossible_category_name_from_python_is_refused(tmp_path):
    from crossrec.data.prepare import PrepareConfig, prepare

    inter, items = world(["books", "music"], n_users=30)
    inter = inter.with_columns(
        pl.when(pl.col("category") == "music")
        .then(pl.lit(ALL_CATEGORIES))
        .otherwise(pl.col("category"))
        .alias("category")
    )
    items = items.with_columns(
        pl.when(pl.col("category") == "music")
        .then(pl.lit(ALL_CATEGORIES))
        .otherwise(pl.col("category"))
        .alias("category")
    )
    with pytest.raises(DataError, match="all-categories rows"):
        prepare(inter, items, PrepareConfig())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=260))
def test_any_category_name_round_trips_or_is_refused(name, tmp_path_factory):
    """prepare -> train -> evaluate with one category named `name`: it round-trips (the Bundle and
    the table carry the name as the reader keeps it, stripped of outer white space) or prepare
    refuses it with a DataError of one short line; files outside the outputs never change."""
    from crossrec.pipeline import evaluate, prepare_data, train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prop")
    inter, items = write_csvs(root / "raw", ["books", name if name != "books" else "books2"], n_users=40, items=12)
    kept = pl.Series([name]).str.strip_chars()[0] if name != "books" else "books2"
    work = root / "w"
    before = tree(root, skip=(work,))
    cfg = run_config(inter, items, work / "bundle", work / "model")
    try:
        bundle = prepare_data(cfg)
    except DataError as e:
        assert category_name_problem(kept) is not None, (name, str(e))
        assert "\n" not in str(e) and len(str(e)) <= 300 + len(str(inter)), str(e)
    else:
        assert category_name_problem(kept) is None
        assert kept in bundle.categories
        art = train(cfg, bundle)
        table = evaluate(art, bundle).table
        cats = table["category"].to_list()
        assert kept in cats and cats.count(ALL_CATEGORIES) == table["slice"].n_unique()  # one ALL row a slice
    assert tree(root, skip=(work,)) == before


@pytest.mark.parametrize("label", ["../../escape", "/abs/x", "..", "a/b", "x" * 65, ""])
def test_an_experiment_label_that_would_be_a_path_is_refused(label, tmp_path):
    """Model labels name folders (models/<label>/seed-<n>): a label that is a path is refused."""
    from crossrec.experiment import load_experiment
    from crossrec.typed import ConfigError

    spec = tmp_path / "exp.yaml"
    spec.write_text(
        json.dumps(
            {
                "name": "x",
                "data": {"dataset": "synthetic", "bundle": str(tmp_path / "b")},
                "out": str(tmp_path / "o"),
                "models": [{"label": label, "name": "pop"}],
            }
        )
    )
    with pytest.raises(ConfigError, match="label"):
        load_experiment(spec, [])
