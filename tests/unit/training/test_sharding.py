"""`train.sharding` (training/sharding.py): when a fit shards, and what it refuses before it starts."""

from __future__ import annotations

import pytest
import torch

from crossrec import collectives
from crossrec.data.batch import Sizes
from crossrec.errors import ConfigError
from crossrec.models.per_category import build
from crossrec.training import sharding
from crossrec.training.config import TrainConfig

CPU = torch.device("cpu")


@pytest.fixture
def two_ranks(monkeypatch):
    monkeypatch.setattr(collectives, "world_size", lambda: 2)


def mf(tiny_bundle):
    return build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))


def test_none_and_a_single_process_train_replicated(tiny_bundle):
    model = mf(tiny_bundle)
    assert sharding.wanted(model, TrainConfig(sharding="none"), CPU) is None
    assert sharding.wanted(model, TrainConfig(), CPU) is None  # auto, one process
    with pytest.raises(ConfigError, match="process group of 2"):
        sharding.wanted(model, TrainConfig(sharding="table"), CPU)


def test_auto_shards_only_tables_that_would_not_fit(tiny_bundle, two_ranks, monkeypatch):
    model = mf(tiny_bundle)
    cfg = TrainConfig(sparse_optimizer="adagrad")
    assert sharding.wanted(model, cfg, CPU) is None  # a few kB of tables: replicated
    monkeypatch.setattr(sharding, "available_memory", lambda: sharding.table_bytes(model, cfg))
    assert sharding.wanted(model, cfg, CPU) == sharding.AUTO["cpu"]
    assert sharding.wanted(model, TrainConfig(), CPU) is None  # lazy Adam: no fused form, stays replicated


def test_table_bytes_counts_the_optimiser_state(tiny_bundle):
    model = mf(tiny_bundle)
    rows = sum(getattr(model, n).weight.shape[0] for n in ("user_emb", "item_emb"))
    assert sharding.table_bytes(model, TrainConfig(sparse_optimizer="adagrad")) == rows * (8 + 1) * 4
    assert sharding.table_bytes(model, TrainConfig(sparse_optimizer="adam")) == rows * 8 * 3 * 4


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (TrainConfig(sharding="row", sparse_optimizer="adagrad"), "row needs CUDA"),
        (TrainConfig(sharding="table"), "sparse_optimizer to adagrad or sgd"),
        (TrainConfig(sharding="table", sparse_optimizer="adagrad", adv_eps=0.1), "APR"),
    ],
)
def test_what_cannot_run_sharded_is_refused_with_the_reason(tiny_bundle, two_ranks, cfg, match):
    with pytest.raises(ConfigError, match=match):
        sharding.start(mf(tiny_bundle), cfg, CPU)


def test_a_model_without_shardable_tables_is_refused(tiny_bundle, two_ranks):
    pop = build("pop", "pooled", {}, Sizes.from_bundle(tiny_bundle))
    with pytest.raises(ConfigError, match="no shardable tables"):
        sharding.wanted(pop, TrainConfig(sharding="table", sparse_optimizer="adagrad"), CPU)
