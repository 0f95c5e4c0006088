"""The embedded default world: a synthetic multi-category dataset with real, learnable structure.

Used by `crossrec demo` and the tests. The generative story:

- Eight topic centroids (`N_TOPICS`) live in one latent space shared by every category, so a taste
  learnt in one category carries over to the others. An item's vector is a Dirichlet mixture of centroids plus
  noise; its title and description are drawn from the words of its dominant topics.
- A user has a shared taste vector and one specific vector per category; their preference in a
  category is `shared_weight * shared + (1 - shared_weight) * specific`, normalised.
- Activity is heavy-tailed (lognormal per user, gamma-Poisson per (user, category)), so categories
  differ a lot in density and many users have no history in some category.
- Items are chosen without replacement by Gumbel-top-k over
  `softmax(pref . item / temperature + log popularity)`, with a Zipf-like popularity prior.
- Late-released items (`new_item_fraction`) can only be a (user, category)'s final pick, which always
  happens after their release: after leave-last-out splitting they exist only at test time.
- Ratings (1-5) follow the affinity `pref . item` plus noise, so explicit-feedback models have signal.

Example:
    >>> inter, items = generate(tiny_config())
    >>> inter.columns
    ['user', 'item', 'category', 'timestamp', 'rating']
    >>> items.columns
    ['item', 'category', 'title', 'description']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from crossrec.data.schema import (
    CATEGORY,
    DESCRIPTION,
    ITEM,
    RATING,
    TIMESTAMP,
    TITLE,
    USER,
)
from crossrec.data.vocabulary import NOUNS, TOPIC_WORDS
from crossrec.errors import ConfigError
from crossrec.io import atomic_path

T_START = 1_577_836_800  # 2020-01-01: first possible interaction
T_END = T_START + 2 * 365 * 86_400  # two years of history
NEW_RELEASE = T_END - 60 * 86_400  # new items come out 60 days before the end
NEW_ITEM_BOOST = np.log(2.0)  # new releases draw attention: +log(2) on their logits
MAX_SHARE = 0.25  # no (user, category) takes more than a quarter of the category's catalogue
CHUNK = 1024  # users per Gumbel block: [CHUNK, n_items] float64 stays small

N_TOPICS = len(TOPIC_WORDS["books"])


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the synthetic world (defaults: ~3000 users, ~130k interactions, ~1 s).

    Example:
        >>> SyntheticConfig(n_users=500, seed=1).n_users
        500
    """

    n_users: int = 3000  # (int) number of users
    categories: tuple[str, ...] = ("books", "electronics", "kitchen", "garden")  # (tuple[str]) names
    items_per_category: tuple[int, ...] = (2500, 1200, 600, 250)  # (tuple[int]) catalogue sizes
    interactions_per_user: tuple[float, ...] = (28.0, 9.0, 3.5, 1.0)  # (tuple[float]) mean per category
    dim: int = 16  # (int) latent dimension of user and item vectors
    shared_weight: float = 0.7  # (float) share of a user's taste shared across categories
    temperature: float = 0.08  # (float) softmax temperature of the choice model; lower = sharper taste
    popularity_exponent: float = 0.9  # (float) Zipf exponent of the item popularity prior
    new_item_fraction: float = 0.05  # (float) share of each catalogue released late (test-only items)
    activity_sigma: float = 0.6  # (float) lognormal sigma of a user's overall activity
    category_shape: float = 0.6  # (float) gamma shape of per-(user, category) activity; lower = more zeros
    rating_noise: float = 0.6  # (float) std of the noise added to ratings (1-5 scale)
    seed: int = 0  # (int) seed of every random draw

    def __post_init__(self) -> None:
        n = len(self.categories)
        if n == 0 or len(set(self.categories)) != n:
            raise ConfigError(f"synthetic.categories={self.categories!r}; expected distinct names")
        if len(self.items_per_category) != n or len(self.interactions_per_user) != n:
            raise ConfigError(
                f"synthetic: {n} categories but {len(self.items_per_category)} items_per_category "
                f"and {len(self.interactions_per_user)} interactions_per_user; expected one per category"
            )
        if self.n_users < 1 or min(self.items_per_category) < 4 or self.dim < 2:
            raise ConfigError("synthetic: expected n_users >= 1, items_per_category >= 4 and dim >= 2")
        if min(self.interactions_per_user) <= 0 or self.temperature <= 0:
            raise ConfigError("synthetic: expected interactions_per_user > 0 and temperature > 0")
        if not 0.0 <= self.shared_weight <= 1.0 or not 0.0 <= self.new_item_fraction < 0.5:
            raise ConfigError("synthetic: expected shared_weight in [0, 1] and new_item_fraction in [0, 0.5)")


