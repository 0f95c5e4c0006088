"""The flagship model: history handling, the user tower's parts, the objective's terms, and the
acceptance floor on the synthetic world (beats single-category BPR-MF on users new to a category)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossrec.artifact import load_artifact, save_artifact
from crossrec.data.batch import Sizes
from crossrec.data.sampling import TrainSampler
from crossrec.evaluation.evaluator import EvalConfig, Evaluator
from crossrec.models.base import config_from_dict
from crossrec.models.crossrec import CrossRec, CrossRecConfig
from crossrec.models.crossrec.config import HistoryConfig
from crossrec.models.per_category import build
from crossrec.training.trainer import TrainConfig, Trainer
from crossrec.typed import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def make(bundle, **params) -> CrossRec:
    """The flagship on `bundle`; `params` as in a config (sections are dicts: history={...})."""
    torch.manual_seed(0)
    model = CrossRec(config_from_dict("crossrec", {"dim": 16} | params), Sizes.from_bundle(bundle))
    model.setup(bundle)
    return model


def first_batch(bundle, size=512):
    return next(iter(TrainSampler(bundle, batch_size=size, n_negatives=2, seed=0)))


def captured_histories(model, batch):
    seen = []
    original = model._encode

    def spy(hist, category):
        seen.append((hist.clone(), category.clone()))
        return original(hist, category)

    model._encode = spy  # type: ignore[method-assign]
    model.train()
    model.loss(batch)
    return seen


def test_history_buffer_is_the_training_history(tiny_bundle):
    model = make(tiny_bundle, history={"length": 1000})
    train = tiny_bundle.split("train")
    for u in (0, 5, 17):
        rows = train.filter(train["user"] == u)
        hist = model.history_[u]
        got = sorted(hist[hist != tiny_bundle.n_items].tolist())
        assert got == sorted(rows["item"].to_list())


def test_training_never_reads_the_target_item(tiny_bundle):
    model = make(
        tiny_bundle, history={"length": 1000, "dropout": 0.0, "category_dropout": 0.0}, objective={"alpha": 0.0}
    )
    batch = first_batch(tiny_bundle)
    hist, _ = captured_histories(model, batch)[0]
    assert not (hist == batch.pos_items.unsqueeze(1)).any()
    # ... while the stored history does contain it (it is a training interaction).
    assert (model.history_[batch.users] == batch.pos_items.unsqueeze(1)).any(1).all()


def test_category_dropout_hides_in_category_history(tiny_bundle):
    batch = first_batch(tiny_bundle)
    item_cat = torch.tensor(tiny_bundle.item_category.tolist() + [-1])

    def share_with_in_category(p):
        model = make(tiny_bundle, history={"dropout": 0.0, "category_dropout": p}, objective={"alpha": 0.0})
        hist, cat = captured_histories(model, batch)[0]
        return float((item_cat[hist] == cat.unsqueeze(1)).any(1).float().mean())

    kept, hidden = share_with_in_category(0.0), share_with_in_category(0.9)
    assert kept > 0.8
    assert hidden < 0.35 * kept


def test_new_to_category_users_are_served_from_other_categories(tiny_bundle):
    model = make(tiny_bundle).eval()
    test = tiny_bundle.split("test")
    row = test.filter(test["new_to_category"]).row(0, named=True)
    u, c = int(row["user"]), int(row["category"])
    hist = model.history_[u]
    items = hist[hist != tiny_bundle.n_items]
    assert len(items) and not (torch.tensor(tiny_bundle.item_category)[items] == c).any()
    with torch.no_grad():
        model.encoder.query.normal_()  # untrained attention is nearly uniform: make it matter
        before = model.score(torch.tensor([u]), c).clone()
        model.history_[u] = tiny_bundle.n_items  # forget the other categories
        after = model.score(torch.tensor([u]), c)
    assert torch.isfinite(after).all()
    assert not torch.allclose(before, after), "the other categories' history must reach category c"


@pytest.mark.parametrize(
    "params",
    [
        {"history": {"encoder": "transformer", "n_layers": 1, "n_heads": 2}},
        {"history": {"encoder": "mean"}},
        {"history": {"encoder": "none"}, "objective": {"alpha": 0.0}},
        {"loss": "softmax", "objective": {"category_weights": "inverse_frequency"}},
        {"loss": "bce", "objective": {"category_weights": "learned"}},
        {"objective": {"adversarial": 0.5}},
        {"user_embedding": False, "category_user": False},
        {"loss": "bpr", "neighbourhood": {"k": 10}, "history": {"encoder": "none"}},
        {"neighbourhood": {"k": 10}, "objective": {"full_softmax": True}, "history": {"rows": "causal"}},
        {"neighbourhood": {"k": 10}, "objective": {"mixed_negatives": True}},
        {"neighbourhood": {"k": 10, "leave_out": False}},
        {"neighbourhood": {"k": 0}},
    ],
)
def test_options_train_and_score(tiny_bundle, params):
    model = make(tiny_bundle, **params)
    batch = first_batch(tiny_bundle)
    loss = model.loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    if params.get("objective", {}).get("category_weights") == "learned":
        assert model.weighting.log_var.grad is not None and model.weighting.log_var.grad.abs().sum() > 0
    if params.get("objective", {}).get("adversarial"):
        assert model.classifier.weight.grad is not None
    model.eval()
    users = torch.arange(tiny_bundle.n_users)
    users_empty = users.clone()
    model.history_[0] = tiny_bundle.n_items  # an empty history stays finite
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            s = model.score(users_empty, c)
            assert s.shape == (tiny_bundle.n_users, tiny_bundle.n_items_in(c)) and torch.isfinite(s).all()


def test_inverse_frequency_weights_by_hand(tiny_bundle):
    model = make(tiny_bundle, objective={"category_weights": "inverse_frequency"})
    counts = np.bincount(tiny_bundle.split("train")["category"].to_numpy(), minlength=tiny_bundle.n_categories)
    expected = counts.sum() / (len(counts) * counts)
    assert np.allclose(model.weighting.cat_weight_.numpy(), expected, rtol=1e-6)


def test_transfer_term_is_an_infonce_over_users(tiny_bundle):
    model = make(tiny_bundle)
    batch = first_batch(tiny_bundle)
    value = model.aux.transfer(batch.users, batch.category)
    n = len(torch.unique(batch.users * tiny_bundle.n_categories + batch.category))
    assert torch.isfinite(value) and 0 < float(value.detach()) <= np.log(n) + 1.0
    torch.manual_seed(1)
    with_term = make(tiny_bundle, objective={"alpha": 1.0}, history={"dropout": 0.0, "category_dropout": 0.0}).loss(
        batch
    )
    without = make(tiny_bundle, objective={"alpha": 0.0}, history={"dropout": 0.0, "category_dropout": 0.0}).loss(batch)
    assert not torch.isclose(with_term, without)


def test_parameter_groups_partition_the_parameters(tiny_bundle):
    model = make(tiny_bundle, objective={"category_weights": "learned", "adversarial": 0.1})
    groups = model.parameter_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))

    def has(group, p):
        return any(q is p for q in groups[group])

    assert has("specific", model.user_cat_emb.weight)
    assert has("heads", model.items.bias) and has("heads", model.weighting.log_var)
    assert has("shared", model.items.emb.weight) and has("shared", model.classifier.weight)


def test_mse_on_explicit_ratings(tiny_bundle):
    assert tiny_bundle.has_ratings
    model = make(tiny_bundle, loss="mse")
    batch = first_batch(tiny_bundle)
    loss = model.loss(batch)
    assert torch.isfinite(loss) and model.predicts_ratings
    pred = model.predict_rating(batch.users, batch.pos_items)
    assert pred.shape == batch.users.shape
    # The global bias starts at the mean rating of the first batch.
    rated = batch.ratings[torch.isfinite(batch.ratings)]
    assert float(model.global_bias.detach()) == pytest.approx(float(rated.mean()), rel=1e-5)


def test_content_vectors_round_trip(tiny_bundle, tmp_path):
    model = make(tiny_bundle)
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(tiny_bundle.n_items, 12, generator=g)
    present = torch.rand(tiny_bundle.n_items, generator=g) > 0.3
    model.set_content(vectors, present)
    with torch.no_grad():
        model.items.content_proj.weight.normal_()
    sizes = Sizes.from_bundle(tiny_bundle)
    save_artifact(tmp_path / "m", model, "crossrec", "pooled", {"dim": 16}, sizes)
    art = load_artifact(tmp_path / "m")
    users = torch.arange(20)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            assert torch.allclose(model.eval().score(users, c), art.model.score(users, c))


def test_bad_options_are_errors(tiny_bundle):
    sizes = Sizes.from_bundle(tiny_bundle)
    for bad in (
        {"loss": "hinge"},
        {"history": {"encoder": "lstm"}},
        {"objective": {"category_weights": "random"}},
        {"history": {"category_dropout": 1.0}},
        {"dim": 15, "history": {"encoder": "transformer", "n_heads": 2}},
        {"item_tower": "image"},
    ):
        with pytest.raises(ValueError, match="crossrec|expected one of|expected a share"):  # at the config or the model
            CrossRec(config_from_dict("crossrec", bad), sizes)
    with pytest.raises(ValueError, match="expected one of"):  # a section built directly is checked too
        CrossRecConfig(history=HistoryConfig(encoder="lstm"))  # type: ignore[arg-type]
    for bad, msg in (
        ({"text": {"borrow": -1}}, "model.text.borrow=-1; expected a value >= 0"),
        ({"text": {"borrow_temperature": 0.0}}, "model.text.borrow_temperature=0.0; expected a value > 0"),
        ({"objective": {"tau": 0.0}}, "model.objective.tau=0.0; expected a value > 0"),
    ):
        with pytest.raises(ValueError, match=msg.replace(".", r"\.")):
            config_from_dict("crossrec", bad)


def test_flat_options_name_their_new_section():
    for flat, moved in (
        ("neighbours", "neighbourhood.k"),
        ("history_len", "history.length"),
        ("history", "history.rows"),
        ("mixed_negatives", "objective.mixed_negatives"),
    ):
        value = "causal" if flat == "history" else 0
        with pytest.raises(ConfigError, match=f"model.{flat} -> model.{moved}"):
            config_from_dict("crossrec", {flat: value})
    with pytest.raises(ConfigError, match="model.neighbourhood.shrink"):
        config_from_dict("crossrec", {"neighbourhood": {"shrink": -1.0}})  # numbers in sections are checked
    with pytest.raises(ConfigError, match="model.history.length"):
        config_from_dict("crossrec", {"history": {"length": 0}})
    with pytest.raises(ConfigError, match="model.history.dropout"):
        config_from_dict("crossrec", {"history": {"dropout": 1.0}})
    assert config_from_dict("crossrec", {"neighbourhood": {"k": 0}}).neighbourhood.k == 0  # 0 = off


def test_flagship_beats_single_category_bprmf_on_new_to_category_users(medium_bundle):
    """Acceptance on the synthetic world (fixed seed): the flagship serves users new to a category
    from their other categories; single-category BPR-MF has nothing to go on there."""
    sizes = Sizes.from_bundle(medium_bundle)
    cfg = TrainConfig(epochs=8, batch_size=1024, n_negatives=4, lr=5e-3, patience=3, progress=False, checkpoint=False)
    torch.manual_seed(0)
    flagship = build("crossrec", "pooled", {"dim": 32}, sizes)
    Trainer(cfg).fit(flagship, medium_bundle)
    torch.manual_seed(0)
    single = build("mf", "single", {"dim": 32}, sizes)
    for c, sub in enumerate(single.models):
        Trainer(cfg, categories=[c]).fit(sub, medium_bundle)
    ev = Evaluator(medium_bundle, EvalConfig(ks=(10,)), split="test")
    f, s = ev.evaluate(flagship), ev.evaluate(single)
    new_f, new_s = f.metric("ndcg@10", "ALL", "new_to_category"), s.metric("ndcg@10", "ALL", "new_to_category")
    assert new_f > 2.0 * new_s, (new_f, new_s)
    assert f.metric("ndcg@10") > s.metric("ndcg@10")


@pytest.mark.parametrize("mixed", [True, False])
def test_mixed_softmax_matches_a_per_row_reference(tiny_bundle, mixed):
    model = make(tiny_bundle, objective={"mixed_negatives": mixed})
    batch = first_batch(tiny_bundle, size=64)
    with torch.no_grad():
        model.items.bias.normal_()
        u = torch.randn(len(batch), 16)
        p = model.items(batch.pos_items)
        got = model.softmax.mixed(u, p, model.items.bias[batch.pos_items], batch)
    counts = np.bincount(tiny_bundle.split("train")["item"].to_numpy(), minlength=tiny_bundle.n_items)
    cat_rows = np.bincount(tiny_bundle.split("train")["category"].to_numpy(), minlength=tiny_bundle.n_categories)
    cat_items = np.bincount(tiny_bundle.item_category, minlength=tiny_bundle.n_categories)
    items, cats = batch.pos_items.numpy(), batch.category.numpy()
    n_neg = batch.neg_items.shape[1]
    for r in range(len(batch)):
        c = cats[r]
        b_c = (cats == c).sum()
        cands, corr = [], []
        for j in range(len(batch)):  # in-batch: same category, not a repeat of the row's positive
            if cats[j] == c and (j == r or items[j] != items[r]):
                cands.append(items[j])
                corr.append(np.log(b_c) + np.log(counts[items[j]] + 1.0) - np.log(cat_rows[c] + 1.0))
        pos_logit_index = [k for k, j in enumerate(cands) if j == items[r]][0]
        for j in batch.neg_items[r].tolist() if mixed else []:
            if j != items[r]:
                cands.append(j)
                corr.append(np.log(n_neg) - np.log(cat_items[c]))
        with torch.no_grad():
            v = model.items(torch.tensor(cands))
            logits = (v @ u[r]).numpy() + model.items.bias[torch.tensor(cands)].numpy() - np.array(corr)
        expected = np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[pos_logit_index]
        assert float(got[r]) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_full_softmax_matches_a_per_row_reference(tiny_bundle):
    model = make(tiny_bundle, objective={"full_softmax": True})
    batch = first_batch(tiny_bundle, size=64)
    with torch.no_grad():
        model.items.bias.normal_()
        u = torch.randn(len(batch), 16)
        got = model.softmax.full(u, batch)
        for r in range(len(batch)):
            c, item = int(batch.category[r]), int(batch.pos_items[r])
            idx = torch.from_numpy(np.flatnonzero(tiny_bundle.item_category == c))
            logits = model.items(idx) @ u[r] + model.items.bias[idx]
            expected = torch.logsumexp(logits, 0) - logits[(idx == item).nonzero()[0, 0]]
            assert float(got[r]) == pytest.approx(float(expected), rel=1e-4, abs=1e-4)
    model.train()
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.items.bias.grad.abs().sum() > 0


def test_causal_history_reads_only_earlier_items(tiny_bundle):
    model = make(tiny_bundle, history={"rows": "causal", "length": 1000, "dropout": 0.0, "category_dropout": 0.0})
    batch = first_batch(tiny_bundle)
    hist, _ = captured_histories(model, batch)[0]
    train = tiny_bundle.split("train").with_row_index("_row").sort("user", "order", "_row")
    for r in range(0, len(batch), 37):
        u, item = int(batch.users[r]), int(batch.pos_items[r])
        seq = train.filter(train["user"] == u)["item"].to_list()
        expected = seq[: seq.index(item)]
        got = hist[r][hist[r] != tiny_bundle.n_items].tolist()
        assert got == [i for i in expected if i != item]
    # Serving reads the whole training history, as with history='all'.
    assert torch.equal(model.history_, make(tiny_bundle, history={"length": 1000}).history_)


def _train_matrix(bundle):
    train = bundle.split("train")
    x = np.zeros((bundle.n_users, bundle.n_items), dtype=np.float64)
    x[train["user"].to_numpy(), train["item"].to_numpy()] = 1.0
    return x


def _cosine(x, shrink):
    co = x.T @ x
    np.fill_diagonal(co, 0.0)
    n = x.sum(0)
    return co / (np.sqrt(np.outer(n, n)) + shrink)


def test_neighbourhood_term_at_init_is_itemknn_over_the_history(tiny_bundle):
    """Untrained weights (1 per history category, recency 0): the term is pooled ItemKNN's score."""
    from crossrec.models.itemknn import ItemKNN, ItemKNNConfig

    model = make(
        tiny_bundle,
        user_embedding=False,
        category_user=False,
        neighbourhood={"k": 20},
        history={"length": 1000, "encoder": "none"},
    )
    knn = ItemKNN(ItemKNNConfig(k=20, shrink=10.0), Sizes.from_bundle(tiny_bundle))
    knn.fit(tiny_bundle)
    users = torch.arange(tiny_bundle.n_users)
    with torch.no_grad():
        for c in range(tiny_bundle.n_categories):
            idx = model.index[c]
            got = model.neighbours.scores(model.history_[users], torch.full_like(users, c), users, idx, leave_out=False)
            np.testing.assert_allclose(got.numpy(), knn.score(users, c).numpy(), rtol=1e-4, atol=1e-5)


