"""The flagship's compiled CPU kernels (crossrec/kernels/) against the tensor path they replace:
the neighbourhood term, the history attention, the in-batch softmax and the whole training loss
with its gradients; and concurrent launches."""

from __future__ import annotations

import pytest
import torch

from crossrec.models.crossrec.softmax import in_batch_loss
from crossrec.training.optim import Optimizers
from crossrec.training.trainer import TrainConfig
from tests.unit.models.test_crossrec import first_batch, make

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("leave_out", [True, False])
def test_neighbourhood_compiled_kernels_equal_the_tensor_path(tiny_bundle, leave_out):
    """The CPU kernels (crossrec/kernels/) give the tensor path's scores and weight gradients."""
    model = make(tiny_bundle, neighbourhood={"k": 10}, history={"length": 8, "dropout": 0.0, "category_dropout": 0.0})
    batch = first_batch(tiny_bundle, size=64)
    cand = torch.unique(torch.cat([batch.pos_items, batch.neg_items.flatten()]))
    hist, _ = model.objective.training_history(batch.users, batch.pos_items, batch.category)
    term = model.neighbours
    with torch.no_grad():
        term.weight.uniform_(0.5, 2.0)
        term.recency.uniform_(-1.0, 1.0)
    upstream = torch.randn(len(batch), len(cand))
    results = []
    for compiled in (True, False):
        term.compiled = compiled
        term.zero_grad()
        out = term.scores(hist, batch.category, batch.users, cand, leave_out=leave_out)
        (out * upstream).sum().backward()
        results.append((out.detach(), term.weight.grad.clone(), term.recency.grad.clone()))
    term.compiled = True
    assert results[0][0].abs().sum() > 0
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_neighbourhood_kernels_launched_from_many_threads_at_once(tiny_bundle):
    """The service scores from a thread pool: concurrent launches must neither crash (numba's
    workqueue pool aborts on them) nor mix up results."""
    from concurrent.futures import ThreadPoolExecutor

    model = make(tiny_bundle, neighbourhood={"k": 10}, history={"length": 8})
    model.eval()
    users = torch.arange(tiny_bundle.n_users)
    with torch.no_grad():
        expected = [model.score(users, c) for c in range(tiny_bundle.n_categories)]

    def run(i: int) -> bool:
        c = i % tiny_bundle.n_categories
        with torch.no_grad():
            return torch.equal(model.score(users, c), expected[c])

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(run, range(64)))


