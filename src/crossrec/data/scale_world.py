"""A synthetic log of any size in O(N) time and memory: N interactions over C categories, with
item titles and the cross-category structure of the demo world (data/synthetic.py).

The demo world scores every item for every user (O(users x items)); this one never does:

- The eight topic centroids of the demo world (`synthetic.N_TOPICS`) live in one latent space
  shared by every category. An item is a Dirichlet mixture of topics; its vector is the mixture's
  centroid plus noise; its topic is the dominant one; its title is drawn from that topic's words.
- Category sizes follow a Zipf law (a few large categories, a long tail); so does each item's
  popularity within its (category, topic) cluster.
- A user has a shared taste vector; each user draws a few categories (1 + Poisson(`extra_categories`),
  by category size) and a specific taste per drawn category only (O(pairs), never users x
  categories). Their preference in a category is `shared_weight * shared + (1 - shared_weight) *
  specific`, normalised, as in the demo world, so a taste seen in one category predicts another.
- Each interaction picks a topic by softmax(pref . centroid / `temperature`) (8 logits), then an
  item of that topic in the category by popularity (inverse-CDF, `searchsorted`): O(log I) per
  row. A repeated (user, item) draw is drawn again (up to four rounds).
- Activity is lognormal per user; a user's interactions are shared among their categories by a
  Dirichlet draw.
- Ratings (1-5) follow the standardised affinity pref . item plus noise; timestamps are uniform
  over two years.

Rows are generated and written in blocks of users (`block` interactions at a time), so memory is
bounded by the block and the item table, not by N.

Example:
    >>> inter, items = generate_scale(ScaleConfig(interactions=20_000, categories=5))
    >>> sorted(inter.columns)
    ['category', 'item', 'rating', 'timestamp', 'user']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from crossrec.data.schema import CATEGORY, DESCRIPTION, ITEM, RATING, TIMESTAMP, TITLE, USER
from crossrec.data.synthetic import N_TOPICS, T_END, T_START
from crossrec.data.vocabulary import NOUNS, TOPIC_WORDS
from crossrec.errors import ConfigError, OutputError
from crossrec.io import atomic_path, claim_output, write_marker


@dataclass(frozen=True)
class ScaleConfig:
    """Size and shape of a scale log (users and items default to N/10 and N/50)."""

    interactions: int = 1_000_000  # (int) N: interactions drawn (a few repeats are dropped)
    categories: int = 50  # (int) C: number of categories
    users: int | None = None  # (int) default N / 10
    items: int | None = None  # (int) default N / 50
    extra_categories: float = 1.5  # (float) categories a user has beyond the first: Poisson mean
    shared_weight: float = 0.7  # (float) share of a user's taste shared across categories
    temperature: float = 0.15  # (float) softmax temperature of the topic choice; lower = sharper
    category_exponent: float = 0.8  # (float) Zipf exponent of category sizes
    popularity_exponent: float = 0.9  # (float) Zipf exponent of item popularity in a cluster
    dim: int = 16  # (int) latent dimension
    block: int = 1_000_000  # (int) interactions generated per block (bounds memory)
    seed: int = 0  # (int) seed of every random draw
    names: tuple[str, ...] = field(default=())  # (tuple[str]) category names (default c00, c01, ...)

    def __post_init__(self) -> None:
        if self.interactions < 1 or self.categories < 1 or self.dim < 2 or self.block < 1:
            raise ConfigError("synth: expected interactions, categories, block >= 1 and dim >= 2")
        if self.n_users < 1 or self.n_items < self.categories:
            raise ConfigError(f"synth: expected users >= 1 and items >= categories ({self.categories})")
        if self.names and len(self.names) != self.categories:
            raise ConfigError(f"synth: {len(self.names)} names for {self.categories} categories")
        if not 0.0 <= self.shared_weight <= 1.0 or self.temperature <= 0 or self.extra_categories < 0:
            raise ConfigError("synth: expected shared_weight in [0, 1], temperature > 0, extra_categories >= 0")

    @property
    def n_users(self) -> int:
        return self.users if self.users is not None else max(1, self.interactions // 10)

    @property
    def n_items(self) -> int:
        return self.items if self.items is not None else max(self.categories, self.interactions // 50)

    @property
    def category_names(self) -> tuple[str, ...]:
        width = len(str(self.categories - 1))
        return self.names or tuple(f"c{c:0{width}d}" for c in range(self.categories))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _zipf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """[n] shares summing to 1, Zipf-like over a random order."""
    share = (rng.permutation(n) + 1.0) ** -exponent
    return share / share.sum()


@dataclass(frozen=True)
class _Items:
    category: np.ndarray  # [I] category of each item
    topic: np.ndarray  # [I] dominant topic
    vectors: np.ndarray  # [I, dim] unit vectors
    order: np.ndarray  # [I] item ids sorted by (category, topic): a cluster is a contiguous run
    starts: np.ndarray  # [C * K + 1] cluster boundaries in `order`
    key: np.ndarray  # [I] in `order`: cluster id + cumulative popularity within the cluster (increasing)


def _items(cfg: ScaleConfig, rng: np.random.Generator, centroids: np.ndarray) -> _Items:
    n, n_cat = cfg.n_items, cfg.categories
    sizes = np.maximum(1, np.round(_zipf(n_cat, cfg.category_exponent, rng) * n)).astype(np.int64)
    sizes[np.argmax(sizes)] += n - sizes.sum()  # exactly n items, every category at least one
    category = np.repeat(np.arange(n_cat), sizes)
    theta = rng.dirichlet(np.full(N_TOPICS, 0.3), size=n)
    vectors = _unit(theta @ centroids + rng.normal(0.0, 0.4 / np.sqrt(cfg.dim), (n, cfg.dim)))
    topic = theta.argmax(1)
    cluster = category * N_TOPICS + topic
    order = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[order], np.arange(n_cat * N_TOPICS + 1))
    pop = (rng.permutation(n) + 1.0)[order] ** -cfg.popularity_exponent  # Zipf by a random rank
    cum = np.cumsum(pop)
    size = np.diff(starts)
    before = np.repeat(np.concatenate([[0.0], cum])[starts[:-1]], size)  # popularity before the cluster
    total = np.repeat(cum[np.maximum(starts[1:] - 1, 0)], size) - before
    key = cluster[order] + (cum - before) / np.maximum(total, 1e-300)
    return _Items(category, topic, vectors, order, starts, key)


def _user_pairs(cfg: ScaleConfig, rng: np.random.Generator, cat_share: np.ndarray) -> tuple[np.ndarray, ...]:
    """(user, category, rows) of every (user, category) pair, users in order: each user's
    categories drawn by size, their lognormal activity shared among them by a Dirichlet draw."""
    n_users = cfg.n_users
    k = np.minimum(1 + rng.poisson(cfg.extra_categories, n_users), cfg.categories)
    users = np.repeat(np.arange(n_users), k)
    cats = rng.choice(cfg.categories, len(users), p=cat_share)
    key = np.unique(users.astype(np.int64) * cfg.categories + cats)  # distinct pairs (a repeat draw folds)
    users, cats = key // cfg.categories, key % cfg.categories
    activity = rng.lognormal(-0.18, 0.6, n_users)  # mean 1
    share = rng.gamma(1.0, 1.0, len(users))
    share /= np.bincount(users, weights=share, minlength=n_users)[users]  # Dirichlet(1) per user
    expected = activity[users] * share * cfg.interactions / activity.sum()
    rows = np.floor(expected + rng.random(len(users))).astype(np.int64)  # unbiased rounding
    return users, cats, rows


class _World:
    """The parts drawn once (centroids, items, (user, category) pairs, shared tastes); `blocks()`
    then draws the interactions, whole users per block."""

    def __init__(self, cfg: ScaleConfig) -> None:
        self.cfg, self.rng = cfg, np.random.default_rng(cfg.seed)
        self.centroids = _unit(self.rng.normal(size=(N_TOPICS, cfg.dim)))
        self.items = _items(cfg, self.rng, self.centroids)
        cat_share = np.bincount(self.items.category, minlength=cfg.categories) / cfg.n_items
        self.users, self.cats, self.rows = _user_pairs(cfg, self.rng, cat_share)
        self.shared = _unit(self.rng.dirichlet(np.full(N_TOPICS, 0.4), cfg.n_users) @ self.centroids)

    def blocks(self) -> Iterator[pl.DataFrame]:
        cfg, users, rows = self.cfg, self.users, self.rows
        width, names = len(str(cfg.n_users - 1)), np.array(cfg.category_names)
        ends, lo = np.cumsum(rows), 0
        while lo < len(users):  # whole users per block: a block never splits a user's rows
            hi = max(int(np.searchsorted(ends, ends[lo] - rows[lo] + cfg.block, side="right")), lo + 1)
            while hi < len(users) and users[hi] == users[hi - 1]:
                hi += 1
            sl = slice(lo, hi)
            frame = _interactions(
                cfg, self.rng, self.centroids, self.items, self.shared, users[sl], self.cats[sl], rows[sl]
            )
            lo = hi
            if frame.height:
                yield frame.select(
                    pl.Series(USER, np.char.add("u", np.char.zfill(frame["u"].to_numpy().astype(str), width))),
                    pl.Series(ITEM, _item_ids(cfg, frame["i"].to_numpy())),
                    pl.Series(CATEGORY, names[frame["c"].to_numpy()]),
                    pl.col("t").alias(TIMESTAMP),
                    pl.col("r").alias(RATING),
                )


def _draw(rng: np.random.Generator, items: _Items, logits: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """One item per row: a topic by softmax(`logits` [n, K]), then an item of that topic in the
    row's category (`cats` [n]) by popularity; uniform over the category where it has no such item."""
    topic = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    cluster = cats * N_TOPICS + topic
    u = 1.0 - rng.random(len(cats))  # (0, 1]
    # inverse CDF inside the cluster: the first position whose key reaches cluster + u
    pos = np.searchsorted(items.key, cluster + u, side="left")
    first, last = items.starts[cats * N_TOPICS], items.starts[cats * N_TOPICS + N_TOPICS]
    anywhere = first + np.minimum(np.floor(u * (last - first)).astype(np.int64), last - first - 1)
    empty = items.starts[cluster] == items.starts[cluster + 1]
    return items.order[np.where(empty, anywhere, pos)]


