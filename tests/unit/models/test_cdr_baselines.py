"""Published cross-domain baselines (CMF, DTCDR, CoNet) adapted to N categories.

Mechanics on the tiny world and hand-built sizes (towers, offsets, cross connections against a slow
reference), then quality floors on the default synthetic world: each beats popularity overall, and
the shared-user models beat single-category MF on users new to a category.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossrec.data.batch import Batch, Sizes
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.base import REGISTRY
from crossrec.models.cmf import CMF, CMFConfig
from crossrec.models.conet import CoNet, CoNetConfig
from crossrec.models.dtcdr import DTCDR, DTCDRConfig
from crossrec.models.losses import pair_loss
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError

CONFIGS = [
    ("cmf", {"dim": 8}),
    ("cmf", {"dim": 8, "category_offset": True, "item_bias": False, "weights": "balanced"}),
    ("dtcdr", {"dim": 8, "combine": "concat"}),
    ("dtcdr", {"dim": 8, "combine": "mean", "user_layers": [12]}),
    ("dtcdr", {"dim": 8, "combine": "max", "item_bias": False}),
    ("conet", {"dim": 8, "layers": [16, 8, 4]}),
    ("conet", {"dim": 8, "layers": [16], "cross": False}),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_sizes(n_cat: int, per_cat: int = 5, n_users: int = 7) -> Sizes:
    """Hand-built sizes: items interleaved over the categories (item i in category i % n_cat)."""
    n = n_cat * per_cat
    cats = tuple(i % n_cat for i in range(n))
    local = tuple(i // n_cat for i in range(n))
    return Sizes(n_users, n, cats, local, tuple(f"c{k}" for k in range(n_cat)))


def make(name: str, params: dict, bundle, seed: int = 0):
    torch.manual_seed(seed)
    return build(name, "pooled", params, Sizes.from_bundle(bundle))


# ---------------------------------------------------------------------- registry and config checks
def test_registered_with_paper_and_config():
    for name, cls, cfg, venue in [
        ("cmf", CMF, CMFConfig, "KDD 2008"),
        ("dtcdr", DTCDR, DTCDRConfig, "CIKM 2019"),
        ("conet", CoNet, CoNetConfig, "CIKM 2018"),
    ]:
        entry = REGISTRY[name]
        assert entry.cls is cls and entry.config_cls is cfg and venue in entry.paper


@pytest.mark.parametrize(
    "cls, cfg, match",
    [
        (DTCDR, {"user_layers": (0,)}, "widths"),
        (CoNet, {"layers": ()}, "one or more widths"),
    ],
)
def test_bad_config_raises(cls, cfg, match):
    config_cls = {DTCDR: DTCDRConfig, CoNet: CoNetConfig}[cls]
    with pytest.raises(ValueError, match=match):
        cls(config_cls(**cfg), toy_sizes(2))


@pytest.mark.parametrize(
    "config_cls, option, match",
    [
        (CMFConfig, {"loss": "mse"}, "'bpr', 'bce', 'softmax'"),
        (CMFConfig, {"weights": "learned"}, "'uniform', 'balanced'"),
        (DTCDRConfig, {"combine": "sum"}, "'concat', 'mean', 'max'"),
        (CoNetConfig, {"loss": "mse"}, "'bce', 'bpr', 'softmax'"),
    ],
)
def test_a_choice_outside_the_literal_fails_when_the_config_is_built(config_cls, option, match):
    with pytest.raises(ConfigError, match=match):
        config_cls(**option)


@pytest.mark.parametrize("name, params", CONFIGS)
def test_parameter_groups_partition_the_parameters(name, params, tiny_bundle):
    model = make(name, params, tiny_bundle)
    groups = model.parameter_groups()
    assert set(groups) == {"shared", "specific", "heads"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "every parameter is in a group"


@pytest.mark.parametrize("name, params", [c for c in CONFIGS if c[0] != "conet"])
def test_two_tower_vectors_reproduce_score_after_training(name, params, tiny_bundle):
    model = make(name, params, tiny_bundle)
    Trainer(TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, checkpoint=False)).fit(model, tiny_bundle)
    users = torch.arange(23)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            s = model.score(users, c)
            assert s.shape == (23, tiny_bundle.n_items_in(c)) and torch.isfinite(s).all()
            torch.testing.assert_close(model.user_vectors(users, c) @ model.item_vectors(c).T, s)


# ---------------------------------------------------------------------- CMF
def test_cmf_offsets_stay_zero_outside_the_trained_categories(tiny_bundle):
    model = make("cmf", {"dim": 8, "category_offset": True}, tiny_bundle)
    cfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, progress=False, checkpoint=False)
    Trainer(cfg, categories=[0]).fit(model, tiny_bundle)
    n_cat = tiny_bundle.n_categories
    keys = model.user_offset.keys_
    assert len(keys) > 0 and bool((keys % n_cat == 0).all()), "rows only for category 0's trained pairs"
    assert model.user_offset.weight.detach().abs().sum() > 0, "category 0 trained its offsets"
    users = torch.arange(tiny_bundle.n_users)
    with torch.no_grad():
        for c in range(1, n_cat):
            assert (model.user_offset(users, c) == 0).all(), "untrained (user, category) offsets are exactly zero"
        # A user is served in the untrained categories from the shared factors alone.
        torch.testing.assert_close(model.user_vectors(users, 2)[:, :-1], model.user_emb(users))


def test_cmf_balanced_weights_make_every_category_count_the_same(tiny_bundle):
    model = make("cmf", {"dim": 8, "weights": "balanced"}, tiny_bundle)
    model.setup(tiny_bundle)
    counts = torch.bincount(torch.tensor(tiny_bundle.split("train")["category"].to_list()))
    mass = model.alpha_ * counts  # alpha_c n_c: each category's share of the objective
    torch.testing.assert_close(mass, torch.full_like(mass, float(mass.mean())))
    torch.testing.assert_close(mass.sum(), counts.sum().float())  # mean weight 1 per interaction
    # Weighted and unweighted losses agree when the weights are all one.
    model.alpha_.fill_(1.0)
    # A well-formed batch: users 0..3, positives and negatives from category 1.
    items = torch.from_numpy(model.sizes.item_index(1)[:4].copy())
    negs = torch.from_numpy(model.sizes.item_index(1)[4:8].copy()).unsqueeze(1)
    batch = Batch(torch.tensor([0, 1, 2, 3]), items, negs, torch.ones(4, dtype=torch.long))
    weighted = model.loss(batch)
    uniform = CMF(CMFConfig(dim=8), model.sizes)
    uniform.load_state_dict(model.state_dict())
    torch.testing.assert_close(weighted, uniform.loss(batch))


@pytest.mark.parametrize("loss", ["bpr", "bce", "softmax"])
def test_per_row_losses_average_to_the_batch_loss(loss):
    torch.manual_seed(0)
    pos, neg = torch.randn(9), torch.randn(9, 3)
    rows = pair_loss(loss, pos, neg, reduction="none")
    assert rows.shape == (9,)
    torch.testing.assert_close(rows.mean(), pair_loss(loss, pos, neg))


# ---------------------------------------------------------------------- DTCDR
def test_dtcdr_combinations_at_init(tiny_bundle):
    users = torch.arange(40)
    models = {k: make("dtcdr", {"dim": 8, "combine": k}, tiny_bundle) for k in ("concat", "mean", "max")}
    for m in models.values():
        m.setup(tiny_bundle)
    with torch.no_grad():
        for combine, m in models.items():
            e, has = m._user_embeddings(users)  # [B, N, d] (zero where the user has no rows), [B, N]
            assert has.any(1).all() and not has.all(), "users with and without rows in some category"
            assert torch.equal(e[~has], torch.zeros_like(e[~has]))
            # over the user's own categories: the zero rows of the others take no part
            own_max = torch.stack([e[b][has[b]].amax(0) for b in range(len(users))])
            own_mean = e.sum(1) / has.sum(1, keepdim=True)
            want = {"concat": own_mean, "mean": own_mean, "max": own_max}[combine]
            for c in range(tiny_bundle.n_categories):
                # A tower without hidden layers starts as the identity on the combined embedding
                # (for concat: the mean of the N blocks, scaled by N / |K_u|: of the user's own).
                torch.testing.assert_close(m._users(users, c), want)


def test_dtcdr_mixed_category_rows_use_their_own_tower():
    sizes = toy_sizes(3)
    torch.manual_seed(0)
    model = DTCDR(DTCDRConfig(dim=4, combine="concat", user_layers=(6,)), sizes)
    model.user_emb.set_keys(torch.arange(0, 7 * 3, 2))  # rows for every other (user, category) pair
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        users = torch.tensor([0, 1, 2, 3, 4, 5])
        cats = torch.tensor([2, 0, 1, 1, 2, 0])
        mixed = model._users(users, cats)
        for c in range(3):
            rows = cats == c
            torch.testing.assert_close(mixed[rows], model._users(users[rows], c))


# ---------------------------------------------------------------------- CoNet
def conet_reference(m: CoNet, users: torch.Tensor, items: torch.Tensor, c: int) -> torch.Tensor:
    """CoNet written out tower by tower: the cross input is the mean of the other towers' layer."""
    x = torch.cat([m.user_emb(users), m.item_emb(items)], -1)
    n = m.sizes.n_categories
    a = [F.relu(x @ m.in_w[k] + m.in_b[k]) for k in range(n)]
    for layer in range(len(m.hid_w)):
        nxt = []
        for k in range(n):
            z = a[k] @ m.hid_w[layer][k] + m.hid_b[layer][k]
            if m.config.cross and n > 1:
                z = z + (sum(a[j] for j in range(n) if j != k) / (n - 1)) @ m.cross_w[layer]
            nxt.append(F.relu(z))
        a = nxt
    return a[c] @ m.out_w[c] + m.out_b[c]