def test_attention_compiled_kernels_equal_the_tensor_path(tiny_bundle):
    """The history encoder's compiled attention pooling (kernels/attention.py) gives the tensor
    path's user vectors and gradients: the history table's (row-sparse), the query's, the key and
    value layers', the category affinity's and the recency's."""
    model = make(tiny_bundle, neighbourhood={"k": 0}, history={"length": 8, "dropout": 0.0, "category_dropout": 0.0})
    batch = first_batch(tiny_bundle, size=64)
    hist, _ = model.objective.training_history(batch.users, batch.pos_items, batch.category)
    hist[:3] = model.pad  # rows with an empty history pool to zero
    enc = model.encoder
    with torch.no_grad():
        enc.hist_emb.weight[:-1].normal_(0.0, 1.0)
        enc.cat_affinity.uniform_(-1.0, 1.0)
        enc.recency.uniform_(-1.0, 1.0)
    upstream = torch.randn(len(batch), enc.dim)
    results = []
    for compiled in (True, False):
        enc.compiled = compiled
        model.zero_grad(set_to_none=True)
        out = model._encode(hist, batch.category)
        (out * upstream).sum().backward()
        grads = [enc.hist_emb.weight.grad.to_dense()] + [
            p.grad for p in (enc.query, enc.key.weight, enc.value.weight, enc.cat_affinity, enc.recency)
        ]
        results.append([out.detach()] + grads)
    enc.compiled = True
    assert results[0][1].abs().sum() > 0
    assert torch.equal(results[0][0][:3], torch.zeros_like(results[0][0][:3]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("with_side", [True, False])
def test_in_batch_softmax_compiled_equals_the_tensor_path(with_side):
    """Losses and every input's gradient, with repeated items in the block (masked but for the
    diagonal) and a row whose every other column is masked."""
    torch.manual_seed(0)
    n, d = 40, 8
    items = torch.randint(0, 12, (n,))
    items[:5] = 99  # five rows share an item
    inputs = [torch.randn(n, d), torch.randn(n, d), torch.randn(n), torch.randn(n)]
    if with_side:
        inputs.append(torch.randn(n, n))
    upstream = torch.rand(n)
    results = []
    for compiled in (True, False):
        leaves = [x.clone().requires_grad_() for x in inputs]
        side = leaves[4] if with_side else None
        loss = in_batch_loss(*leaves[:4], side, items, compiled=compiled)
        (loss * upstream).sum().backward()
        results.append([loss.detach()] + [x.grad for x in leaves])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tower", ["id", "text+id"])
def test_flagship_training_step_compiled_equals_the_tensor_path(tiny_bundle, tiny_text, tower):
    """One optimiser step of the flagship (every compiled kernel on; with the text tower the
    attention kernel also reads each history item's text part) against the same step on tensor
    ops: the same loss and the same parameters after the step."""
    tiny_bundle.text_vectors = tiny_text
    batch = first_batch(tiny_bundle, size=256)
    states = []
    for compiled in (True, False):
        model = make(tiny_bundle, item_tower=tower, neighbourhood={"k": 10}, history={"length": 8})
        model.compiled = model.encoder.compiled = model.neighbours.compiled = compiled
        opts = Optimizers(model, TrainConfig(batch_size=256, lr=1e-2))
        opts.sparse.compiled = compiled
        model.train()
        torch.manual_seed(1)  # the same history dropout draws
        loss = model.loss(batch)
        opts.zero_grad()
        loss.backward()
        opts.step()
        states.append((loss.detach(), {k: v.detach().clone() for k, v in model.state_dict().items()}))
    torch.testing.assert_close(states[0][0], states[1][0], rtol=1e-5, atol=1e-6)
    for key, value in states[0][1].items():
        torch.testing.assert_close(value, states[1][1][key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("compiled", [True, False])
def test_inference_scores_built_in_one_block_equal_the_sum_of_blocks(tiny_bundle, compiled):
    """With autograd off, `score` adds the bias and the neighbourhood term into the dot-product
    block in place (inside the evaluator, a reused block): the same scores as the separate blocks
    that training mode sums."""
    from crossrec.models.scoring import ScoreMemory

    model = make(tiny_bundle, neighbourhood={"k": 10}, history={"length": 8})
    model.neighbours.compiled = model.encoder.compiled = compiled
    with torch.no_grad():
        model.items.bias.uniform_(-1.0, 1.0)
    model.eval()
    users = torch.arange(tiny_bundle.n_users)
    for c in range(tiny_bundle.n_categories):
        expected = (model.user_vectors(users, c) @ model.item_vectors(c).T + model.extra_scores(users, c)).detach()
        with torch.no_grad():
            torch.testing.assert_close(model.score(users, c), expected)
            with ScoreMemory.active() as mem:
                block = model.score(users, c)
                torch.testing.assert_close(block, expected)
                mem.give_back(block)
                torch.testing.assert_close(model.score(users, c), expected)  # into the reused buffer


def test_adversarial_training_of_the_flagship_runs_on_the_kernels(tiny_bundle):
    """APR backpropagates through the clean loss twice (the gradient w.r.t. the lookups on a
    retained graph, then the total loss): the kernels' backward passes must survive that and give
    the tensor path's losses and gradients."""
    from crossrec.training.adversarial import adversarial_loss, capture_lookups

    batch = first_batch(tiny_bundle, size=256)
    results = []
    for compiled in (True, False):
        model = make(tiny_bundle, neighbourhood={"k": 10}, history={"length": 8})
        model.compiled = model.encoder.compiled = model.neighbours.compiled = compiled
        model.train()
        torch.manual_seed(1)
        with capture_lookups(model) as lookups:
            loss = model.loss(batch)
        adv = adversarial_loss(model, batch, loss, eps=0.5, lookups=lookups)
        (loss + adv).backward()
        results.append(
            [
                loss.detach(),
                adv.detach(),
                model.neighbours.weight.grad.clone(),
                model.items.bias.grad.clone(),
                model.user_emb.weight.grad.to_dense(),
            ]
        )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