def _interactions(
    cfg: ScaleConfig,
    rng: np.random.Generator,
    centroids: np.ndarray,
    items: _Items,
    shared: np.ndarray,
    users: np.ndarray,
    cats: np.ndarray,
    rows: np.ndarray,
) -> pl.DataFrame:
    """One block's interactions (u, i, c, t, r), distinct (user, item), sorted by user then time.
    Repeated draws are drawn again (four rounds; a pair wanting more items than popularity
    reaches keeps fewer)."""
    specific = _unit(rng.dirichlet(np.full(N_TOPICS, 0.4), len(users)) @ centroids)  # per pair only
    pref = _unit(cfg.shared_weight * shared[users] + (1.0 - cfg.shared_weight) * specific)  # [P, dim]
    logits = pref @ centroids.T / cfg.temperature  # [P, K]
    per_cat = np.diff(items.starts[::N_TOPICS])  # items in each category
    need = np.minimum(rows, per_cat[cats])
    have = np.zeros((0, 2), dtype=np.int64)  # (pair, item)
    for _ in range(4):
        pair = np.repeat(np.arange(len(users)), need)
        if len(pair) == 0:
            break
        got = np.stack([pair, _draw(rng, items, logits[pair], cats[pair])], 1)
        have = np.unique(np.concatenate([have, got]), axis=0)  # distinct, by pair then item
        need = np.minimum(rows, per_cat[cats]) - np.bincount(have[:, 0], minlength=len(users))
        need = np.maximum(need, 0)
    pair, item = have[:, 0], have[:, 1]
    aff = np.einsum("nd,nd->n", pref[pair], items.vectors[item])
    z = (aff - aff.mean()) / (aff.std() + 1e-12) if len(aff) else aff
    rating = np.clip(np.round(3.6 + 1.1 * z + rng.normal(0.0, 0.6, len(aff))), 1, 5)
    ts = T_START + (rng.random(len(aff)) * (T_END - T_START)).astype(np.int64)
    frame = pl.DataFrame({"u": users[pair], "i": item, "c": cats[pair], "t": ts, "r": rating})
    return frame.sort(["u", "t", "i"])


