"""APR adversarial training: perturbed lookups, hooks cleaned up, eps=0 leaves the trainer as it was."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from crossrec.data.batch import Sizes
from crossrec.data.sampling import TrainSampler
from crossrec.models.per_category import build
from crossrec.training.adversarial import adversarial_loss, capture_lookups
from crossrec.training.optim import Optimizers
from crossrec.training.trainer import TrainConfig, Trainer


def mf(bundle, seed=0, loss="bpr"):
    torch.manual_seed(seed)
    return build("mf", "pooled", {"dim": 8, "loss": loss}, Sizes.from_bundle(bundle))


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=256, lr=1e-2, progress=False, patience=0, seed=0, checkpoint=False)
    return TrainConfig(**(base | kw))


def first_batch(bundle):
    return next(iter(TrainSampler(bundle, batch_size=256, n_negatives=2, seed=0)))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_perturbed_loss_is_larger_and_hooks_are_removed(tiny_bundle):
    model = mf(tiny_bundle)
    batch = first_batch(tiny_bundle)
    with capture_lookups(model) as lookups:
        loss = model.loss(batch)
    # MF looks up users once and items once (positives and negatives together): every call is recorded.
    assert {m: len(v) for m, v in lookups.outputs.items()} == {model.user_emb: 1, model.item_emb: 1}
    adv = adversarial_loss(model, batch, loss, 0.1, lookups)
    assert no_hooks(model)
    assert torch.isfinite(adv) and adv.item() > loss.item()  # the worst-case direction raises the loss
    total = loss + 1.0 * adv
    assert total.item() != pytest.approx(model.loss(batch).item())
    total.backward()  # the clean graph was kept for the combined backward
    assert model.user_emb.weight.grad is not None


class Toy(nn.Module):
    """loss = sum over looked-up rows of ||e + 1||^2; index 0 is the padding row (all zeros)."""

    def __init__(self, frozen: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 3, padding_idx=0)
        self.emb.weight.requires_grad_(not frozen)
        self.extra_calls = 0

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        out = ((self.emb(idx) + 1) ** 2).sum()
        for _ in range(self.extra_calls):
            out = out + self.emb(idx).sum()
        return out


def test_rows_move_by_eps_along_their_own_gradient_and_padding_rows_stay():
    torch.manual_seed(0)
    toy = Toy()
    idx = torch.tensor([0, 1, 2, 2, 0, 4])
    eps = 0.3
    with capture_lookups(toy) as lookups:
        loss = toy.loss(idx)
    adv = adversarial_loss(toy, idx, loss, eps, lookups)
    e = toy.emb.weight.detach()[idx] + 1
    norms = e.norm(dim=1)
    pad = idx == 0
    # Non-padding row: g = 2(e+1) so the delta is eps * (e+1)/||e+1|| and the term becomes (||e+1|| + eps)^2.
    expected = ((norms + eps) ** 2)[~pad].sum() + (norms**2)[pad].sum()
    assert adv.item() == pytest.approx(expected.item(), rel=1e-5)


def test_frozen_tables_are_not_perturbed():
    toy = Toy(frozen=True)
    idx = torch.tensor([1, 2])
    with capture_lookups(toy) as lookups:
        loss = toy.loss(idx)
    assert adversarial_loss(toy, idx, loss, 0.5, lookups) is loss


def test_a_different_number_of_lookups_is_an_error_and_hooks_still_go():
    toy = Toy()
    idx = torch.tensor([1, 2])
    with capture_lookups(toy) as lookups:
        loss = toy.loss(idx)
    toy.extra_calls = 1
    with pytest.raises(RuntimeError, match="more often than the clean pass"):
        adversarial_loss(toy, idx, loss, 0.1, lookups)
    assert no_hooks(toy)
    toy.extra_calls = 0
    with capture_lookups(toy) as lookups:
        loss = toy.loss(idx) + toy.emb(idx).sum()  # one lookup more than model.loss makes
    with pytest.raises(RuntimeError, match="1 times in the perturbed pass"):
        adversarial_loss(toy, idx, loss, 0.1, lookups)
    assert no_hooks(toy)


def test_a_model_without_embedding_lookups_is_an_error():
    class Dense(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def loss(self, batch):
            return (self.w**2).sum()

    m = Dense()
    with capture_lookups(m) as lookups:
        loss = m.loss(None)
    with pytest.raises(RuntimeError, match="nn.Embedding"):
        adversarial_loss(m, None, loss, 0.1, lookups)


def test_adversarial_training_runs_and_logs_both_losses(tiny_bundle):
    model = mf(tiny_bundle)
    result = Trainer(cfg(epochs=2, adv_eps=0.05, adv_reg=1.0, adv_start=1)).fit(model, tiny_bundle)
    first, second = result.history
    assert "adv_loss" not in first  # APR: pretrain, then add the adversarial term
    assert math.isfinite(second["loss"]) and math.isfinite(second["adv_loss"])
    assert second["adv_loss"] > second["loss"]
    assert no_hooks(model)


def reference_epoch(model, bundle, c: TrainConfig) -> None:
    """The trainer's loop as it was before adversarial training: loss, backward, step."""
    sampler = TrainSampler(bundle, c.batch_size, c.n_negatives, None, seed=c.seed)
    opts = Optimizers(model, c)
    model.train()
    for batch in sampler:
        loss = model.loss(batch)
        opts.zero_grad()
        loss.backward()
        opts.step()
    opts.epoch_end()


def test_eps_zero_is_bit_identical_to_the_plain_loop(tiny_bundle):
    c = cfg(adv_eps=0.0, adv_reg=3.0)
    plain = mf(tiny_bundle, loss="bce")  # BCE trains through autograd (BPR has hand-written gradients)
    reference_epoch(plain, tiny_bundle, c)
    trained = mf(tiny_bundle, loss="bce")
    Trainer(c).fit(trained, tiny_bundle)  # one epoch: the best (only) epoch is the last one
    for k, v in plain.state_dict().items():
        assert torch.equal(v, trained.state_dict()[k]), k
    adv = mf(tiny_bundle)
    Trainer(cfg(adv_eps=0.05)).fit(adv, tiny_bundle)
    assert not torch.equal(adv.user_emb.weight, plain.user_emb.weight)  # the comparison can tell


@pytest.mark.parametrize("bad", [{"adv_eps": -0.1}, {"adv_reg": -1.0}, {"adv_start": -1}])
def test_bad_adversarial_settings_raise(bad):
    with pytest.raises(ValueError, match="train.adv_"):
        cfg(**bad).validate()


def test_the_text_tower_is_perturbed_at_its_fused_item_vectors(tiny_bundle, tiny_text):
    tiny_bundle.text_vectors = tiny_text
    torch.manual_seed(0)
    model = build(
        "crossrec",
        "pooled",
        {
            "dim": 16,
            "item_tower": "text+id",
            "text": {"id_dropout": 0.0},
            "history": {"dropout": 0.0, "category_dropout": 0.0},
        },
        Sizes.from_bundle(tiny_bundle),
    )
    model.setup(tiny_bundle)
    model.train()
    batch = first_batch(tiny_bundle)
    with capture_lookups(model) as lookups:
        torch.manual_seed(1)
        loss = model.loss(batch)
    assert model.items.fused in lookups.outputs  # text + ID meet there: APR moves that vector
    torch.manual_seed(1)
    adv = adversarial_loss(model, batch, loss, eps=0.5, lookups=lookups)
    assert adv.item() > loss.item() and no_hooks(model)
