"""The scale generator (data/scale_world.py): shape, determinism, distinct rows, the cross-category
taste structure, the parquet writer and the `crossrec synth` command. Its O(N) time is measured in
benchmarks, not here."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.data.prepare import PrepareConfig, prepare
from crossrec.data.scale_world import ScaleConfig, generate_scale, write_scale
from crossrec.data.vocabulary import TOPIC_WORDS
from crossrec.errors import ConfigError

CFG = ScaleConfig(interactions=30_000, categories=12, seed=3)


@pytest.fixture(scope="module")
def world():
    return generate_scale(CFG)


def test_shape_ids_and_order(world):
    inter, items = world
    assert 0.8 * CFG.interactions <= inter.height <= CFG.interactions  # repeats a small catalogue cannot avoid
    assert items.height == CFG.n_items == 600 and items["category"].n_unique() == 12
    assert inter["user"].n_unique() <= CFG.n_users and inter["category"].n_unique() == 12
    assert inter.select(pl.struct("user", "item").is_unique().all()).item()  # distinct (user, item)
    assert set(inter["item"].unique()) <= set(items["item"])
    joined = inter.join(items.select("item", pl.col("category").alias("item_category")), on="item")
    assert (joined["category"] == joined["item_category"]).all()  # an item is in its own category
    assert inter.equals(inter.sort(["user", "timestamp", "item"]))
    assert inter["rating"].is_between(1, 5).all() and items["title"].str.len_chars().min() > 0
    # users live in a few categories: the point of the compact pair index
    per_user = inter.group_by("user").agg(pl.col("category").n_unique())["category"]
    assert 1.5 < per_user.mean() < 4


def test_the_same_config_gives_the_same_log(world):
    again = generate_scale(CFG)
    assert world[0].equals(again[0]) and world[1].equals(again[1])
    other = generate_scale(ScaleConfig(interactions=30_000, categories=12, seed=4))[0]
    assert not other.equals(world[0])


def test_a_users_topics_carry_across_their_categories(world):
    inter, items = world
    word_topic = {w: k for k, words in enumerate(TOPIC_WORDS["books"]) for w in words}
    topic = items.select("item", pl.col("title").str.split(" ").list.first().replace_strict(word_topic).alias("t"))
    rows = inter.join(topic, on="item")
    hist = rows.group_by("user", "category", "t").len().pivot(on="t", index=["user", "category"], values="len")
    hist = hist.fill_null(0).sort("user", "category")
    counts = hist.select(sorted(c for c in hist.columns if c not in ("user", "category"))).to_numpy().astype(float)
    unit = counts / np.linalg.norm(counts, axis=1, keepdims=True)
    users = hist["user"].to_numpy()
    first = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    two = first[(first + 1 < len(users)) & (users[np.minimum(first + 1, len(users) - 1)] == users[first])]
    same = (unit[two] * unit[two + 1]).sum(1).mean()  # one user's two categories
    rng = np.random.default_rng(0)
    other = (unit[two] * unit[rng.permutation(two) + 1]).sum(1).mean()  # someone else's
    assert same > other + 0.1, (same, other)


def test_written_log_prepares_like_the_frames(tmp_path, world):
    inter_path, items_path, rows = write_scale(tmp_path / "w", CFG)
    assert rows == world[0].height
    assert pl.read_parquet(inter_path).equals(world[0]) and pl.read_parquet(items_path).equals(world[1])
    bundle = prepare(world[0], world[1], PrepareConfig(), tmp_path / "bundle")
    assert bundle.n_categories == 12 and bundle.split("test").height > 0


def test_blocks_bound_the_rows_held_and_keep_users_whole(tmp_path):
    small = ScaleConfig(interactions=30_000, categories=12, seed=3, block=2_000)
    inter, _ = generate_scale(small)
    assert 0.8 * small.interactions <= inter.height <= small.interactions
    assert inter.equals(inter.sort(["user", "timestamp", "item"]))


def test_bad_sizes_are_config_errors_and_the_command_writes_parquet(tmp_path):
    with pytest.raises(ConfigError, match="items >= categories"):
        ScaleConfig(interactions=100, categories=50, items=10)
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--interactions", "20k", "--categories", "8"])
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(tmp_path / "s" / "interactions.parquet").height > 15_000
    for junk in ("lots", "1e400"):
        bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "t"), "--interactions", junk])
        assert bad.exit_code == 2 and "expected a count" in bad.output
    again = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path / "s"), "--interactions", "20k", "--categories", "8"]
    )
    assert again.exit_code == 0, again.output  # its own output: written again
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "mine"), "--interactions", "20k"])
    assert refused.exit_code == 2 and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
