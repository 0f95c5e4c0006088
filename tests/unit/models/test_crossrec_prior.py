"""The flagship's popularity prior for users new to a category (models/crossrec/prior.py): who
counts as new, what it adds to every scoring path, that training learns it from the rows category
dropout hides, and that artifacts written before it load without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.crossrec.prior import GRID, MIN_USERS, pick
from crossrec.training.picks import pick_tools
from crossrec.training.trainer import TrainConfig, Trainer
from tests.unit.models.test_crossrec import first_batch, make

pytestmark = pytest.mark.usefixtures("one_thread")


def new_users(bundle, category):
    """Users without a training row in `category` (by hand, from the training split)."""
    train = bundle.split("train")
    have = set(train.filter(train["category"] == category)["user"].to_list())
    return torch.tensor([u for u in range(bundle.n_users) if u not in have])


def test_users_new_to_a_category_get_beta_times_log_count(tiny_bundle):
    model = make(tiny_bundle)
    with torch.no_grad():
        model.new_prior.copy_(0.5 + torch.arange(tiny_bundle.n_categories).float())
    model.eval()
    counts = np.bincount(tiny_bundle.split("train")["item"].to_numpy(), minlength=tiny_bundle.n_items)
    users = torch.arange(tiny_bundle.n_users)
    for c in range(tiny_bundle.n_categories):
        new = torch.zeros(tiny_bundle.n_users, dtype=torch.bool)
        new[new_users(tiny_bundle, c)] = True
        assert torch.equal(model.prior.new_to(users, c), new)
        assert torch.allclose(model.prior.weight(users, c), new.float() * model.new_prior[c])
        with torch.no_grad():
            with_prior = model.score(users, c)
            beta = float(model.new_prior[c])
            model.new_prior[c] = 0.0
            without = model.score(users, c)
            model.new_prior[c] = beta
        idx = model.index[c]
        expected = new.float().unsqueeze(1) * beta * torch.from_numpy(np.log(counts[idx.numpy()] + 1.0)).float()
        assert torch.allclose(with_prior - without, expected, atol=1e-4)
    assert bool(model.prior.new_to(users, 0).any()), "the tiny world has users new to category 0"


def test_serving_paths_agree_with_score(tiny_bundle):
    from crossrec.serving.flagship import serving_view

    model = make(tiny_bundle)
    view = serving_view(model)
    with torch.no_grad():
        model.new_prior.fill_(0.8)
    model.eval()
    users = torch.arange(tiny_bundle.n_users)
    for c in range(tiny_bundle.n_categories):
        idx = model.index[c]
        with torch.no_grad():
            full = model.score(users, c)
            exact = view.score_items(users, c, idx[:7].expand(len(users), -1))
            # the index: towers + index columns, plus the sparse neighbourhood term where it is non-zero
            index = model.user_vectors(users, c) @ model.item_vectors(c).T
            index = index + view.index_user_columns(users, c) @ view.index_item_columns(c).T
            hist_only = view.score_history(model.history_[users], c)
        assert torch.allclose(exact, full[:, :7], atol=1e-4)
        sparse = set(view.sparse_candidates(users, c).tolist())
        dense_cols = torch.tensor([j for j, item in enumerate(idx.tolist()) if item not in sparse], dtype=torch.int64)
        assert torch.allclose(index[:, dense_cols], full[:, dense_cols], atol=1e-4)
        # a user known by a history alone is new to c when no history item is in c
        new = ~(model.item_category_[model.history_[users]] == c).any(1)
        with torch.no_grad():
            model.new_prior.zero_()
            hist_plain = view.score_history(model.history_[users], c)
            model.new_prior.fill_(0.8)
        lift = 0.8 * new.float().unsqueeze(1) * model.log_count_[idx].unsqueeze(0)
        assert torch.allclose(hist_only - hist_plain, lift, atol=1e-4)


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_training_teaches_the_prior_on_hidden_rows_only(tiny_bundle, loss):
    batch = first_batch(tiny_bundle, size=256)
    model = make(tiny_bundle, loss=loss)
    model.train()
    model.loss(batch).backward()
    assert model.new_prior.grad is not None and float(model.new_prior.grad.abs().sum()) > 0
    off = make(tiny_bundle, loss=loss, history={"category_dropout": 0.0})
    off.train()
    off.loss(batch).backward()
    assert off.new_prior.grad is None or float(off.new_prior.grad.abs().sum()) == 0.0


def test_option_off_and_old_artifacts_score_as_before(tiny_bundle):
    model = make(tiny_bundle, new_user_prior=False)
    assert model.new_prior is None
    assert "new_prior" not in dict(model.named_parameters())
    users = torch.arange(tiny_bundle.n_users)
    assert torch.equal(model.prior.weight(users, 0), torch.zeros(len(users)))
    # an artifact written before the prior: no new_prior, no mask of trained pairs (and a dense
    # users x categories table, before the pair index) -> nobody gets a prior
    src = make(tiny_bundle)
    state = {k: v for k, v in src.state_dict().items() if k not in ("new_prior", "pair_keys_")}
    state["user_cat_emb.weight"] = torch.zeros(tiny_bundle.n_users * tiny_bundle.n_categories, src.config.dim)
    fresh = make(tiny_bundle)
    with torch.no_grad():
        fresh.new_prior.fill_(3.0)
    fresh.load_state_dict(state)
    assert float(fresh.new_prior.detach().abs().sum()) == 0.0 and not bool(fresh.prior.new_to(users, 0).any())


def test_prior_lifts_new_to_category_users(medium_bundle):
    """Trained on the medium synthetic world, the prior is learned (non-zero) and the flagship with it
    is at least as good as without it for users new to a category (NDCG@10)."""
    scores = {}
    for on in (True, False):
        model = make(medium_bundle, dim=32, new_user_prior=on)
        Trainer(TrainConfig(epochs=2, batch_size=1024, lr=0.01, progress=False, checkpoint=False, patience=0)).fit(
            model, medium_bundle
        )
        if on:
            assert float(model.new_prior.detach().abs().max()) > 0.01
        res = Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test").evaluate(model)
        scores[on] = res.metric("ndcg@10", category="ALL", slice="new_to_category")
    assert scores[True] >= scores[False] * 0.98


@pytest.fixture(scope="module")
def cold_valid_bundle(tmp_path_factory):
    """The medium synthetic world with validation users new to a category (prepare.cold_user_valid_fraction)."""
    from crossrec.data.prepare import PrepareConfig, prepare
    from crossrec.data.synthetic import generate
    from tests.conftest import medium_config

    inter, items = generate(medium_config())
    cfg = PrepareConfig(cold_user_fraction=0.2, cold_user_valid_fraction=0.2)
    return prepare(inter, items, cfg, tmp_path_factory.mktemp("cold-valid") / "bundle")


def test_pick_takes_the_smoothed_maximum():
    curve = np.zeros(len(GRID))
    spike, plateau = 3, int(np.flatnonzero(GRID == 1.0)[0])
    curve[spike] = 5.0  # one noisy value alone
    curve[plateau - 1 : plateau + 2] = 4.0  # a broad optimum
    assert pick(curve) == 1.0
    assert pick(np.arange(len(GRID), dtype=float)) == GRID[-1]


def test_fit_prior_picks_on_the_validation_ndcg_of_new_users(cold_valid_bundle, monkeypatch):
    """After training, beta_c is picked where validation holds users new to c. The curve it picks on
    is the Evaluator's validation NDCG@10 of those users at each value, counting their positives on
    trained items only (untrained ones are the cold offset's), and the pick is its smoothed maximum
    (per category with enough users, else pooled)."""
    b = cold_valid_bundle
    cfg = TrainConfig(epochs=2, batch_size=1024, lr=0.01, progress=False, checkpoint=False, patience=0)
    model = make(b, dim=32)
    Trainer(cfg).fit(model, b)
    plain = make(b, dim=32, prior_fit=False)
    Trainer(cfg).fit(plain, b)
    assert not torch.allclose(model.new_prior.detach(), plain.new_prior.detach())
    curves = {c: plain.prior._curve(b, c, pick_tools(), 64) for c in range(b.n_categories)}
    pooled = pick(sum(v for v, _ in curves.values()))
    csr = b.csr

    def trained_positives(split, c):  # validation as the pick reads it: positives on trained items only
        m = csr(split, c)
        if split != "valid":
            return m
        m = m.multiply((csr("train", c).getnnz(axis=0) > 0)[None, :].astype(m.dtype)).tocsr()
        m.eliminate_zeros()
        return m

    assert any(csr("valid", c).nnz > trained_positives("valid", c).nnz for c in range(b.n_categories)), (
        "the world has validation positives on untrained items"
    )
    monkeypatch.setattr(b, "csr", trained_positives)
    ev = Evaluator(b, EvalConfig(ks=(10,)), split="valid")
    for c, (curve, n) in curves.items():
        expected = pick(curve) if n >= MIN_USERS else pooled
        assert float(model.new_prior.detach()[c]) == pytest.approx(expected)
        for g in (0, len(GRID) // 2):
            with torch.no_grad():
                plain.new_prior[c] = float(GRID[g])
            res = ev.evaluate(plain, [c])
            assert curve[g] / n == pytest.approx(
                res.metric("ndcg@10", category=b.categories[c], slice="new_to_category"), abs=1e-9
            )


def test_fit_prior_is_a_no_op_without_new_users_in_validation(medium_bundle):
    model = make(medium_bundle)
    with torch.no_grad():
        model.new_prior.fill_(0.7)
    model.eval()
    model.prior.fit(medium_bundle, None, pick_tools())
    assert torch.allclose(model.new_prior.detach(), torch.full_like(model.new_prior, 0.7))