def _item_ids(cfg: ScaleConfig, items: np.ndarray) -> np.ndarray:
    width = len(str(cfg.n_items - 1))
    return np.char.add("i", np.char.zfill(items.astype(str), width))


def _item_frame(cfg: ScaleConfig, items: _Items) -> pl.DataFrame:
    """Items with titles and descriptions from their topic's words (vectorised)."""
    names = np.array(cfg.category_names)
    cat_names = names[items.category]
    words = np.array(TOPIC_WORDS["books"])  # [K, 5] a topic's words (one vocabulary for every category)
    nouns = np.array(NOUNS["books"])
    rng = np.random.default_rng(cfg.seed + 1)
    n = len(items.topic)
    w1 = words[items.topic, rng.integers(0, 5, n)]
    w2 = words[items.topic, rng.integers(0, 5, n)]
    noun = nouns[rng.integers(0, len(nouns), n)]
    ids = _item_ids(cfg, np.arange(n))
    title = np.char.add(np.char.add(np.char.add(np.char.add(w1, " "), w2), " "), np.char.add(noun, " #"))
    title = np.char.add(title, ids)
    desc = np.char.add(np.char.add(np.char.add("A ", w1), " "), np.char.add(noun, np.char.add(" in ", cat_names)))
    return pl.DataFrame(
        {ITEM: ids, CATEGORY: cat_names, TITLE: title, DESCRIPTION: desc},
        schema={ITEM: pl.Utf8, CATEGORY: pl.Utf8, TITLE: pl.Utf8, DESCRIPTION: pl.Utf8},
    )


