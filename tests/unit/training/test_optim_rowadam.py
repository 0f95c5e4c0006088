"""RowAdam: the same lazy-Adam update as torch.optim.SparseAdam, on dense row blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec.training.optim import RowAdam


@pytest.mark.parametrize("compiled", [True, False])
def test_row_adam_follows_sparse_adam_step_by_step(compiled):
    """Both paths: the compiled kernel (kernels/optim.py, CPU's default) and the tensor ops."""
    torch.manual_seed(0)
    a = nn.Embedding(50, 6, sparse=True, padding_idx=49)
    b = nn.Embedding(50, 6, sparse=True, padding_idx=49)
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.SparseAdam(a.parameters(), lr=0.01), RowAdam(b.parameters(), lr=0.01)
    ob.compiled = compiled
    for step in range(30):
        idx = torch.randint(0, 50, (40,))  # repeated rows and the padding row included
        target = torch.randn(40, 6)
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((emb(idx) - target) ** 2).sum().backward()
            opt.step()
        assert torch.allclose(a.weight, b.weight, atol=1e-5), step
    assert (b.weight[49] == 0).all()
    assert ob.state[b.weight]["step"] == 30
    assert torch.allclose(ob.state[b.weight]["exp_avg"], oa.state[a.weight]["exp_avg"], atol=1e-6)


def test_row_adam_refuses_dense_gradients_and_bad_options():
    p = nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        RowAdam([p]).step()
    with pytest.raises(ValueError):
        RowAdam([p], lr=0)