@pytest.mark.parametrize(
    "n_cat, layers, cross",
    [(4, (16, 8, 4), True), (3, (16,), True), (1, (16, 8), True), (3, (8, 8), False), (2, (8, 6), True)],
)
def test_conet_matches_the_tower_by_tower_reference(n_cat, layers, cross):
    sizes = toy_sizes(n_cat)
    torch.manual_seed(0)
    model = CoNet(CoNetConfig(dim=4, layers=layers, cross=cross, score_chunk=5), sizes)  # several chunks
    users = torch.arange(sizes.n_users)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.5)
        for c in range(n_cat):
            idx = model.index[c]
            pair_u, pair_i = users.repeat_interleave(len(idx)), idx.repeat(len(users))
            ref = conet_reference(model, pair_u, pair_i, c).view(len(users), -1)
            torch.testing.assert_close(model.score(users, c), ref)
            got = model._pair_logits(pair_u, pair_i, torch.full_like(pair_u, c)).view(len(users), -1)
            torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("cross", [True, False])
def test_conet_cross_connections_carry_other_towers(cross):
    torch.manual_seed(0)
    model = CoNet(CoNetConfig(dim=4, layers=(8, 4), cross=cross), toy_sizes(3))
    users = torch.arange(7)
    with torch.no_grad():
        before = model.score(users, 0)
        model.in_w[2].add_(1.0)  # change category 2's tower only (its first hidden layer)
        changed = not torch.allclose(before, model.score(users, 0))
    assert changed == cross