def generate_scale(cfg: ScaleConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The whole log in memory: (interactions, items); for large N use `write_scale`."""
    world = _World(cfg)
    items = _item_frame(cfg, world.items)
    parts = list(world.blocks())
    return (pl.concat(parts) if parts else pl.DataFrame()), items


def write_scale(out_dir: str | Path, cfg: ScaleConfig) -> tuple[Path, Path, int]:
    """Write `interactions.parquet` (block by block: memory bounded by `cfg.block`) and
    `items.parquet` into `out_dir`, each atomically. Returns (interactions path, items path, rows).
    `out_dir` must be missing, empty, or a log this wrote before (`io.claim_output`)."""
    out = Path(out_dir)
    if not out.parent.is_dir():  # a typo in the parent is an error, not a new tree
        raise OutputError(f"--out={str(out)!r}: its directory {str(out.parent)!r} does not exist; create it first")
    with claim_output(out, "synthetic", "--out"):  # missing, empty, or a log synth wrote: never other files
        out.mkdir(exist_ok=True)
        write_marker(out, "synthetic")
        return _write(out, cfg)


def _write(out: Path, cfg: ScaleConfig) -> tuple[Path, Path, int]:
    import pyarrow.parquet as pq

    inter_path, items_path = out / "interactions.parquet", out / "items.parquet"
    world = _World(cfg)
    with atomic_path(items_path) as tmp:
        _item_frame(cfg, world.items).write_parquet(tmp)
    rows, writer = 0, None
    with atomic_path(inter_path) as tmp:
        try:
            for frame in world.blocks():
                table = frame.to_arrow()
                writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                rows += frame.height
        finally:
            if writer is not None:
                writer.close()
    return inter_path, items_path, rows


__all__ = ["ScaleConfig", "generate_scale", "write_scale"]
