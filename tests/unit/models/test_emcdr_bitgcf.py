"""EMCDR and BiTGCF: setup, the mapping / transfer maths against slow references, parameter groups,
and quality floors on the default synthetic world (beat popularity overall, beat single-category
MF on users new to a category)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossrec.models  # noqa: F401  (registers every model)
from crossrec.data.batch import Sizes
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.base import REGISTRY
from crossrec.models.bitgcf import BiTGCF, BiTGCFConfig
from crossrec.models.emcdr import EMCDR, EMCDRConfig
from crossrec.models.lightgcn import LightGCN
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.training.transfer import parameter_groups

EMCDR_SMALL = {"dim": 8, "map_hidden": [16]}
BITGCF_SMALL = {"dim": 8, "n_layers": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def train_activity(bundle, categories=None) -> np.ndarray:
    """[n_users, N] bool: training rows per (user, category), the slow obvious way."""
    out = np.zeros((bundle.n_users, bundle.n_categories), dtype=bool)
    for c in range(bundle.n_categories) if categories is None else categories:
        out[:, c] = np.diff(bundle.csr("train", c).indptr) > 0
    return out


def dense_rows(model) -> torch.Tensor:
    """[n_users, N, d] the per-pair user rows laid out densely (zero where a pair has none)."""
    n_users, n_cat = model.sizes.n_users, model.sizes.n_categories
    out = torch.zeros(n_users * n_cat, model.config.dim)
    out[model.user_emb.keys_] = model.user_emb.weight.detach()
    return out.view(n_users, n_cat, -1)


def activity(model) -> np.ndarray:
    return model.active(torch.arange(model.sizes.n_users)).numpy()


def make(name, bundle, categories=None, **params):
    torch.manual_seed(0)
    base = EMCDR_SMALL if name == "emcdr" else BITGCF_SMALL
    model = build(name, "pooled", {**base, **params}, Sizes.from_bundle(bundle))
    model.setup(bundle, categories)
    return model


def test_registered_with_config_and_paper():
    assert REGISTRY["emcdr"].cls is EMCDR and REGISTRY["emcdr"].config_cls is EMCDRConfig
    assert "IJCAI 2017" in REGISTRY["emcdr"].paper
    assert REGISTRY["bitgcf"].cls is BiTGCF and REGISTRY["bitgcf"].config_cls is BiTGCFConfig
    assert "CIKM 2020" in REGISTRY["bitgcf"].paper
    sizes = Sizes(2, 2, (0, 1), (0, 0), ("a", "b"))
    with pytest.raises(ValueError, match="'bpr', 'bce', 'softmax'"):
        EMCDR(EMCDRConfig(loss="mse"), sizes)
    with pytest.raises(ValueError, match="'constant', 'count'"):
        BiTGCF(BiTGCFConfig(transfer="degree"), sizes)
    with pytest.raises(ValueError, match="lam"):
        BiTGCF(BiTGCFConfig(lam=1.5), sizes)


# ---------------------------------------------------------------------- EMCDR
def test_emcdr_setup_marks_activity_and_accumulates_categories(tiny_bundle):
    model = make("emcdr", tiny_bundle, categories=[0])
    np.testing.assert_array_equal(activity(model), train_activity(tiny_bundle, [0]))
    model.setup(tiny_bundle, [2])  # a later stage: covers 0 and 2
    assert model.covered_.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(activity(model), train_activity(tiny_bundle, [0, 2]))
    model.setup(tiny_bundle)
    np.testing.assert_array_equal(activity(model), train_activity(tiny_bundle))
    assert len(model.user_emb.weight) == train_activity(tiny_bundle).sum()  # rows for active pairs only


def reference_mapping(model: EMCDR, x: torch.Tensor, s: int, t: int) -> torch.Tensor:
    """f_{s->t}(x) with the pair's own weights, layer by layer."""
    last = len(model.map_w) - 1
    for l, (w, b) in enumerate(zip(model.map_w, model.map_b)):
        x = x @ w[s, t] + b[s, t]
        if l < last:
            x = torch.tanh(x)
    return x


