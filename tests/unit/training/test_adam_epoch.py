"""BPR-MF's default step as a whole-epoch kernel (`fused.adam_epoch`): batch by batch the update
the batched step makes (repeated rows included), frozen tables left alone, the same result on any
thread count, resume exact, and used only where it applies."""

from __future__ import annotations

import pytest
import torch

from crossrec.data.batch import Batch, Sizes
from crossrec.data.sampling import TrainSampler
from crossrec.models.mf import MF, MFConfig
from crossrec.training import fused
from crossrec.training.optim import Optimizers
from crossrec.training.steps import ManualStep
from crossrec.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # restores the thread count the trainings set


def _model(bundle, seed: int = 0, **mf) -> MF:
    torch.manual_seed(seed)
    return MF(MFConfig(**({"dim": 8, "reg": 1e-2, "init_std": 0.3} | mf)), Sizes.from_bundle(bundle))


class _Chunks:
    """A sampler stand-in that replays fixed chunks (what `epoch_chunks` yields)."""

    CHUNK_BATCHES = 4

    def __init__(self, chunks, batch_size: int) -> None:
        self.chunks, self.batch_size = chunks, batch_size
        self.n_rows = sum(len(c[0]) for c in chunks)

    def epoch_chunks(self):
        return iter(self.chunks)


@pytest.mark.parametrize("n_neg", [1, 3])
def test_whole_epoch_equals_the_batched_step_batch_by_batch(tiny_bundle, n_neg):
    """The same rows, negatives and batch boundaries through the batched default step and through
    the kernel: the same weights, moments and step count (popular items repeat within a batch)."""
    a, b = _model(tiny_bundle), _model(tiny_bundle)
    cfg = TrainConfig(lr=0.01, batch_size=64, n_negatives=n_neg, checkpoint=False, progress=False)
    oa, ob = Optimizers(a, cfg), Optimizers(b, cfg)
    sampler = TrainSampler(tiny_bundle, cfg.batch_size, n_neg, seed=3)
    sampler.CHUNK_BATCHES = 4
    chunks = list(sampler.epoch_chunks())
    assert len(chunks) > 2 and len(chunks[-1][0]) % cfg.batch_size != 0  # a partial last batch too

    step = ManualStep(a, oa, 0, use_fused=False)
    total_a = 0.0
    for users, pos, neg in chunks:
        for i in range(0, len(users), cfg.batch_size):
            s = slice(i, i + cfg.batch_size)
            batch = Batch(users=users[s], pos_items=pos[s], neg_items=neg[s], category=torch.zeros_like(users[s]))
            loss, _ = step(batch)
            total_a += float(loss) * len(users[s])
    run = fused.adam_epoch(b, ob.sparse, torch.device("cpu"), 1)
    assert run is not None
    total_b, rows = run(_Chunks(chunks, cfg.batch_size), lambda it, n: it)

    assert rows == sampler.n_rows and total_b == pytest.approx(total_a, rel=1e-5)
    for w in ("user_emb.weight", "item_emb.weight"):
        assert torch.allclose(a.state_dict()[w], b.state_dict()[w], atol=1e-5), w
    for pa, pb in zip(oa.sparse.param_groups[0]["params"], ob.sparse.param_groups[0]["params"]):
        sa, sb = oa.sparse.state[pa], ob.sparse.state[pb]
        assert sa["step"] == sb["step"] == len(sampler)
        assert torch.allclose(sa["exp_avg"], sb["exp_avg"], atol=1e-6)
        assert torch.allclose(sa["exp_avg_sq"], sb["exp_avg_sq"], atol=1e-8)


def test_iterating_the_sampler_yields_the_batches_of_its_chunks(tiny_bundle):
    a, b = TrainSampler(tiny_bundle, 64, 2, seed=5), TrainSampler(tiny_bundle, 64, 2, seed=5)
    a.CHUNK_BATCHES = b.CHUNK_BATCHES = 3
    batches = list(a)
    users, pos, neg = (torch.cat(x) for x in zip(*b.epoch_chunks()))
    assert len(batches) == len(a) and torch.equal(torch.cat([x.users for x in batches]), users)
    assert torch.equal(torch.cat([x.pos_items for x in batches]), pos)
    assert torch.equal(torch.cat([x.neg_items for x in batches]), neg)


