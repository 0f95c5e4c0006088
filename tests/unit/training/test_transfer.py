"""Transfer paradigms: plans, freezing policies, staged training through pipeline.train, resume."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from crossrec.artifact import load_artifact
from crossrec.config import load_config
from crossrec.data.batch import Batch, Sizes
from crossrec.models.losses import pair_loss
from crossrec.models.mf import MF, MFConfig
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig
from crossrec.training.transfer import (
    Stage,
    TransferConfig,
    frozen,
    parameter_groups,
    plan,
    run_stages,
)
from crossrec.typed import ConfigError

CATS = ["books", "electronics", "garden", "kitchen"]


# ---------------------------------------------------------------------- plans
def test_joint_is_one_stage_on_everything():
    assert plan(TransferConfig(), CATS) == [Stage("joint", None, "none", 1.0, 0)]


def test_source_target_pretrains_then_finetunes():
    cfg = TransferConfig(
        paradigm="source_target", source=["books", "kitchen"], freeze="shared", finetune_lr_scale=0.1, finetune_epochs=3
    )
    assert plan(cfg, CATS) == [
        Stage("pretrain", [0, 3], "none", 1.0, 0),
        Stage("finetune", [1, 2], "shared", 0.1, 3),  # empty target = every category not in source
    ]
    explicit = TransferConfig(paradigm="source_target", source=["books"], target=["garden"])
    assert [s.categories for s in plan(explicit, CATS)] == [[0], [2]]


def test_sequential_follows_the_order_or_the_training_sizes():
    cfg = TransferConfig(paradigm="sequential", order=["garden", "books"], freeze="all_but_heads")
    assert plan(cfg, CATS) == [
        Stage("garden", [2], "none", 1.0, 0),
        Stage("books", [0], "all_but_heads", 1.0, 0),
    ]
    by_size = plan(TransferConfig(paradigm="sequential"), CATS, train_counts=[50, 900, 0, 300])
    assert [(s.name, s.categories, s.freeze) for s in by_size] == [
        ("electronics", [1], "none"),
        ("kitchen", [3], "none"),  # cfg.freeze defaults to none
        ("books", [0], "none"),
    ]  # garden has no training data: left out
    assert [s.categories for s in plan(TransferConfig(paradigm="sequential"), CATS)] == [[0], [1], [2], [3]]


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"paradigm": "source_target", "source": ["bookz"]}, "transfer.source"),
        ({"paradigm": "source_target", "source": ["books"], "target": ["toys"]}, "transfer.target"),
        ({"paradigm": "source_target"}, "transfer.source"),
        ({"paradigm": "source_target", "source": CATS}, "transfer.target"),
        ({"paradigm": "sequential", "order": ["books", "books"]}, "transfer.order"),
        ({"paradigm": "sequential", "order": ["nope"]}, "transfer.order"),
        ({"paradigm": "transductive"}, "transfer.paradigm"),
        ({"freeze": "everything"}, "transfer.freeze"),
        ({"finetune_lr_scale": 0.0}, "transfer.finetune_lr_scale"),
    ],
)
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        plan(TransferConfig(**kw), CATS)


# ---------------------------------------------------------------------- parameter groups / freezing
class GroupedMF(MF):
    """MF plus a dense shared projection, per-(user, category) vectors and item-bias heads."""

    def __init__(self, config: MFConfig, sizes: Sizes) -> None:
        super().__init__(config, sizes)
        self.n_cat = sizes.n_categories
        self.proj = nn.Linear(config.dim, config.dim)
        self.user_cat = nn.Embedding(sizes.n_users * self.n_cat, config.dim, sparse=True)
        nn.init.normal_(self.user_cat.weight, std=0.01)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # user_bias / global_bias are left out on purpose: they fall back to "shared".
        return {
            "shared": [self.user_emb.weight, self.item_emb.weight, *self.proj.parameters()],
            "specific": [self.user_cat.weight],
            "heads": [self.item_bias],
        }

    def _user(self, users: Tensor, category: Tensor) -> Tensor:
        return self.proj(self.user_emb(users)) + self.user_cat(users * self.n_cat + category)

    def score(self, users: Tensor, category: int) -> Tensor:
        idx = self.index[category]
        u = self._user(users, torch.full_like(users, category))
        return u @ self.item_emb.weight[idx].T + self.item_bias[idx]

    def loss(self, batch: Batch) -> Tensor:
        u = self._user(batch.users, batch.category)
        pos = (u * self.item_emb(batch.pos_items)).sum(-1) + self.item_bias[batch.pos_items]
        neg = (u.unsqueeze(1) * self.item_emb(batch.neg_items)).sum(-1) + self.item_bias[batch.neg_items]
        return pair_loss("bpr", pos, neg)


def grouped(bundle) -> GroupedMF:
    torch.manual_seed(0)
    return GroupedMF(MFConfig(dim=8), Sizes.from_bundle(bundle))


def tcfg(**kw) -> TrainConfig:
    # weight decay on: a frozen dense parameter that reached the optimiser would move even without a gradient
    base = dict(epochs=2, batch_size=256, lr=5e-2, weight_decay=1e-2, progress=False, patience=0, seed=0)
    return TrainConfig(**(base | kw))


def test_parameter_groups_fall_back_to_shared(tiny_bundle):
    plain = build("mf", "pooled", {"dim": 4}, Sizes.from_bundle(tiny_bundle))
    groups = parameter_groups(plain)  # MF defines no parameter_groups(): all shared
    assert len(groups["shared"]) == len(list(plain.parameters())) and not groups["specific"] and not groups["heads"]
    m = grouped(tiny_bundle)
    g = parameter_groups(m)
    ids = [id(p) for params in g.values() for p in params]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())  # every parameter, exactly once
    assert any(p is m.user_bias for p in g["shared"]) and any(p is m.global_bias for p in g["shared"])


def test_a_parameter_in_two_groups_is_an_error(tiny_bundle):
    m = grouped(tiny_bundle)
    m.parameter_groups = lambda: {"shared": [m.item_bias], "heads": [m.item_bias]}
    with pytest.raises(ValueError, match="both"):
        parameter_groups(m)


def snapshot(params) -> list[Tensor]:
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize(
    "policy, still, moves",
    [
        ("shared", ("shared",), ("specific", "heads")),
        ("all_but_heads", ("shared", "specific"), ("heads",)),
    ],
)
def test_frozen_groups_stay_bit_identical_while_the_rest_trains(tiny_bundle, tmp_path, policy, still, moves):
    m = grouped(tiny_bundle)
    groups = parameter_groups(m)
    before = {g: snapshot(groups[g]) for g in groups}
    results = run_stages(m, tiny_bundle, tcfg(), [Stage("finetune", [1, 3], policy, 0.5, 0)], tmp_path)
    assert results[0].epochs_run == 2
    for g in still:  # dense (proj, biases) and sparse (embedding tables) alike
        for b, p in zip(before[g], groups[g]):
            assert torch.equal(b, p.detach()), g
    for g in moves:
        assert any(not torch.equal(b, p.detach()) for b, p in zip(before[g], groups[g])), g
    assert all(p.requires_grad for p in m.parameters())  # flags restored
    assert (tmp_path / "stage-0-finetune" / "checkpoint" / "current.json").exists()


def test_freezing_everything_is_a_clear_error(tiny_bundle):
    plain = build("mf", "pooled", {"dim": 4}, Sizes.from_bundle(tiny_bundle))
    with pytest.raises(ValueError, match="no trainable parameters.*parameter_groups"):
        run_stages(plain, tiny_bundle, tcfg(), [Stage("finetune", [1], "shared", 1.0, 0)])
    assert all(p.requires_grad for p in plain.parameters())


def test_frozen_restores_flags_after_an_error(tiny_bundle):
    m = grouped(tiny_bundle)
    with pytest.raises(KeyError):
        with frozen(m, "all_but_heads"):
            assert not m.user_emb.weight.requires_grad and m.item_bias.requires_grad
            raise KeyError
    assert all(p.requires_grad for p in m.parameters())


# ---------------------------------------------------------------------- through the pipeline
def write_config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(
        "model:\n  name: mf\n  dim: 8\n"
        "train:\n  epochs: 2\n  batch_size: 256\n  lr: 0.01\n  progress: false\n  patience: 0\n"
    )
    return p


def test_source_target_end_to_end_through_pipeline_train(tiny_bundle, tmp_path):
    from crossrec.pipeline import train

    cfg = load_config(
        write_config(tmp_path),
        [
            "--transfer.paradigm=source_target",
            "--transfer.source=[books]",
            "--transfer.finetune_epochs=1",
            "--transfer.finetune_lr_scale=0.5",
        ],
    )
    assert cfg.transfer.source == ["books"]
    art = train(cfg, tiny_bundle, out=tmp_path / "model")
    stages = art.meta["train_result"]["stages"]
    assert [(s["name"], s["categories"], s["epochs_run"]) for s in stages] == [
        ("pretrain", ["books"], 2),
        ("finetune", ["electronics", "garden", "kitchen"], 1),
    ]
    assert stages[1]["lr"] == pytest.approx(0.005)
    assert (tmp_path / "model" / "stage-1-finetune" / "result.json").exists()
    loaded = load_artifact(tmp_path / "model")
    for k, v in art.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    assert loaded.meta["run_config"]["transfer"]["paradigm"] == "source_target"

    # resume: both stages are finished, so nothing trains again and the weights come back as they were
    again = train(cfg, tiny_bundle, out=tmp_path / "model", resume=True)
    assert again.meta["train_result"]["stages"] == stages
    for k, v in art.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_resume_continues_an_interrupted_stage(tiny_bundle, tmp_path):
    stages = [Stage("pretrain", [0], "none", 1.0, 0), Stage("finetune", [1], "none", 1.0, 0)]
    cfg = TrainConfig(epochs=2, batch_size=256, lr=1e-2, progress=False, patience=0, seed=0)
    torch.manual_seed(0)
    straight = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    run_stages(straight, tiny_bundle, cfg, stages, tmp_path / "a")

    torch.manual_seed(0)
    part = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    run_stages(part, tiny_bundle, cfg, stages[:1], tmp_path / "b")  # stage 0 done ...
    run_stages(part, tiny_bundle, replace(cfg, epochs=1), stages[1:], tmp_path / "b-tmp")
    # ... and stage 1 interrupted after one of its two epochs: move its checkpoint into place
    (tmp_path / "b-tmp" / "stage-0-finetune").rename(tmp_path / "b" / "stage-1-finetune")
    (tmp_path / "b" / "stage-1-finetune" / "result.json").unlink()
    torch.manual_seed(7)
    resumed = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    results = run_stages(resumed, tiny_bundle, cfg, stages, tmp_path / "b", resume=True)
    assert [r.epochs_run for r in results] == [2, 2]
    for k, v in straight.state_dict().items():
        assert torch.allclose(v, resumed.state_dict()[k], atol=1e-6), k


def test_resume_retrains_every_stage_after_an_unfinished_one(tiny_bundle, tmp_path, caplog):
    stages = [Stage("pretrain", [0], "none", 1.0, 0), Stage("finetune", [1], "none", 1.0, 0)]
    cfg = TrainConfig(epochs=1, batch_size=256, lr=1e-2, progress=False, patience=0, seed=0)
    model = build("mf", "pooled", {"dim": 8}, Sizes.from_bundle(tiny_bundle))
    run_stages(model, tiny_bundle, cfg, stages, tmp_path)
    (tmp_path / "stage-0-pretrain" / "result.json").unlink()  # stage 0 did not finish (this time)
    with caplog.at_level(logging.INFO, logger="crossrec.training.transfer"):
        run_stages(model, tiny_bundle, cfg, stages, tmp_path, resume=True)
    assert "skipped" not in caplog.text  # stage 1's marker is from before: it trains again
    assert "stage 1 (finetune)" in caplog.text


def test_bad_source_name_fails_before_training(tiny_bundle, tmp_path):
    from crossrec.pipeline import train

    cfg = load_config(write_config(tmp_path), ["--transfer.paradigm=source_target", "--transfer.source=[toys]"])
    with pytest.raises(ConfigError, match=r"transfer\.source.*toys"):
        train(cfg, tiny_bundle, out=tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_single_mode_ignores_transfer_and_says_so(tiny_bundle, tmp_path, caplog):
    from crossrec.pipeline import train

    cfg = load_config(
        write_config(tmp_path),
        ["--model.mode=single", "--train.epochs=1", "--transfer.paradigm=sequential"],
    )
    with caplog.at_level(logging.INFO, logger="crossrec.pipeline"):
        art = train(cfg, tiny_bundle, out=tmp_path / "model")
    assert "transfer.paradigm=sequential is ignored" in caplog.text
    assert set(art.meta["train_result"]) == set(tiny_bundle.categories)


def test_sequential_through_pipeline_train(tiny_bundle, tmp_path):
    from crossrec.pipeline import train

    cfg = load_config(
        write_config(tmp_path),
        ["--train.epochs=1", "--transfer.paradigm=sequential", "--transfer.order=[kitchen, books]"],
    )
    stages = train(cfg, tiny_bundle, out=tmp_path / "model").meta["train_result"]["stages"]
    assert [(s["name"], s["categories"]) for s in stages] == [("kitchen", ["kitchen"]), ("books", ["books"])]