def test_emcdr_mapped_vector_is_used_exactly_for_inactive_users(tiny_bundle):
    model = make("emcdr", tiny_bundle).eval()
    n_cat = tiny_bundle.n_categories
    active = train_activity(tiny_bundle)
    users = torch.arange(tiny_bundle.n_users)
    table = dense_rows(model)
    with torch.no_grad():
        for t in range(n_cat):
            got = model.user_vectors(users, t)
            has_source = (active & (np.arange(n_cat) != t)).any(1)
            inactive = ~active[:, t] & has_source
            assert inactive.any() and active[:, t].any(), "the tiny world has both kinds of users"
            for u in range(tiny_bundle.n_users):
                if inactive[u]:
                    srcs = [s for s in range(n_cat) if s != t and active[u, s]]
                    want = torch.stack([reference_mapping(model, table[u, s], s, t) for s in srcs]).mean(0)
                else:
                    want = table[u, t]  # active in t: the user's own vector (active nowhere: zero)
                torch.testing.assert_close(got[u], want, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(model.score(users, t), got @ model.item_vectors(t).T)

            # Shift every mapping's output by +1: exactly the mapped users move, by exactly +1.
            before = model.user_vectors(users, t)
            model.map_b[-1].add_(1.0)
            after = model.user_vectors(users, t)
            model.map_b[-1].sub_(1.0)
            mapped = torch.from_numpy(inactive)
            assert torch.equal(after[~mapped], before[~mapped])
            torch.testing.assert_close(after[mapped], before[mapped] + 1.0)


def test_emcdr_mapping_loss_matches_reference_and_trains_only_the_mappings(tiny_bundle):
    model = make("emcdr", tiny_bundle)
    active = train_activity(tiny_bundle)
    users = torch.tensor([0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 3, 5])  # repeats count once
    table = dense_rows(model)
    terms = [
        (reference_mapping(model, table[u, s], s, t) - table[u, t]).pow(2).sum()
        for u in sorted(set(users.tolist()))
        for s in range(tiny_bundle.n_categories)
        for t in range(tiny_bundle.n_categories)
        if s != t and active[u, s] and active[u, t]
    ]
    assert len(terms) > 3
    loss = model.mapping_loss(users)
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    loss.backward()
    assert model.user_emb.weight.grad is None and model.item_emb.weight.grad is None
    assert all(p.grad is not None for p in [*model.map_w, *model.map_b])


def test_emcdr_parameter_groups(tiny_bundle):
    model = make("emcdr", tiny_bundle)
    groups = parameter_groups(model)  # the transfer trainer's view: checks disjointness
    assert {id(p) for g in groups.values() for p in g} == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups["heads"]} == {id(p) for p in [*model.map_w, *model.map_b]}
    assert groups["specific"] == [model.user_emb.weight]


# ---------------------------------------------------------------------- BiTGCF
def dense_graph(model: BiTGCF) -> np.ndarray:
    """The graph over dense node numbers (user node u * N + c, then the items)."""
    n_nodes, keys = model.sizes.n_users * model.sizes.n_categories, model.user_emb.keys_.numpy()
    out = np.zeros((n_nodes + model.sizes.n_items,) * 2)
    idx = model.graph_indices_.numpy()
    idx = np.where(idx < len(keys), keys[np.minimum(idx, len(keys) - 1)], idx - len(keys) + n_nodes)
    out[idx[0], idx[1]] = model.graph_values_.numpy()
    return out


def reference_graph(bundle, categories=None) -> np.ndarray:
    """Each category's D^-1/2 A D^-1/2 over its own user nodes (u * N + c) and items, densely."""
    n_cat, n_nodes = bundle.n_categories, bundle.n_users * bundle.n_categories
    a = np.zeros((n_nodes + bundle.n_items,) * 2)
    for c in range(n_cat) if categories is None else categories:
        rows = bundle.split("train", c)
        u = rows["user"].to_numpy() * n_cat + c
        i = rows["item"].to_numpy() + n_nodes
        a[u, i] = a[i, u] = 1.0
    deg = a.sum(1)
    d = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return d[:, None] * a * d[None, :]


