"""`train.threads`: the intra-op thread count of torch and of the compiled kernels for a run, and its
automatic default (training/threads.py), with /proc's load injected."""

from __future__ import annotations

import pytest
import torch

from crossrec import kernels
from crossrec.data.batch import Sizes
from crossrec.models.per_category import build
from crossrec.training import threads
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError


def test_threads_defaults_to_auto_and_refuses_a_negative_count():
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


def loads(monkeypatch, running, own=1, cores=(2, 2)):
    """Inject /proc: `running` (an int, or a list: one per read) runnable threads machine-wide,
    `own` of them this process's, on `cores` = (this process's cores, the machine's)."""
    seq = iter(running if isinstance(running, list) else [running] * 100)
    monkeypatch.setattr(threads, "_loadavg", lambda: f"0.50 0.40 0.30 {next(seq)}/120 4242\n")
    monkeypatch.setattr(threads, "_own_running", lambda: own)
    monkeypatch.setattr(threads, "_cores", lambda: cores)


def test_auto_takes_the_free_cores_within_one_and_the_cap(monkeypatch):
    loads(monkeypatch, 1)  # idle: only the caller runs
    assert threads.auto_threads(cap=2) == 2
    assert threads.auto_threads(cap=1) == 1  # OMP_NUM_THREADS=1 stays 1
    loads(monkeypatch, 4)  # three others on 2 cores
    assert threads.auto_threads(cap=2) == 1  # never below 1
    loads(monkeypatch, 3, own=2)  # this process's spinning worker is not other work
    assert threads.auto_threads(cap=2) == 1
    loads(monkeypatch, 2, own=2)
    assert threads.auto_threads(cap=2) == 2
    loads(monkeypatch, 33, cores=(4, 64))  # 32 others spread over 64 cores: 2 of this process's 4
    assert threads.auto_threads(cap=8) == 2
    monkeypatch.setattr(threads, "_loadavg", lambda: None)  # no /proc: the cap
    assert threads.auto_threads(cap=2) == 2


def tiny_fit(tiny_bundle, **kw):
    model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    cfg = TrainConfig(epochs=3, progress=False, checkpoint=False, patience=0, **kw)
    return Trainer(cfg).fit(model, tiny_bundle)


def test_auto_sets_the_count_at_each_epoch_and_puts_the_cap_back(tiny_bundle, monkeypatch, one_thread):
    torch.set_num_threads(2)
    loads(monkeypatch, [1, 1, 4, 1])  # fit start, then each epoch's start
    result = tiny_fit(tiny_bundle)
    assert [h["threads"] for h in result.history] == [2, 1, 2]
    assert torch.get_num_threads() == 2


def test_a_pinned_count_ignores_the_load(tiny_bundle, monkeypatch, one_thread):
    torch.set_num_threads(1)
    loads(monkeypatch, 4)
    assert [h["threads"] for h in tiny_fit(tiny_bundle, threads=2).history] == [2, 2, 2]
    torch.set_num_threads(2)
    with threads.AutoThreads(on=False) as pinned:  # train.threads: n or train.deterministic
        assert pinned.apply() == 2
