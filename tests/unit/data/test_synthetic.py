"""The synthetic world has the structure the demo and the quality tests rely on."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from crossrec.data.prepare import SPLIT_CODES, PrepareConfig, prepare
from crossrec.data.synthetic import (
    NEW_RELEASE,
    SyntheticConfig,
    generate,
    generate_with_truth,
    tiny_config,
    write_world,
)


@pytest.fixture(scope="module")
def world():
    """The default world with its truth, plus the seconds it took."""
    t0 = time.perf_counter()
    inter, items, truth = generate_with_truth(SyntheticConfig())
    return inter, items, truth, time.perf_counter() - t0


def _item_rows(inter: pl.DataFrame, items: pl.DataFrame) -> np.ndarray:
    """Row of each interaction's item in the items frame (= index into the truth's item arrays)."""
    index = {it: i for i, it in enumerate(items["item"].to_list())}
    return inter["item"].replace_strict(index, return_dtype=pl.Int64).to_numpy()


def test_default_world_is_fast_and_sized(world):
    inter, items, _, seconds = world
    assert seconds < 10.0
    assert 100_000 <= inter.height <= 200_000
    assert inter["user"].n_unique() == 3000
    assert items.group_by("category").len().sort("category")["len"].to_list() == [2500, 1200, 250, 600]


def test_tiny_world_is_fast():
    t0 = time.perf_counter()
    inter, items = generate(tiny_config())
    assert time.perf_counter() - t0 < 1.0
    assert 1_000 <= inter.height <= 10_000
    assert inter["user"].n_unique() == 300
    assert set(inter["category"].unique()) == set(tiny_config().categories)


def test_canonical_columns_and_values():
    inter, items = generate(tiny_config())
    assert inter.schema == pl.Schema(
        {"user": pl.Utf8, "item": pl.Utf8, "category": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float64}
    )
    assert items.schema == pl.Schema({"item": pl.Utf8, "category": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8})
    assert inter["user"].str.contains(r"^u\d{5}$").all()
    assert inter["item"].str.contains(r"^[a-z]+-\d{4}$").all()
    assert inter["rating"].is_between(1.0, 5.0).all()
    assert (inter["rating"] == inter["rating"].round()).all()
    assert items["item"].is_unique().all()
    # Every interaction's item is in the catalogue, under the same category.
    joined = inter.join(items, on="item", how="left", suffix="_item")
    assert (joined["category"] == joined["category_item"]).all()
    assert inter.select("user", "item").is_unique().all()


def test_deterministic_given_seed():
    a_inter, a_items = generate(tiny_config(seed=3))
    b_inter, b_items = generate(tiny_config(seed=3))
    c_inter, c_items = generate(tiny_config(seed=4))
    assert a_inter.equals(b_inter) and a_items.equals(b_items)
    assert not a_inter.equals(c_inter)
    assert not a_items.equals(c_items)


def test_no_duplicate_pairs(world):
    inter = world[0]
    assert inter.select("user", "item").is_unique().all()


def test_category_density_and_user_activity(world):
    inter = world[0]
    per_category = inter.group_by("category").len()["len"]
    assert per_category.max() >= 20 * per_category.min()
    active = inter.group_by("user").agg(pl.col("category").n_unique().alias("n_categories"))
    assert (active["n_categories"] >= 2).mean() >= 0.7  # most users span categories
    assert (active["n_categories"] < 4).mean() >= 0.3  # many are new to some category
    per_user = inter.group_by("user").len()["len"].to_numpy()
    assert per_user.std() / per_user.mean() > 0.5  # heavy-tailed activity
    assert per_user.max() >= 10 * np.median(per_user)


def test_popularity_is_heavy_tailed(world):
    inter, items = world[0], world[1]
    counts = np.sort(inter.group_by("item").len()["len"].to_numpy())[::-1]
    top = counts[: items.height // 10].sum() / counts.sum()
    assert top >= 0.35
    assert counts[0] >= 20 * np.median(counts)


def test_timestamps_increase_and_follow_releases(world):
    inter, items, truth, _ = world
    assert inter.select(pl.col("timestamp").diff().over("user").fill_null(0) >= 0).to_series().all()
    rows = _item_rows(inter, items)
    assert (inter["timestamp"].to_numpy() >= truth.item_release[rows]).all()
    # Users' histories spread over time.
    span = inter.group_by("user").agg((pl.col("timestamp").max() - pl.col("timestamp").min()).alias("s"))
    assert span.filter(pl.col("s") > 0).height >= 0.8 * span.height
    assert (span["s"].median() or 0) > 30 * 86_400


def test_new_items_only_at_test_time(world):
    inter, items, truth, _ = world
    rows = _item_rows(inter, items)
    inter = inter.with_columns(pl.Series("is_new", truth.item_is_new[rows]))
    n = pl.len().over("user", "category")
    ranked = inter.sort("user", "category", "timestamp").with_columns(
        (pl.int_range(pl.len()).over("user", "category") == n - 1).alias("last"), (n >= 2).alias("n2")
    )
    new_rows = ranked.filter("is_new")
    assert new_rows.height > 0
    assert (new_rows["last"] & new_rows["n2"]).all()
    assert (new_rows["timestamp"] >= NEW_RELEASE).all()
    # Every category has new items and most of them do get interactions.
    assert new_rows["category"].n_unique() == 4
    n_new = int(truth.item_is_new.sum())
    assert n_new == sum(round(0.05 * n) for n in SyntheticConfig().items_per_category)
    assert new_rows["item"].n_unique() >= 0.5 * n_new
    # After leave-last-out, they are test-only cold items.
    bundle = prepare(inter.drop("is_new"), items, PrepareConfig())
    new_ids = bundle.items.filter(pl.col("raw_item").is_in(new_rows["item"].unique().to_list()))["item"]
    rows_of_new = bundle.interactions.filter(pl.col("item").is_in(new_ids.to_list()))
    assert rows_of_new.height == new_rows.height
    assert (rows_of_new["split"] == SPLIT_CODES["test"]).all() and rows_of_new["cold_item"].all()


def test_titles_carry_latent_signal(world):
    _, items, truth, _ = world
    vec = truth.item_vectors
    words = items["title"].str.to_lowercase().str.split(" ").list.slice(0, 3)  # topic words only
    exploded = pl.DataFrame({"row": np.arange(items.height), "word": words}).explode("word")
    same_sum, same_n = 0.0, 0
    for rows in exploded.group_by("word").agg("row")["row"].to_list():
        if len(rows) < 2:
            continue
        s = vec[rows].sum(0)
        same_sum += float(s @ s) - len(rows)  # sum of cosines over ordered pairs (unit vectors)
        same_n += len(rows) * (len(rows) - 1)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(vec), 20_000), rng.integers(0, len(vec), 20_000)
    random_cos = float(np.einsum("nd,nd->n", vec[a], vec[b]).mean())
    assert same_sum / same_n > random_cos + 0.15
    # Items of one category with the same dominant topic share title words; others rarely do.
    dominant = truth.item_topics.argmax(1)
    sets = [set(w) for w in words.to_list()]
    cats = items["category"].to_numpy()
    a, b = rng.integers(0, len(vec), 50_000), rng.integers(0, len(vec), 50_000)
    keep = (cats[a] == cats[b]) & (a != b)
    a, b = a[keep], b[keep]
    share = np.array([bool(sets[i] & sets[j]) for i, j in zip(a, b)])
    same = dominant[a] == dominant[b]
    assert share[same].mean() > 0.5
    assert share[same].mean() > 2 * share[~same].mean()


def _cross_category_cosines(inter, items, truth, dense: str, sparse: str, centred: bool = False):
    """Mean cosine of users' mean item vectors in `dense` vs `sparse`: (matched users, shuffled users)."""
    rows = _item_rows(inter, items)
    users = inter["user"].str.slice(1).cast(pl.Int64).to_numpy()
    means = {}
    for name in (dense, sparse):
        mask = (inter["category"] == name).to_numpy()
        total = np.zeros((truth.user_shared.shape[0], truth.item_vectors.shape[1]))
        np.add.at(total, users[mask], truth.item_vectors[rows[mask]])
        means[name] = total
    both = np.flatnonzero((np.abs(means[dense]).sum(1) > 0) & (np.abs(means[sparse]).sum(1) > 0))
    d = means[dense][both] / np.linalg.norm(means[dense][both], axis=1, keepdims=True)
    s = means[sparse][both] / np.linalg.norm(means[sparse][both], axis=1, keepdims=True)
    if centred:  # remove what every user shares (popular items, the catalogue's mean direction)
        d, s = d - d.mean(0), s - s.mean(0)
        d, s = d / np.linalg.norm(d, axis=1, keepdims=True), s / np.linalg.norm(s, axis=1, keepdims=True)
    shuffled = np.random.default_rng(0).permutation(len(both))
    return float((d * s).sum(1).mean()), float((d * s[shuffled]).sum(1).mean())