def test_bitgcf_graph_is_one_normalised_graph_per_category(tiny_bundle):
    model = make("bitgcf", tiny_bundle)
    np.testing.assert_allclose(dense_graph(model), reference_graph(tiny_bundle), rtol=1e-6, atol=1e-7)
    # Setup accumulates: [0] then [1, 3] covers the same as [0, 1, 3] at once.
    partial = make("bitgcf", tiny_bundle, categories=[0])
    partial.setup(tiny_bundle, [1, 3])
    np.testing.assert_allclose(dense_graph(partial), reference_graph(tiny_bundle, [0, 1, 3]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(activity(partial), train_activity(tiny_bundle, [0, 1, 3]))
    assert len(partial.user_emb.weight) == len(partial.lambda_) == train_activity(tiny_bundle, [0, 1, 3]).sum()


@pytest.mark.parametrize("transfer", ["constant", "count"])
def test_bitgcf_transfer_step_matches_reference(tiny_bundle, transfer):
    model = make("bitgcf", tiny_bundle, transfer=transfer, lam=0.7)
    n_users, n_cat = tiny_bundle.n_users, tiny_bundle.n_categories
    active = train_activity(tiny_bundle)
    counts = np.stack([np.diff(tiny_bundle.csr("train", c).indptr) for c in range(n_cat)], 1)
    h = torch.randn(n_users, n_cat, 5, dtype=torch.float64)
    keys = model.user_emb.keys_
    got, mean = model.transfer(h.view(-1, 5)[keys].float())  # the pair nodes' rows only
    want = torch.zeros_like(h)
    for u in range(n_users):
        for c in range(n_cat):
            others = [k for k in range(n_cat) if k != c and active[u, k]]
            if not others:
                lam = 1.0
            elif transfer == "count":
                lam = counts[u, c] / counts[u].sum()
            else:
                lam = 0.7 if active[u, c] else 0.0
            mix = h[u, others].mean(0) if others else torch.zeros(5, dtype=torch.float64)
            want[u, c] = lam * h[u, c] + (1 - lam) * mix
    torch.testing.assert_close(got.double(), want.view(-1, 5)[keys], rtol=1e-5, atol=1e-5)
    # what a pair without a node receives (lambda 0, its propagated h zero): the mean of the user's pairs
    users, lacks = model.owners()[0].numpy(), ~active
    lacks[~active.any(1)] = False
    u, c = np.nonzero(lacks)
    at = np.searchsorted(users, u)
    torch.testing.assert_close(mean[at].double(), want[u, c], rtol=1e-5, atol=1e-5)


def test_bitgcf_on_one_category_is_lightgcn(tiny_bundle):
    """One covered category: no transfer, and the propagation is LightGCN's on that category."""
    c = 1
    model = make("bitgcf", tiny_bundle, categories=[c]).eval()
    gcn = build("lightgcn", "pooled", {"dim": 8, "n_layers": 2}, Sizes.from_bundle(tiny_bundle)).eval()
    assert isinstance(gcn, LightGCN)
    gcn.setup(tiny_bundle, [c])
    with torch.no_grad():
        gcn.user_emb.weight.copy_(dense_rows(model)[:, c])
        gcn.item_emb.weight.copy_(model.item_emb.weight)
        users = torch.from_numpy(np.flatnonzero(train_activity(tiny_bundle)[:, c]))
        torch.testing.assert_close(model.score(users, c), gcn.score(users, c), rtol=1e-5, atol=1e-6)


def test_bitgcf_user_new_to_a_category_gets_the_others_representation(tiny_bundle):
    model = make("bitgcf", tiny_bundle).eval()
    active = train_activity(tiny_bundle)
    n_cat = tiny_bundle.n_categories
    u, t = next(
        (u, t) for u in range(tiny_bundle.n_users) for t in range(n_cat) if not active[u, t] and active[u].any()
    )
    s = int(np.flatnonzero(active[u])[0])
    users = torch.tensor([u])
    keys = model.user_emb.keys_.tolist()
    with torch.no_grad():
        before = model.user_vectors(users, t)
        assert before.abs().sum() > 0
        assert u * n_cat + t not in keys  # no node in t's graph, no row
        model.user_emb.weight[keys.index(u * n_cat + s)] += 1.0  # their active category flows into t
        assert not torch.allclose(model.user_vectors(users, t), before)
        torch.testing.assert_close(model.score(users, t), model.user_vectors(users, t) @ model.item_vectors(t).T)


def test_bitgcf_parameter_groups_and_dense_embeddings(tiny_bundle):
    model = make("bitgcf", tiny_bundle)
    groups = parameter_groups(model)
    assert groups["specific"] == [model.user_emb.weight] and groups["shared"] == [model.item_emb.weight]
    assert not any(m.sparse for m in model.modules() if isinstance(m, torch.nn.Embedding))
    with pytest.raises(RuntimeError, match="setup"):
        build("bitgcf", "pooled", BITGCF_SMALL, Sizes.from_bundle(tiny_bundle)).score(torch.arange(3), 0)


# ---------------------------------------------------------------------- quality floors
@pytest.fixture(scope="module")
def baselines(medium_bundle):
    """Test-split results of popularity and of single-category MF (one MF per category)."""
    ev = Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test")
    sizes = Sizes.from_bundle(medium_bundle)
    cfg = TrainConfig(epochs=10, batch_size=1024, lr=3e-3, progress=False, checkpoint=False, seed=0)
    pop = build("pop", "pooled", {}, sizes)
    Trainer(cfg).fit(pop, medium_bundle)
    torch.manual_seed(0)
    single = build("mf", "single", {"dim": 32}, sizes)
    for c, sub in enumerate(single.models):
        Trainer(cfg, categories=[c]).fit(sub, medium_bundle)
    return ev, {"pop": ev.evaluate(pop), "mf-single": ev.evaluate(single)}


@pytest.mark.parametrize(
    "name, params",
    [
        ("emcdr", {"dim": 32, "map_hidden": [64]}),
        ("bitgcf", {"dim": 32, "n_layers": 2, "transfer": "count"}),
    ],
)
def test_beats_popularity_overall_and_single_mf_on_new_to_category(name, params, medium_bundle, baselines):
    ev, base = baselines
    torch.manual_seed(0)
    model = build(name, "pooled", params, Sizes.from_bundle(medium_bundle))
    cfg = TrainConfig(epochs=8, batch_size=1024, lr=5e-3, progress=False, checkpoint=False, seed=0)
    Trainer(cfg).fit(model, medium_bundle)
    res = ev.evaluate(model)
    ndcg, pop = res.metric("ndcg@10"), base["pop"].metric("ndcg@10")
    assert ndcg > pop, f"{name} ndcg@10 {ndcg:.4f} <= pop {pop:.4f}"
    new = res.metric("ndcg@10", "ALL", "new_to_category")
    single = base["mf-single"].metric("ndcg@10", "ALL", "new_to_category")
    assert new > single, f"{name} new_to_category ndcg@10 {new:.4f} <= single-category MF {single:.4f}"
