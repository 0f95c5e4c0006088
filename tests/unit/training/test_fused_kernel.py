"""`train.fused`: the compiled BPR-MF step equals the batched step where their semantics meet,
trains a model that beats popularity, and refuses the jobs it cannot run."""

from __future__ import annotations

import pytest
import torch

from crossrec.data.batch import Batch, Sizes
from crossrec.models.mf import MF, MFConfig
from crossrec.training import fused
from crossrec.training.optim import Optimizers
from crossrec.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _sizes(n_users: int, n_items: int) -> Sizes:
    return Sizes(n_users, n_items, (0,) * n_items, tuple(range(n_items)), ("all",))


def _pair(**mf):
    sizes = _sizes(64, 200)
    torch.manual_seed(0)
    a = MF(MFConfig(dim=8, reg=1e-2, init_std=0.3, **mf), sizes)
    b = MF(MFConfig(dim=8, reg=1e-2, init_std=0.3, **mf), sizes)
    b.load_state_dict(a.state_dict())
    return a, b


def _distinct_batch(gen: torch.Generator, n_neg: int) -> Batch:
    """Every user and every item at most once in the batch: sequential = batched updates."""
    users = torch.randperm(64, generator=gen)[:16]
    items = torch.randperm(200, generator=gen)[: 16 * (1 + n_neg)]
    return Batch(
        users=users,
        pos_items=items[:16],
        neg_items=items[16:].view(16, n_neg),
        category=torch.zeros(16, dtype=torch.long),
    )


@pytest.mark.parametrize("n_neg", [1, 3])
@pytest.mark.parametrize("kind", ["adagrad", "sgd"])
def test_fused_step_equals_the_batched_step_on_distinct_rows(n_neg, kind):
    a, b = _pair()
    cfg = TrainConfig(lr=0.05, sparse_optimizer=kind, checkpoint=False, progress=False)
    oa, ob = Optimizers(a, cfg), Optimizers(b, cfg)
    gen = torch.Generator().manual_seed(1)
    for step in range(10):
        batch = _distinct_batch(gen, n_neg)
        oa.zero_grad()
        la = a.manual_backward(batch)
        oa.step()
        lb = fused.step(b, batch, ob.sparse)
        assert torch.allclose(la, lb.float(), atol=1e-5), step
        assert torch.allclose(a.user_emb.weight, b.user_emb.weight, atol=1e-5), step
        assert torch.allclose(a.item_emb.weight, b.item_emb.weight, atol=1e-5), step
    if kind == "adagrad":  # the accumulators are RowAdagrad's state: checkpoints carry them
        for wa, wb in ((a.user_emb.weight, b.user_emb.weight), (a.item_emb.weight, b.item_emb.weight)):
            assert torch.allclose(oa.sparse.state[wa]["sum"], ob.sparse.state[wb]["sum"], rtol=1e-4)


def test_fused_step_leaves_a_frozen_table_alone():
    a, _ = _pair()
    a.user_emb.weight.requires_grad_(False)
    opt = Optimizers(a, TrainConfig(lr=0.05, sparse_optimizer="adagrad", checkpoint=False, progress=False))
    before_u, before_i = a.user_emb.weight.clone(), a.item_emb.weight.clone()
    fused.step(a, _distinct_batch(torch.Generator().manual_seed(0), 1), opt.sparse)
    assert torch.equal(a.user_emb.weight, before_u)
    assert not torch.equal(a.item_emb.weight, before_i)


