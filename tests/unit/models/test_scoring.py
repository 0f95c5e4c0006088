"""ScoreMemory: score blocks reuse one buffer inside the evaluator, never one still in use."""

from __future__ import annotations

import numpy as np
import torch

from crossrec.models.scoring import ScoreMemory, dot_scores


def test_dot_scores_reuses_the_buffer_only_after_it_is_given_back():
    u, v = torch.randn(4, 3), torch.randn(7, 3)
    with torch.no_grad(), ScoreMemory.active() as mem:
        a = dot_scores(u, v)
        b = dot_scores(u[:2], v)  # `a` is still held: fresh memory
        assert b.data_ptr() != a.data_ptr()
        assert torch.allclose(a, u @ v.T) and torch.allclose(b, u[:2] @ v.T)
        mem.give_back(a)
        c = dot_scores(u[:3], v)  # smaller block: cut from the same buffer
        assert c.data_ptr() == a.data_ptr() and torch.allclose(c, u[:3] @ v.T)
        mem.give_back(b)  # not the lent buffer: ignored
        d = dot_scores(u, v)
        assert d.data_ptr() != c.data_ptr()


def test_dot_scores_is_a_plain_matmul_outside_the_evaluator_or_with_autograd():
    u, v = torch.randn(4, 3, requires_grad=True), torch.randn(7, 3)
    plain = dot_scores(u.detach(), v)
    with ScoreMemory.active() as mem:
        s = dot_scores(u, v)  # autograd on: its own tensor, and it has a graph
        s.sum().backward()
        mem.give_back(s)
    assert u.grad is not None and torch.allclose(plain, s.detach())


def test_evaluation_with_reused_score_memory_equals_scoring_each_batch_afresh(tiny_bundle, monkeypatch):
    from crossrec.data.batch import Sizes
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models import scoring
    from crossrec.models.mf import MF, MFConfig

    torch.manual_seed(0)
    mf = MF(MFConfig(dim=8, init_std=0.5), Sizes.from_bundle(tiny_bundle))
    for auc in (True, False):
        ev = Evaluator(tiny_bundle, EvalConfig(ks=(5, 10), batch_size=7, beyond=False, auc=auc), split="test")
        reused = ev.evaluate(mf).table
        with monkeypatch.context() as m:
            m.setattr(scoring, "dot_scores", lambda u, v: u @ v.T)
            m.setattr("crossrec.models.mf.dot_scores", lambda u, v: u @ v.T)
            fresh = ev.evaluate(mf).table
        assert reused.equals(fresh)


def test_the_evaluator_writes_into_the_lent_block_without_copying_it(tiny_bundle, monkeypatch):
    """A lent block is the evaluator's own memory: `_score` must not copy it (that would cost the
    fresh pages the memory exists to avoid), while a view of model storage is still copied."""
    from crossrec.data.batch import Sizes
    from crossrec.evaluation import evaluator as ev_mod
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator
    from crossrec.models.mf import MF, MFConfig

    mf = MF(MFConfig(dim=4), Sizes.from_bundle(tiny_bundle))
    clones = []
    real_clone = torch.Tensor.clone
    monkeypatch.setattr(
        torch.Tensor, "clone", lambda self, *a, **k: clones.append(self.shape) or real_clone(self, *a, **k)
    )
    ev = Evaluator(tiny_bundle, EvalConfig(ks=(5,), batch_size=8, beyond=False, slices=False), split="test")
    with torch.no_grad(), ScoreMemory.active():
        users = np.arange(8)
        block = ev._score(mf, users, 0, torch.device("cpu"))
        assert not clones and ev_mod.lent_block(block)