def tiny_config(seed: int = 0) -> SyntheticConfig:
    """A small world for unit tests: 300 users, 4 categories, ~4k interactions, well under 1 s."""
    return SyntheticConfig(
        n_users=300,
        items_per_category=(300, 160, 100, 60),
        interactions_per_user=(8.0, 4.0, 2.0, 0.4),
        seed=seed,
    )


@dataclass(frozen=True)
class WorldTruth:
    """The latent truth behind a generated world (for tests and diagnostics).

    Item arrays are aligned with the rows of the items frame; user arrays with user index
    `int(user[1:])`; category arrays with `cfg.categories`.
    """

    topic_centroids: np.ndarray  # [n_topics, dim] unit vectors, shared by all categories
    user_shared: np.ndarray  # [n_users, dim] shared taste, unit norm
    user_specific: np.ndarray  # [n_categories, n_users, dim] category-specific taste, unit norm
    user_pref: np.ndarray  # [n_categories, n_users, dim] preference used for choices, unit norm
    item_vectors: np.ndarray  # [n_items, dim] unit norm
    item_topics: np.ndarray  # [n_items, n_topics] topic mixture (rows sum to 1)
    item_popularity: np.ndarray  # [n_items] popularity prior, sums to 1 within each category
    item_is_new: np.ndarray  # [n_items] bool: released late, test-only
    item_release: np.ndarray  # [n_items] int64 release time (unix seconds)
    counts: np.ndarray = field(repr=False)  # [n_categories, n_users] interactions per (category, user)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _topic_vectors(
    rng: np.random.Generator, centroids: np.ndarray, n: int, alpha: float, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """n Dirichlet topic mixtures and their unit vectors: mixture @ centroids + gaussian noise."""
    theta = rng.dirichlet(np.full(len(centroids), alpha), size=n)  # [n, n_topics]
    dim = centroids.shape[1]
    vec = theta @ centroids + rng.normal(0.0, noise / np.sqrt(dim), (n, dim))  # [n, dim]
    return theta, _unit(vec)


def _texts(rng: np.random.Generator, category: str, theta: np.ndarray, ids: list[str]) -> tuple[list[str], list[str]]:
    """Titles and descriptions whose words come from each item's dominant topics."""
    vocab = TOPIC_WORDS.get(category) or tuple(
        tuple(f"{category}-t{k}-w{j}" for j in range(5)) for k in range(N_TOPICS)
    )
    nouns = NOUNS.get(category, (category,))
    n = len(theta)
    # Topic of each word slot: 2 title slots from the dominant topic, 1 drawn from the mixture,
    # then 4 description slots drawn from the mixture.
    cum = np.cumsum(theta, axis=1)
    mix = (rng.random((n, 5))[:, :, None] > cum[:, None, :]).sum(-1).clip(0, N_TOPICS - 1)  # [n, 5]
    topic = np.concatenate([np.repeat(theta.argmax(1)[:, None], 2, axis=1), mix], axis=1)  # [n, 7]
    word = rng.integers(0, 5, size=topic.shape)
    noun = rng.integers(0, len(nouns), size=n)
    titles, descs = [], []
    for i in range(n):
        w = list(dict.fromkeys(vocab[t][j] for t, j in zip(topic[i], word[i])))  # distinct, in order
        head, rest, noun_i = w[:3], w[1:] or w, nouns[noun[i]]
        titles.append(" ".join([*(_cap(x) for x in head), _cap(noun_i), ids[i].rsplit("-", 1)[1]]))
        fans = ", ".join(rest[:-1]) + (" and " if len(rest) > 1 else "") + rest[-1]
        article = "An" if w[0][0] in "aeiou" else "A"
        descs.append(f"{article} {w[0]} {noun_i} for everyone who loves {fans}.")
    return titles, descs


