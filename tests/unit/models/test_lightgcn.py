"""LightGCN: the normalised graph, training, scoring, the artifact round trip and a quality floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import crossrec.models.lightgcn  # noqa: F401  (registers "lightgcn" before models/__init__ lists it)
from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.models.base import REGISTRY
from crossrec.models.lightgcn import LightGCN, LightGCNConfig
from crossrec.models.per_category import build

SMALL = {"dim": 16, "n_layers": 2}


def dense_graph(model: LightGCN) -> np.ndarray:
    n = model.sizes.n_users + model.sizes.n_items
    out = np.zeros((n, n), dtype=np.float64)
    idx = model.graph_indices_.numpy()
    out[idx[0], idx[1]] = model.graph_values_.numpy()
    return out


def reference_graph(bundle, categories=None) -> np.ndarray:
    """D^-1/2 A D^-1/2 written out densely, the slow obvious way."""
    rows = bundle.split("train")
    if categories is not None:
        rows = rows.filter(rows["category"].is_in(list(categories)))
    n_u = bundle.n_users
    a = np.zeros((n_u + bundle.n_items,) * 2)
    u, i = rows["user"].to_numpy(), rows["item"].to_numpy() + n_u
    a[u, i] = 1.0
    a[i, u] = 1.0
    deg = a.sum(1)
    d = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return d[:, None] * a * d[None, :]


def make(bundle, categories=None, **params) -> LightGCN:
    torch.manual_seed(0)
    model = build("lightgcn", "pooled", {**SMALL, **params}, Sizes.from_bundle(bundle))
    model.setup(bundle, categories)
    return model


def test_registered_with_config_and_paper():
    entry = REGISTRY["lightgcn"]
    assert entry.cls is LightGCN and entry.config_cls is LightGCNConfig and "SIGIR 2020" in entry.paper
    with pytest.raises(ValueError, match="'bpr', 'bce', 'softmax'"):
        LightGCN(LightGCNConfig(loss="mse"), Sizes(2, 2, (0, 0), (0, 1), ("a",)))


def test_adjacency_is_symmetric_and_normalised(tiny_bundle):
    model = make(tiny_bundle)
    got = dense_graph(model)
    np.testing.assert_allclose(got, got.T, atol=1e-7)
    np.testing.assert_allclose(got, reference_graph(tiny_bundle), rtol=1e-6, atol=1e-7)
    # Bipartite: no user-user or item-item edges.
    n_u = tiny_bundle.n_users
    assert not got[:n_u, :n_u].any() and not got[n_u:, n_u:].any()


def test_setup_restricted_to_one_category_has_only_its_edges(tiny_bundle):
    model = make(tiny_bundle, categories=[1])
    n_u = tiny_bundle.n_users
    rows, cols = model.graph_indices_.numpy()
    items = np.where(rows >= n_u, rows, cols) - n_u
    assert (tiny_bundle.item_category[items] == 1).all()
    n_edges = len(np.unique(tiny_bundle.split("train", 1).select("user", "item").to_numpy(), axis=0))
    assert len(rows) == 2 * n_edges
    np.testing.assert_allclose(dense_graph(model), reference_graph(tiny_bundle, [1]), rtol=1e-6, atol=1e-7)


def test_score_and_loss_need_setup(tiny_bundle):
    model = build("lightgcn", "pooled", SMALL, Sizes.from_bundle(tiny_bundle))
    with pytest.raises(RuntimeError, match="setup"):
        model.score(torch.arange(3), 0)


def test_embeddings_are_dense(tiny_bundle):
    # Propagation touches every row, so sparse gradients would buy nothing (loss decrease is in
    # the registry-wide contract suite).
    assert not any(m.sparse for m in make(tiny_bundle).modules() if isinstance(m, torch.nn.Embedding))


def test_score_shape_finite_and_eval_cache(tiny_bundle):
    model = make(tiny_bundle).eval()
    users = torch.arange(7)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            s = model.score(users, c)
            assert s.shape == (7, tiny_bundle.n_items_in(c)) and s.dtype == torch.float32
            assert torch.isfinite(s).all()
            # Two-tower view agrees with score.
            v = model.user_vectors(users, c) @ model.item_vectors(c).T
            torch.testing.assert_close(v, s)
        before = model.score(users, 0)
        # An in-place weight change is seen even in eval mode (the cache is keyed on versions) ...
        # (doubling every layer-0 embedding doubles both towers: scores x4).
        model.user_emb.weight.mul_(2.0)
        model.item_emb.weight.mul_(2.0)
        torch.testing.assert_close(model.score(users, 0), 4.0 * before)
    # ... and a train()/eval() switch drops the cache.
    model.train()
    assert model._final._value is None


def test_save_load_round_trip(tiny_bundle, tmp_path):
    model = make(tiny_bundle, categories=[0, 2]).eval()
    sizes = Sizes.from_bundle(tiny_bundle)
    save_artifact(tmp_path / "gcn", model, "lightgcn", "pooled", SMALL, sizes)
    art = load_artifact(tmp_path / "gcn")
    assert torch.equal(art.model.graph_indices_, model.graph_indices_)
    users = torch.arange(tiny_bundle.n_users)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            assert torch.equal(model.score(users, c), art.model.score(users, c))


def test_trainer_flow_single_and_pooled(tiny_bundle):
    """The trainer calls setup(bundle, categories) itself; single mode gets one graph per category."""
    from crossrec.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, checkpoint=False, seed=0)
    sizes = Sizes.from_bundle(tiny_bundle)
    single = build("lightgcn", "single", SMALL, sizes)
    for c, sub in enumerate(single.models):
        Trainer(cfg, categories=[c]).fit(sub, tiny_bundle)
        rows, cols = sub.graph_indices_.numpy()
        items = np.where(rows >= sizes.n_users, rows, cols) - sizes.n_users
        assert (tiny_bundle.item_category[items] == c).all()
    with torch.no_grad():
        s = single.score(torch.arange(5), 3)
    assert s.shape == (5, tiny_bundle.n_items_in(3)) and torch.isfinite(s).all()


def test_beats_popularity_on_tiny_world(tiny_bundle):
    from crossrec.data.sampling import TrainSampler
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator

    sizes = Sizes.from_bundle(tiny_bundle)
    evaluator = Evaluator(tiny_bundle, EvalConfig(ks=(10,)), split="test")
    pop = build("pop", "pooled", {}, sizes)
    pop.fit(tiny_bundle)
    model = make(tiny_bundle, dim=64, n_layers=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = TrainSampler(tiny_bundle, batch_size=256, seed=0)
    model.train()
    for _ in range(10):
        for b in sampler:
            opt.zero_grad()
            model.loss(b).backward()
            opt.step()
    ndcg = evaluator.evaluate(model).metric("ndcg@10")
    ndcg_pop = evaluator.evaluate(pop).metric("ndcg@10")
    assert ndcg > ndcg_pop, f"lightgcn ndcg@10 {ndcg:.4f} <= pop {ndcg_pop:.4f}"
