"""BPR-MF's hand-written gradients equal autograd's; row-wise Adagrad does what it documents."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossrec.data.batch import Batch, Sizes
from crossrec.models.mf import MF, MFConfig
from crossrec.training.optim import Optimizers, RowAdagrad, RowSGD
from crossrec.training.trainer import TrainConfig


def _sizes(n_users: int, n_items: int) -> Sizes:
    return Sizes(n_users, n_items, (0,) * n_items, tuple(range(n_items)), ("all",))


def _pair(n_neg: int):
    sizes = _sizes(30, 40)
    torch.manual_seed(0)
    a = MF(MFConfig(dim=8, reg=1e-2, init_std=0.3), sizes)
    b = MF(MFConfig(dim=8, reg=1e-2, init_std=0.3), sizes)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("n_neg", [1, 3])
@pytest.mark.parametrize("sparse_optimizer", ["adam", "sgd"])
def test_manual_bpr_gradients_follow_autograd_step_by_step(n_neg, sparse_optimizer):
    a, b = _pair(n_neg)
    cfg = TrainConfig(lr=0.05, sparse_optimizer=sparse_optimizer, checkpoint=False, progress=False)
    oa, ob = Optimizers(a, cfg), Optimizers(b, cfg)
    gen = torch.Generator().manual_seed(1)
    for step in range(20):
        users = torch.randint(0, 30, (16,), generator=gen)  # repeated users and items included
        batch = Batch(
            users=users,
            pos_items=torch.randint(0, 40, (16,), generator=gen),
            neg_items=torch.randint(0, 40, (16, n_neg), generator=gen),
            category=torch.zeros(16, dtype=torch.long),
        )
        oa.zero_grad()
        la = a.loss(batch)
        la.backward()
        oa.step()
        ob.zero_grad()
        lb = b.manual_backward(batch)
        ob.step()
        assert lb is not None and torch.allclose(la.detach(), lb, atol=1e-6), step
        assert torch.allclose(a.user_emb.weight, b.user_emb.weight, atol=1e-5), step
        assert torch.allclose(a.item_emb.weight, b.item_emb.weight, atol=1e-5), step


def test_row_sgd_is_sgd_on_the_summed_gradient():
    torch.manual_seed(0)
    a, b = nn.Embedding(20, 3, sparse=True), nn.Embedding(20, 3, sparse=True)
    b.load_state_dict(a.state_dict())
    oa, ob = torch.optim.SGD(a.parameters(), lr=0.1), RowSGD(b.parameters(), lr=0.1)
    for _ in range(5):
        idx, target = torch.randint(0, 20, (30,)), torch.randn(30, 3)
        for emb, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            ((emb(idx) - target) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


def test_manual_backward_is_bpr_only():
    sizes = _sizes(3, 4)
    mf = MF(MFConfig(dim=2, loss="bce"), sizes)
    batch = Batch(
        users=torch.tensor([0]), pos_items=torch.tensor([1]), neg_items=torch.tensor([[2]]), category=torch.tensor([0])
    )
    assert mf.manual_backward(batch) is None


def test_row_adagrad_matches_its_formula_with_repeated_rows():
    emb = nn.Embedding(5, 2, sparse=True)
    with torch.no_grad():
        emb.weight.copy_(torch.arange(10, dtype=torch.float32).view(5, 2))
    w0 = emb.weight.detach().clone()
    opt = RowAdagrad(emb.parameters(), lr=0.5, eps=1e-8)
    idx = torch.tensor([1, 3, 1])
    grads = torch.tensor([[1.0, 3.0], [2.0, 0.0], [-1.0, 1.0]])
    (emb(idx) * grads).sum().backward()
    opt.step()
    s = torch.zeros(5)
    s[1] = (0 + 16) / 2  # the mean square of row 1's summed gradient [0, 4] (FBGEMM's exact row-wise Adagrad)
    s[3] = 4 / 2
    want = w0.clone()
    want[1] -= 0.5 * (grads[0] + grads[2]) / s[1].sqrt()
    want[3] -= 0.5 * grads[1] / s[3].sqrt()
    assert torch.allclose(emb.weight, want, atol=1e-6)
    assert torch.allclose(opt.state[emb.weight]["sum"], s)


def test_sparse_optimizer_and_lr_are_chosen_by_config():
    sizes = _sizes(3, 4)
    mf = MF(MFConfig(dim=2), sizes)
    opts = Optimizers(mf, TrainConfig(lr=1e-3, sparse_optimizer="adagrad", sparse_lr=0.1))
    sparse = [o for o in opts.opts if isinstance(o, RowAdagrad)]
    assert len(sparse) == 1 and sparse[0].param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError):
        TrainConfig(sparse_lr=-1.0).validate()