def _cap(word: str) -> str:
    """Title-case a word (hyphenated words too)."""
    return "-".join(p.capitalize() for p in word.split("-"))


def _gumbel_top_k(rng: np.random.Generator, logits: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample k[u] distinct columns per row from softmax(logits[u]); returns (rows, cols)."""
    k_max = int(k.max(initial=0))
    if k_max == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    z = logits + rng.gumbel(size=logits.shape)  # [U, I]
    top = np.argpartition(-z, k_max - 1, axis=1)[:, :k_max]  # [U, k_max], unordered
    order = np.argsort(-np.take_along_axis(z, top, axis=1), axis=1)
    top = np.take_along_axis(top, order, axis=1)  # [U, k_max], best first
    keep = np.arange(k_max)[None, :] < k[:, None]
    rows = np.broadcast_to(np.arange(len(k))[:, None], top.shape)[keep]
    return rows, top[keep]


def generate_with_truth(
    cfg: SyntheticConfig = SyntheticConfig(),
) -> tuple[pl.DataFrame, pl.DataFrame, WorldTruth]:
    """Generate the world and return its latent truth too.

    Returns:
        (interactions, items, truth): interactions sorted by user then timestamp, with columns
        user, item, category, timestamp (int64 s), rating (float64 1-5); items with columns
        item, category, title, description; and the `WorldTruth`.
    """
    # One generator drawn in a fixed order (users, activity, then each category's items, choices
    # and times, then ratings): the same config always gives the same world.
    rng = np.random.default_rng(cfg.seed)
    centroids = _unit(rng.normal(size=(N_TOPICS, cfg.dim)))  # [K, dim]
    shared, specific, pref = _user_tastes(rng, cfg, centroids)
    counts, start = _activity(rng, cfg)

    catalogues: list[_Catalogue] = []
    inter_parts: list[tuple[np.ndarray, ...]] = []
    offset = 0
    for c, (name, n_items) in enumerate(zip(cfg.categories, cfg.items_per_category)):
        cat = _catalogue(rng, cfg, name, n_items, centroids)
        u, i, is_final = _choices(rng, cfg, pref[c], cat, counts[c])
        ts = _times(rng, start, u, is_final)
        aff = np.einsum("nd,nd->n", pref[c, u], cat.vectors[i])  # [n] affinity of each chosen pair
        inter_parts.append((u, i + offset, np.full(len(u), c), ts, aff))
        catalogues.append(cat)
        offset += n_items

    interactions = _interaction_frame(rng, cfg, inter_parts, [x for cat in catalogues for x in cat.ids])
    truth = WorldTruth(
        topic_centroids=centroids,
        user_shared=shared,
        user_specific=specific,
        user_pref=pref,
        item_vectors=np.concatenate([cat.vectors for cat in catalogues]),
        item_topics=np.concatenate([cat.theta for cat in catalogues]),
        item_popularity=np.concatenate([cat.popularity for cat in catalogues]),
        item_is_new=np.concatenate([cat.is_new for cat in catalogues]),
        item_release=np.concatenate([cat.release for cat in catalogues]).astype(np.int64),
        counts=counts,
    )
    return interactions, _item_frame(cfg, catalogues), truth


class _Catalogue(NamedTuple):
    """One category's generated items; every field is aligned with `ids`."""

    ids: list[str]
    theta: np.ndarray  # [I, n_topics] topic mixtures
    vectors: np.ndarray  # [I, dim] unit item vectors
    popularity: np.ndarray  # [I] popularity prior, sums to 1
    is_new: np.ndarray  # [I] bool: released late
    release: np.ndarray  # [I] release time (unix seconds)
    titles: list[str]
    descriptions: list[str]


def _user_tastes(
    rng: np.random.Generator, cfg: SyntheticConfig, centroids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users' shared taste [U, dim], specific tastes [C, U, dim] and the preference they choose by
    [C, U, dim]: `shared_weight` of the shared taste plus the rest of the specific one, normalised."""
    _, shared = _topic_vectors(rng, centroids, cfg.n_users, alpha=0.4, noise=0.5)  # [U, dim]
    specific = np.stack([_topic_vectors(rng, centroids, cfg.n_users, 0.4, 0.5)[1] for _ in cfg.categories])
    pref = _unit(cfg.shared_weight * shared[None] + (1.0 - cfg.shared_weight) * specific)  # [C, U, dim]
    return shared, specific, pref


def _activity(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Interactions per (category, user) [C, U] and each user's first activity time [U].

    Counts are Poisson around a lognormal per-user activity (mean 1) times a gamma per-(user,
    category) taste (mean 1), capped at `MAX_SHARE` of the catalogue; a user with no interaction
    anywhere gets one in the first category."""
    n_users = cfg.n_users
    activity = rng.lognormal(-(cfg.activity_sigma**2) / 2, cfg.activity_sigma, n_users)  # [U]
    taste = rng.gamma(cfg.category_shape, 1.0 / cfg.category_shape, (len(cfg.categories), n_users))  # [C, U]
    means = np.asarray(cfg.interactions_per_user)[:, None] * activity[None] * taste
    caps = np.maximum(1, (MAX_SHARE * np.asarray(cfg.items_per_category)).astype(np.int64))
    counts = np.minimum(rng.poisson(means), caps[:, None])  # [C, U]
    counts[0, counts.sum(0) == 0] = 1  # everyone appears somewhere: give idle users one pick in the first
    start = T_START + rng.random(n_users) * 0.5 * (NEW_RELEASE - T_START)  # [U] first activity
    return counts, start


def _catalogue(
    rng: np.random.Generator, cfg: SyntheticConfig, name: str, n_items: int, centroids: np.ndarray
) -> _Catalogue:
    """One category's items: ids, topic mixtures and vectors, a Zipf-like popularity prior, the
    late releases (`new_item_fraction`), release times, titles and descriptions."""
    ids = [f"{name}-{i:0{max(4, len(str(n_items - 1)))}d}" for i in range(n_items)]
    theta, v = _topic_vectors(rng, centroids, n_items, alpha=0.3, noise=0.4)  # [I, K], [I, dim]
    rank = rng.permutation(n_items) + 1.0
    pop = rank**-cfg.popularity_exponent
    pop /= pop.sum()  # [I]
    n_new = int(round(cfg.new_item_fraction * n_items)) if cfg.new_item_fraction > 0 else 0
    is_new = np.zeros(n_items, bool)
    is_new[rng.choice(n_items, n_new, replace=False)] = True
    release = np.where(is_new, NEW_RELEASE, T_START - rng.integers(0, 3 * 365 * 86_400, n_items))
    t, d = _texts(rng, name, theta, ids)
    return _Catalogue(ids, theta, v, pop, is_new, release, t, d)


def _choices(
    rng: np.random.Generator, cfg: SyntheticConfig, pref: np.ndarray, cat: _Catalogue, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's `k[u]` distinct picks in one category, as (users, items, is_final) arrays: all but
    the last pick from the old catalogue; the last (for k >= 2) from everything left, new releases
    boosted. `pref` is the category's [U, dim] preference; users go in blocks of `CHUNK`."""
    n_users, n_items = len(k), len(cat.ids)
    k_old = np.where(k >= 2, k - 1, k)
    users, chosen, final = [], [], []
    for lo in range(0, n_users, CHUNK):
        sl = slice(lo, min(lo + CHUNK, n_users))
        logits = pref[sl] @ cat.vectors.T / cfg.temperature + np.log(cat.popularity)  # [chunk, I]
        old = np.where(cat.is_new[None], -np.inf, logits)
        r, col = _gumbel_top_k(rng, old, k_old[sl])
        users.append(r + lo)
        chosen.append(col)
        final.append(np.zeros(len(r), bool))
        last = logits + NEW_ITEM_BOOST * cat.is_new[None]
        last[r, col] = -np.inf  # no repeats
        need = np.flatnonzero(k[sl] >= 2)
        pick = np.argmax(last[need] + rng.gumbel(size=(len(need), n_items)), axis=1)
        users.append(need + lo)
        chosen.append(pick)
        final.append(np.ones(len(need), bool))
    return np.concatenate(users), np.concatenate(chosen), np.concatenate(final)


def _times(rng: np.random.Generator, start: np.ndarray, u: np.ndarray, is_final: np.ndarray) -> np.ndarray:
    """Interaction times (int64 s): earlier picks in [start, NEW_RELEASE); the final pick in
    [NEW_RELEASE, T_END)."""
    early = start[u] + rng.random(len(u)) * (NEW_RELEASE - start[u])
    late = NEW_RELEASE + rng.random(len(u)) * (T_END - NEW_RELEASE)
    return np.where(is_final, late, early).astype(np.int64)


def _interaction_frame(
    rng: np.random.Generator, cfg: SyntheticConfig, inter_parts: list[tuple[np.ndarray, ...]], item_ids: list[str]
) -> pl.DataFrame:
    """The interactions frame, sorted by user then timestamp (then item), from the per-category
    (user, global item, category, timestamp, affinity) parts, with ratings drawn from the affinity:
    standardised affinity + noise, centred at 3.6 as in real review data, rounded to 1..5."""
    u, gi, c, ts, aff = (np.concatenate(p) for p in zip(*inter_parts))
    z = (aff - aff.mean()) / (aff.std() + 1e-12)
    rating = np.clip(np.round(3.6 + 1.1 * z + rng.normal(0.0, cfg.rating_noise, len(z))), 1, 5)
    width = max(5, len(str(cfg.n_users - 1)))
    user_ids = np.array([f"u{j:0{width}d}" for j in range(cfg.n_users)])
    order = np.lexsort((gi, ts, u))
    item_ids_arr, cat_arr = np.array(item_ids), np.array(cfg.categories)
    return pl.DataFrame(
        {
            USER: user_ids[u[order]],
            ITEM: item_ids_arr[gi[order]],
            CATEGORY: cat_arr[c[order]],
            TIMESTAMP: ts[order],
            RATING: rating[order].astype(np.float64),
        },
        schema={USER: pl.Utf8, ITEM: pl.Utf8, CATEGORY: pl.Utf8, TIMESTAMP: pl.Int64, RATING: pl.Float64},
    )


def _item_frame(cfg: SyntheticConfig, catalogues: list[_Catalogue]) -> pl.DataFrame:
    """The items frame (item, category, title, description), categories in `cfg.categories` order."""
    return pl.DataFrame(
        {
            ITEM: [x for cat in catalogues for x in cat.ids],
            CATEGORY: [name for name, cat in zip(cfg.categories, catalogues) for _ in cat.ids],
            TITLE: [x for cat in catalogues for x in cat.titles],
            DESCRIPTION: [x for cat in catalogues for x in cat.descriptions],
        },
        schema={ITEM: pl.Utf8, CATEGORY: pl.Utf8, TITLE: pl.Utf8, DESCRIPTION: pl.Utf8},
    )


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Generate the world in canonical raw form.

    Args:
        cfg: size, shape and seed of the world; the same config always gives the same frames.

    Returns:
        (interactions, items): see `generate_with_truth`.
    """
    interactions, items, _ = generate_with_truth(cfg)
    return interactions, items


def write_world(out_dir: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> dict[str, Path]:
    """Write `interactions.csv.gz` and `items.csv.gz` into `out_dir`, each atomically.

    Returns:
        {"interactions": path, "items": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    interactions, items = generate(cfg)
    paths = {"interactions": out_dir / "interactions.csv.gz", "items": out_dir / "items.csv.gz"}
    for frame, path in ((interactions, paths["interactions"]), (items, paths["items"])):
        with atomic_path(path) as tmp:
            frame.write_csv(tmp, compression="gzip", check_extension=False)
    return paths