def test_neighbourhood_training_scores_leave_the_pair_out(tiny_bundle):
    """Training rows see cos(h, j) as if (u, j) were held out: computed here by deleting the pair."""
    n_i = tiny_bundle.n_items
    model = make(
        tiny_bundle, neighbourhood={"k": n_i}, history={"length": 1000, "dropout": 0.0, "category_dropout": 0.0}
    )
    x = _train_matrix(tiny_bundle)
    batch = first_batch(tiny_bundle, size=32)
    cand = torch.unique(torch.cat([batch.pos_items, batch.neg_items.flatten()]))
    hist, _ = model.objective.training_history(batch.users, batch.pos_items, batch.category)
    with torch.no_grad():
        model.neighbours.weight.uniform_(0.5, 2.0)
        got = model.neighbours.scores(hist, batch.category, batch.users, cand, leave_out=True).numpy()
    w = model.neighbours.weight.detach().numpy()
    item_cat = tiny_bundle.item_category
    for r in range(0, len(batch), 5):
        u, c = int(batch.users[r]), int(batch.category[r])
        h = hist[r][hist[r] != n_i].numpy()
        for m, j in enumerate(cand.tolist()):
            xu = x.copy()
            xu[u, j] = 0.0  # hold the pair out (a no-op when it is not a training pair)
            sim = _cosine(xu, 10.0)
            expected = sum(w[c, item_cat[hh]] * sim[hh, j] for hh in h)
            if item_cat[j] != c:  # a candidate scores in its own category only; other cells stay 0
                expected = 0.0
            assert got[r, m] == pytest.approx(expected, rel=1e-4, abs=1e-5), (r, j)