def test_taste_transfers_across_categories(world):
    inter, items, truth, _ = world
    matched, shuffled = _cross_category_cosines(inter, items, truth, "books", "garden")
    assert matched > 0.5 and matched > shuffled + 0.1
    matched, shuffled = _cross_category_cosines(inter, items, truth, "books", "garden", centred=True)
    assert matched > 0.3
    assert abs(shuffled) < 0.08


def test_shared_weight_controls_transfer():
    cfg = SyntheticConfig(n_users=1500, interactions_per_user=(20.0, 8.0, 4.0, 3.0))
    inter, items, truth = generate_with_truth(replace(cfg, shared_weight=0.0))
    matched0, _ = _cross_category_cosines(inter, items, truth, "books", "garden", centred=True)
    inter, items, truth = generate_with_truth(cfg)
    matched7, _ = _cross_category_cosines(inter, items, truth, "books", "garden", centred=True)
    assert abs(matched0) < 0.08  # no shared taste: nothing to transfer
    assert matched7 > matched0 + 0.3
    # Preferences are the normalised mix of shared and category-specific taste.
    mix = 0.7 * truth.user_shared[None] + 0.3 * truth.user_specific
    np.testing.assert_allclose(truth.user_pref, mix / np.linalg.norm(mix, axis=-1, keepdims=True))


def test_ratings_follow_affinity():
    inter, items, truth = generate_with_truth(tiny_config())
    rows = _item_rows(inter, items)
    users = inter["user"].str.slice(1).cast(pl.Int64).to_numpy()
    cats = inter["category"].replace_strict({c: i for i, c in enumerate(tiny_config().categories)}).to_numpy()
    affinity = np.einsum("nd,nd->n", truth.user_pref[cats, users], truth.item_vectors[rows])
    assert np.corrcoef(affinity, inter["rating"].to_numpy())[0, 1] > 0.6


def test_write_world_round_trips(tmp_path):
    paths = write_world(tmp_path / "raw", tiny_config())
    assert set(paths) == {"interactions", "items"}
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["interactions.csv.gz", "items.csv.gz"]
    inter, items = generate(tiny_config())
    back = pl.read_csv(paths["interactions"], schema=inter.schema)
    assert back.equals(inter)
    assert pl.read_csv(paths["items"], schema=items.schema).equals(items)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"items_per_category": (10, 10)},
        {"categories": ("a", "a"), "items_per_category": (10, 10), "interactions_per_user": (1.0, 1.0)},
        {"shared_weight": 1.5},
        {"new_item_fraction": 0.7},
        {"temperature": 0.0},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)