def test_training_equals_the_batch_loop(tiny_bundle, monkeypatch):
    """Trainer.fit with the whole-epoch kernel and with the batch loop: the same model up to float order."""
    kernel = _fit(tiny_bundle, 1, checkpoint=False)
    monkeypatch.setattr(fused, "adam_epoch", lambda *a: None)
    loop = _fit(tiny_bundle, 1, checkpoint=False)
    for k, v in kernel.state_dict().items():
        assert torch.allclose(v, loop.state_dict()[k], atol=1e-5), k


def test_a_frozen_table_is_left_alone(tiny_bundle):
    mf = _model(tiny_bundle)
    mf.item_emb.weight.requires_grad_(False)
    before = mf.item_emb.weight.clone()
    opts = Optimizers(mf, TrainConfig(checkpoint=False, progress=False))
    run = fused.adam_epoch(mf, opts.sparse, torch.device("cpu"), 1)
    assert run is not None
    users_before = mf.user_emb.weight.clone()
    run(TrainSampler(tiny_bundle, 128, 1), lambda it, n: it)
    assert torch.equal(mf.item_emb.weight, before)
    assert not torch.equal(mf.user_emb.weight, users_before)


def test_it_applies_only_to_the_default_step_on_one_cpu_process(tiny_bundle):
    mf = _model(tiny_bundle)
    cpu = torch.device("cpu")
    assert fused.adam_epoch(mf, Optimizers(mf, TrainConfig()).sparse, cpu, 1) is not None
    for cfg in (TrainConfig(sparse_optimizer="adagrad"), TrainConfig(optimizer="sgd")):
        assert fused.adam_epoch(mf, Optimizers(mf, cfg).sparse, cpu, 1) is None
    assert fused.adam_epoch(mf, Optimizers(mf, TrainConfig()).sparse, cpu, 2) is None
    assert fused.adam_epoch(mf, Optimizers(mf, TrainConfig()).sparse, torch.device("meta"), 1) is None
    bce = _model(tiny_bundle, loss="bce")
    assert fused.adam_epoch(bce, Optimizers(bce, TrainConfig()).sparse, cpu, 1) is None


def _fit(bundle, threads: int, seed: int = 0, out_dir=None, resume: bool = False, **kw) -> MF:
    mf = _model(bundle, seed=seed, dim=16, reg=1e-4, init_std=0.01)
    cfg = TrainConfig(
        **({"epochs": 4, "batch_size": 128, "lr": 0.01, "progress": False, "patience": 0, "threads": threads} | kw)
    )
    Trainer(cfg, out_dir=out_dir).fit(mf, bundle, resume=resume)
    return mf


def test_the_result_does_not_depend_on_the_thread_count(tiny_bundle):
    one, two = _fit(tiny_bundle, 1, checkpoint=False), _fit(tiny_bundle, 2, checkpoint=False)
    for k, v in one.state_dict().items():
        assert torch.equal(v, two.state_dict()[k]), k


def test_resume_from_a_checkpoint_is_exact(tiny_bundle, tmp_path):
    """The moments and step count are RowAdam's state, so 2 epochs + resume to 4 = 4 straight."""
    straight = _fit(tiny_bundle, 1, checkpoint=False)
    _fit(tiny_bundle, 1, out_dir=tmp_path, epochs=2)
    resumed = _fit(tiny_bundle, 1, seed=123, out_dir=tmp_path, resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_default_bpr_mf_training_beats_popularity(tiny_bundle):
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models.pop import Pop, PopConfig

    torch.manual_seed(0)
    mf = MF(MFConfig(dim=16), Sizes.from_bundle(tiny_bundle))
    cfg = TrainConfig(epochs=30, batch_size=256, n_negatives=4, lr=0.005, checkpoint=False, progress=False)
    result = Trainer(cfg).fit(mf, tiny_bundle)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    ev = Evaluator(tiny_bundle, EvalConfig(ks=(10,), slices=False, beyond=False), split="test")
    pop = Pop(PopConfig(), Sizes.from_bundle(tiny_bundle))
    pop.fit(tiny_bundle)
    assert ev.evaluate(mf).metric("ndcg@10") > ev.evaluate(pop).metric("ndcg@10")
