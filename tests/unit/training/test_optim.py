"""Sparse embedding tables get a sparse optimiser; a step only moves the rows in the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec.training.optim import Optimizers, RowAdam, RowSGD, split_parameters
from crossrec.training.trainer import TrainConfig


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, sparse=True)
        self.lin = nn.Linear(4, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lin(self.emb(idx)).sum()


def test_split_parameters():
    m = Tiny()
    dense, sparse = split_parameters(m)
    assert [p.shape for p in sparse] == [torch.Size([10, 4])]
    assert len(dense) == 2


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_step_moves_only_the_batch_rows(optimizer):
    torch.manual_seed(0)
    m = Tiny()
    before = m.emb.weight.detach().clone()
    opts = Optimizers(m, TrainConfig(optimizer=optimizer, lr=0.1, grad_clip=1.0))
    assert any(isinstance(o, (RowAdam, RowSGD)) for o in opts.opts)
    opts.zero_grad()
    m(torch.tensor([1, 3])).backward()
    opts.step()
    changed = (m.emb.weight.detach() != before).any(dim=1)
    assert changed.tolist() == [i in (1, 3) for i in range(10)]


def test_state_round_trip():
    m = Tiny()
    cfg = TrainConfig(scheduler="step", step_size=1, gamma=0.5, lr=0.1)
    opts = Optimizers(m, cfg)
    opts.zero_grad()
    m(torch.tensor([2])).backward()
    opts.step()
    opts.epoch_end()
    tensors, meta = opts.state()
    fresh = Optimizers(m, cfg)
    fresh.load(tensors, meta)
    assert fresh.lr == pytest.approx(0.05)
    assert torch.equal(
        fresh.opts[1].state_dict()["state"][0]["exp_avg"], opts.opts[1].state_dict()["state"][0]["exp_avg"]
    )
