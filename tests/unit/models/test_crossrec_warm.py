"""The flagship's warm start (models/crossrec/warm.py): the shared user and item ID embeddings
start from iALS factors fitted on the training rows, once, and the warm-started model trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.base import config_from_dict
from crossrec.models.crossrec import CrossRec
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError
from tests.unit.models.test_crossrec import make

pytestmark = pytest.mark.usefixtures("one_thread")


def _train_auc(model, bundle) -> float:
    """AUC of <p_u, v_i> for training pairs against random items (the ID parts alone)."""
    rows = bundle.split("train")
    u = torch.from_numpy(rows["user"].to_numpy().astype(np.int64))
    i = torch.from_numpy(rows["item"].to_numpy().astype(np.int64))
    j = torch.randint(0, model.sizes.n_items, i.shape, generator=torch.Generator().manual_seed(1))
    p, v = model.user_emb.weight.detach(), model.items.emb.weight.detach()
    pos, neg = (p[u] * v[i]).sum(1), (p[u] * v[j]).sum(1)
    return float((pos > neg).float().mean())


def test_warm_start_puts_scaled_ials_factors_in_the_id_embeddings(tiny_bundle):
    cold = make(tiny_bundle, warm_start={"method": "none"})
    assert cold.items.emb.weight[:-1].std().item() == pytest.approx(0.01, rel=0.2)  # init_std
    assert _train_auc(cold, tiny_bundle) < 0.6  # random directions: no structure yet
    warm = make(tiny_bundle, warm_start={"method": "ials", "scale": 1.0})
    twice = make(tiny_bundle, warm_start={"method": "ials", "scale": 2.0})
    assert _train_auc(warm, tiny_bundle) > 0.8  # co-occurrence structure before any epoch
    # the same seed fits the same factors; the scale multiplies both tables
    assert torch.allclose(twice.items.emb.weight[:-1], 2.0 * warm.items.emb.weight[:-1], atol=1e-5)
    assert torch.allclose(twice.user_emb.weight, 2.0 * warm.user_emb.weight, atol=1e-5)
    assert torch.all(warm.items.emb.weight[-1] == 0)  # the padding row stays zero


def test_warm_start_runs_once(tiny_bundle):
    """A later stage's setup (source -> target) keeps what the first stage learnt."""
    model = make(tiny_bundle, warm_start={"method": "ials"})
    with torch.no_grad():
        model.items.emb.weight.add_(1.0)
    before = model.items.emb.weight.clone()
    model.setup(tiny_bundle, [0])
    assert torch.equal(model.items.emb.weight, before)


def test_warm_start_options_are_checked():
    with pytest.raises(ConfigError, match="warm_start"):
        config_from_dict("crossrec", {"warm_start": {"method": "als"}})
    for bad in ({"scale": 0.0}, {"iterations": 0}, {"regularization": -1.0}):
        with pytest.raises(ConfigError, match="warm_start"):
            config_from_dict("crossrec", {"warm_start": bad})


def test_warm_started_flagship_trains_and_beats_popularity(medium_bundle):
    sizes = Sizes.from_bundle(medium_bundle)
    cfg = TrainConfig(epochs=6, batch_size=1024, n_negatives=4, lr=2e-3, patience=3, progress=False, checkpoint=False)
    torch.manual_seed(0)
    flagship = build("crossrec", "pooled", {"dim": 32, "warm_start": {"method": "ials"}}, sizes)
    Trainer(cfg).fit(flagship, medium_bundle)
    pop = build("pop", "pooled", {}, sizes)
    Trainer(cfg).fit(pop, medium_bundle)
    ev = Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test")
    f, p = ev.evaluate(flagship), ev.evaluate(pop)
    assert f.metric("ndcg@10") > 1.5 * p.metric("ndcg@10")
    assert f.metric("ndcg@10", "ALL", "new_to_category") > p.metric("ndcg@10", "ALL", "new_to_category")


def test_loaded_weights_are_never_warm_started(tiny_bundle):
    """`crossrec update` trains a loaded artifact further: its trained embeddings must survive the
    trainer's setup (a fresh model with loaded state is not warm-started)."""
    trained = make(tiny_bundle, warm_start={"method": "ials"})
    with torch.no_grad():
        trained.items.emb.weight.add_(1.0)
    torch.manual_seed(5)
    loaded = CrossRec(trained.config, trained.sizes)
    loaded.load_state_dict(trained.state_dict())
    loaded.setup(tiny_bundle)
    assert torch.equal(loaded.items.emb.weight, trained.items.emb.weight)
    assert torch.equal(loaded.user_emb.weight, trained.user_emb.weight)
