"""`train.threads`: the intra-op thread count of torch and of the compiled kernels for a run."""

from __future__ import annotations

import pytest
import torch

from crossrec import kernels
from crossrec.data.batch import Sizes
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError


def test_threads_defaults_to_every_core_and_refuses_a_negative_count():
    assert TrainConfig().threads == 0
    with pytest.raises(ConfigError, match="threads"):
        TrainConfig(threads=-1).validate()


def test_threads_sets_torch_and_the_kernels(tiny_bundle):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
        cfg = TrainConfig(epochs=1, threads=1, fused=True, sparse_optimizer="adagrad", progress=False, checkpoint=False)
        Trainer(cfg).fit(model, tiny_bundle)  # the fused step runs a kernel
        assert torch.get_num_threads() == 1
        assert kernels.threads() == 1
    finally:
        torch.set_num_threads(before)
