"""The trainer: early stopping restores the best epoch, checkpoints resume exactly, bad settings raise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossrec.data.batch import Sizes
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer


def mf(bundle, seed=0):
    torch.manual_seed(seed)
    return build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(bundle))


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, batch_size=256, lr=1e-2, progress=False, patience=0, seed=0)
    return TrainConfig(**(base | kw))


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tiny_bundle, tmp_path):
    straight = mf(tiny_bundle)
    Trainer(cfg(epochs=4, checkpoint=False)).fit(straight, tiny_bundle)

    part = mf(tiny_bundle)
    Trainer(cfg(epochs=2), out_dir=tmp_path).fit(part, tiny_bundle)
    pointer = json.loads((tmp_path / "checkpoint" / "current.json").read_text())
    state = json.loads((tmp_path / "checkpoint" / pointer["set"] / "state.json").read_text())
    assert state["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["current.json", "set-00002"]
    resumed = mf(tiny_bundle, seed=123)  # different init: everything must come from the checkpoint
    result = Trainer(cfg(epochs=4), out_dir=tmp_path).fit(resumed, tiny_bundle, resume=True)
    assert result.epochs_run == 4 and len(result.history) == 4
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_early_stopping_restores_the_best_epoch(tiny_bundle):
    model = mf(tiny_bundle)
    seen = []
    trainer = Trainer(cfg(epochs=30, lr=0.05, patience=2, metric="ndcg@10"))
    trainer.add_callback("on_validation", lambda t, logs: seen.append(logs["valid_ndcg@10"]))
    result = trainer.fit(model, tiny_bundle)
    # It stopped after `patience` validations without a gain, and kept the best epoch's weights.
    assert result.best_epoch == int(np.argmax(seen)) and result.epochs_run <= 30
    if result.epochs_run < 30:
        assert result.epochs_run == result.best_epoch + 1 + 2
    assert result.best_metric == pytest.approx(max(seen))
    from crossrec.evaluation.evaluator import EvalConfig, Evaluator

    again = Evaluator(tiny_bundle, EvalConfig(ks=(10,), slices=False), split="valid").evaluate(model)
    assert again.metric("ndcg@10") == pytest.approx(result.best_metric, abs=1e-6)


def test_tensorboard_scalars_written(tiny_bundle, tmp_path):
    Trainer(cfg(epochs=1, tensorboard=True), out_dir=tmp_path).fit(mf(tiny_bundle), tiny_bundle)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("opt,sched", [("sgd", "step"), ("adamw", "cosine"), ("adam", "exponential")])
def test_optimisers_and_schedules_train(tiny_bundle, opt, sched):
    lr = 5.0 if opt == "sgd" else 0.05  # plain SGD on small-init embeddings needs a large step to move
    result = Trainer(cfg(epochs=3, optimizer=opt, scheduler=sched, lr=lr)).fit(mf(tiny_bundle), tiny_bundle)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0], losses  # every optimiser/schedule pair makes progress
    lrs = [h["lr"] for h in result.history]
    assert (lrs[-1] < lrs[0]) if sched != "step" else lrs[-1] == lrs[0]  # step decays every 10 epochs
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


@pytest.mark.parametrize("bad", [{"optimizer": "rmsprop"}, {"scheduler": "linear"}, {"epochs": 0}, {"lr": 0.0}])
def test_bad_train_settings_raise(bad):
    with pytest.raises(ValueError):
        Trainer(cfg(**bad))


def test_divergence_is_reported_not_silently_trained(tiny_bundle):
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        Trainer(cfg(epochs=3, optimizer="sgd", lr=1e12, momentum=0.0)).fit(mf(tiny_bundle), tiny_bundle)


def test_a_fit_without_validation_writes_strict_json(tmp_path):
    """No validation split: the best score is unknown, written as null (not -Infinity, which
    strict JSON readers refuse), and a checkpoint holding it resumes."""
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate, tiny_config

    inter, items = generate(tiny_config())
    bundle = prepare(inter, items, PrepareConfig(valid=False), tmp_path / "bundle")
    result = Trainer(cfg(epochs=2), out_dir=tmp_path / "run").fit(mf(bundle), bundle)

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(json.dumps(result.to_json()), parse_constant=refuse)["best_metric"] is None
    pointer = json.loads((tmp_path / "run" / "checkpoint" / "current.json").read_text())
    state = (tmp_path / "run" / "checkpoint" / pointer["set"] / "state.json").read_text()
    assert json.loads(state, parse_constant=refuse)["result"]["best_metric"] is None
    again = Trainer(cfg(epochs=3), out_dir=tmp_path / "run").fit(mf(bundle), bundle, resume=True)
    assert again.epochs_run == 3 and again.to_json()["best_metric"] is None