def test_fused_training_beats_popularity(tiny_bundle):
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models.pop import Pop, PopConfig
    from crossrec.training.trainer import Trainer

    torch.manual_seed(0)
    mf = MF(MFConfig(dim=16), Sizes.from_bundle(tiny_bundle))
    cfg = TrainConfig(
        epochs=30,
        batch_size=256,
        n_negatives=4,  # the tiny world is close to popularity: 4 negatives make the margin clear
        sparse_optimizer="adagrad",
        sparse_lr=0.05,
        fused=True,
        checkpoint=False,
        progress=False,
        patience=0,
    )
    result = Trainer(cfg).fit(mf, tiny_bundle)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    ev = Evaluator(tiny_bundle, EvalConfig(ks=(10,), slices=False, beyond=False), split="test")
    pop = Pop(PopConfig(), Sizes.from_bundle(tiny_bundle))
    pop.fit(tiny_bundle)
    assert ev.evaluate(mf).metric("ndcg@10") > ev.evaluate(pop).metric("ndcg@10")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparse_optimizer": "adam"}, "sparse_optimizer"),
        ({"optimizer": "adamw"}, "sparse_optimizer"),  # auto follows the optimiser: lazy Adam
        ({"sparse_optimizer": "adagrad", "adv_eps": 0.1}, "APR"),
    ],
)
def test_fused_refuses_options_it_cannot_run(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(fused=True, **options).validate()


def test_fused_refuses_models_and_jobs_it_cannot_run():
    mf = MF(MFConfig(dim=4), _sizes(3, 4))
    fused.check(mf, torch.device("cpu"), 1)  # BPR-MF on one CPU process: fine
    with pytest.raises(ValueError, match="no fused step"):
        fused.check(MF(MFConfig(dim=4, loss="bce"), _sizes(3, 4)), torch.device("cpu"), 1)
    with pytest.raises(ValueError, match="multi-process"):
        fused.check(mf, torch.device("cpu"), 2)
    with pytest.raises(ValueError, match="CPU kernel"):
        fused.check(mf, torch.device("meta"), 1)


def test_fused_training_resumes_exactly_from_a_checkpoint(tiny_bundle, tmp_path):
    """The kernel's Adagrad accumulators live in RowAdagrad's state, so a checkpoint carries them:
    2 epochs + resume to 4 equals 4 straight epochs (one thread: a fixed update order)."""
    from crossrec.training.trainer import Trainer

    def model(seed=0):
        torch.manual_seed(seed)
        return MF(MFConfig(dim=8), Sizes.from_bundle(tiny_bundle))

    def cfg(**kw):
        return TrainConfig(
            **(
                {
                    "epochs": 4,
                    "batch_size": 256,
                    "sparse_optimizer": "adagrad",
                    "sparse_lr": 0.05,
                    "fused": True,
                    "progress": False,
                    "patience": 0,
                    "seed": 0,
                }
                | kw
            )
        )

    straight = model()
    Trainer(cfg(checkpoint=False)).fit(straight, tiny_bundle)
    Trainer(cfg(epochs=2), out_dir=tmp_path).fit(model(), tiny_bundle)
    resumed = model(seed=123)
    Trainer(cfg(), out_dir=tmp_path).fit(resumed, tiny_bundle, resume=True)
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_a_kernel_launch_leaves_torch_threads_alone():
    """numba's OpenMP pool shares torch's OpenMP runtime: starting it reset torch's thread count
    (1 -> 2, so "one thread" runs were not reproducible, and torch's parallel ops slowed down on a
    busy machine). A fresh process: the pool starts once per process."""
    import subprocess
    import sys

    code = """
import torch
torch.set_num_threads(1)
from crossrec.data.batch import Batch, Sizes
from crossrec.models.mf import MF, MFConfig
from crossrec.training import fused
from crossrec.training.optim import Optimizers
from crossrec.training.trainer import TrainConfig
sizes = Sizes(500, 600, (0,) * 600, tuple(range(600)), ("all",))
m = MF(MFConfig(dim=8), sizes)
o = Optimizers(m, TrainConfig(sparse_optimizer="adagrad"))
b = Batch(users=torch.randint(0, 500, (256,)), pos_items=torch.randint(0, 600, (256,)),
          neg_items=torch.randint(0, 600, (256, 1)), category=torch.zeros(256, dtype=torch.long))
fused.step(m, b, o.sparse)
import numba
print(torch.get_num_threads(), numba.get_num_threads())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