def test_conet_cross_l1_adds_the_sconet_penalty(tiny_bundle):
    from crossrec.data.sampling import TrainSampler

    batch = next(iter(TrainSampler(tiny_bundle, batch_size=64, seed=0)))
    plain = make("conet", {"dim": 8, "layers": [8, 4]}, tiny_bundle)
    sparse = make("conet", {"dim": 8, "layers": [8, 4], "cross_l1": 0.1}, tiny_bundle)
    with torch.no_grad():
        l1 = sum(h.abs().sum() for h in sparse.cross_w)
        torch.testing.assert_close(sparse.loss(batch), plain.loss(batch) + 0.1 * l1)


# ---------------------------------------------------------------------- quality floors
@pytest.fixture(scope="module")
def evaluator(medium_bundle):
    return Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test")


@pytest.fixture(scope="module")
def reference(medium_bundle, evaluator):
    """Popularity and single-category MF (each category's model sees only its own data)."""
    sizes = Sizes.from_bundle(medium_bundle)
    pop = build("pop", "pooled", {}, sizes)
    Trainer(TrainConfig(progress=False, checkpoint=False)).fit(pop, medium_bundle)
    torch.manual_seed(0)
    single = build("mf", "single", {"dim": 32}, sizes)
    cfg = TrainConfig(epochs=10, batch_size=1024, lr=3e-3, progress=False, checkpoint=False, seed=0)
    for c, sub in enumerate(single.models):
        Trainer(cfg, categories=[c]).fit(sub, medium_bundle)
    return {"pop": evaluator.evaluate(pop), "mf-single": evaluator.evaluate(single)}


def trained(name: str, params: dict, bundle, **train):
    model = make(name, params, bundle)
    cfg = TrainConfig(**{"epochs": 10, "batch_size": 1024, "lr": 3e-3, "progress": False, "checkpoint": False, **train})
    Trainer(cfg).fit(model, bundle)
    return model


@pytest.mark.parametrize(
    "name, params",
    [("cmf", {"dim": 32, "category_offset": True}), ("dtcdr", {"dim": 32, "combine": "concat"})],
)
def test_shared_user_models_beat_popularity_and_single_category_mf(name, params, medium_bundle, evaluator, reference):
    res = evaluator.evaluate(trained(name, params, medium_bundle))
    ndcg, pop = res.metric("ndcg@10"), reference["pop"].metric("ndcg@10")
    assert ndcg > 1.2 * pop, f"{name} ndcg@10 {ndcg:.4f} vs pop {pop:.4f}"
    # Users new to a category: single-category MF has never seen them there; the shared user
    # factors carry their other categories over.
    new = res.metric("ndcg@10", "ALL", "new_to_category")
    single = reference["mf-single"].metric("ndcg@10", "ALL", "new_to_category")
    assert new > 2 * single, f"{name} new_to_category ndcg@10 {new:.4f} vs single-category mf {single:.4f}"


def test_conet_beats_popularity(medium_bundle, evaluator, reference):
    # An MLP over [user; item] learns the interaction slowly from one negative; four negatives and
    # lr 1e-2 get it well clear of popularity in 10 epochs.
    model = trained("conet", {"dim": 16, "layers": [32, 16]}, medium_bundle, lr=1e-2, n_negatives=4)
    ndcg, pop = evaluator.evaluate(model).metric("ndcg@10"), reference["pop"].metric("ndcg@10")
    assert ndcg > 1.1 * pop, f"conet ndcg@10 {ndcg:.4f} vs pop {pop:.4f}"
