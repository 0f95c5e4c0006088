"""Per-category model selection (`pick`, models/pick.py): the objective and the choice by hand, the
experiment entry that composes trained models, its artifact, reuse, and the config errors."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch

from crossrec.artifact import load_artifact
from crossrec.evaluation.config import EvalConfig
from crossrec.evaluation.evaluator import Evaluator
from crossrec.experiment import load_experiment, run_experiment
from crossrec.experiment.spec import select
from crossrec.models.base import Fittable, ReadsText, Recommender, Trainable, TwoTower, config_from_dict
from crossrec.models.pick import choose, objective
from crossrec.typed import ConfigError

TRAIN = {"epochs": 2, "batch_size": 512, "lr": 0.01, "progress": False, "checkpoint": False}


def table(rows: list[tuple[str, str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"category": c, "slice": s, "n_users": n, "ndcg@10": v} for c, s, n, v in rows],
        schema={"category": pl.Utf8, "slice": pl.Utf8, "n_users": pl.Int64, "ndcg@10": pl.Float64},
    )


def test_objective_and_choice_by_hand():
    a = table(
        [
            ("books", "all", 100, 0.30),
            ("books", "new_to_category", 40, 0.10),
            ("books", "cold_item", 10, 0.90),  # under MIN_UNITS (30): left out
            ("books", "warm", 60, 0.80),  # not an objective slice
            ("music", "all", 20, 0.20),  # `all` counts with any number of units
        ]
    )
    b = table(
        [
            ("books", "all", 100, 0.25),
            ("books", "new_to_category", 40, 0.20),
            ("books", "cold_item", 10, 0.00),
            ("music", "all", 20, 0.20),
        ]
    )
    assert objective(a, "books", ("all", "new_to_category", "cold_item")) == pytest.approx(0.20)
    assert objective(b, "books", ("all", "new_to_category", "cold_item")) == pytest.approx(0.225)
    assert objective(a, "books", ("all",)) == pytest.approx(0.30)
    assert math.isnan(objective(a, "film", ("all",)))
    choice, values = choose([a, b], ["books", "music", "film"])
    # books: b (0.225 > 0.20); music: a tie, the first; film: no values, the first
    assert choice == [1, 0, 0]
    assert values[0] == [pytest.approx(0.20), pytest.approx(0.225)]
    assert choose([a, b], ["books"], ("all",))[0] == [0]


def experiment(out, root, models=None):
    return {
        "data": {"bundle": str(root)},
        "train": TRAIN,
        "eval": {"ks": [10]},
        "seeds": [0, 1],
        "out": str(out),
        "models": models
        or [
            {"label": "pop", "name": "pop"},
            {"label": "mf", "name": "mf", "dim": 8},
            {"label": "best", "pick": ["pop", "mf"]},
        ],
    }


def test_pick_entry_composes_the_validation_winners(tiny_bundle, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    cfg = load_experiment(data=experiment(out, tiny_bundle.root))
    best = cfg.models[2]
    assert best.name == "pick" and [c["label"] for c in best.params["candidates"]] == ["pop", "mf"]
    res = run_experiment(cfg, bundle=tiny_bundle)
    cats = tiny_bundle.categories
    valid = Evaluator(tiny_bundle, EvalConfig(ks=(10,), beyond=False), split="valid")
    test = res.runs.filter(pl.col("slice") == "all")
    pop = load_artifact(out / "models" / "pop" / "seed-0")  # closed form: one run serves every seed
    for seed in (0, 1):
        mf = load_artifact(out / "models" / "mf" / f"seed-{seed}")
        want, _ = choose([valid.evaluate(pop.model).table, valid.evaluate(mf.model).table], cats)
        art = load_artifact(out / "models" / "best" / f"seed-{seed}")  # saved, loaded back from its specs
        assert art.name == "pick" and art.model.choice_.tolist() == want
        # what it declares (models/base.py's protocols): a recommender, never two-tower or trainable
        assert isinstance(art.model, Recommender) and isinstance(art.model, ReadsText) and not art.model.uses_text
        assert not isinstance(art.model, (TwoTower, Trainable, Fittable))
        assert art.meta["pick"]["choice"] == {c: ["pop", "mf"][k] for c, k in zip(cats, want)}
        users = torch.arange(tiny_bundle.n_users)
        for c, k in enumerate(want):
            assert torch.equal(art.model.score(users, c), [pop, mf][k].model.score(users, c))
            # its test rows are the chosen candidate's
            label = ["pop", "mf"][k]
            mine = test.filter((pl.col("model") == "best") & (pl.col("seed") == seed) & (pl.col("category") == cats[c]))
            theirs = test.filter(
                (pl.col("model") == label) & (pl.col("seed") == seed) & (pl.col("category") == cats[c])
            )
            assert mine["ndcg@10"].to_list() == pytest.approx(theirs["ndcg@10"].to_list())

    # It serves recommendations (each category from its candidate); similar items need one vector
    # space, which it does not have
    from crossrec.serving.service import Service, ServingError

    svc = Service(art, tiny_bundle)
    user = str(tiny_bundle.raw_user_ids()[0])
    assert len(svc.recommend(user, cats[0], k=5)["items"]) == 5
    with pytest.raises(ServingError, match="not a two-tower model"):
        svc.similar(str(tiny_bundle.raw_item_ids()[0]))

    # A second run reuses the composed runs: nothing trains or composes again.
    import crossrec.experiment.pick
    import crossrec.pipeline

    def boom(*args, **kwargs):
        raise AssertionError("should not run again")

    monkeypatch.setattr(crossrec.pipeline, "train", boom)
    monkeypatch.setattr(crossrec.experiment.pick, "compose", boom)
    again = run_experiment(cfg, bundle=tiny_bundle)
    assert again.summary().equals(res.summary())
    # A candidate trained again (another artifact) makes its picks stale.
    path = out / "runs" / "best" / "seed-1.json"
    stored = json.loads(path.read_text())
    stored["candidates"]["mf"] = "0" * 64
    path.write_text(json.dumps(stored))
    with pytest.raises(AssertionError, match="should not run again"):
        run_experiment(cfg, bundle=tiny_bundle)
    # A candidate's run kept without its model: a one-line error that says what to do.
    import shutil

    shutil.rmtree(out / "models" / "mf" / "seed-1")
    (out / "runs" / "best" / "seed-1.json").unlink()
    with pytest.raises(ConfigError, match=r"candidate mf has no trained model .* remove .*runs/mf/seed-1\.json"):
        run_experiment(cfg, bundle=tiny_bundle)


def test_pick_config_errors(tmp_path):
    def load(models):
        return load_experiment(data=experiment(tmp_path, tmp_path, models))

    mf = {"label": "mf", "name": "mf"}
    with pytest.raises(ConfigError, match=r"models\[0\]\.pick=\['mf', 'pop'\]: expected two or more distinct labels"):
        load([{"label": "best", "pick": ["mf", "pop"]}, mf, {"label": "pop", "name": "pop"}])  # later entries
    with pytest.raises(ConfigError, match=r"models\[1\]\.pick=\['mf'\]"):
        load([mf, {"label": "best", "pick": ["mf"]}])
    with pytest.raises(ConfigError, match="candidate mf does not run seed"):
        load([dict(mf, seeds=[0]), {"label": "pop", "name": "pop"}, {"label": "best", "pick": ["mf", "pop"]}])
    with pytest.raises(ConfigError, match="a pick entry has"):
        load([mf, {"label": "pop", "name": "pop"}, {"label": "best", "name": "mf", "pick": ["mf", "pop"]}])
    with pytest.raises(ConfigError, match="mode pooled, and no grid or search"):
        load([mf, {"label": "pop", "name": "pop"}, {"label": "best", "pick": ["mf", "pop"], "grid": {"x": [1]}}])
    cfg = load([mf, {"label": "pop", "name": "pop"}, {"label": "best", "pick": ["mf", "pop"]}])
    with pytest.raises(ConfigError, match=r"compose \['pop'\]; select them too"):
        select(cfg, ["mf", "best"])
    # `crossrec train` cannot train one: the options say how it is built
    with pytest.raises(ConfigError, match="composes trained models"):
        config_from_dict("pick", {})
